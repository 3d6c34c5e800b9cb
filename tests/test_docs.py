"""Meta-tests: docs/plugins.md documents the plugin contract as the code defines it, and
docs/backends.md every built-in backend as its class defines it."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faasml import registry
from faasml.hooks import FunctionBackend, ObjectStoreBackend, PubSubBackend, manager, specs
from faasml.hooks.types import BackendKind

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_MD = ROOT / "docs" / "plugins.md"
BACKENDS_MD = ROOT / "docs" / "backends.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return PLUGINS_MD.read_text(encoding="utf-8")


def hookspecs() -> list[tuple[str, Callable[..., Any]]]:
    """Every function in faasml/hooks/specs.py marked as a faasml hookspec."""
    found = [
        (name, fn)
        for name, fn in vars(specs).items()
        if inspect.isfunction(fn) and hasattr(fn, "faasml_spec")
    ]
    assert found, "no hookspecs found: did the marker name change?"
    return sorted(found)


def signature_text(name: str, fn: Callable[..., Any]) -> str:
    """``name(params) -> return`` as written in the source (annotations are strings there)."""
    sig = inspect.signature(fn)
    params = ", ".join(
        p.name if p.annotation is inspect.Parameter.empty else f"{p.name}: {p.annotation}"
        for p in sig.parameters.values()
    )
    return f"{name}({params}) -> {sig.return_annotation}"


@pytest.mark.parametrize(("name", "fn"), hookspecs(), ids=[n for n, _ in hookspecs()])
def test_every_hookspec_is_documented_with_its_signature(
    doc: str, name: str, fn: Callable[..., Any]
) -> None:
    assert f"`{name}`" in doc, f"document hookspec {name} in docs/plugins.md"
    assert signature_text(name, fn) in doc, (
        f"docs/plugins.md must show the signature {signature_text(name, fn)!r}"
    )


def test_the_entry_point_group_is_documented(doc: str) -> None:
    assert f"[project.entry-points.{manager.ENTRY_POINT_GROUP}]" in doc
    assert f"**`{manager.ENTRY_POINT_GROUP}`**" in doc


@pytest.mark.parametrize("record", [FunctionBackend, ObjectStoreBackend, PubSubBackend])
def test_every_record_field_is_documented(doc: str, record: type) -> None:
    missing = [f.name for f in dataclasses.fields(record) if f"`{f.name}`" not in doc]
    assert not missing, f"document {record.__name__} fields {missing} in docs/plugins.md"


def test_every_plugin_manager_variable_is_documented(doc: str) -> None:
    variables = set(re.findall(r"FAASML_[A-Z_]+", manager.__doc__ or ""))
    assert len(variables) >= 5
    missing = sorted(v for v in variables if f"`{v}" not in doc)
    assert not missing, f"document {missing} in docs/plugins.md"


def test_pytest_plugin_features_are_documented(doc: str) -> None:
    for name in ("faasml_pm", "register_plugin", "@pytest.mark.live", "--faasml-live"):
        assert name in doc, name


def test_named_conformance_suites_exist(doc: str) -> None:
    paths = set(re.findall(r"faasml\.testing\.conformance\.\w+\.\w+", doc))
    assert len(paths) == 3
    for path in sorted(paths):
        module, _, attr = path.rpartition(".")
        assert hasattr(importlib.import_module(module), attr), path


def test_python_examples_compile(doc: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) >= 4
    for number, block in enumerate(blocks, 1):
        compile(block, f"docs/plugins.md python block {number}", "exec")


# ---------------------------------------------------------------- docs/backends.md

#: capabilities each kind documents. All but ``preserves_order`` are checked by their class
#: value, the default an instance starts from; ``preserves_order`` is decided per instance by
#: ``sqs`` (``ordered=``) and ``smn`` (its paired queue), so only its presence is checked.
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "function": ("max_payload_bytes",),
    "storage": ("supports_range_get", "supports_conditional_put"),
    "pubsub": ("max_message_bytes", "preserves_order"),
}


def builtin_backends() -> list[tuple[BackendKind, str]]:
    """``(kind, name)`` of every backend the built-in plugins register."""
    kinds: tuple[BackendKind, ...] = ("function", "storage", "pubsub")
    found = [
        (kind, name)
        for kind in kinds
        for name, record in registry.backends(kind).items()
        if record.plugin in manager.DEFAULT_PLUGINS
    ]
    assert len(found) >= 14, found
    return found


@pytest.fixture(scope="module")
def backends_doc() -> str:
    return BACKENDS_MD.read_text(encoding="utf-8")


def backend_section(doc: str, kind: str, name: str) -> str:
    """The text under the heading ``## <kind> `<name>``` up to the next ``## `` heading."""
    match = re.search(rf"^## {kind} `{re.escape(name)}`\n(.*?)(?=^## |\Z)", doc, re.M | re.S)
    assert match, f"docs/backends.md needs a section headed: ## {kind} `{name}`"
    return match.group(1)


@pytest.mark.parametrize(
    ("kind", "name"), builtin_backends(), ids=[f"{k}-{n}" for k, n in builtin_backends()]
)
def test_every_builtin_backend_is_documented(
    backends_doc: str, kind: BackendKind, name: str
) -> None:
    section = backend_section(backends_doc, kind, name)
    record = registry.backend_record(kind, name)
    if record.extra is not None:
        assert f'**Install:** `pip install "faasml[{record.extra}]"`' in section, name
    else:
        assert "**Install:** `pip install faasml` (no extra" in section, name
    cls = registry.backend_class(kind, name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    for param in params:
        default = "required" if param.default is inspect.Parameter.empty else f"`{param.default!r}`"
        assert f"| `{param.name}` | {default} |" in section, (
            f"document option {param.name} of {kind} {name} with its default {default}"
        )
    for capability in CAPABILITIES[kind]:
        shown = f"| `{capability}` |"
        if capability != "preserves_order":
            shown += f" `{getattr(cls, capability)}`"
        assert shown in section, f"document {capability} of {kind} {name}: {shown}"
    for part in ("**Credentials:**", "**Limits:**", "**In tests:**", "**Caveats:**"):
        assert part in section, f"the section of {kind} {name} lacks {part}"


def test_backend_sections_are_only_the_builtin_ones(backends_doc: str) -> None:
    headings = re.findall(r"^## (\w+) `([a-z0-9_]+)`$", backends_doc, re.M)
    assert sorted(headings) == sorted(builtin_backends())


def test_the_plugin_guide_links_the_backend_reference(doc: str) -> None:
    intro = doc.split("\n## ", 1)[0]
    assert "(backends.md)" in intro

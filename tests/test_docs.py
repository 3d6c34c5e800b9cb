"""Meta-tests: docs/plugins.md documents the plugin contract as the code defines it."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faasml.hooks import FunctionBackend, ObjectStoreBackend, PubSubBackend, manager, specs

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_MD = ROOT / "docs" / "plugins.md"


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

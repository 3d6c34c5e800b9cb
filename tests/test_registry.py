"""The backend registry: built-ins, lazy import with install hints, conflicts, record rules."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest

from faasml import hookimpl, registry
from faasml.errors import MissingDependencyError, PluginError, UnknownBackendError
from faasml.hooks import BackendRecord, FunctionBackend, ObjectStoreBackend, PubSubBackend
from faasml.hooks.types import BackendKind
from faasml.testing.pytest_plugin import PluginRegistrar

MISSING = "faasml_no_such_module_xyz"


def fake_plugin(
    *,
    function: list[Any] | None = None,
    storage: list[Any] | None = None,
    pubsub: list[Any] | None = None,
) -> SimpleNamespace:
    """A plugin object implementing only the hooks for which records are given."""

    def returning(records: list[Any]) -> Callable[[], list[Any]]:
        # A closure rather than a default argument: pluggy reads a hookimpl's parameters.
        return hookimpl(lambda: list(records))

    hooks = {
        hook: returning(records)
        for hook, records in [
            ("faasml_function_backends", function),
            ("faasml_object_store_backends", storage),
            ("faasml_pubsub_backends", pubsub),
        ]
        if records is not None
    }
    return SimpleNamespace(**hooks)


def missing_function_backend() -> FunctionBackend:
    return FunctionBackend("fake", f"{MISSING}:Cls", extra="aws", requires=(MISSING,))


# --------------------------------------------------------------------------- built-ins


def test_builtins_are_listed(faasml_pm: pluggy.PluginManager) -> None:
    assert {"file", "memory"} <= set(registry.backends("storage"))
    assert "local" in registry.backends("pubsub")
    assert "local" in registry.backends("function")


def test_builtins_name_their_plugin(faasml_pm: pluggy.PluginManager) -> None:
    assert registry.backends("function")["local"].plugin == "faasml.providers.local"
    assert registry.backends("storage")["memory"].plugin == "faasml.storage"
    assert registry.backends("pubsub")["local"].plugin == "faasml.pubsub"


@pytest.mark.parametrize(
    ("kind", "name"),
    [("function", "local"), ("storage", "file"), ("storage", "memory"), ("pubsub", "local")],
)
def test_embedded_builtins_need_nothing_extra(
    faasml_pm: pluggy.PluginManager, kind: BackendKind, name: str
) -> None:
    record = registry.backend_record(kind, name)
    assert record.installed
    assert record.extra is None
    assert record.requires == ()
    assert record.kind == kind
    assert record.description


def test_tables_are_sorted_by_name(register_plugin: PluginRegistrar) -> None:
    register_plugin(
        fake_plugin(storage=[ObjectStoreBackend("zzz", "m:C"), ObjectStoreBackend("aaa", "m:C")]),
        name="unsorted",
    )
    names = list(registry.backends("storage"))
    assert names == sorted(names)
    assert {"aaa", "zzz"} <= set(names)


def test_returned_table_is_a_copy(faasml_pm: pluggy.PluginManager) -> None:
    registry.backends("storage").clear()
    assert "memory" in registry.backends("storage")


# --------------------------------------------------------------------------- lookups


def test_unknown_name_lists_choices(faasml_pm: pluggy.PluginManager) -> None:
    with pytest.raises(UnknownBackendError) as info:
        registry.backend_record("storage", "s4")
    message = str(info.value)
    assert message.startswith("unknown storage 's4'")
    choices = message.split("choose one of: ")[1].split(", ")
    assert {"file", "memory"} <= set(choices)
    assert isinstance(info.value, KeyError)


def test_unknown_provider_word(faasml_pm: pluggy.PluginManager) -> None:
    with pytest.raises(UnknownBackendError, match=r"unknown provider 'nope'.*local"):
        registry.backend_class("function", "nope")


def test_unknown_name_shows_how_to_install_missing_choices(
    register_plugin: PluginRegistrar,
) -> None:
    register_plugin(fake_plugin(function=[missing_function_backend()]), name="fakes")
    with pytest.raises(UnknownBackendError) as info:
        registry.backend_record("function", "nope")
    assert 'fake (needs pip install "faasml[aws]")' in str(info.value)


def test_missing_module_raises_missing_dependency_with_pip_command(
    register_plugin: PluginRegistrar,
) -> None:
    register_plugin(fake_plugin(function=[missing_function_backend()]), name="fakes")
    record = registry.backend_record("function", "fake")
    assert record.plugin == "fakes"
    assert record.installed is False
    with pytest.raises(MissingDependencyError) as info:
        registry.backend_class("function", "fake")
    assert 'pip install "faasml[aws]"' in str(info.value)
    assert MISSING in str(info.value)
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for throw-away modules, forgotten again after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_missing_dependency_inside_an_existing_module(
    register_plugin: PluginRegistrar, module_dir: Path
) -> None:
    (module_dir / "faasml_test_needs_sdk.py").write_text(
        f"import {MISSING}_sdk\n\nclass Store: ...\n", encoding="utf-8"
    )
    register_plugin(
        fake_plugin(storage=[ObjectStoreBackend("needy", "faasml_test_needs_sdk:Store")]),
        name="needy-plugin",
    )
    with pytest.raises(MissingDependencyError) as info:
        registry.backend_class("storage", "needy")
    # No extra declared: the hint falls back to the module the import actually missed.
    assert f"pip install {MISSING}_sdk" in str(info.value)
    assert "storage 'needy'" in str(info.value)


def test_lazy_class_is_imported_on_use(register_plugin: PluginRegistrar) -> None:
    register_plugin(fake_plugin(storage=[ObjectStoreBackend("od", "collections:OrderedDict")]))
    assert registry.backend_class("storage", "od") is OrderedDict


def test_class_object_is_returned_as_is(register_plugin: PluginRegistrar) -> None:
    class Inline:
        pass

    register_plugin(fake_plugin(pubsub=[PubSubBackend("inline", Inline)]))
    assert registry.backend_class("pubsub", "inline") is Inline


def test_missing_attribute_is_a_plugin_error_naming_the_plugin(
    register_plugin: PluginRegistrar,
) -> None:
    register_plugin(
        fake_plugin(storage=[ObjectStoreBackend("typo", "collections:OrderedDikt")]),
        name="typo-plugin",
    )
    with pytest.raises(PluginError) as info:
        registry.backend_class("storage", "typo")
    message = str(info.value)
    assert "'typo-plugin'" in message
    assert "collections:OrderedDikt" in message


# --------------------------------------------------------------------------- plugin mistakes


def test_duplicate_name_names_both_plugins(register_plugin: PluginRegistrar) -> None:
    register_plugin(fake_plugin(storage=[ObjectStoreBackend("dup", "a:A")]), name="first-plugin")
    register_plugin(fake_plugin(storage=[ObjectStoreBackend("dup", "b:B")]), name="second-plugin")
    with pytest.raises(PluginError) as info:
        registry.backends("storage")
    message = str(info.value)
    assert "'dup'" in message
    assert "'first-plugin'" in message and "'second-plugin'" in message
    assert "FAASML_DISABLED_PLUGINS" in message


def test_duplicate_of_a_builtin_name(register_plugin: PluginRegistrar) -> None:
    register_plugin(fake_plugin(storage=[ObjectStoreBackend("memory", "a:A")]), name="shadow")
    with pytest.raises(PluginError, match=r"'faasml.storage'.*'shadow'|'shadow'.*'faasml.storage'"):
        registry.backend_record("storage", "memory")


def test_duplicate_within_one_plugin(register_plugin: PluginRegistrar) -> None:
    register_plugin(
        fake_plugin(pubsub=[PubSubBackend("twice", "a:A"), PubSubBackend("twice", "b:B")]),
        name="stutter",
    )
    with pytest.raises(PluginError, match="'twice' is registered twice"):
        registry.backends("pubsub")


def test_same_name_in_different_kinds_is_fine(register_plugin: PluginRegistrar) -> None:
    register_plugin(
        fake_plugin(
            function=[FunctionBackend("acme", "a:F")],
            storage=[ObjectStoreBackend("acme", "a:S")],
            pubsub=[PubSubBackend("acme", "a:P")],
        ),
        name="acme",
    )
    assert registry.backend_record("function", "acme").cls == "a:F"
    assert registry.backend_record("storage", "acme").cls == "a:S"
    assert registry.backend_record("pubsub", "acme").cls == "a:P"


def test_record_of_the_wrong_kind(register_plugin: PluginRegistrar) -> None:
    register_plugin(fake_plugin(storage=[PubSubBackend("mq", "a:A")]), name="confused")
    with pytest.raises(PluginError) as info:
        registry.backends("storage")
    message = str(info.value)
    assert "'confused'" in message
    assert "faasml_object_store_backends" in message
    assert "expected ObjectStoreBackend records" in message


def test_not_a_record(register_plugin: PluginRegistrar) -> None:
    register_plugin(fake_plugin(function=["faasml_thing:Cls"]), name="strings")
    with pytest.raises(PluginError, match="'strings'"):
        registry.backends("function")


def test_bare_base_record_is_rejected(register_plugin: PluginRegistrar) -> None:
    register_plugin(fake_plugin(function=[BackendRecord("bare", "a:A")]), name="base-record")
    with pytest.raises(PluginError, match="'base-record'"):
        registry.backends("function")


def test_hook_returning_none_registers_nothing(register_plugin: PluginRegistrar) -> None:
    before = registry.backends("pubsub")
    plugin = SimpleNamespace(faasml_pubsub_backends=hookimpl(lambda: None))
    register_plugin(plugin, name="empty")
    assert registry.backends("pubsub") == before


def test_hook_that_raises_is_a_plugin_error_naming_the_plugin(
    register_plugin: PluginRegistrar,
) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("bad credentials file")

    register_plugin(SimpleNamespace(faasml_pubsub_backends=hookimpl(broken)), name="raiser")
    with pytest.raises(PluginError, match="'raiser'"):
        registry.backends("pubsub")


def test_plugin_is_gone_after_unregister(faasml_pm: pluggy.PluginManager) -> None:
    plugin = fake_plugin(storage=[ObjectStoreBackend("temp", "a:A")])
    faasml_pm.register(plugin, name="temp")
    registry.clear_cache()
    assert "temp" in registry.backends("storage")
    faasml_pm.unregister(name="temp")
    registry.clear_cache()
    assert "temp" not in registry.backends("storage")


# --------------------------------------------------------------------------- record rules


@pytest.mark.parametrize("name", ["S3", "1st", "my-store", "", "a b", "_x", "caf\u00e9", "x.y"])
@pytest.mark.parametrize("record_type", [FunctionBackend, ObjectStoreBackend, PubSubBackend])
def test_bad_backend_name(record_type: type[BackendRecord], name: str) -> None:
    with pytest.raises(PluginError, match="must match"):
        record_type(name, "m:C")


@pytest.mark.parametrize("name", ["s3", "open_whisk", "a1", "x"])
def test_good_backend_name(name: str) -> None:
    assert ObjectStoreBackend(name, "m:C").name == name


def test_kinds_and_function_defaults() -> None:
    function = FunctionBackend("f", "m:C")
    assert function.kind == "function"
    assert (function.default_storage, function.default_pubsub) == ("file", "local")
    assert ObjectStoreBackend("s", "m:C").kind == "storage"
    assert PubSubBackend("p", "m:C").kind == "pubsub"


def test_kind_cannot_be_passed() -> None:
    with pytest.raises(TypeError):
        ObjectStoreBackend("s", "m:C", kind="pubsub")  # type: ignore[call-arg]


def test_records_are_frozen_and_plugin_does_not_affect_equality() -> None:
    record = PubSubBackend("p", "m:C")
    with pytest.raises(AttributeError):
        record.name = "q"  # type: ignore[misc]
    assert record == PubSubBackend("p", "m:C", plugin="someone")


@pytest.mark.parametrize(
    ("record", "installed", "hint"),
    [
        (ObjectStoreBackend("a", "m:C"), True, ""),
        (ObjectStoreBackend("a", "m:C", requires=("json", "email.mime")), True, None),
        (ObjectStoreBackend("a", "m:C", extra="aws", requires=("json",)), True, None),
        (ObjectStoreBackend("a", "m:C", extra="aws", requires=(MISSING,)), False, None),
        (ObjectStoreBackend("a", "m:C", requires=(MISSING, "json")), False, None),
        (ObjectStoreBackend("a", "m:C", requires=(f"{MISSING}.sub",)), False, None),
    ],
)
def test_installed(record: BackendRecord, installed: bool, hint: str | None) -> None:
    assert record.installed is installed
    if hint is not None:
        assert record.install_hint == hint


def test_install_hint_uses_the_extra() -> None:
    record = FunctionBackend("aws", "m:C", extra="aws", requires=("boto3",))
    assert record.install_hint == 'pip install "faasml[aws]"'


def test_install_hint_without_extra_names_the_requirements() -> None:
    record = PubSubBackend("mq", "m:C", requires=("mq_client", "mq_codec"))
    assert record.install_hint == "pip install mq_client mq_codec"


def test_installed_does_not_import(module_dir: Path) -> None:
    (module_dir / "faasml_test_heavy_sdk.py").write_text(
        "raise RuntimeError('imported!')\n", encoding="utf-8"
    )
    record = ObjectStoreBackend("heavy", "m:C", requires=("faasml_test_heavy_sdk",))
    assert record.installed is True
    assert "faasml_test_heavy_sdk" not in sys.modules

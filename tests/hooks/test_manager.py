"""The plugin manager: entry points, allow/block lists, broken-plugin isolation, strict mode.

Entry points are simulated by replacing ``importlib.metadata.entry_points`` with a function that
returns real :class:`importlib.metadata.EntryPoint` objects pointing at throw-away modules, so
``ep.load()`` really imports (and really fails for the broken one).

The second half tests ``faasml.testing.pytest_plugin`` (fixtures and the ``live`` marker) by
running small test files with ``pytester``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pluggy
import pytest

from faasml import hookimpl, registry
from faasml.errors import PluginError, UnknownBackendError
from faasml.hooks import PubSubBackend
from faasml.hooks.manager import (
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    get_plugin_manager,
    reset_plugin_manager,
)
from faasml.testing.pytest_plugin import PluginRegistrar

pytest_plugins = ["pytester"]

GOOD_MODULE = "faasml_test_ep_good"
BROKEN_MODULE = "faasml_test_ep_broken"

GOOD_SOURCE = """
from faasml import hookimpl
from faasml.hooks import ObjectStoreBackend


@hookimpl
def faasml_object_store_backends():
    return [ObjectStoreBackend("goodstore", "collections:OrderedDict", description="from an EP")]
"""

BROKEN_SOURCE = "raise RuntimeError('boom: this SDK needs a config file')\n"

#: plugins whose hookimpls pluggy itself rejects (rather than failing to import)
INVALID_SOURCES = {
    "unknown_hook": """
from faasml import hookimpl


@hookimpl
def faasml_function_backend():  # typo: the hook is faasml_function_backends
    return []
""",
    "bad_signature": """
from faasml import hookimpl


@hookimpl
def faasml_pubsub_backends(config):  # the hookspec takes no argument
    return []
""",
}


@pytest.fixture(autouse=True)
def clean_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``FAASML_*`` variable from outside, and a manager built afresh before and after."""
    for name in list(os.environ):
        if name.startswith("FAASML_"):
            monkeypatch.delenv(name)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` holding the plugin modules; they are forgotten afterwards."""
    (tmp_path / f"{GOOD_MODULE}.py").write_text(GOOD_SOURCE, encoding="utf-8")
    (tmp_path / f"{BROKEN_MODULE}.py").write_text(BROKEN_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


class FakeEntryPoints:
    """Stands in for ``importlib.metadata.entry_points`` and records that it was asked."""

    def __init__(self) -> None:
        self.points: list[importlib.metadata.EntryPoint] = []
        self.calls = 0

    def add(self, name: str, module: str) -> None:
        self.points.append(
            importlib.metadata.EntryPoint(name=name, value=module, group=ENTRY_POINT_GROUP)
        )

    def __call__(self, *, group: str) -> list[importlib.metadata.EntryPoint]:
        self.calls += 1
        return [ep for ep in self.points if ep.group == group]


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch, module_dir: Path) -> FakeEntryPoints:
    """Two installed plugins: ``good`` (registers storage ``goodstore``) and ``broken``."""
    fake = FakeEntryPoints()
    fake.add("good", GOOD_MODULE)
    fake.add("broken", BROKEN_MODULE)
    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    return fake


def plugin_names(pm: pluggy.PluginManager) -> set[str]:
    return {name for name, plugin in pm.list_name_plugin() if plugin is not None}


# --------------------------------------------------------------------------- building


def test_builtins_are_registered_under_their_module_names() -> None:
    pm = get_plugin_manager()
    assert set(DEFAULT_PLUGINS) <= plugin_names(pm)
    assert list(DEFAULT_PLUGINS) == sorted(DEFAULT_PLUGINS)


def test_manager_is_cached_until_reset() -> None:
    pm = get_plugin_manager()
    assert get_plugin_manager() is pm
    reset_plugin_manager()
    assert get_plugin_manager() is not pm


def test_reset_also_rebuilds_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "local" in registry.backends("pubsub")
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", "faasml.pubsub")
    assert "local" in registry.backends("pubsub")  # cached: the env is read when building
    reset_plugin_manager()
    assert "local" not in registry.backends("pubsub")


# --------------------------------------------------------------------------- entry points


def test_entry_point_plugin_is_registered_under_its_entry_point_name(
    entry_points: FakeEntryPoints,
) -> None:
    with pytest.warns(RuntimeWarning):
        pm = get_plugin_manager()
    assert "good" in plugin_names(pm)
    record = registry.backend_record("storage", "goodstore")
    assert record.plugin == "good"
    assert record.description == "from an EP"


def test_broken_plugin_is_skipped_with_a_warning_naming_it(
    entry_points: FakeEntryPoints,
) -> None:
    with pytest.warns(RuntimeWarning) as record:
        pm = get_plugin_manager()
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "'broken'" in messages[0]
    assert BROKEN_MODULE in messages[0]
    assert "boom: this SDK needs a config file" in messages[0]
    assert messages[0].endswith("; skipped")
    # the rest of the installation still works
    assert "broken" not in plugin_names(pm)
    assert "good" in plugin_names(pm)
    assert set(DEFAULT_PLUGINS) <= plugin_names(pm)


def test_strict_mode_raises_plugin_error(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    assert "'broken'" in str(info.value)
    assert "FAASML_STRICT_PLUGINS" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_strict_mode_is_fine_without_broken_plugins(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_STRICT_PLUGINS", "true")
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", "broken")
    assert "good" in plugin_names(get_plugin_manager())


def test_allow_list_loads_only_the_named_plugins(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_PLUGINS", "good")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the broken plugin must not even be imported
        pm = get_plugin_manager()
    assert "good" in plugin_names(pm)
    assert "broken" not in plugin_names(pm)
    assert set(DEFAULT_PLUGINS) <= plugin_names(pm), "the allow-list is for third parties only"


def test_allow_list_without_the_good_plugin(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_PLUGINS", " broken , nonexistent ")
    with pytest.warns(RuntimeWarning, match="'broken'"):
        pm = get_plugin_manager()
    assert "good" not in plugin_names(pm)
    with pytest.raises(UnknownBackendError):
        registry.backend_record("storage", "goodstore")


def test_block_list_skips_third_party_plugins(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", "broken")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pm = get_plugin_manager()
    assert "good" in plugin_names(pm)
    assert pm.is_blocked("broken")
    assert BROKEN_MODULE not in sys.modules


def test_block_list_beats_allow_list(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_PLUGINS", "good,broken")
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", "good,broken")
    pm = get_plugin_manager()
    assert not {"good", "broken"} & plugin_names(pm)


def test_block_list_removes_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", "faasml.pubsub")
    pm = get_plugin_manager()
    assert "faasml.pubsub" not in plugin_names(pm)
    assert pm.is_blocked("faasml.pubsub")
    assert registry.backends("pubsub") == {}
    with pytest.raises(UnknownBackendError, match="none registered"):
        registry.backend_record("pubsub", "local")
    assert "local" in registry.backends("function")  # other built-ins are untouched


def test_block_list_parses_spaces_and_empty_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", " faasml.storage ,, faasml.pubsub ,")
    names = plugin_names(get_plugin_manager())
    assert "faasml.storage" not in names and "faasml.pubsub" not in names
    assert "faasml.providers.local" in names


def test_autoload_off_does_not_look_at_entry_points(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = get_plugin_manager()
    assert entry_points.calls == 0
    assert plugin_names(pm) == set(DEFAULT_PLUGINS)


@pytest.mark.parametrize("value", ["0", "false", "no", "", "off"])
def test_autoload_flag_false_values(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FAASML_DISABLE_PLUGIN_AUTOLOAD", value)
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", "broken")
    get_plugin_manager()
    assert entry_points.calls == 1


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_autoload_flag_true_values(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FAASML_DISABLE_PLUGIN_AUTOLOAD", value)
    get_plugin_manager()
    assert entry_points.calls == 0


def test_an_entry_point_name_is_loaded_once(
    entry_points: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same distribution visible twice on sys.path yields the entry point twice.
    entry_points.add("good", GOOD_MODULE)
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", "broken")
    pm = get_plugin_manager()
    assert [name for name in plugin_names(pm) if name == "good"] == ["good"]
    assert registry.backend_record("storage", "goodstore").plugin == "good"


@pytest.mark.parametrize("flaw", sorted(INVALID_SOURCES))
def test_invalid_hookimpl_is_isolated_like_an_import_failure(
    entry_points: FakeEntryPoints, module_dir: Path, monkeypatch: pytest.MonkeyPatch, flaw: str
) -> None:
    module = f"faasml_test_ep_{flaw}"
    (module_dir / f"{module}.py").write_text(INVALID_SOURCES[flaw], encoding="utf-8")
    entry_points.add("flawed", module)
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", "broken")
    with pytest.warns(RuntimeWarning, match="'flawed'"):
        pm = get_plugin_manager()
    assert "flawed" not in plugin_names(pm)
    assert "good" in plugin_names(pm)


# --------------------------------------------------------------------------- tracing


def test_tracing_logs_hook_calls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FAASML_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, logger="faasml.plugins"):
        get_plugin_manager().hook.faasml_pubsub_backends()
    assert "faasml_pubsub_backends" in caplog.text


def test_tracing_logs_registry_builds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FAASML_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, logger="faasml.plugins"):
        registry.backends("pubsub")
    assert "faasml_pubsub_backends" in caplog.text


def test_no_tracing_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="faasml.plugins"):
        get_plugin_manager().hook.faasml_pubsub_backends()
    assert "faasml_pubsub_backends" not in caplog.text


# --------------------------------------------------------------------------- pytest plugin


def test_faasml_pm_is_fresh_and_has_autoload_off(
    entry_points: FakeEntryPoints, faasml_pm: pluggy.PluginManager
) -> None:
    assert faasml_pm is get_plugin_manager()
    assert plugin_names(faasml_pm) == set(DEFAULT_PLUGINS)
    assert entry_points.calls == 0


def test_register_plugin_makes_the_backend_visible_at_once(
    register_plugin: PluginRegistrar,
) -> None:
    assert "mq" not in registry.backends("pubsub")  # fills the cache before registering
    plugin = SimpleNamespace(faasml_pubsub_backends=hookimpl(lambda: [PubSubBackend("mq", "a:B")]))
    assert register_plugin(plugin, name="mq-plugin") == "mq-plugin"
    assert registry.backend_record("pubsub", "mq").plugin == "mq-plugin"


PLUGIN_USER_TESTS = """
from types import SimpleNamespace

import pytest

from faasml import hookimpl, registry
from faasml.hooks import ObjectStoreBackend

PLUGIN = SimpleNamespace(
    faasml_object_store_backends=hookimpl(lambda: [ObjectStoreBackend("tmpstore", "a:B")])
)


def test_registers_then_fails(register_plugin):
    assert register_plugin(PLUGIN) == str(id(PLUGIN))
    assert "tmpstore" in registry.backends("storage")
    raise AssertionError("the test fails after registering")


def test_next_test_does_not_see_it():
    assert "tmpstore" not in registry.backends("storage")


def test_twice_is_an_error(register_plugin):
    register_plugin(PLUGIN, name="once")
    with pytest.raises(ValueError):
        register_plugin(PLUGIN, name="twice")


def test_after_that_it_is_gone_too(faasml_pm):
    assert "once" not in dict(faasml_pm.list_name_plugin())
"""


def test_register_plugin_always_unregisters(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=PLUGIN_USER_TESTS)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED test_user.py::test_registers_then_fails - AssertionError*"]
    )


def test_register_plugin_refuses_a_blocked_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_blocked="""
import types
import pytest


def test_blocked(register_plugin, faasml_pm):
    faasml_pm.set_blocked("nope")
    with pytest.raises(ValueError, match="blocked"):
        register_plugin(types.SimpleNamespace(), name="nope")
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


LIVE_TESTS = """
import pytest


@pytest.mark.live
def test_talks_to_the_cloud():
    pass


def test_offline():
    pass
"""


def test_live_tests_are_skipped_by_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_live=LIVE_TESTS)
    result = pytester.runpytest("--strict-markers", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*live test: needs --faasml-live*"])


def test_live_tests_run_with_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_live=LIVE_TESTS)
    result = pytester.runpytest("--strict-markers", "--faasml-live", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_live_marker_and_option_are_documented(pytester: pytest.Pytester) -> None:
    pytester.runpytest("--markers").stdout.fnmatch_lines(["@pytest.mark.live: *--faasml-live*"])
    pytester.runpytest("--help").stdout.fnmatch_lines(["*--faasml-live*"])

"""pytest plugin for faasml and for authors of faasml plugins (loaded through ``pytest11``).

It gives every test session, without any ``conftest.py``:

* the ``faasml_pm`` fixture: a freshly built plugin manager with third-party autoload off, so a
  test sees the built-in backends plus exactly what it registers;
* the ``register_plugin`` fixture: registers a plugin object (a module or any object carrying
  ``@faasml.hookimpl`` functions) and always unregisters it at teardown;
* the ``live`` marker: tests that talk to a real cloud are skipped unless pytest runs with
  ``--faasml-live``.

Example::

    from faasml import registry

    def test_my_backend_is_registered(register_plugin):
        import my_pkg.plugin

        register_plugin(my_pkg.plugin, name="my-plugin")
        assert registry.backends("function")["myfaas"].plugin == "my-plugin"

    @pytest.mark.live
    def test_against_the_real_service(): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import pytest

# faasml itself is imported inside the fixtures, never here: pytest loads this module in every
# session of every project installed next to faasml, before coverage starts measuring, so an
# import at module level would cost every session and hide faasml's import-time lines from
# coverage.
if TYPE_CHECKING:
    import pluggy

__all__ = ["PluginRegistrar", "faasml_pm", "register_plugin"]

LIVE_OPTION = "--faasml-live"


class PluginRegistrar(Protocol):
    """Type of the ``register_plugin`` fixture's value."""

    def __call__(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` on the faasml plugin manager and return the name it got.

        :param plugin: a module or object whose functions are marked ``@faasml.hookimpl``.
        :param name: the plugin name shown in ``faasml providers`` and in errors; defaults to
            pluggy's canonical name (the module name for a module).
        :raises ValueError: the plugin (or the name) is already registered.
        """


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--faasml-live``, which runs the tests marked ``live``."""
    group = parser.getgroup("faasml")
    group.addoption(
        LIVE_OPTION,
        action="store_true",
        default=False,
        help="run tests marked 'live' (they use real cloud accounts and may cost money)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``live`` marker so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers", f"live: talks to a real cloud service; skipped unless {LIVE_OPTION} is given"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``live`` tests unless ``--faasml-live`` was given."""
    if config.getoption(LIVE_OPTION):
        return
    skip_live = pytest.mark.skip(reason=f"live test: needs {LIVE_OPTION}")
    for item in items:
        if item.get_closest_marker("live") is not None:
            item.add_marker(skip_live)


@pytest.fixture
def faasml_pm(monkeypatch: pytest.MonkeyPatch) -> Iterator[pluggy.PluginManager]:
    """Build the plugin manager afresh for this test, with third-party autoload off.

    The built-in backends are registered; installed third-party plugins are not, so a plugin's
    own tests register it explicitly (see ``register_plugin``) and are not affected by whatever
    else is installed. The process-wide manager is reset before and after the test.
    """
    from faasml.hooks.manager import get_plugin_manager, reset_plugin_manager

    monkeypatch.setenv("FAASML_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    try:
        yield get_plugin_manager()
    finally:
        reset_plugin_manager()


@pytest.fixture
def register_plugin(faasml_pm: pluggy.PluginManager) -> Iterator[PluginRegistrar]:
    """Return a function that registers a plugin for the duration of the test.

    Registration clears the backend tables, so the next registry lookup sees the plugin; at
    teardown every plugin registered this way is unregistered and the manager reset, even when
    the test failed.
    """
    from faasml.hooks.manager import reset_plugin_manager
    from faasml.registry import clear_cache

    registered: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        got = faasml_pm.register(plugin, name=name)
        if got is None:
            raise ValueError(f"plugin {name or plugin!r} is blocked (FAASML_DISABLED_PLUGINS)")
        registered.append(got)
        clear_cache()
        return got

    try:
        yield register
    finally:
        for name in reversed(registered):
            if faasml_pm.get_plugin(name) is not None:
                faasml_pm.unregister(name=name)
        reset_plugin_manager()

"""Name -> backend tables built from the plugins' hook records, with lazy class import."""

from __future__ import annotations

import functools
import importlib
import logging
import os
from typing import Any

from faasml.errors import MissingDependencyError, PluginError, UnknownBackendError
from faasml.hooks.types import (
    BackendKind,
    BackendRecord,
    FunctionBackend,
    ObjectStoreBackend,
    PubSubBackend,
)

__all__ = ["backend_class", "backend_record", "backends", "clear_cache"]

_HOOKS: dict[BackendKind, str] = {
    "function": "faasml_function_backends",
    "storage": "faasml_object_store_backends",
    "pubsub": "faasml_pubsub_backends",
}
_RECORD_TYPES: dict[BackendKind, type[BackendRecord]] = {
    "function": FunctionBackend,
    "storage": ObjectStoreBackend,
    "pubsub": PubSubBackend,
}
log = logging.getLogger("faasml.plugins")
_KIND_WORD: dict[BackendKind, str] = {
    "function": "provider",
    "storage": "storage",
    "pubsub": "pubsub",
}


def backends(kind: BackendKind) -> dict[str, BackendRecord]:
    """Return every registered backend of ``kind`` by name, sorted (a copy: safe to modify).

    :raises PluginError: two plugins register the same name, a record has the wrong type, or a
        plugin's hook raised.
    """
    return dict(_backends(kind))


@functools.cache
def _backends(kind: BackendKind) -> dict[str, BackendRecord]:
    from faasml.hooks.manager import get_plugin_manager

    pm = get_plugin_manager()
    table: dict[str, BackendRecord] = {}
    hook = getattr(pm.hook, _HOOKS[kind])
    tracing = os.environ.get("FAASML_TRACE_PLUGINS", "").strip().lower() in ("1", "true", "yes")
    # Each implementation is called on its own (not through pm.hook) so every record can be
    # attributed to its plugin and one broken plugin is named instead of breaking the rest.
    for impl in hook.get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
        try:
            records = impl.function() or []
        except Exception as exc:
            raise PluginError(
                f"plugin {plugin_name!r} failed in {_HOOKS[kind]}: {type(exc).__name__}: {exc}; "
                "block it with FAASML_DISABLED_PLUGINS"
            ) from exc
        if tracing:
            log.debug("%s() of plugin %r returned %r", _HOOKS[kind], plugin_name, records)
        for record in records:
            if not isinstance(record, _RECORD_TYPES[kind]):
                raise PluginError(
                    f"plugin {plugin_name!r}: {_HOOKS[kind]} returned {record!r}, "
                    f"expected {_RECORD_TYPES[kind].__name__} records"
                )
            if record.name in table:
                raise PluginError(
                    f"{_KIND_WORD[kind]} name {record.name!r} is registered twice: by "
                    f"{table[record.name].plugin!r} and by {plugin_name!r}; block one with "
                    "FAASML_DISABLED_PLUGINS"
                )
            object.__setattr__(record, "plugin", plugin_name)
            table[record.name] = record
    return dict(sorted(table.items()))


def backend_record(kind: BackendKind, name: str) -> BackendRecord:
    """Return the record of backend ``name``.

    :raises UnknownBackendError: listing the available names and what to install.
    """
    table = backends(kind)
    try:
        return table[name]
    except KeyError:
        choices = ", ".join(
            f"{n}" + ("" if r.installed else f" (needs {r.install_hint})") for n, r in table.items()
        )
        raise UnknownBackendError(
            f"unknown {_KIND_WORD[kind]} {name!r}; choose one of: {choices or 'none registered'}"
        ) from None


def backend_class(kind: BackendKind, name: str) -> type[Any]:
    """Import and return the class of backend ``name``.

    :raises UnknownBackendError: no such backend.
    :raises MissingDependencyError: its extra is not installed; the message has the pip command.
    """
    record = backend_record(kind, name)
    if not isinstance(record.cls, str):
        return record.cls
    module_name, _, attr = record.cls.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        hint = record.install_hint or f"pip install {missing}"
        raise MissingDependencyError(
            f"{_KIND_WORD[kind]} {name!r} needs {missing}, which is not installed: {hint}"
        ) from exc
    try:
        cls: type[Any] = getattr(module, attr)
    except AttributeError as exc:
        raise PluginError(
            f"plugin {record.plugin!r} registered {record.cls!r}, but {module_name} has no {attr}"
        ) from exc
    return cls


def clear_cache() -> None:
    """Forget the tables (after the plugin manager was reset)."""
    _backends.cache_clear()

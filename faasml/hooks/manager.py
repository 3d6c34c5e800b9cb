"""The one plugin manager: built-ins, then entry points, with allow/block lists and isolation.

Environment variables:

* ``FAASML_DISABLE_PLUGIN_AUTOLOAD=1``: do not load third-party entry points.
* ``FAASML_PLUGINS=a,b``: load only these third-party plugins (entry-point names).
* ``FAASML_DISABLED_PLUGINS=a,b``: never load these (built-ins or third-party).
* ``FAASML_STRICT_PLUGINS=1``: a plugin that fails to import raises instead of warning.
* ``FAASML_TRACE_PLUGINS=1``: log every hook call.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import warnings
from typing import Any

import pluggy

from faasml.errors import PluginError
from faasml.hooks import specs

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "get_plugin_manager", "reset_plugin_manager"]

log = logging.getLogger("faasml.plugins")

ENTRY_POINT_GROUP = "faasml"

#: built-in plugin modules; they register through the same hooks third parties use.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "faasml.providers.aliyun",
    "faasml.providers.aws",
    "faasml.providers.huawei",
    "faasml.providers.local",
    "faasml.providers.openfaas",
    "faasml.providers.openfunction",
    "faasml.providers.openwhisk",
    "faasml.pubsub",
    "faasml.storage",
)
assert list(DEFAULT_PLUGINS) == sorted(DEFAULT_PLUGINS), "keep DEFAULT_PLUGINS sorted"


def _env_list(name: str) -> set[str]:
    return {item.strip() for item in os.environ.get(name, "").split(",") if item.strip()}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, building it on first use."""
    pm = pluggy.PluginManager("faasml")
    pm.add_hookspecs(specs)
    blocked = _env_list("FAASML_DISABLED_PLUGINS")
    for name in blocked:
        pm.set_blocked(name)
    for modname in DEFAULT_PLUGINS:
        if modname not in blocked:
            pm.register(importlib.import_module(modname), name=modname)
    pm.check_pending()  # the built-ins must be right; third parties are checked one by one
    if not _env_flag("FAASML_DISABLE_PLUGIN_AUTOLOAD"):
        _load_entry_points(pm, allowed=_env_list("FAASML_PLUGINS"), blocked=blocked)
    if _env_flag("FAASML_TRACE_PLUGINS"):
        pm.trace.root.setwriter(log.debug)
        pm.enable_tracing()
    return pm


def _load_entry_points(pm: pluggy.PluginManager, *, allowed: set[str], blocked: set[str]) -> None:
    strict = _env_flag("FAASML_STRICT_PLUGINS")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in blocked or (allowed and ep.name not in allowed):
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin: Any = ep.load()
        except Exception as exc:
            # One broken SDK must not take every other provider down with it.
            _skip(f"faasml plugin {ep.name!r} ({ep.value}) failed to import: {exc!r}", exc, strict)
            continue
        try:
            pm.register(plugin, name=ep.name)
            _check_hooks(pm, plugin, ep.name)
        except (pluggy.PluginValidationError, PluginError) as exc:
            if pm.is_registered(plugin):
                pm.unregister(plugin)
            _skip(f"faasml plugin {ep.name!r} ({ep.value}) is invalid: {exc}", exc, strict)


def _skip(message: str, exc: Exception, strict: bool) -> None:
    if strict:
        raise PluginError(message + " (FAASML_STRICT_PLUGINS is set)") from exc
    warnings.warn(message + "; skipped", RuntimeWarning, stacklevel=4)


def _check_hooks(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Refuse a plugin implementing a hook faasml does not define (a misspelt hook name)."""
    for caller in pm.get_hookcallers(plugin) or []:
        if not caller.has_spec():
            known = sorted(n for n in dir(specs) if n.startswith("faasml_"))
            raise PluginError(
                f"plugin {name!r} implements unknown hook {caller.name!r}; faasml hooks are {known}"
            )


def reset_plugin_manager() -> None:
    """Forget the cached manager and registry (tests, or after installing a plugin)."""
    get_plugin_manager.cache_clear()
    from faasml import registry

    registry.clear_cache()

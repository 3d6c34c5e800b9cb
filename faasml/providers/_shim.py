"""What every cloud provider's handler shim shares: the handler to call and the JSON envelope.

A platform calls its own entry point (``lambda_handler(event, context)``, OpenWhisk's
``main(args)``, ...). Each provider's ``handler.py`` turns that call into the one faasml
signature, ``handler(payload: bytes) -> bytes``, with the helpers here:

* :func:`target` imports the bytes handler named by ``$FAASML_HANDLER`` (default
  :func:`faasml.runtime.handle`, what the executor needs; the conformance suite deploys
  ``faasml.testing.handlers:dispatch``). The import happens once per warm container.
* Platforms whose events are JSON carry the payload as ``{"faasml": "<base64>"}`` both ways
  (:func:`wrap`, :func:`unwrap`): faasml payloads are binary and signed, and base64 keeps every
  byte intact through any JSON parser.
* :func:`error_report` is the JSON-safe description of a handler exception that shims return
  where the platform has no native error channel, and that backends turn back into
  :class:`~faasml.errors.FunctionError` with :func:`remote_error`.

This module runs inside the function: it imports nothing beyond the standard library and
faasml's own error types.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import os
import re
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from faasml.errors import FunctionError

__all__ = [
    "DEFAULT_HANDLER",
    "ENVELOPE_KEY",
    "HANDLER_ENV",
    "error_report",
    "largest_payload",
    "remote_error",
    "target",
    "unwrap",
    "wrap",
    "wrapped_size",
]

#: environment variable naming the ``module:function`` bytes handler a shim calls.
HANDLER_ENV = "FAASML_HANDLER"
DEFAULT_HANDLER = "faasml.runtime:handle"
#: the JSON key that carries a base64 payload or result.
ENVELOPE_KEY = "faasml"

_HANDLER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_targets: dict[str, Callable[[bytes], bytes]] = {}


def target(name: str | None = None) -> Callable[[bytes], bytes]:
    """Return the bytes handler ``name`` (default: ``$FAASML_HANDLER``, else the runtime).

    :raises ValueError: the name is not a ``module:function`` path.
    :raises ImportError: the module cannot be imported (a package missing from the deployment).
    """
    name = name or os.environ.get(HANDLER_ENV) or DEFAULT_HANDLER
    handler = _targets.get(name)
    if handler is None:
        if not _HANDLER_RE.match(name):
            raise ValueError(f"{HANDLER_ENV} must be a 'module:function' path, got {name!r}")
        module, _, attr = name.partition(":")
        handler = getattr(importlib.import_module(module), attr)
        _targets[name] = handler
    return handler


def wrap(data: bytes) -> dict[str, str]:
    """``data`` as the JSON envelope ``{"faasml": "<base64>"}``."""
    return {ENVELOPE_KEY: base64.b64encode(data).decode("ascii")}


def wrapped_size(size: int) -> int:
    """Bytes of the JSON text of :func:`wrap` applied to ``size`` bytes."""
    return len(f'{{"{ENVELOPE_KEY}": ""}}') + 4 * ((size + 2) // 3)


def largest_payload(limit: int) -> int:
    """The largest raw payload whose envelope (:func:`wrapped_size`) is at most ``limit`` bytes."""
    size = max(0, (limit - wrapped_size(0)) // 4 * 3)
    while wrapped_size(size + 1) <= limit:
        size += 1
    while size > 0 and wrapped_size(size) > limit:
        size -= 1
    return size


def unwrap(document: Any, what: str = "event") -> bytes:
    """The bytes inside an envelope made by :func:`wrap`.

    :raises ValueError: ``document`` is not such an envelope (it names what it found instead).
    """
    if not isinstance(document, Mapping) or not isinstance(document.get(ENVELOPE_KEY), str):
        shown = sorted(document) if isinstance(document, Mapping) else type(document).__name__
        raise ValueError(
            f"the {what} is not a faasml envelope: expected a JSON object with a base64 "
            f"{ENVELOPE_KEY!r} string, got {shown!r}"
        )
    try:
        return base64.b64decode(document[ENVELOPE_KEY], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the {what}'s {ENVELOPE_KEY!r} field is not base64: {exc}") from None


def error_report(exc: BaseException) -> dict[str, str]:
    """``{"type", "message", "traceback"}`` of ``exc``: what shims return when a handler raises."""
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def remote_error(report: Mapping[str, Any], platform: str) -> FunctionError:
    """The :class:`FunctionError` for an :func:`error_report` (or a platform's error object).

    Accepts the platform spellings of the same fields too (Lambda's ``errorType``,
    ``errorMessage`` and ``stackTrace`` list).
    """
    remote_type = report.get("type") or report.get("errorType") or "Exception"
    message = report.get("message") or report.get("errorMessage") or ""
    tb = report.get("traceback")
    if tb is None and isinstance(report.get("stackTrace"), list):
        tb = "".join(str(line) for line in report["stackTrace"])
    text = f"{remote_type}: {message}" if message else str(remote_type)
    return FunctionError(
        f"the {platform} function raised {text}",
        remote_type=str(remote_type),
        remote_traceback=str(tb) if tb is not None else None,
    )

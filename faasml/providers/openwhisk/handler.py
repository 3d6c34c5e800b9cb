"""The entry point that runs on OpenWhisk: ``main(args) -> dict`` around faasml's bytes handler.

``faasml deploy --provider openwhisk`` uploads a zip whose ``__main__.py`` imports :func:`main`
from here (OpenWhisk's Python runtime loads ``__main__.py`` from a zip action and calls the
function named by ``exec.main``). The payload arrives as the JSON parameters
``{"faasml": "<base64>"}`` and the result leaves the same way.

A handler exception becomes ``{"error": {"type", "message", "traceback"}}``: OpenWhisk treats a
result with an ``error`` field as an *application error* and answers the blocking invoke with
HTTP 502 and that result, which the client turns back into
:class:`~faasml.errors.FunctionError`.

The function's environment (``FAASML_SECRET``, ``FAASML_HANDLER`` ...) is deployed as *init*
parameters, which the runtime exports as environment variables before this module is imported,
so nothing here reads secrets from ``args``.

Only the standard library and faasml itself are imported: this runs in the platform's runtime.
"""

from __future__ import annotations

from typing import Any

from faasml.providers._shim import error_report, target, unwrap, wrap

__all__ = ["main"]


def main(args: dict[str, Any]) -> dict[str, Any]:
    """Run the faasml bytes handler on the payload in ``args`` and return the result envelope.

    :param args: the activation's parameters: ``{"faasml": "<base64 payload>"}`` (OpenWhisk may
        add default parameters; they are ignored).
    :returns: ``{"faasml": "<base64 result>"}``, or ``{"error": {...}}`` when the handler raised.
    """
    try:
        payload = unwrap(args, "action parameters")
        result = target()(payload)
        if isinstance(result, (bytearray, memoryview)):
            result = bytes(result)
        if not isinstance(result, bytes):
            raise TypeError(f"the faasml handler returned {type(result).__name__}, expected bytes")
        return wrap(result)
    except (Exception, SystemExit) as exc:  # SystemExit too: the runtime must answer, not die
        return {"error": error_report(exc)}

"""The FunctionGraph entry point: ``index.handler`` in the deployed zip re-exports :func:`handler`.

FunctionGraph calls ``handler(event, context)`` with the JSON request body already parsed into
``event`` and serializes what the handler returns into the invocation's ``result``. faasml
payloads are binary, so both directions travel in the base64 envelope of
:mod:`faasml.providers._shim`.

Exceptions are not caught: the Python runtime reports them itself (``errorMessage``,
``errorType``, ``stackTrace`` in the result, error code in ``X-Func-Err-Code``), which is what
:class:`~faasml.providers.huawei.function.FunctionGraphFunction` reads back. This module runs on
the platform and imports only the standard library and faasml.
"""

from __future__ import annotations

from typing import Any

from faasml.providers._shim import target, unwrap, wrap

__all__ = ["handler"]


def handler(event: Any, context: Any = None) -> dict[str, str]:
    """Run the bytes handler named by ``$FAASML_HANDLER`` on the payload inside ``event``.

    :param event: the invocation body, ``{"faasml": "<base64 payload>"}``.
    :param context: FunctionGraph's context object (unused: faasml reads its settings from the
        function's environment variables).
    :returns: ``{"faasml": "<base64 result>"}``.
    :raises ValueError: ``event`` is not a faasml envelope.
    """
    return wrap(target()(unwrap(event)))

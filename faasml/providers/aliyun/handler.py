"""The entry point Function Compute calls: ``handler(event, context)`` -> faasml's bytes handler.

FC's Python event runtime hands the invocation body to the handler as raw ``bytes`` and sends the
returned ``bytes`` back as the response body, so faasml payloads need no envelope here. A handler
exception is left to propagate: FC then answers with ``x-fc-error-type: UnhandledInvocationError``
and a JSON body (``errorMessage``, ``errorType``, ``stackTrace``) that the driver turns back into
:class:`~faasml.errors.FunctionError`.

The deployment zip's ``index.py`` re-exports :func:`handler` (FC handler string
``index.handler``). This module runs inside the function and imports only faasml's shim.
"""

from __future__ import annotations

from typing import Any

from faasml.providers._shim import target

__all__ = ["handler"]


def handler(event: bytes, context: Any) -> bytes:
    """Run the bytes handler named by ``$FAASML_HANDLER`` on the invocation body.

    :param event: the raw invocation body.
    :param context: FC's context object (unused: faasml's runtime carries its own deadline).
    :returns: the handler's result, sent back verbatim as the response body.
    """
    if isinstance(event, str):  # test consoles and some triggers send text
        event = event.encode("utf-8")
    return target()(bytes(event))

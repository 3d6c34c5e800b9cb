"""The OpenFunction entry point: an HTTP function for functions-framework-python.

OpenFunction serves synchronous functions through Knative: the container runs
functions-framework (Flask), which calls ``handler(request)`` for every HTTP request
(``FUNCTION_TARGET=handler``, ``FUNCTION_SIGNATURE_TYPE=http``). The request body is the raw
faasml payload and the response body is the raw result, so no envelope is needed: HTTP carries
any byte.

A handler exception is answered with status 500, the header ``X-Faasml-Error: 1`` and the
:func:`~faasml.providers._shim.error_report` JSON, which the driver turns back into a
:class:`~faasml.errors.FunctionError`. The header tells this report apart from a 500 that Flask
or a proxy produced on its own.

This module runs inside the function: it imports only the standard library and faasml's shim
(no Flask import is needed, functions-framework passes the request in).
"""

from __future__ import annotations

import json
from typing import Any

from faasml.providers import _shim

__all__ = ["ERROR_HEADER", "handler"]

#: response header marking a 500 whose body is a faasml error report.
ERROR_HEADER = "X-Faasml-Error"

_RESULT_HEADERS = {"Content-Type": "application/octet-stream"}
_ERROR_HEADERS = {ERROR_HEADER: "1", "Content-Type": "application/json"}


def handler(request: Any) -> tuple[bytes, int, dict[str, str]]:
    """Run the faasml bytes handler on the request body; Flask turns the tuple into a response.

    :param request: the Flask request functions-framework passes in (only ``get_data()`` is used).
    :returns: ``(result, 200, headers)``, or ``(error report JSON, 500, headers)`` when the
        handler raised (including ``SystemExit``: the container keeps serving).
    :raises werkzeug.exceptions.HTTPException: reading the body failed (``RequestEntityTooLarge``
        for a body over Flask's ``MAX_CONTENT_LENGTH``); it is not a handler error, so it gets
        no error report. The client does not see 413 either: functions-framework's
        ``after_request`` hook reads the body again, raises again, and Flask answers a bare 500
        (no ``X-Faasml-Error``). The driver therefore refuses such payloads before sending.
    """
    # Read outside the try: a body over Flask's MAX_CONTENT_LENGTH must not be reported as a
    # handler failure (a 500 with X-Faasml-Error); it ends as functions-framework's bare 500.
    payload = request.get_data()
    try:
        result = _shim.target()(payload)
        if isinstance(result, (bytearray, memoryview)):
            result = bytes(result)
        if not isinstance(result, bytes):
            raise TypeError(f"the faasml handler returned {type(result).__name__}, expected bytes")
    except BaseException as exc:  # SystemExit too: a platform reports it and the worker lives on
        body = json.dumps(_shim.error_report(exc)).encode()
        return body, 500, dict(_ERROR_HEADERS)
    return result, 200, dict(_RESULT_HEADERS)

"""The faasml entry point inside an OpenFaaS function built from the ``python3-http`` template.

The template's ``index.py`` (run by of-watchdog in ``http`` mode) calls
``function.handler.handle(event, context)`` for every request, where ``event.body`` holds the raw
request bytes, and turns the returned ``{"statusCode", "body", "headers"}`` into the HTTP
response. The gateway carries bytes both ways, so no envelope is needed.

A handler exception becomes a 500 whose JSON body is :func:`faasml.providers._shim.error_report`
and whose ``X-Faasml-Error`` header tells the backend it came from the handler, not from the
watchdog or the gateway, which answer 500 too when the function's process died.

OpenFaaS mounts secrets as files (``/var/openfaas/secrets/<name>``); envVars are readable by
anyone who may list functions, so the signing secret is deployed as a secret and read from its
file here, again on every request so that a rotated secret reaches running replicas. This
module runs on the platform: it imports only the standard library and faasml.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from faasml.providers import _shim

__all__ = ["ERROR_HEADER", "SECRET_NAME", "SECRETS_DIR_ENV", "handle"]

#: header set on responses that carry a handler's error report.
ERROR_HEADER = "X-Faasml-Error"
#: the OpenFaaS secret holding faasml's signing secret.
SECRET_NAME = "faasml-secret"
#: overrides the directory OpenFaaS mounts secrets in (tests, other mount points).
SECRETS_DIR_ENV = "FAASML_OPENFAAS_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/var/openfaas/secrets"
_SECRET_ENV = "FAASML_SECRET"


# The value this module last copied from the mounted file into $FAASML_SECRET; None until then.
_from_file: str | None = None


def _load_secret() -> None:
    """Keep ``$FAASML_SECRET``, where :mod:`faasml.runtime` reads it, equal to the mounted secret.

    Called on every request: OpenFaaS (Kubernetes) updates a mounted secret file in place when
    the secret changes, without replacing the pods, so a replica re-reads the file and follows a
    rotated secret. Reading a few bytes is cheap, and unlike comparing mtime and size it cannot
    miss a same-size rewrite within the filesystem's timestamp granularity. A ``FAASML_SECRET``
    the operator set in the function's environment is left alone.
    """
    global _from_file
    current = os.environ.get(_SECRET_ENV)
    if current and current != _from_file:
        return  # set explicitly, not by us: the operator's value wins
    path = Path(os.environ.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR) / SECRET_NAME
    try:
        # faas-cli and the API store the value as given; a trailing newline from
        # ``faas-cli secret create --from-file`` is not part of the secret.
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        # Never mounted: the runtime refuses every payload with a SignatureError that names
        # FAASML_SECRET, which is the useful message. Gone after it was read: keep that value.
        return
    if value and value != current:
        os.environ[_SECRET_ENV] = value
        _from_file = value


def handle(event: Any, context: Any) -> dict[str, Any]:
    """Run faasml's bytes handler on the request body (``python3-http`` template signature).

    :param event: the template's event; only ``event.body`` (bytes) is used.
    :param context: the template's context (unused).
    :returns: the template's response dict: 200 with the result bytes, or 500 with the error
        report as JSON and the :data:`ERROR_HEADER` header.
    """
    body = event.body
    if isinstance(body, str):  # the template hands bytes; be lenient with other callers
        body = body.encode("utf-8")
    try:
        _load_secret()
        result = _shim.target()(bytes(body or b""))
        if isinstance(result, (bytearray, memoryview)):
            result = bytes(result)
        if not isinstance(result, bytes):
            raise TypeError(f"the faasml handler returned {type(result).__name__}, expected bytes")
    except (Exception, SystemExit) as exc:  # sys.exit() in a task is reported, not fatal
        return {
            "statusCode": 500,
            "body": json.dumps(_shim.error_report(exc)),
            "headers": {"Content-Type": "application/json", ERROR_HEADER: "1"},
        }
    return {
        "statusCode": 200,
        "body": result,
        "headers": {"Content-Type": "application/octet-stream"},
    }

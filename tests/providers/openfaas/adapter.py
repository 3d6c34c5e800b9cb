"""The ``python3-http`` template's side of a request, run inside the emulator's worker processes.

of-watchdog (http mode) forwards the gateway's request to the template's ``index.py``, which
builds an ``Event`` (``body`` bytes, ``headers``, ``method``, ``query``, ``path``) and a
``Context`` (``hostname``), calls ``function/handler.py:handle(event, context)`` and turns the
returned ``{"statusCode", "body", "headers"}`` into the HTTP answer. :func:`run` does the same
with faasml's real shim, so the emulator exercises the code the image runs.
"""

from __future__ import annotations

import json
from typing import Any

from faasml.providers.openfaas import handler


class Event:
    """The template's event object."""

    def __init__(
        self,
        body: bytes,
        headers: dict[str, str],
        method: str,
        query: dict[str, str],
        path: str,
    ) -> None:
        self.body = body
        self.headers = headers
        self.method = method
        self.query = query
        self.path = path


class Context:
    """The template's context object."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname


def run(request: dict[str, Any], context: Any) -> dict[str, Any]:
    """Call the shim like the template's ``index.py`` and return its normalised response."""
    event = Event(
        request["body"], request["headers"], request["method"], request["query"], request["path"]
    )
    result = handler.handle(event, Context(context.hostname))
    body = result.get("body")
    if isinstance(body, str):
        data = body.encode("utf-8")
    elif isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    elif body is None:
        data = b""
    else:  # the template serialises other bodies as JSON
        data = json.dumps(body).encode("utf-8")
    return {
        "statusCode": int(result.get("statusCode", 200)),
        "body": data,
        "headers": dict(result.get("headers") or {}),
    }

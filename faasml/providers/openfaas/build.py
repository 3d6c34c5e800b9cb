"""The Docker build context of an OpenFaaS function image that runs faasml.

OpenFaaS deploys container images only, so ``faasml deploy --provider openfaas`` needs an image
built beforehand. :func:`write_build_context` writes one in the layout of the official
``python3-http`` template (of-watchdog in ``http`` mode in front of a Python HTTP server that
calls ``function/handler.py:handle(event, context)``)::

    Dockerfile          of-watchdog + python:<version>-slim, dependencies, non-root user
    index.py            the upstream HTTP server on 127.0.0.1:5000 (standard library only)
    requirements.txt    faasml's runtime dependencies (numpy, scipy, cloudpickle, ...)
    function/__init__.py
    function/handler.py     re-exports faasml.providers.openfaas.handler.handle
    function/requirements.txt
    faasml/             this faasml package, so the image runs the driver's exact version

``docker build -t <registry>/faasml:<tag> <directory>`` (or ``faas-cli build`` with a stack file
whose ``lang`` is ``dockerfile``) then produces the image to pass as ``image=``.
"""

from __future__ import annotations

from pathlib import Path

from faasml.providers._package import check_python_version, copy_package, runtime_requirements

__all__ = ["INDEX_PY", "WATCHDOG_IMAGE", "write_build_context"]

#: the of-watchdog release the image copies ``fwatchdog`` from.
WATCHDOG_IMAGE = "ghcr.io/openfaas/of-watchdog:0.9.15"

_DOCKERFILE = """\
# Built by faasml: an OpenFaaS function (python3-http layout) running faasml's handler.
FROM --platform=${{TARGETPLATFORM:-linux/amd64}} {watchdog} AS watchdog
FROM --platform=${{TARGETPLATFORM:-linux/amd64}} python:{python}-slim

COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog
RUN chmod +x /usr/bin/fwatchdog \\
    && groupadd --system app && useradd --system --gid app --create-home app

WORKDIR /home/app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY function/requirements.txt function/requirements.txt
RUN pip install --no-cache-dir -r function/requirements.txt
COPY faasml/ faasml/
COPY function/ function/
COPY index.py ./
RUN chown -R app:app /home/app
USER app

ENV fprocess="python index.py"
ENV mode="http"
ENV upstream_url="http://127.0.0.1:5000"
ENV PYTHONPATH="/home/app"
# Overridden per deployment by faasml deploy (envVars), from the provider's timeout.
ENV exec_timeout="60s"
ENV read_timeout="62s"
ENV write_timeout="62s"

HEALTHCHECK --interval=5s CMD [ -e /tmp/.lock ] || exit 1
CMD ["fwatchdog"]
"""

#: the upstream server of-watchdog proxies to: the python3-http template's event/context
#: contract, on the standard library so the image needs no web framework.
INDEX_PY = '''\
"""Upstream HTTP server for of-watchdog (http mode), python3-http template contract."""

import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from function import handler


class Event:
    def __init__(self, body, headers, method, query, path):
        self.body = body
        self.headers = headers
        self.method = method
        self.query = query
        self.path = path


class Context:
    def __init__(self):
        self.hostname = os.getenv("HOSTNAME", socket.gethostname())


def _encode(body):
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    import json

    return json.dumps(body).encode("utf-8")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        event = Event(body, dict(self.headers), self.command, query, url.path)
        result = handler.handle(event, Context())
        if not isinstance(result, dict):
            result = {"statusCode": 200, "body": result}
        data = _encode(result.get("body"))
        self.send_response(int(result.get("statusCode", 200)))
        for key, value in (result.get("headers") or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format, *args):
        pass


def main():
    port = int(os.getenv("FAASML_UPSTREAM_PORT", "5000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
'''

_FUNCTION_HANDLER = '''\
"""OpenFaaS python3-http entry point: faasml's handler shim."""

from faasml.providers.openfaas.handler import handle

__all__ = ["handle"]
'''


def write_build_context(directory: str | Path, *, python_version: str = "3.11") -> Path:
    """Write the build context of a function image into ``directory`` and return its path.

    Existing files of the same names are replaced, and an existing ``faasml/`` copy is removed
    first so that no module of an older version lingers in the image.

    :param directory: where to write (created if missing).
    :param python_version: the ``python:<version>-slim`` base image's version.
    :returns: ``directory`` as a :class:`~pathlib.Path`.
    :raises ValueError: ``python_version`` is not like ``"3.11"``.
    """
    check_python_version(python_version)
    root = Path(directory)
    (root / "function").mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(
        _DOCKERFILE.format(watchdog=WATCHDOG_IMAGE, python=python_version), encoding="utf-8"
    )
    (root / "index.py").write_text(INDEX_PY, encoding="utf-8")
    # The provider's default storage and PubSub are Redis, so the image can reach them.
    requirements = list(
        dict.fromkeys(runtime_requirements("openfaas") + runtime_requirements("redis"))
    )
    (root / "requirements.txt").write_text(
        "# faasml's runtime dependencies\n" + "".join(f"{r}\n" for r in requirements),
        encoding="utf-8",
    )
    (root / "function" / "__init__.py").write_text("", encoding="utf-8")
    (root / "function" / "handler.py").write_text(_FUNCTION_HANDLER, encoding="utf-8")
    (root / "function" / "requirements.txt").write_text(
        "# add the packages your tasks import here\n", encoding="utf-8"
    )
    return copy_package(root)

"""An OpenFaaS gateway emulated at the HTTP level with ``responses``.

What it answers, and where each answer comes from:

* ``/system/*`` needs HTTP Basic auth when ``basic_auth=true`` (``gateway/main.go`` wraps the
  handlers in ``DecorateWithBasicAuth``): 401 with ``WWW-Authenticate: Basic`` otherwise.
* ``POST /system/functions`` 202, ``PUT`` 200 or 404, ``GET`` the list, ``DELETE`` with
  ``{"functionName"}`` 200 or 404 (``api-docs/spec.openapi.yml``, providers.md §7.1); a POST
  without ``service``/``image`` is 400. A POST for a function that exists is answered 409 here:
  the spec lists no status for it, and the backend never sends one.
* ``POST /system/secrets`` 201, or 409 when it exists; ``PUT`` 200 or 404; ``GET`` lists names
  only (values are never returned); ``DELETE`` 200 or 404.
* ``POST /function/{name}[.{namespace}]``: an unknown function is 404 ``error finding function``
  (gateway ``handlers/scaling.go``). Otherwise the request runs in a warm worker process
  (:class:`~faasml.testing.platform.HandlerHost`) through the ``python3-http`` template adapter,
  with the deployment's envVars and its secrets written as files (as OpenFaaS mounts them, and
  rewritten in place when a secret is updated, while the replicas keep running), under
  ``exec_timeout``. Like of-watchdog (``executor/http_runner.go``): the handler's status, headers
  and body are passed through; a request past ``exec_timeout`` is 504 with an empty body; a
  process that dies mid-request is 500 with an empty body. Responses carry ``X-Call-Id`` and
  ``X-Duration-Seconds``.
* ``POST /async-function/{name}``: 202 with ``X-Call-Id`` (``queue_proxy.go``); the call runs on a
  background thread, and the outcome is recorded as the queue-worker's callback would report it
  (``X-Function-Status``) when ``X-Callback-Url`` was given. A request whose queued JSON (body
  base64-encoded) exceeds NATS's 1 MiB ``max_payload`` is 500 ``nats: maximum payload exceeded``.
* :meth:`GatewayEmulator.throttle` makes the next requests answer 429, as of-watchdog does past
  ``max_inflight`` ("Concurrent request limit exceeded"), optionally with ``Retry-After``;
  :meth:`GatewayEmulator.fail_next` injects any other gateway answer (503 ``No endpoints
  available``, 500 ``Can't reach service``...).
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

from faasml.providers.openfaas.handler import SECRETS_DIR_ENV
from faasml.testing.platform import HandlerHost, HostOutcome

from . import adapter

DEFAULT_NAMESPACE = "openfaas-fn"
NATS_MAX_PAYLOAD = 1024 * 1024
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

Reply = tuple[int, dict[str, str], bytes]


def parse_duration(value: str | None, default: float) -> float:
    """Seconds of a Go duration like ``"3s"``/``"500ms"`` (or bare seconds), as the watchdog."""
    if not value:
        return default
    match = _DURATION_RE.match(value.strip())
    if match is None:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class Injected:
    """Answers queued for the next requests on a route prefix."""

    prefix: str
    reply: Reply
    remaining: int


@dataclass
class AsyncCall:
    """A queued invocation and, once the queue-worker ran it, its outcome."""

    call_id: str
    function: str
    callback_url: str | None
    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    body: bytes = b""


class GatewayEmulator:
    """A stand-in for an OpenFaaS gateway plus of-watchdog, at ``url``.

    :param workdir: where the functions' mounted secret files are written.
    :param url: the gateway URL the backend talks to.
    :param password: the Basic-auth password of user ``admin``.
    :param replicas: how many requests one function runs at once (warm worker processes).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        url: str = "http://gateway.openfaas.test:8080",
        password: str = "gateway-password-5d1c",
        replicas: int = 2,
    ) -> None:
        self.url = url.rstrip("/")
        self.username = "admin"
        self.password = password
        self.replicas = replicas
        self.workdir = workdir
        #: "name.namespace" -> the FunctionDeployment as last sent
        self.functions: dict[str, dict[str, Any]] = {}
        #: (namespace, name) -> value
        self.secrets: dict[tuple[str, str], str] = {}
        #: (method, path, status) of every request, in order
        self.log: list[tuple[str, str, int]] = []
        #: every request body sent to /system/*, for assertions on what the backend uploads
        self.system_bodies: list[tuple[str, str, dict[str, Any]]] = []
        self.async_calls: dict[str, AsyncCall] = {}
        self._hosts: dict[str, HandlerHost] = {}
        self._secret_dirs: dict[tuple[str, str], list[Path]] = {}
        self._injected: list[Injected] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        base = re.escape(self.url)
        for method in ("GET", "POST", "PUT", "DELETE"):
            self._mock.add_callback(method, re.compile(base + r"/.*"), callback=self._dispatch)

    # ---- lifecycle

    def __enter__(self) -> GatewayEmulator:
        self._mock.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for queued calls, stop the worker processes and the HTTP mock."""
        for thread in list(self._threads):
            thread.join(timeout=30)
        with self._lock:
            hosts = list(self._hosts.values())
            self._hosts.clear()
        for host in hosts:
            host.close()
        try:
            self._mock.stop()
        except RuntimeError:
            pass  # already stopped

    # ---- fault injection

    def throttle(self, times: int, *, retry_after: str | None = None, prefix: str = "/") -> None:
        """Answer the next ``times`` requests under ``prefix`` with of-watchdog's 429."""
        headers = {"Content-Type": "text/plain"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        body = b"Concurrent request limit exceeded. Max concurrent requests: 1\n"
        self.fail_next(times, status=429, headers=headers, body=body, prefix=prefix)

    def fail_next(
        self,
        times: int,
        *,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        prefix: str = "/",
    ) -> None:
        """Answer the next ``times`` requests under ``prefix`` with this reply."""
        reply = (status, dict(headers or {"Content-Type": "text/plain"}), body)
        with self._lock:
            self._injected.append(Injected(prefix, reply, times))

    def wait_async(self, call_id: str, timeout: float = 30.0) -> AsyncCall:
        """Block until the queued call ``call_id`` has run; return it."""
        call = self.async_calls[call_id]
        assert call.done.wait(timeout), f"async call {call_id} did not finish"
        return call

    def started_hosts(self) -> int:
        """How many functions currently have warm worker processes."""
        return len(self._hosts)

    # ---- dispatch

    def _dispatch(self, request: requests.PreparedRequest) -> Reply:
        url = urlsplit(str(request.url))
        path = url.path
        method = str(request.method)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        reply = self._injected_reply(path)
        if reply is None:
            reply = self._route(method, path, parse_qs(url.query), dict(request.headers), body)
        self.log.append((method, path, reply[0]))
        return reply

    def _injected_reply(self, path: str) -> Reply | None:
        with self._lock:
            for injected in self._injected:
                if path.startswith(injected.prefix) and injected.remaining > 0:
                    injected.remaining -= 1
                    return injected.reply
        return None

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Reply:
        if path.startswith("/system/"):
            if not self._authorised(headers):
                return (
                    401,
                    {"WWW-Authenticate": 'Basic realm="Restricted"', "Content-Type": "text/plain"},
                    b"Unauthorized\n",
                )
            document: dict[str, Any] = {}
            if body:
                try:
                    document = json.loads(body)
                except ValueError:
                    return _text(400, "invalid JSON body")
                self.system_bodies.append((method, path, document))
            if path == "/system/functions":
                return self._functions(method, query, document)
            if path == "/system/secrets":
                return self._secrets(method, query, document)
            if path.startswith("/system/function/") and method == "GET":
                found = self.functions.get(_qualify(path.rsplit("/", 1)[1]))
                if found is None:
                    return _text(404, "function not found")
                return _json(200, {"name": found["service"], "image": found["image"]})
            return _text(404, "404 page not found")
        if path.startswith("/function/") and method == "POST":
            return self._invoke_sync(path.split("/", 2)[2], headers, body)
        if path.startswith("/async-function/"):
            if method != "POST":
                return _text(405, "method not allowed")
            return self._invoke_async(path.split("/", 2)[2], headers, body)
        return _text(404, "404 page not found")

    def _authorised(self, headers: dict[str, str]) -> bool:
        value = headers.get("Authorization", "")
        if not value.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.username and password == self.password

    # ---- /system

    def _functions(
        self, method: str, query: dict[str, list[str]], document: dict[str, Any]
    ) -> Reply:
        if method == "GET":
            namespace = query.get("namespace", [DEFAULT_NAMESPACE])[0]
            listed = [
                {"name": d["service"], "image": d["image"], "namespace": ns, "replicas": 1}
                for key, d in sorted(self.functions.items())
                for ns in [key.split(".", 1)[1]]
                if ns == namespace
            ]
            return _json(200, listed)
        if method == "DELETE":
            key = _qualify(str(document.get("functionName", "")), document.get("namespace"))
            if self.functions.pop(key, None) is None:
                return _text(404, "function not found")
            self._stop_host(key)
            return _text(200, "")
        if not document.get("service") or not document.get("image"):
            return _text(400, "service and image are required")
        key = _qualify(document["service"], document.get("namespace"))
        if method == "POST":
            if key in self.functions:
                return _text(409, f"function {key} already exists")
            self.functions[key] = document
            return _text(202, "")
        if method == "PUT":
            if key not in self.functions:
                return _text(404, f"function {key} not found")
            changed = self.functions[key] != document
            self.functions[key] = document
            # A changed spec rolls out new replicas; an identical one leaves the pods alone, as
            # Kubernetes does for an unchanged pod template.
            if changed:
                self._stop_host(key)
            return _text(200, "")
        return _text(405, "method not allowed")

    def _secrets(self, method: str, query: dict[str, list[str]], document: dict[str, Any]) -> Reply:
        if method == "GET":
            namespace = query.get("namespace", [DEFAULT_NAMESPACE])[0]
            names = [{"name": n} for (ns, n) in sorted(self.secrets) if ns == namespace]
            return _json(200, names)
        name = str(document.get("name", ""))
        key = (document.get("namespace") or DEFAULT_NAMESPACE, name)
        if not name:
            return _text(400, "secret name is required")
        if method == "POST":
            if key in self.secrets:
                return _text(409, f"secret {name} already exists")
            self.secrets[key] = str(document.get("value", ""))
            return _text(201, "")
        if method == "PUT":
            if key not in self.secrets:
                return _text(404, f"secret {name} not found")
            self.secrets[key] = str(document.get("value", ""))
            # Mounted secret files follow the secret's value in running pods (the kubelet swaps
            # them in atomically, so a reader never sees a half-written file).
            for secrets_dir in self._secret_dirs.get(key, []):
                _write_atomically(secrets_dir / name, self.secrets[key])
            return _text(200, "")
        if method == "DELETE":
            if self.secrets.pop(key, None) is None:
                return _text(404, f"secret {name} not found")
            return _text(200, "")
        return _text(405, "method not allowed")

    # ---- invocation

    def _host(self, key: str) -> HandlerHost:
        with self._lock:
            host = self._hosts.get(key)
            if host is not None:
                return host
            deployment = self.functions[key]
            env_vars = dict(deployment.get("envVars") or {})
            namespace = key.split(".", 1)[1]
            # OpenFaaS mounts each listed secret as a file named after it.
            secrets_dir = self.workdir / f"secrets-{key}-{uuid.uuid4().hex[:8]}"
            secrets_dir.mkdir(parents=True)
            for name in deployment.get("secrets") or []:
                value = self.secrets.get((namespace, name))
                if value is not None:
                    _write_atomically(secrets_dir / name, value)
                    self._secret_dirs.setdefault((namespace, name), []).append(secrets_dir)
            env_vars[SECRETS_DIR_ENV] = str(secrets_dir)
            host = HandlerHost(
                f"{adapter.__name__}:run",
                environment=env_vars,
                timeout=parse_duration(env_vars.get("exec_timeout"), 60.0),
                concurrency=self.replicas,
            )
            self._hosts[key] = host
            return host

    def _stop_host(self, key: str) -> None:
        with self._lock:
            host = self._hosts.pop(key, None)
        if host is not None:
            host.close()

    def _run(self, key: str, headers: dict[str, str], body: bytes) -> Reply:
        request = {
            "body": body,
            "headers": headers,
            "method": "POST",
            "query": {},
            "path": "/",
        }
        outcome: HostOutcome = self._host(key).call(request, context={"hostname": key})
        reply_headers = {
            "X-Call-Id": headers.get("X-Call-Id") or str(uuid.uuid4()),
            "X-Duration-Seconds": f"{outcome.duration:f}",
        }
        if outcome.timed_out:
            return 504, reply_headers, b""
        if outcome.crashed:
            return 500, reply_headers, b""
        if outcome.error is not None:  # the template's server itself failed: Flask's 500 page
            reply_headers["Content-Type"] = "text/html; charset=utf-8"
            return 500, reply_headers, b"<h1>Internal Server Error</h1>"
        value = outcome.value
        reply_headers.update({str(k): str(v) for k, v in value["headers"].items()})
        reply_headers.setdefault("Content-Type", headers.get("Content-Type", "text/plain"))
        return value["statusCode"], reply_headers, value["body"]

    def _invoke_sync(self, name: str, headers: dict[str, str], body: bytes) -> Reply:
        key = _qualify(name)
        if key not in self.functions:
            return _text(404, f"error finding function {key}: function not found")
        return self._run(key, headers, body)

    def _invoke_async(self, name: str, headers: dict[str, str], body: bytes) -> Reply:
        key = _qualify(name)
        if key not in self.functions:
            return _text(404, f"error finding function {key}: function not found")
        call_id = str(uuid.uuid4())
        callback = headers.get("X-Callback-Url")
        # The gateway publishes the request as JSON to NATS; []byte bodies marshal as base64.
        queued = json.dumps(
            {
                "Header": {k: [v] for k, v in headers.items()},
                "Host": urlsplit(self.url).netloc,
                "Body": base64.b64encode(body).decode(),
                "Method": "POST",
                "Path": "",
                "QueryString": "",
                "Function": name,
                "QueueName": "",
                "CallbackUrl": callback,
            }
        )
        if len(queued) > NATS_MAX_PAYLOAD:
            return _text(500, "nats: maximum payload exceeded")
        call = AsyncCall(call_id, key, callback)
        self.async_calls[call_id] = call

        def work() -> None:
            try:
                status, _headers, result = self._run(key, {**headers, "X-Call-Id": call_id}, body)
                call.status, call.body = status, result
            finally:
                call.done.set()

        thread = threading.Thread(target=work, name=f"queue-worker-{call_id[:8]}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return 202, {"X-Call-Id": call_id, "X-Start-Time": str(time.time_ns())}, b""


def _qualify(name: str, namespace: str | None = None) -> str:
    if "." in name:
        return name
    return f"{name}.{namespace or DEFAULT_NAMESPACE}"


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _text(status: int, text: str) -> Reply:
    return status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode()


def _json(status: int, document: Any) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(document).encode()


def iter_log(emulator: GatewayEmulator, prefix: str) -> Iterator[tuple[str, str, int]]:
    """The logged requests whose path starts with ``prefix``."""
    return (entry for entry in emulator.log if entry[1].startswith(prefix))

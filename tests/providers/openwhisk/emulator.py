"""An emulator of the OpenWhisk controller's REST API on top of ``responses``.

It serves what :class:`~faasml.providers.openwhisk.function.OpenWhiskFunction` uses, shaped as
apache/openwhisk documents and implements it (``docs/rest_api.md``, the controller's
``apiv1swagger.json``, ``Actions.scala``, ``Activations.scala``, ``Messages.scala``,
``Parameter.scala``, ``docs/reference.md``):

* ``PUT /api/v1/namespaces/{ns}/actions/{name}?overwrite=true``: 200 with the action (version
  ``0.0.1``, then bumped on each update); 409 when it exists without ``overwrite``; 400 for an
  unknown kind or limits out of range; 413 for code over 48 MB. The code must be a base64 zip
  with ``__main__.py`` at its root (Python zip actions).
* ``GET``/``DELETE`` the action: 200 with the action, 404 ``{"error", "code"}`` when missing.
* ``POST .../actions/{name}?blocking=&result=``: the arguments are the action's non-init
  parameters overlaid with the request body; init parameters (``"init": true``) become the
  container's environment (apache/openwhisk#4559). Blocking: 200 (success), 502 (application or
  developer error) or 500 (whisk internal error) with the result (``result=true``) or the
  activation record; 202 ``{"activationId"}`` when the activation outlives the controller's
  blocking wait. Non-blocking: 202 ``{"activationId"}`` at once, the action runs in a background
  thread. Every activation response has the ``x-openwhisk-activation-id`` header. Bodies over
  1 MB get 413; injected throttling gets 429.
* ``GET .../activations/{id}``: 404 until the record is written, then the activation record
  with ``response.{status, statusCode, success, result}``.
* Every request needs HTTP Basic auth with the namespace's ``uuid:key``; otherwise 401
  ``{"error": "The supplied authentication is invalid.", "code": ...}``.

The action runs in :class:`~faasml.testing.platform.HandlerHost` processes (warm containers,
shared by every action with the same environment and time limit, across emulators, so tests do
not pay for starting them again) with the init parameters as environment and the action's time
limit, and the
host's outcome becomes the activation's status exactly as the invoker reports it: a timeout is
``action developer error`` with ``"The action exceeded its time limits of N milliseconds."``,
a dead process ``action developer error`` with ``"The action did not produce a valid response
and exited unexpectedly."``, a result with an ``error`` field ``application error``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import threading
import time
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import responses
from requests import PreparedRequest

from faasml.testing.platform import HandlerHost, HostOutcome

__all__ = ["OpenWhiskEmulator", "shutdown_containers"]

KINDS = ("python:3.10", "python:3.11", "python:default")
ENTRY = "faasml.providers.openwhisk.handler:main"
PAYLOAD_LIMIT = 1024 * 1024
RESULT_LIMIT = 1024 * 1024
CODE_LIMIT = 48 * 1024 * 1024

Reply = tuple[int, dict[str, str], str]


@dataclass
class _Action:
    namespace: str
    name: str
    version: str
    kind: str
    code: bytes
    limits: dict[str, int]
    parameters: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    main: str = "main"

    def document(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "exec": {"kind": self.kind, "binary": True, "main": self.main},
            "limits": {**self.limits, "logs": 10},
            "parameters": self.parameters,
            "annotations": self.annotations,
            "publish": False,
        }

    def environment(self) -> dict[str, str]:
        # The invoker normalizes init parameters to a map of strings for /init.
        return {
            p["key"]: p["value"] if isinstance(p["value"], str) else json.dumps(p["value"])
            for p in self.parameters
            if p.get("init")
        }

    def defaults(self) -> dict[str, Any]:
        return {p["key"]: p["value"] for p in self.parameters if not p.get("init")}


@dataclass
class _Activation:
    id: str
    done: threading.Event = field(default_factory=threading.Event)
    record: dict[str, Any] | None = None


class OpenWhiskEmulator:
    """A fake OpenWhisk controller and invoker; use it as a context manager.

    :param api_host: the URL the controller answers on.
    :param auth: the ``uuid:key`` it accepts.
    :param namespace: the namespace ``_`` resolves to.
    :param blocking_wait: seconds a blocking invoke waits before answering 202 (60 s in
        OpenWhisk); tests lower it to exercise the 202 path.
    :param invoker_slots: how many activations run at once (warm containers).
    """

    def __init__(
        self,
        api_host: str = "https://openwhisk.test",
        auth: str = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:secret-key-of-the-guest",
        namespace: str = "guest",
        *,
        blocking_wait: float = 60.0,
        invoker_slots: int = 4,
    ) -> None:
        self.api_host = api_host
        self.auth = auth
        self.namespace = namespace
        self.blocking_wait = blocking_wait
        self.invoker_slots = invoker_slots
        self.actions: dict[tuple[str, str], _Action] = {}
        self.activations: dict[str, _Activation] = {}
        #: (method, path, status) of every request, in order.
        self.log: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._throttle: list[str | None] = []
        self._failures: list[int] = []
        self._mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        base = re.escape(api_host) + r"/api/v1/namespaces/(?P<ns>[^/?]+)"
        query = r"(\?.*)?$"
        actions = re.compile(base + r"/actions/(?P<name>[^?]+)" + query)
        activations = re.compile(base + r"/activations/(?P<id>[^/?]+)" + query)
        for method in ("PUT", "GET", "DELETE", "POST"):
            self._mock.add_callback(method, actions, callback=self._dispatch)
        self._mock.add_callback("GET", activations, callback=self._dispatch)

    # ---- lifecycle

    def __enter__(self) -> OpenWhiskEmulator:
        self._mock.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in list(self._threads):
            thread.join(timeout=30)
        self._mock.stop()
        self._mock.reset()

    # ---- fault injection

    def throttle(self, times: int, retry_after: str | None = None) -> None:
        """Answer the next ``times`` invocations with 429 (and ``Retry-After`` when given)."""
        self._throttle.extend([retry_after] * times)

    def fail(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` invocations with ``status`` and an error body."""
        self._failures.extend([status] * times)

    # ---- request handling

    def _dispatch(self, request: PreparedRequest) -> Reply:
        url = str(request.url)
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        reply = self._handle(request, path, query)
        self.log.append((str(request.method), path, reply[0]))
        return reply

    def _handle(self, request: PreparedRequest, path: str, query: dict[str, str]) -> Reply:
        if not self._authorized(request):
            return _error(401, "The supplied authentication is invalid.")
        matched = re.match(r"^/api/v1/namespaces/([^/]+)/(actions|activations)/(.+)$", path)
        assert matched is not None
        namespace = unquote(matched.group(1))
        if namespace == "_":
            namespace = self.namespace
        elif namespace != self.namespace:
            return _error(
                403, "The supplied authentication is not authorized to access this resource."
            )
        collection, rest = matched.group(2), unquote(matched.group(3))
        if collection == "activations":
            return self._get_activation(rest)
        key = (namespace, rest)
        if request.method == "PUT":
            return self._put_action(key, request, query)
        if request.method == "GET":
            action = self.actions.get(key)
            if action is None:
                return _error(404, "The requested resource does not exist.")
            return _ok(action.document())
        if request.method == "DELETE":
            removed = self.actions.pop(key, None)
            if removed is None:
                return _error(404, "The requested resource does not exist.")
            return _ok(removed.document())
        return self._invoke(key, request, query)

    def _authorized(self, request: PreparedRequest) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            return base64.b64decode(header[6:]).decode() == self.auth
        except (binascii.Error, UnicodeDecodeError):
            return False

    def _put_action(
        self, key: tuple[str, str], request: PreparedRequest, query: dict[str, str]
    ) -> Reply:
        existing = self.actions.get(key)
        if existing is not None and query.get("overwrite") != "true":
            return _error(409, "resource already exists")
        body = _body(request)
        if len(body) > CODE_LIMIT + PAYLOAD_LIMIT:
            return _error(413, f"Request larger than allowed: {len(body)} > {CODE_LIMIT} bytes.")
        document = json.loads(body)
        exec_ = document.get("exec") or {}
        kind = exec_.get("kind")
        if kind not in KINDS:
            valid = "', '".join(KINDS)
            return _error(
                400,
                f"The specified runtime '{kind}' is not supported by this platform. "
                f"Valid values are: '{valid}'.",
            )
        code_text = exec_.get("code", "")
        if len(code_text) > CODE_LIMIT:
            return _error(413, f"Code larger than allowed: {len(code_text)} > {CODE_LIMIT} bytes.")
        try:
            code = base64.b64decode(code_text, validate=True)
            names = zipfile.ZipFile(io.BytesIO(code)).namelist()
        except (binascii.Error, zipfile.BadZipFile):
            return _error(400, "The request content was malformed: code is not a base64 zip.")
        if "__main__.py" not in names:
            return _error(400, "Zip file does not include mandatory files: __main__.py.")
        limits = dict(document.get("limits") or {})
        timeout = limits.setdefault("timeout", 60000)
        memory = limits.setdefault("memory", 256)
        limits.setdefault("concurrency", 1)
        if not 100 <= timeout <= 300000:
            return _error(400, f"Timeout {timeout} milliseconds exceeds allowed threshold.")
        if not 128 <= memory <= 512:
            return _error(400, f"Memory {memory} MB exceeds allowed threshold.")
        version = "0.0.1"
        if existing is not None:
            major, minor, patch = existing.version.split(".")
            version = f"{major}.{minor}.{int(patch) + 1}"
        action = _Action(
            namespace=key[0],
            name=key[1],
            version=version,
            kind=kind,
            code=code,
            limits=limits,
            parameters=list(document.get("parameters") or []),
            annotations=list(document.get("annotations") or []),
            main=str(exec_.get("main") or "main"),
        )
        self.actions[key] = action
        return _ok(action.document())

    def _invoke(
        self, key: tuple[str, str], request: PreparedRequest, query: dict[str, str]
    ) -> Reply:
        body = _body(request)
        if self._throttle:
            retry_after = self._throttle.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return _error(
                429, "Too many requests in the last minute (count: 121, allowed: 120).", headers
            )
        if self._failures:
            status = self._failures.pop(0)
            return _error(status, "System is overloaded, try again later.")
        if len(body) > PAYLOAD_LIMIT:
            return _error(413, f"Request larger than allowed: {len(body)} > {PAYLOAD_LIMIT} bytes.")
        action = self.actions.get(key)
        if action is None:
            return _error(404, "The requested resource does not exist.")
        args = action.defaults()
        if body:
            args.update(json.loads(body))
        activation = _Activation(id=uuid.uuid4().hex)
        with self._lock:
            self.activations[activation.id] = activation
        worker = threading.Thread(target=self._run, args=(action, activation, args), daemon=True)
        self._threads.append(worker)
        worker.start()
        header = {"x-openwhisk-activation-id": activation.id}
        if query.get("blocking") != "true":
            return 202, header, json.dumps({"activationId": activation.id})
        if not activation.done.wait(self.blocking_wait):
            return 202, header, json.dumps({"activationId": activation.id})
        record = activation.record
        assert record is not None
        response = record["response"]
        content = response["result"] if query.get("result") == "true" else record
        status = {0: 200, 1: 502, 2: 502}.get(response["statusCode"], 500)
        return status, header, json.dumps(content)

    def _get_activation(self, activation_id: str) -> Reply:
        activation = self.activations.get(activation_id)
        if activation is None or activation.record is None:
            return _error(404, "The requested resource does not exist.")
        return _ok(activation.record)

    # ---- the invoker

    def _host(self, action: _Action) -> HandlerHost:
        # Warm containers are keyed by what makes them differ (environment, time limit), and
        # kept across emulator instances: starting worker processes dominates a test's time.
        key = (tuple(sorted(action.environment().items())), action.limits["timeout"])
        with _WARM_LOCK:
            host = _WARM.get(key)
            if host is None:
                host = HandlerHost(
                    ENTRY,
                    environment=action.environment(),
                    timeout=action.limits["timeout"] / 1000.0,
                    concurrency=self.invoker_slots,
                )
                _WARM[key] = host
            return host

    def _run(self, action: _Action, activation: _Activation, args: dict[str, Any]) -> None:
        start = time.time()
        outcome = self._host(action).call(args)
        end = time.time()
        status_code, result = _response(outcome, action.limits["timeout"])
        activation.record = {
            "namespace": action.namespace,
            "name": action.name,
            "version": action.version,
            "subject": self.auth.partition(":")[0],
            "activationId": activation.id,
            "start": int(start * 1000),
            "end": int(end * 1000),
            "duration": int((end - start) * 1000),
            "statusCode": status_code,
            "response": {
                "status": _STATUS[status_code],
                "statusCode": status_code,
                "success": status_code == 0,
                "result": result,
            },
            "logs": [],
            "annotations": [
                {"key": "path", "value": f"{action.namespace}/{action.name}"},
                {"key": "kind", "value": action.kind},
                {"key": "limits", "value": action.limits},
            ],
            "publish": False,
        }
        activation.done.set()


_WARM: dict[tuple[tuple[tuple[str, str], ...], int], HandlerHost] = {}
_WARM_LOCK = threading.Lock()


def shutdown_containers() -> None:
    """Stop every warm container (worker process) the emulators started."""
    with _WARM_LOCK:
        hosts = list(_WARM.values())
        _WARM.clear()
    for host in hosts:
        host.close()


_STATUS = {
    0: "success",
    1: "application error",
    2: "action developer error",
    3: "whisk internal error",
}


def _response(outcome: HostOutcome, timeout_ms: int) -> tuple[int, dict[str, Any]]:
    """``(statusCode, result)`` the invoker records for a container's outcome."""
    if outcome.timed_out:
        return 2, {"error": f"The action exceeded its time limits of {timeout_ms} milliseconds."}
    if outcome.crashed:
        return 2, {"error": "The action did not produce a valid response and exited unexpectedly."}
    if outcome.error is not None:
        # main() itself raised: the Python runtime answers with a non-JSON error.
        return 2, {"error": f"The action did not produce a valid JSON response: {outcome.error}"}
    value = outcome.value
    if not isinstance(value, Mapping):
        return 2, {"error": "The action did not produce a valid JSON response."}
    size = len(json.dumps(value).encode())
    if size > RESULT_LIMIT:
        return 2, {
            "error": "The action produced a response that exceeded the allowed length: "
            f"{size} > {RESULT_LIMIT} bytes."
        }
    if "error" in value:
        return 1, dict(value)
    return 0, dict(value)


def _body(request: PreparedRequest) -> bytes:
    body = request.body
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def _ok(document: Any) -> Reply:
    return 200, {"Content-Type": "application/json"}, json.dumps(document)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    # The controller's ErrorResponse: the message and the transaction id.
    body = {"error": message, "code": uuid.uuid4().hex}
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body)

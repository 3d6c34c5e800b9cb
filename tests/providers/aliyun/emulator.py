"""An emulator of the Function Compute 2.0 REST API (2016-08-15) for ``responses``.

It answers the calls ``fc2`` makes — services (get, create), functions (get, create, update) and
invocations (sync and async) — with FC's documented contract:

* every answer carries ``x-fc-request-id``; API errors are ``{"errorCode", "errorMessage"}``
  with the status of the error-codes page (404 ``ServiceNotFound``/``FunctionNotFound``, 409
  ``ServiceAlreadyExists``/``FunctionAlreadyExists``, 400 ``EntityTooLarge`` "payload size
  exceeds maximum allowed size (N bytes)", 403 ``InvalidAccessKeyID``/``SignatureNotMatch``/
  ``AccessDenied``, 429 ``ResourceExhausted``, 503 ``ResourceThrottled``, 500
  ``InternalServerError``);
* requests are signed ``FC <AccessKeyID>:<base64 HMAC-SHA256>`` over ``METHOD``, ``Content-MD5``,
  ``Content-Type``, ``Date``, the sorted ``x-fc-*`` headers and the path; the emulator checks it;
* a synchronous invocation answers 200 with the function's bytes; a function error is 200 with
  ``x-fc-error-type: UnhandledInvocationError`` and ``{"errorMessage", "errorType",
  "stackTrace"}`` (one ``[file, line, function, source]`` list per frame, as the Python runtime
  sends); a time-out is "Function timed out after N seconds", a dead instance "Process exited
  unexpectedly before completing request";
* ``x-fc-invocation-type: Async`` answers 202 with an empty body and runs the function later;
* payload limits: 32 MB synchronous, 128 KB asynchronous.

Deployed code is checked like FC would load it: the base64 zip must unpack, contain the
``index.py`` named by the handler ``index.handler`` (defining ``handler``) and faasml. The
function then runs in :class:`~faasml.testing.platform.HandlerHost` processes executing the real
shim ``faasml.providers.aliyun.handler:handler`` with the deployed environment and time limit.
"""

from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import hmac
import io
import json
import re
import threading
import time
import uuid
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import responses

from faasml.testing.platform import HandlerHost, HostOutcome

API = "/2016-08-15"
SHIM = "faasml.providers.aliyun.handler:handler"
SYNC_LIMIT = 32 * 1024 * 1024
ASYNC_LIMIT = 128 * 1024

_FRAME_RE = re.compile(r'^  File "(?P<file>[^"]*)", line (?P<line>\d+), in (?P<name>.*)$')

Reply = tuple[int, dict[str, str], bytes | str]


@dataclass
class Call:
    """One request the emulator answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class DeployedFunction:
    """A function as FC stores it, plus the processes running it."""

    config: dict[str, Any]
    code: bytes
    host: HandlerHost | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class FunctionComputeEmulator:
    """The FC 2.0 API of one account behind ``endpoint``; use as a context manager.

    :param endpoint: the endpoint the client is configured with.
    :param access_keys: AccessKey ID -> secret the emulator accepts.
    :param instances: how many instances (processes) each function runs at once.
    """

    def __init__(
        self,
        endpoint: str,
        access_keys: dict[str, str],
        *,
        instances: int = 4,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.access_keys = dict(access_keys)
        self.instances = instances
        self.services: dict[str, dict[str, Any]] = {}
        self.functions: dict[tuple[str, str], DeployedFunction] = {}
        self.calls: list[Call] = []
        #: (status, errorCode or raw body) answers queued for the next invocations, one each.
        self.injected: deque[tuple[int, str]] = deque()
        #: likewise for the next service/function management calls.
        self.injected_api: deque[tuple[int, str]] = deque()
        #: when set, every call is refused with 403 AccessDenied (a RAM user without rights).
        self.deny_all = False
        self.async_outcomes: list[HostOutcome] = []
        self._lock = threading.Lock()
        self._async = ThreadPoolExecutor(max_workers=instances)
        self._mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        pattern = re.compile(re.escape(self.endpoint + API) + r"/.*")
        for method in ("GET", "POST", "PUT", "DELETE"):
            self._mock.add_callback(method, pattern, callback=self._dispatch, content_type=None)

    # ---- test-facing API

    def __enter__(self) -> FunctionComputeEmulator:
        self._mock.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mock.stop()
        self._mock.reset()
        self._async.shutdown(wait=True, cancel_futures=True)
        for deployed in self.functions.values():
            if deployed.host is not None:
                deployed.host.close()

    def inject(self, status: int, code: str, times: int = 1, *, api: bool = False) -> None:
        """Answer the next ``times`` invocations (``api``: other calls) with ``status``/``code``.

        A ``code`` starting with ``<`` is sent as a raw HTML body, like a proxy in between would.
        """
        (self.injected_api if api else self.injected).extend([(status, code)] * times)

    def invocation_calls(self) -> list[Call]:
        """The invocation requests received so far."""
        return [c for c in self.calls if c.path.endswith("/invocations")]

    def wait_async(self, count: int, limit: float = 30.0) -> list[HostOutcome]:
        """Wait until ``count`` asynchronous invocations have run; return their outcomes."""
        deadline = time.monotonic() + limit
        while len(self.async_outcomes) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.async_outcomes)

    # ---- dispatch

    def _dispatch(self, request: requests.PreparedRequest) -> Reply:
        path = unquote(urlsplit(str(request.url)).path)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = {k.lower(): v for k, v in request.headers.items()}
        reply = self._answer(str(request.method), path, headers, bytes(body))
        status, reply_headers, _ = reply
        reply_headers.setdefault("x-fc-request-id", str(uuid.uuid4()))
        with self._lock:
            self.calls.append(Call(str(request.method), path, headers, bytes(body), status))
        return reply

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        refused = self._authenticate(method, path, headers)
        if refused is not None:
            return refused
        if self.deny_all:
            return _error(
                403, "AccessDenied", "the caller is not authorized to perform this action"
            )
        parts = path[len(API) :].strip("/").split("/")
        if self.injected_api and parts[-1] != "invocations":
            return _injected(*self.injected_api.popleft())
        if parts == ["services"] and method == "POST":
            return self._create_service(_json(body))
        if len(parts) == 2 and parts[0] == "services" and method == "GET":
            return self._get_service(parts[1])
        if len(parts) >= 3 and parts[0] == "services" and parts[2] == "functions":
            service = parts[1]
            if service not in self.services:
                return _error(404, "ServiceNotFound", f"service '{service}' does not exist")
            if len(parts) == 3 and method == "POST":
                return self._create_function(service, _json(body))
            key = (service, parts[3])
            if len(parts) == 4 and method == "GET":
                return self._get_function(key)
            if len(parts) == 4 and method == "PUT":
                return self._update_function(key, _json(body))
            if len(parts) == 5 and parts[4] == "invocations" and method == "POST":
                return self._invoke(key, headers, body)
        return _error(400, "PathNotSupported", f"'{method}' against '{path}' is not supported")

    def _authenticate(self, method: str, path: str, headers: dict[str, str]) -> Reply | None:
        authorization = headers.get("authorization", "")
        if not headers.get("date") or not authorization.startswith("FC "):
            return _error(
                400, "MissingRequiredHeader", "required HTTP header Date was not specified"
            )
        key_id, _, signature = authorization[3:].partition(":")
        secret = self.access_keys.get(key_id)
        if secret is None:
            return _error(403, "InvalidAccessKeyID", f"invalid access key ID '{key_id}'")
        fc_headers = sorted((k, v) for k, v in headers.items() if k.startswith("x-fc-"))
        canonical = "".join(f"{k}:{v}\n" for k, v in fc_headers)
        text = "\n".join(
            [
                method.upper(),
                headers.get("content-md5", ""),
                headers.get("content-type", ""),
                headers["date"],
                canonical + path,
            ]
        )
        expected = base64.b64encode(
            hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(expected, signature):
            return _error(
                403,
                "SignatureNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your access key and signing method",
            )
        return None

    # ---- services and functions

    def _create_service(self, body: dict[str, Any]) -> Reply:
        name = body.get("serviceName")
        if not isinstance(name, str) or not name:
            return _error(400, "InvalidArgument", "serviceName is required")
        if name in self.services:
            return _error(409, "ServiceAlreadyExists", f"service '{name}' already exists")
        now = _now()
        self.services[name] = {
            "serviceName": name,
            "serviceId": uuid.uuid4().hex,
            "description": body.get("description") or "",
            "createdTime": now,
            "lastModifiedTime": now,
        }
        return _ok(self.services[name])

    def _get_service(self, name: str) -> Reply:
        if name not in self.services:
            return _error(404, "ServiceNotFound", f"service '{name}' does not exist")
        return _ok(self.services[name])

    def _get_function(self, key: tuple[str, str]) -> Reply:
        deployed = self.functions.get(key)
        if deployed is None:
            return _not_found(key)
        return _ok(deployed.config)

    def _create_function(self, service: str, body: dict[str, Any]) -> Reply:
        name = body.get("functionName")
        if not isinstance(name, str) or not name:
            return _error(400, "InvalidArgument", "functionName is required")
        if (service, name) in self.functions:
            return _error(
                409,
                "FunctionAlreadyExists",
                f"function '{name}' already exists in service '{service}'",
            )
        for required in ("runtime", "handler", "code"):
            if required not in body:
                return _error(400, "InvalidArgument", f"{required} is required")
        config = {
            "functionName": name,
            "functionId": uuid.uuid4().hex,
            "memorySize": 128,
            "timeout": 3,
            "initializationTimeout": 3,
            "instanceConcurrency": 1,
            "environmentVariables": {},
            "createdTime": _now(),
        }
        return self._store(service, name, config, body)

    def _update_function(self, key: tuple[str, str], body: dict[str, Any]) -> Reply:
        deployed = self.functions.get(key)
        if deployed is None:
            return _not_found(key)
        return self._store(key[0], key[1], dict(deployed.config), body, deployed.code)

    def _store(
        self,
        service: str,
        name: str,
        config: dict[str, Any],
        body: dict[str, Any],
        code: bytes = b"",
    ) -> Reply:
        if "code" in body:
            zip_b64 = body["code"].get("zipFile") if isinstance(body["code"], dict) else None
            if not isinstance(zip_b64, str):
                return _error(400, "InvalidArgument", "code.zipFile is required")
            try:
                code = base64.b64decode(zip_b64, validate=True)
            except binascii.Error:
                return _error(400, "InvalidArgument", "code.zipFile is not valid base64")
        for key in (
            "runtime",
            "handler",
            "memorySize",
            "timeout",
            "initializationTimeout",
            "instanceConcurrency",
            "environmentVariables",
            "description",
        ):
            if key in body:
                config[key] = body[key]
        problem = _check_code(code, str(config["handler"]))
        if problem is not None:
            return _error(400, "InvalidArgument", problem)
        if not 1 <= int(config["timeout"]) <= 86_400:
            return _error(400, "InvalidArgument", "timeout must be between 1 and 86400")
        config.update(
            codeSize=len(code),
            codeChecksum=hashlib.sha256(code).hexdigest()[:20],
            lastModifiedTime=_now(),
        )
        previous = self.functions.get((service, name))
        if previous is not None and previous.host is not None:
            previous.host.close()  # new code and settings: FC replaces the instances
        self.functions[(service, name)] = DeployedFunction(config=config, code=code)
        return _ok(config)

    # ---- invocations

    def _invoke(self, key: tuple[str, str], headers: dict[str, str], body: bytes) -> Reply:
        deployed = self.functions.get(key)
        if deployed is None:
            return _not_found(key)
        if self.injected:
            return _injected(*self.injected.popleft())
        kind = headers.get("x-fc-invocation-type", "Sync")
        limit = ASYNC_LIMIT if kind == "Async" else SYNC_LIMIT
        if len(body) > limit:
            return _error(
                400, "EntityTooLarge", f"payload size exceeds maximum allowed size ({limit} bytes)"
            )
        request_id = str(uuid.uuid4())
        if kind == "Async":
            self._async.submit(self._run_async, deployed, body, request_id)
            return 202, {"x-fc-request-id": request_id}, b""
        outcome = self._run(deployed, body, request_id)
        return _outcome_reply(outcome, deployed, request_id)

    def _run(self, deployed: DeployedFunction, body: bytes, request_id: str) -> HostOutcome:
        timeout = int(deployed.config["timeout"])
        with deployed.lock:
            if deployed.host is None:
                deployed.host = HandlerHost(
                    SHIM,
                    environment=dict(deployed.config.get("environmentVariables") or {}),
                    timeout=timeout,
                    concurrency=self.instances,
                )
            host = deployed.host
        context = {
            "request_id": request_id,
            "function": {
                "name": deployed.config["functionName"],
                "handler": deployed.config["handler"],
                "memory": deployed.config["memorySize"],
                "timeout": timeout,
            },
        }
        return host.call(body, context=context, remaining_ms=timeout * 1000)

    def _run_async(self, deployed: DeployedFunction, body: bytes, request_id: str) -> None:
        outcome = self._run(deployed, body, request_id)
        with self._lock:
            self.async_outcomes.append(outcome)


# --------------------------------------------------------------------------- replies


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _ok(document: dict[str, Any]) -> Reply:
    return 200, {"content-type": "application/json"}, json.dumps(document)


def _error(status: int, code: str, message: str) -> Reply:
    return (
        status,
        {"content-type": "application/json"},
        json.dumps({"errorCode": code, "errorMessage": message}),
    )


def _injected(status: int, code: str) -> Reply:
    if code.startswith("<"):
        return status, {"content-type": "text/html"}, code
    return _error(status, code, f"injected {code}")


def _not_found(key: tuple[str, str]) -> Reply:
    return _error(
        404, "FunctionNotFound", f"function '{key[1]}' does not exist in service '{key[0]}'"
    )


def _check_code(code: bytes, handler: str) -> str | None:
    """Why FC could not load ``handler`` from the zip ``code``, or ``None``."""
    module, _, function = handler.rpartition(".")
    try:
        archive = zipfile.ZipFile(io.BytesIO(code))
        names = set(archive.namelist())
        source = archive.read(f"{module}.py") if f"{module}.py" in names else None
    except zipfile.BadZipFile:
        return "code.zipFile is not a zip archive"
    if source is None:
        return f"the handler {handler!r} needs {module}.py at the root of the code package"
    if "faasml/__init__.py" not in names:
        return "the code package does not contain faasml"
    bound: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ImportFrom, ast.Import)):
            if isinstance(node, ast.FunctionDef):
                bound.add(node.name)
            else:
                bound.update(alias.asname or alias.name for alias in node.names)
    if function not in bound:
        return f"{module}.py does not define {function!r}"
    return None


def _stack_trace(traceback_text: str) -> list[list[str]]:
    """Frames of a Python traceback in the shape FC's Python runtime reports them."""
    frames: list[list[str]] = []
    lines = traceback_text.splitlines()
    for index, line in enumerate(lines):
        match = _FRAME_RE.match(line)
        if match is None:
            continue
        source = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if _FRAME_RE.match(lines[index + 1] if index + 1 < len(lines) else ""):
            source = ""
        frames.append(
            [
                f'File "{match["file"]}"',
                f"line {match['line']}",
                f"in {match['name']}",
                source,
            ]
        )
    return frames


def _outcome_reply(outcome: HostOutcome, deployed: DeployedFunction, request_id: str) -> Reply:
    headers = {"x-fc-request-id": request_id}
    unhandled = {
        **headers,
        "x-fc-error-type": "UnhandledInvocationError",
        "content-type": "application/json",
    }
    usage = f"maxMemoryUsage: {deployed.config['memorySize'] / 8:.2f}MB"
    if outcome.timed_out:
        seconds = int(deployed.config["timeout"])
        message = f"Function timed out after {seconds} seconds ({usage})"
        return 200, unhandled, json.dumps({"errorMessage": message})
    if outcome.crashed:
        message = (
            "Process exited unexpectedly before completing request "
            f"(duration: {int(outcome.duration * 1000)}ms, {usage})"
        )
        return 200, unhandled, json.dumps({"errorMessage": message})
    if outcome.error is not None:
        remote_type = outcome.error.remote_type or "Exception"
        message = str(outcome.error).removeprefix(f"{remote_type}: ")
        if message == remote_type:
            message = ""
        document = {
            "errorMessage": message,
            "errorType": remote_type.rpartition(".")[2],
            "stackTrace": _stack_trace(outcome.error.remote_traceback or ""),
        }
        return 200, unhandled, json.dumps(document)
    value = outcome.value
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray)):
        document = {
            "errorMessage": f"the handler returned {type(value).__name__}, not bytes or str",
            "errorType": "TypeError",
        }
        return 200, unhandled, json.dumps(document)
    return 200, {**headers, "content-type": "application/octet-stream"}, bytes(value)

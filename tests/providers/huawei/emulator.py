"""An in-process emulator of the FunctionGraph v2 REST API, served through ``responses``.

The Huawei SDK talks HTTP through ``requests`` (providers.md §1), so ``responses`` callbacks see
exactly what the SDK sends: the signed request (``Authorization: SDK-HMAC-SHA256 Access=...``),
the project id and the percent-encoded function URN in the path, the JSON body. The emulator
answers with the status codes, headers and bodies FunctionGraph documents:

* ``POST /v2/{project_id}/fgs/functions`` (create), ``GET .../{urn}/config`` (show),
  ``PUT .../{urn}/code``, ``PUT .../{urn}/config`` (update), ``DELETE .../{urn}``;
* ``POST .../{urn}/invocations``: 200 with ``{"request_id", "result", "log", "status"}`` and the
  headers ``X-Cff-Request-Id``, ``X-Cff-Response-Version``, ``X-Func-Err-Code`` (0 on
  success), ``X-Is-Func-Err`` (API reference "Executing a Function Synchronously");
* ``POST .../{urn}/invocations-async``: 202 ``{"request_id"}``; ``GET .../{urn}/async-invocations``
  lists records with status WAIT / RUNNING / SUCCESS / FAIL and ``error_code``/``error_message``
  (SDK model ``ListFunctionAsyncInvocationsResult``);
* API errors: the status with ``{"error_code", "error_msg"}``; a missing function is
  404 ``FSS.1051`` "Not found the function" (the API reference's example).

Each deployed function gets a :class:`~faasml.testing.platform.HandlerHost` that runs the real
shim ``faasml.providers.huawei.handler:handler`` with the function's ``user_data`` and
``encrypted_user_data`` as its environment and its ``timeout`` as the time limit, after checking
that the uploaded zip's ``index.handler`` is that shim. Failed runs are reported with
FunctionGraph's function-error codes (openYuanrong's constants): 4002 for a handler exception
(``result`` holds the Python runtime's ``errorMessage``/``errorType``/``stackTrace``), 4010 for a
timeout, 4205 for a runtime that died.

Not documented, so chosen here and kept minimal: the error codes of a duplicate create (409
``FSS.1061``), of an oversized body (400 ``FSS.4140``), and of a bad signature (401
``APIGW.0301``). :meth:`FunctionGraphEmulator.inject` makes any operation answer with any status,
for the error-mapping tests.
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime
import io
import json
import re
import threading
import traceback
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import responses

from faasml.testing.platform import HandlerHost, HostOutcome

SHIM = "faasml.providers.huawei.handler:handler"
SYNC_LIMIT = 6 * 1024 * 1024
ASYNC_LIMIT = 256 * 1024

Reply = tuple[int, dict[str, str], str]


@dataclass
class EmulatedFunction:
    """One deployed function as the emulator stores it."""

    urn: str
    name: str
    package: str
    runtime: str
    handler: str
    memory_size: int
    timeout: int
    code: bytes
    user_data: str
    encrypted_user_data: str
    host: HandlerHost | None = None
    created: int = 1
    code_updates: int = 0
    config_updates: int = 0

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for text in (self.user_data, self.encrypted_user_data):
            if text:
                env.update(json.loads(text))
        return env


@dataclass
class AsyncRecord:
    request_id: str
    status: str = "WAIT"
    error_code: int = 0
    error_message: str = ""
    start_time: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    )
    end_time: str = ""


class FunctionGraphEmulator:
    """FunctionGraph for one project, installed on a :class:`responses.RequestsMock`."""

    def __init__(
        self,
        *,
        endpoint: str = "https://functiongraph.cn-north-4.myhuaweicloud.com",
        region: str = "cn-north-4",
        project_id: str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        access_key: str = "EMULATORACCESSKEY",
        concurrency: int = 2,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.project_id = project_id
        self.access_key = access_key
        self.concurrency = concurrency
        self.functions: dict[str, EmulatedFunction] = {}
        self.records: dict[str, AsyncRecord] = {}
        #: (operation, HTTP status) of every request, in order.
        self.calls: list[tuple[str, int]] = []
        #: raw request bodies of create/update calls, for what-was-uploaded checks.
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self._faults: dict[str, collections.deque[Reply]] = collections.defaultdict(
            collections.deque
        )
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._path = re.compile(
            re.escape(self.endpoint)
            + r"/v2/(?P<project>[^/?]+)/fgs/functions"
            + r"(?:/(?P<urn>[^/?]+)(?:/(?P<action>[^/?]+))?)?(?:\?.*)?$"
        )

    # ---- set-up

    def install(self, mock: responses.RequestsMock) -> None:
        """Answer every FunctionGraph request made through ``mock``."""
        for method in ("GET", "POST", "PUT", "DELETE"):
            mock.add_callback(method, self._path, callback=self._dispatch)

    def inject(
        self,
        operation: str,
        status: int,
        *,
        error_code: str = "",
        error_msg: str = "injected",
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``operation`` answer ``status`` with an error body."""
        body = json.dumps({"error_code": error_code or f"FSS.{status}", "error_msg": error_msg})
        reply: Reply = (
            status,
            {
                "Content-Type": "application/json",
                "X-Request-Id": uuid.uuid4().hex,
                **(headers or {}),
            },
            body,
        )
        with self._lock:
            self._faults[operation].extend([reply] * times)

    def urn(self, name: str, package: str = "default") -> str:
        """The URN of function ``name`` (version ``latest``)."""
        return f"urn:fss:{self.region}:{self.project_id}:function:{package}:{name}:latest"

    def close(self) -> None:
        """Wait for asynchronous runs and stop every function's workers."""
        for thread in list(self._threads):
            thread.join(timeout=30)
        for function in self.functions.values():
            if function.host is not None:
                function.host.close()

    # ---- dispatch

    def _dispatch(self, request: Any) -> Reply:
        url = urlsplit(request.url)
        match = self._path.match(f"{self.endpoint}{url.path}")
        assert match is not None, request.url
        urn = unquote(match["urn"]) if match["urn"] else None
        action = match["action"]
        operation = {
            ("POST", False, None): "create_function",
            ("GET", True, "config"): "show_function_config",
            ("PUT", True, "code"): "update_function_code",
            ("PUT", True, "config"): "update_function_config",
            ("DELETE", True, None): "delete_function",
            ("POST", True, "invocations"): "invoke_function",
            ("POST", True, "invocations-async"): "async_invoke_function",
            ("GET", True, "async-invocations"): "list_async_invocations",
        }.get((request.method, urn is not None, action))
        reply = self._answer(operation, request, match["project"], urn, url.query)
        with self._lock:
            self.calls.append((operation or "unknown", reply[0]))
        return reply

    def _answer(
        self, operation: str | None, request: Any, project: str, urn: str | None, query: str
    ) -> Reply:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("SDK-HMAC-SHA256 ") or f"Access={self.access_key}," not in auth:
            return _error(401, "APIGW.0301", "Incorrect IAM authentication information")
        if project != self.project_id:
            return _error(403, "APIGW.0302", "The project id does not match the token")
        if operation is None:
            return _error(404, "APIGW.0101", "The API does not exist or has not been published")
        with self._lock:
            faults = self._faults.get(operation)
            if faults:
                return faults.popleft()
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        if operation == "create_function":
            return self._create(body)
        assert urn is not None
        function = self.functions.get(urn.removesuffix(":latest") + ":latest")
        if function is None:
            return _error(404, "FSS.1051", "Not found the function")
        if operation == "show_function_config":
            return _json(200, self._config(function))
        if operation == "update_function_code":
            return self._update_code(function, body)
        if operation == "update_function_config":
            return self._update_config(function, body)
        if operation == "delete_function":
            with self._lock:
                del self.functions[function.urn]
            if function.host is not None:
                function.host.close()
            return 204, {}, ""
        if operation == "invoke_function":
            return self._invoke(function, body)
        if operation == "async_invoke_function":
            return self._invoke_async(function, body)
        return self._list_async(parse_qs(query))

    # ---- function lifecycle

    def _create(self, raw: bytes) -> Reply:
        body = json.loads(raw)
        self.bodies.append(("create_function", body))
        for key in ("func_name", "package", "runtime", "handler", "memory_size", "code_type"):
            if key not in body:
                return _error(400, "FSS.0400", f"{key} is required")
        problem = _check_config(body)
        if problem is None and body["code_type"] != "zip":
            problem = "only zip code is emulated"
        code, problem = (b"", problem) if problem else _zip(body)
        if problem:
            return _error(400, "FSS.0400", problem)
        urn = self.urn(body["func_name"], body["package"])
        with self._lock:
            if urn in self.functions:
                return _error(409, "FSS.1061", "The function already exists")
            function = EmulatedFunction(
                urn=urn,
                name=body["func_name"],
                package=body["package"],
                runtime=body["runtime"],
                handler=body["handler"],
                memory_size=body["memory_size"],
                timeout=body.get("timeout", 3),
                code=code,
                user_data=body.get("user_data") or "",
                encrypted_user_data=body.get("encrypted_user_data") or "",
            )
            self.functions[urn] = function
        return _json(200, self._config(function))

    def _update_code(self, function: EmulatedFunction, raw: bytes) -> Reply:
        body = json.loads(raw)
        self.bodies.append(("update_function_code", body))
        if body.get("code_type") != "zip":
            return _error(400, "FSS.0400", "only zip code is emulated")
        code, problem = _zip(body)
        if problem:
            return _error(400, "FSS.0400", problem)
        with self._lock:
            function.code = code
            function.code_updates += 1
            self._restart(function)
        return _json(200, {"func_urn": function.urn, "code_type": "zip"})

    def _update_config(self, function: EmulatedFunction, raw: bytes) -> Reply:
        body = json.loads(raw)
        self.bodies.append(("update_function_config", body))
        for key in ("func_name", "timeout", "memory_size"):
            if key not in body:
                return _error(400, "FSS.0400", f"{key} is required")
        problem = _check_config(body)
        if problem:
            return _error(400, "FSS.0400", problem)
        with self._lock:
            function.runtime = body.get("runtime", function.runtime)
            function.handler = body.get("handler", function.handler)
            function.timeout = body["timeout"]
            function.memory_size = body["memory_size"]
            function.user_data = body.get("user_data") or ""
            function.encrypted_user_data = body.get("encrypted_user_data") or ""
            function.config_updates += 1
            self._restart(function)
        return _json(200, self._config(function))

    def _restart(self, function: EmulatedFunction) -> None:
        # New code or configuration: FunctionGraph starts new instances; so do we.
        if function.host is not None:
            function.host.close()
            function.host = None

    def _config(self, function: EmulatedFunction) -> dict[str, Any]:
        return {
            "func_urn": function.urn,
            "func_name": function.name,
            "package": function.package,
            "runtime": function.runtime,
            "handler": function.handler,
            "memory_size": function.memory_size,
            "timeout": function.timeout,
            "code_type": "zip",
            "code_size": len(function.code),
            # encrypted_user_data is write-only: FunctionGraph does not hand secrets back.
            "user_data": function.user_data,
            "version": "latest",
        }

    # ---- invocations

    def _host(self, function: EmulatedFunction) -> HandlerHost:
        with self._lock:
            if function.host is None:
                function.host = HandlerHost(
                    SHIM,
                    environment=function.environment(),
                    timeout=float(function.timeout),
                    concurrency=self.concurrency,
                )
            return function.host

    def _run(self, function: EmulatedFunction, event: Any, request_id: str) -> tuple[int, str]:
        """Run the shim; return FunctionGraph's function-error code (0: success) and result."""
        outcome = self._host(function).call(
            event, context={"request_id": request_id}, remaining_ms=function.timeout * 1000
        )
        return _report(outcome, function.timeout)

    def _invoke(self, function: EmulatedFunction, raw: bytes) -> Reply:
        if len(raw) > SYNC_LIMIT:
            return _error(400, "FSS.4140", "request body exceeds the limit of 6 MB")
        try:
            event = json.loads(raw)
        except ValueError:
            return _error(400, "FSS.0400", "the request body is not JSON")
        request_id = str(uuid.uuid4())
        code, result = self._run(function, event, request_id)
        if code == 0 and len(result) > SYNC_LIMIT:
            code, result = (
                4004,
                json.dumps(
                    {"errorCode": 4004, "errorMessage": "response body exceeds the limit of 6 MB"}
                ),
            )
        headers = {
            "Content-Type": "application/json",
            "X-Cff-Request-Id": request_id,
            "X-Cff-Response-Version": "v1",
            "X-Func-Err-Code": str(code),
            "X-Is-Func-Err": "true" if code else "false",
        }
        body = {
            "request_id": request_id,
            "result": result,
            "log": f"Start invoke request '{request_id}', version: latest\n"
            f"Finish invoke request '{request_id}'",
            "status": 500 if code else 200,
        }
        return 200, headers, json.dumps(body)

    def _invoke_async(self, function: EmulatedFunction, raw: bytes) -> Reply:
        if len(raw) > ASYNC_LIMIT:
            return _error(400, "FSS.4140", "request body exceeds the limit of 256 KB")
        try:
            event = json.loads(raw)
        except ValueError:
            return _error(400, "FSS.0400", "the request body is not JSON")
        record = AsyncRecord(str(uuid.uuid4()))
        with self._lock:
            self.records[record.request_id] = record

        def run() -> None:
            record.status = "RUNNING"
            code, result = self._run(function, event, record.request_id)
            record.error_code = code
            record.error_message = result if code else ""
            record.end_time = datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            record.status = "FAIL" if code else "SUCCESS"

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()
        return _json(202, {"request_id": record.request_id})

    def _list_async(self, query: dict[str, list[str]]) -> Reply:
        wanted = query.get("request_id", [None])[0]
        with self._lock:
            records = [r for r in self.records.values() if wanted in (None, r.request_id)]
        items = [
            {
                "request_id": r.request_id,
                "status": r.status,
                "error_code": r.error_code,
                "error_message": r.error_message,
                "start_time": r.start_time,
                "end_time": r.end_time,
            }
            for r in records
        ]
        return _json(200, {"invocations": items, "count": len(items), "next_marker": 0})


# --------------------------------------------------------------------------- helpers


def _json(status: int, body: Any) -> Reply:
    return (
        status,
        {"Content-Type": "application/json", "X-Request-Id": uuid.uuid4().hex},
        json.dumps(body),
    )


def _error(status: int, code: str, message: str) -> Reply:
    return _json(status, {"error_code": code, "error_msg": message})


def _check_config(body: Mapping[str, Any]) -> str | None:
    if not 128 <= int(body.get("memory_size", 0)) <= 10240:
        return "memory_size must be between 128 and 10240"
    if "timeout" in body and not 3 <= int(body["timeout"]) <= 259200:
        return "timeout must be between 3 and 259200"
    if "runtime" in body and body["runtime"] not in ("Python3.9", "Python3.10", "Python3.12"):
        return f"runtime {body['runtime']} is not emulated"
    for key in ("user_data", "encrypted_user_data"):
        text = body.get(key)
        if text:
            if len(text) > 4096:
                return f"{key} is longer than 4 KB"
            if not isinstance(json.loads(text), dict):
                return f"{key} must be a JSON object"
    return None


def _zip(body: Mapping[str, Any]) -> tuple[bytes, str | None]:
    """Decode ``func_code.file`` and check that ``index.handler`` is faasml's shim."""
    try:
        code = base64.b64decode(body["func_code"]["file"], validate=True)
        archive = zipfile.ZipFile(io.BytesIO(code))
        names = set(archive.namelist())
        index = archive.read("index.py").decode()
    except (KeyError, TypeError, binascii.Error, zipfile.BadZipFile) as exc:
        return b"", f"func_code.file is not a base64 zip with index.py: {exc}"
    if "faasml/providers/huawei/handler.py" not in names or "faasml/__init__.py" not in names:
        return b"", "the zip does not contain the faasml package"
    namespace: dict[str, Any] = {}
    exec(compile(index, "index.py", "exec"), namespace)  # the handler FunctionGraph would load
    from faasml.providers.huawei.handler import handler

    if namespace.get("handler") is not handler:
        return b"", "index.handler is not faasml.providers.huawei.handler.handler"
    return code, None


def _report(outcome: HostOutcome, timeout: int) -> tuple[int, str]:
    """FunctionGraph's error code and ``result`` text for what the runtime did."""
    if outcome.timed_out:
        return 4010, json.dumps(
            {"errorCode": 4010, "errorMessage": f"invoke function timeout, timeout is {timeout}s"}
        )
    if outcome.crashed:
        return 4205, json.dumps(
            {"errorCode": 4205, "errorMessage": "runtime memory limit exceeded or runtime exited"}
        )
    if outcome.error is not None:
        error = outcome.error
        trace = error.remote_traceback or "".join(traceback.format_exception(error))
        return 4002, json.dumps(
            {
                "errorCode": 4002,
                "errorMessage": str(error),
                "errorType": error.remote_type or "Exception",
                "stackTrace": trace.splitlines(keepends=True),
            }
        )
    return 0, json.dumps(outcome.value)

"""A loopback emulator of the AWS Lambda REST API (2015-03-31) subset faasml calls.

It speaks the wire contract botocore's ``rest-json`` protocol expects, taken from the Lambda
service model shipped with botocore and the API reference:

* ``POST /2015-03-31/functions`` CreateFunction (201), ``GET .../functions/{name}`` GetFunction,
  ``GET .../configuration`` GetFunctionConfiguration, ``PUT .../code`` UpdateFunctionCode,
  ``PUT .../configuration`` UpdateFunctionConfiguration, ``DELETE .../functions/{name}`` (204),
  ``POST .../invocations`` Invoke.
* A new function is ``State=Pending`` and an update ``LastUpdateStatus=InProgress`` for
  :attr:`LambdaEmulator.settle_seconds`; meanwhile another update or an Invoke gets 409
  ``ResourceConflictException``, as Lambda does. The waiters ``function_active_v2`` and
  ``function_updated_v2`` poll GetFunction for exactly these fields.
* Errors carry the ``x-amzn-ErrorType`` header and a JSON body ``{"Type": "User", "Message"/
  "message": ...}`` (the member spelling of each error shape in the model), plus
  ``x-amzn-RequestId``; throttling adds ``Retry-After`` and ``Reason``.
* Invoke: ``X-Amz-Invocation-Type`` ``RequestResponse`` (200) or ``Event`` (202, run in the
  background); 413 ``RequestTooLargeException`` over 6 MB (sync) or 1 MB (Event); 400
  ``InvalidRequestContentException`` for a body that is not JSON; response headers
  ``X-Amz-Executed-Version`` and, on failure, ``X-Amz-Function-Error: Unhandled`` with the
  bodies Lambda's Python runtime writes: ``{"errorMessage", "errorType", "requestId",
  "stackTrace"}`` for an exception, ``Sandbox.Timedout`` "Task timed out after N seconds",
  ``Runtime.ExitError`` "Runtime exited ...", ``Function.ResponseSizeTooLarge``.

The deployed zip is checked for the module its ``Handler`` names (else the invocation fails with
``Runtime.ImportModuleError``, as on Lambda); the handler then runs from this checkout's faasml in
:class:`~faasml.testing.platform.HandlerHost` processes with the deployed ``Environment`` and
``Timeout``. Nothing here signs or checks signatures.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
import traceback
import urllib.parse
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from faasml.testing.platform import HandlerHost, HostOutcome

ACCOUNT = "123456789012"
REGION = "us-east-1"
SYNC_LIMIT = 6 * 1024 * 1024
ASYNC_LIMIT = 1024 * 1024
RESPONSE_LIMIT = 6 * 1024 * 1024
_PREFIX = "/2015-03-31/functions"

#: error shape -> (HTTP status, name of the message member in the service model)
_ERRORS: dict[str, tuple[int, str]] = {
    "ResourceNotFoundException": (404, "Message"),
    "ResourceConflictException": (409, "message"),
    "TooManyRequestsException": (429, "message"),
    "RequestTooLargeException": (413, "message"),
    "InvalidRequestContentException": (400, "message"),
    "InvalidParameterValueException": (400, "message"),
    "ServiceException": (500, "Message"),
    "EC2ThrottledException": (502, "Message"),
    "AccessDeniedException": (403, "Message"),
    "UnrecognizedClientException": (403, "message"),
}


@dataclass
class _Function:
    config: dict[str, Any]
    zip_names: frozenset[str]
    settles_at: float
    host: HandlerHost | None = None
    host_key: tuple[Any, ...] = ()


@dataclass
class _Injected:
    code: str
    retry_after: str | None = None
    reason: str | None = None


@dataclass
class Record:
    """One Invoke the emulator answered (for assertions)."""

    invocation_type: str
    status: int
    request_id: str
    function_error: str | None = None
    body: bytes = field(default=b"", repr=False)


class _ApiError(Exception):
    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


class LambdaEmulator:
    """The emulated Lambda service on ``http://127.0.0.1:<port>`` (:attr:`endpoint_url`).

    :param concurrency: handler processes per function (Lambda's execution environments).
    :param settle_seconds: how long a function stays ``Pending``/``InProgress`` after a change.
    """

    def __init__(self, *, concurrency: int = 2, settle_seconds: float = 0.05) -> None:
        self.concurrency = concurrency
        self.settle_seconds = settle_seconds
        self.functions: dict[str, _Function] = {}
        self.requests: list[tuple[str, str]] = []
        self.invocations: list[Record] = []
        self.uploads: list[bytes] = []
        self._injected: list[_Injected] = []
        self._lock = threading.RLock()
        self._background = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lambda-event")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint_url(self) -> str:
        """Base URL to give boto3 as ``endpoint_url``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # ---- switches for tests

    def inject(
        self,
        code: str,
        times: int = 1,
        *,
        retry_after: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Answer the next ``times`` Invoke requests with the error ``code``."""
        with self._lock:
            self._injected.extend(_Injected(code, retry_after, reason) for _ in range(times))

    def close(self) -> None:
        """Stop the server, the background invocations and every handler process."""
        self._server.shutdown()
        self._server.server_close()
        self._background.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for function in self.functions.values():
                if function.host is not None:
                    function.host.close()

    def __enter__(self) -> LambdaEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- API operations

    def dispatch(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Route one request; return ``(status, headers, body)``."""
        parsed = urllib.parse.urlsplit(path)
        self.requests.append((method, parsed.path))
        if not parsed.path.startswith(_PREFIX):
            raise _ApiError("InvalidParameterValueException", f"unknown path {parsed.path}")
        rest = parsed.path[len(_PREFIX) :].strip("/")
        if not rest:
            if method == "POST":
                return 201, {}, self._create(self._json(body))
            raise _ApiError("InvalidParameterValueException", "ListFunctions is not emulated")
        name_part, _, action = rest.partition("/")
        name = _function_name(urllib.parse.unquote(name_part))
        if method == "GET" and action == "":
            return 200, {}, _dump(self._get(name, full=True))
        if method == "GET" and action == "configuration":
            return 200, {}, _dump(self._get(name, full=False))
        if method == "PUT" and action == "code":
            return 200, {}, _dump(self._update_code(name, self._json(body)))
        if method == "PUT" and action == "configuration":
            return 200, {}, _dump(self._update_configuration(name, self._json(body)))
        if method == "DELETE" and action == "":
            self._delete(name)
            return 204, {}, b""
        if method == "POST" and action == "invocations":
            kind = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
            return self._invoke(name, kind, body)
        raise _ApiError("InvalidParameterValueException", f"{method} {parsed.path} is not emulated")

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            document = json.loads(body or b"{}")
        except ValueError as exc:
            raise _ApiError(
                "InvalidRequestContentException", f"Could not parse request body into json: {exc}"
            ) from None
        if not isinstance(document, dict):
            raise _ApiError("InvalidRequestContentException", "request body must be a JSON object")
        return document

    def _arn(self, name: str) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"

    def _lookup(self, name: str) -> _Function:
        function = self.functions.get(name)
        if function is None:
            raise _ApiError("ResourceNotFoundException", f"Function not found: {self._arn(name)}")
        self._settle(function)
        return function

    def _settle(self, function: _Function) -> None:
        if time.monotonic() < function.settles_at:
            return
        config = function.config
        if config["State"] == "Pending":
            config.update(State="Active", StateReason=None, StateReasonCode=None)
        if config.get("LastUpdateStatus") == "InProgress":
            config.update(
                LastUpdateStatus="Successful",
                LastUpdateStatusReason=None,
                LastUpdateStatusReasonCode=None,
            )
        for key in [k for k, v in config.items() if v is None]:
            del config[key]

    def _code(self, encoded: Any) -> tuple[bytes, frozenset[str]]:
        if not isinstance(encoded, str):
            raise _ApiError(
                "InvalidParameterValueException",
                "Code.ZipFile must be given (only zip packages are emulated)",
            )
        archive = base64.b64decode(encoded)
        try:
            with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
                names = frozenset(zipped.namelist())
        except zipfile.BadZipFile:
            raise _ApiError(
                "InvalidParameterValueException",
                "Could not unzip uploaded file. Please check your file, then try to upload again.",
            ) from None
        self.uploads.append(archive)
        return archive, names

    def _create(self, request: dict[str, Any]) -> bytes:
        name = str(request.get("FunctionName", ""))
        with self._lock:
            if name in self.functions:
                raise _ApiError("ResourceConflictException", f"Function already exist: {name}")
            for required in ("Role", "Runtime", "Handler"):
                if not request.get(required):
                    raise _ApiError(
                        "InvalidParameterValueException",
                        f"{required} is required for a zip function",
                    )
            archive, names = self._code(request.get("Code", {}).get("ZipFile"))
            config = {
                "FunctionName": name,
                "FunctionArn": self._arn(name),
                "Runtime": request["Runtime"],
                "Role": request["Role"],
                "Handler": request["Handler"],
                "CodeSize": len(archive),
                "Description": request.get("Description", ""),
                "Timeout": int(request.get("Timeout", 3)),
                "MemorySize": int(request.get("MemorySize", 128)),
                "LastModified": _now(),
                "CodeSha256": base64.b64encode(hashlib.sha256(archive).digest()).decode(),
                "Version": "$LATEST",
                "Environment": {
                    "Variables": dict(request.get("Environment", {}).get("Variables", {}))
                },
                "PackageType": request.get("PackageType", "Zip"),
                "Architectures": list(request.get("Architectures") or ["x86_64"]),
                "State": "Pending",
                "StateReason": "The function is being created.",
                "StateReasonCode": "Creating",
            }
            self.functions[name] = _Function(config, names, time.monotonic() + self.settle_seconds)
            return _dump(config)

    def _get(self, name: str, *, full: bool) -> dict[str, Any]:
        with self._lock:
            config = dict(self._lookup(name).config)
        if not full:
            return config
        return {
            "Configuration": config,
            "Code": {
                "RepositoryType": "S3",
                "Location": f"https://awslambda-{REGION}-tasks.s3.amazonaws.com/snapshots/{ACCOUNT}/{name}",
            },
        }

    def _check_not_busy(self, function: _Function) -> None:
        config = function.config
        if config["State"] == "Pending" or config.get("LastUpdateStatus") == "InProgress":
            raise _ApiError(
                "ResourceConflictException",
                "The operation cannot be performed at this time. An update is in progress for "
                f"resource: {config['FunctionArn']}",
            )

    def _start_update(self, function: _Function) -> None:
        function.config.update(
            LastModified=_now(),
            LastUpdateStatus="InProgress",
            LastUpdateStatusReason="The function is being created.",
            LastUpdateStatusReasonCode="Creating",
        )
        function.settles_at = time.monotonic() + self.settle_seconds

    def _update_code(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            function = self._lookup(name)
            self._check_not_busy(function)
            archive, names = self._code(request.get("ZipFile"))
            function.zip_names = names
            function.config.update(
                CodeSize=len(archive),
                CodeSha256=base64.b64encode(hashlib.sha256(archive).digest()).decode(),
            )
            if request.get("Architectures"):
                function.config["Architectures"] = list(request["Architectures"])
            self._start_update(function)
            return dict(function.config)

    def _update_configuration(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            function = self._lookup(name)
            self._check_not_busy(function)
            for key in ("Role", "Runtime", "Handler", "Description", "Timeout", "MemorySize"):
                if key in request:
                    function.config[key] = request[key]
            if "Environment" in request:
                function.config["Environment"] = {
                    "Variables": dict(request["Environment"].get("Variables", {}))
                }
            self._start_update(function)
            return dict(function.config)

    def _delete(self, name: str) -> None:
        with self._lock:
            function = self._lookup(name)
            del self.functions[name]
        if function.host is not None:
            function.host.close()

    # ---- Invoke

    def _invoke(self, name: str, kind: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if kind not in ("RequestResponse", "Event", "DryRun"):
            raise _ApiError("InvalidParameterValueException", f"Unsupported invocation type {kind}")
        with self._lock:
            function = self._lookup(name)
            if function.config["State"] == "Pending":
                raise _ApiError(
                    "ResourceConflictException",
                    "The operation cannot be performed at this time. The function is currently "
                    "in the following state: Pending",
                )
            injected = self._injected.pop(0) if self._injected else None
        if injected is not None:
            extra = {"Retry-After": injected.retry_after} if injected.retry_after else {}
            raise _ApiError(injected.code, _injected_message(injected.code), extra)
        limit = SYNC_LIMIT if kind == "RequestResponse" else ASYNC_LIMIT
        if len(body) > limit:
            raise _ApiError(
                "RequestTooLargeException",
                f"Request must be smaller than {limit} bytes for the InvokeFunction operation",
            )
        try:
            event = json.loads(body or b"{}")
        except ValueError as exc:
            raise _ApiError(
                "InvalidRequestContentException",
                f"Could not parse request payload into json: {exc}",
            ) from None
        request_id = str(uuid.uuid4())
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": request_id}
        if kind == "DryRun":
            return 204, headers, b""
        if kind == "Event":
            self._background.submit(self._run_event, function, event, request_id)
            self.invocations.append(Record(kind, 202, request_id))
            return 202, {"x-amzn-RequestId": request_id}, b""
        status_headers, payload = self._run(function, event, request_id)
        headers.update(status_headers)
        self.invocations.append(
            Record(kind, 200, request_id, status_headers.get("X-Amz-Function-Error"), payload)
        )
        return 200, headers, payload

    def _run_event(self, function: _Function, event: Any, request_id: str) -> None:
        try:
            self._run(function, event, request_id)
        except Exception:  # a background invocation has nobody to report to; keep it visible
            traceback.print_exc()

    def _host(self, function: _Function) -> HandlerHost:
        config = function.config
        variables = dict(config["Environment"]["Variables"])
        key = (
            config["CodeSha256"],
            config["Handler"],
            config["Timeout"],
            tuple(sorted(variables.items())),
        )
        with self._lock:
            if function.host is None or function.host_key != key:
                if function.host is not None:
                    function.host.close()
                module, _, attr = config["Handler"].rpartition(".")
                function.host = HandlerHost(
                    f"{module}:{attr}",
                    environment=variables,
                    timeout=float(config["Timeout"]),
                    concurrency=self.concurrency,
                )
                function.host_key = key
            return function.host

    def _run(
        self, function: _Function, event: Any, request_id: str
    ) -> tuple[dict[str, str], bytes]:
        config = function.config
        module = config["Handler"].rpartition(".")[0]
        if f"{module.replace('.', '/')}.py" not in function.zip_names:
            return _unhandled(
                {
                    "errorMessage": (
                        f"Unable to import module '{module}': No module named '{module}'"
                    ),
                    "errorType": "Runtime.ImportModuleError",
                    "requestId": request_id,
                    "stackTrace": [],
                }
            )
        context = {
            "aws_request_id": request_id,
            "function_name": config["FunctionName"],
            "function_version": "$LATEST",
            "invoked_function_arn": config["FunctionArn"],
            "memory_limit_in_mb": str(config["MemorySize"]),
            "log_group_name": f"/aws/lambda/{config['FunctionName']}",
        }
        outcome = self._host(function).call(
            event, context=context, remaining_ms=int(config["Timeout"] * 1000)
        )
        return _response(outcome, request_id, float(config["Timeout"]))


def _response(
    outcome: HostOutcome, request_id: str, timeout: float
) -> tuple[dict[str, str], bytes]:
    """Lambda's answer to one finished handler call: extra headers and body."""
    if outcome.timed_out:
        return _unhandled(
            {
                "errorType": "Sandbox.Timedout",
                "errorMessage": (
                    f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
                ),
            }
        )
    if outcome.crashed:
        return _unhandled(
            {
                "errorType": "Runtime.ExitError",
                "errorMessage": (
                    f"RequestId: {request_id} Error: Runtime exited without providing a reason"
                ),
            }
        )
    if outcome.error is not None:
        remote_type = outcome.error.remote_type or "Exception"
        message = str(outcome.error)
        if message.startswith(f"{remote_type}: "):
            message = message[len(remote_type) + 2 :]
        return _unhandled(
            {
                # The Python runtime reports the bare class name and the frames as a list.
                "errorMessage": message,
                "errorType": remote_type.rpartition(".")[2],
                "requestId": request_id,
                "stackTrace": list(_frames(outcome.error.remote_traceback or "")),
            }
        )
    try:
        body = json.dumps(outcome.value).encode()
    except (TypeError, ValueError) as exc:
        return _unhandled(
            {
                "errorMessage": f"Unable to marshal response: {exc}",
                "errorType": "Runtime.MarshalError",
                "requestId": request_id,
                "stackTrace": [],
            }
        )
    if len(body) > RESPONSE_LIMIT:
        return _unhandled(
            {
                "errorMessage": (
                    f"Response payload size ({len(body)} bytes) exceeded maximum allowed "
                    f"payload size ({RESPONSE_LIMIT} bytes)."
                ),
                "errorType": "Function.ResponseSizeTooLarge",
            }
        )
    return {}, body


def _unhandled(report: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return {"X-Amz-Function-Error": "Unhandled"}, _dump(report)


def _frames(text: str) -> Iterator[str]:
    """The ``File ...`` frames of a formatted traceback, one string per frame."""
    frame: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("  File "):
            if frame:
                yield "".join(frame)
            frame = [line]
        elif frame and line.startswith("    "):
            frame.append(line)
        elif frame:
            yield "".join(frame)
            frame = []
    if frame:
        yield "".join(frame)


def _injected_message(code: str) -> str:
    return {
        "TooManyRequestsException": "Rate Exceeded.",
        "ServiceException": "An internal error occurred.",
        "EC2ThrottledException": (
            "Lambda was throttled by Amazon EC2 during Lambda function initialization."
        ),
        "AccessDeniedException": "User is not authorized to perform: lambda:InvokeFunction",
        "UnrecognizedClientException": "The security token included in the request is invalid.",
    }.get(code, code)


def _function_name(value: str) -> str:
    if value.startswith("arn:"):
        parts = value.split(":")
        return parts[6] if len(parts) > 6 else value
    return value.partition(":")[0]


def _dump(document: Any) -> bytes:
    return json.dumps(document).encode()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())


def _handler_class(emulator: LambdaEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request_id = str(uuid.uuid4())
            try:
                status, headers, payload = emulator.dispatch(
                    self.command, self.path, self.headers, body
                )
            except _ApiError as exc:
                status_code, member = _ERRORS.get(exc.code, (400, "message"))
                document: dict[str, Any] = {"Type": "User", member: exc.message}
                if exc.code == "TooManyRequestsException":
                    document["Reason"] = "ConcurrentInvocationLimitExceeded"
                if status_code >= 500:
                    document["Type"] = "Service"
                status, payload = status_code, _dump(document)
                headers = {"x-amzn-ErrorType": exc.code, **exc.headers}
                if status_code >= 400 and self.path.endswith("/invocations"):
                    emulator.invocations.append(
                        Record(
                            self.headers.get("X-Amz-Invocation-Type") or "RequestResponse",
                            status,
                            request_id,
                            None,
                            payload,
                        )
                    )
            self.send_response(status)
            if "x-amzn-RequestId" not in headers:
                self.send_header("x-amzn-RequestId", request_id)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass  # keep test output quiet

    return Handler

"""The ``huawei`` Function backend: Huawei Cloud FunctionGraph via ``huaweicloudsdkfunctiongraph``.

The deployed function is a Python zip whose ``index.handler`` is
:func:`faasml.providers.huawei.handler.handler`. FunctionGraph events are JSON, so payloads and
results travel in faasml's base64 envelope (:mod:`faasml.providers._shim`), and the limits apply
to the envelope: 6 MB for a synchronous request, **256 KB for an asynchronous one**.
:attr:`FunctionGraphFunction.max_payload_bytes` is the largest raw payload whose envelope fits the
smaller limit, so a payload that :meth:`~FunctionGraphFunction.invoke` accepts is accepted by
:meth:`~FunctionGraphFunction.invoke_async` too.

How FunctionGraph reports an invocation, and what this backend makes of it:

* ``POST .../invocations`` with ``X-CFF-Request-Version: v1`` answers 200 with
  ``{"request_id", "result", "log", "status"}``; ``result`` is the handler's return value as JSON
  text. A failed run still answers 200: the headers ``X-Is-Func-Err: true`` and
  ``X-Func-Err-Code`` say so, and ``result`` holds the runtime's report (``errorMessage``,
  ``errorType``, ``stackTrace``). The error codes are FunctionGraph's function-error codes
  (Huawei's openYuanrong ``constants``): 4010 invocation timeout and 4211 initializer timeout
  (:class:`~faasml.errors.InvocationTimeoutError`), 4205 runtime memory limit exceeded
  (:class:`~faasml.errors.WorkerDiedError`), 4004 response and 4140 request over the limit
  (:class:`~faasml.errors.PayloadTooLargeError`); anything else with a report is the handler's
  exception (:class:`~faasml.errors.FunctionError`). Each of these errors carries ``provider``,
  ``code`` and ``request_id``.
* ``POST .../invocations-async`` answers 202 with a ``request_id``;
  ``GET .../async-invocations?request_id=`` lists its record, whose ``status`` is WAIT, RUNNING,
  SUCCESS, FAIL or DISCARD with ``error_code``/``error_message``. Status requests go through a
  second SDK client with a short read timeout (:attr:`FunctionGraphFunction.poll_timeout`), so a
  stalled request cannot hold :meth:`Invocation.poll` for the synchronous time limit; a closed
  backend stops polling.
* API errors are HTTP statuses with ``{"error_code", "error_msg"}`` bodies, raised by the SDK as
  ``ClientRequestException`` (4xx) or ``ServerResponseException`` (5xx). 429 is retried with
  exponential backoff and jitter (honouring ``Retry-After``), then raised as
  :class:`~faasml.errors.ThrottledError`.

The SDK exposes only some response headers on its models, so the backend reads the rest
(``X-Func-Err-Code``, ``X-Is-Func-Err``, ``Retry-After``) with an SDK response handler that
keeps them per thread.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions as sdk_errors
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.http.http_handler import HttpHandler
from huaweicloudsdkfunctiongraph.v2 import (
    AsyncInvokeFunctionRequest,
    CreateFunctionRequest,
    CreateFunctionRequestBody,
    FuncCode,
    FunctionGraphClient,
    InvokeFunctionRequest,
    ListAsyncInvocationsRequest,
    ShowFunctionConfigRequest,
    UpdateFunctionCodeRequest,
    UpdateFunctionCodeRequestBody,
    UpdateFunctionConfigRequest,
    UpdateFunctionConfigRequestBody,
)
from huaweicloudsdkfunctiongraph.v2.region.functiongraph_region import FunctionGraphRegion

from faasml.config import resolve_secret
from faasml.errors import (
    AuthenticationError,
    ConfigurationError,
    FunctionError,
    InvocationTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ThrottledError,
    WorkerDiedError,
)
from faasml.interfaces import Function, Invocation, InvocationStatus
from faasml.providers import _shim
from faasml.providers._common import backoff_delay, checked_payload, retry_after_seconds
from faasml.providers._package import build_zip, runtime_requirements, zip_digest
from faasml.runtime import SECRET_ENV

__all__ = ["FunctionGraphFunction"]

logger = logging.getLogger(__name__)

_KIB = 1024
_MIB = 1024 * _KIB
#: FunctionGraph's request-body limits (quota page): synchronous and asynchronous invocations.
SYNC_REQUEST_LIMIT = 6 * _MIB
ASYNC_REQUEST_LIMIT = 256 * _KIB
#: largest zip the create/update APIs take inline (base64 in ``func_code.file``).
_INLINE_CODE_LIMIT = 50 * _MIB
#: ``user_data`` and ``encrypted_user_data`` each: at most 20 variables, 4 KB in total.
_ENV_MAX_VARS = 20
_ENV_MAX_CHARS = 4 * _KIB

# Function-error codes (X-Func-Err-Code, async ``error_code``), from FunctionGraph's runtime
# constants as published in Huawei's openYuanrong.
_TIMEOUT_CODES = frozenset({4010, 4211})  # invocation timeout, initializer timeout
_CRASH_CODES = frozenset({4205})  # runtime memory limit exceeded: the runtime was killed
_RESPONSE_TOO_LARGE = 4004  # the function's result is over the platform limit
_REQUEST_TOO_LARGE = 4140  # the invocation's request body is over the platform limit
_TOO_LARGE_CODES = frozenset({_RESPONSE_TOO_LARGE, _REQUEST_TOO_LARGE})

# A platform-made report has no errorType; its message tells a timeout or a dead runtime apart.
_TIMEOUT_TEXT = re.compile(r"time[ds]?[ -]?out", re.IGNORECASE)
_CRASH_TEXT = re.compile(
    r"memory limit exceeded|out of memory|runtime (process )?exit|process exited|killed|signal",
    re.IGNORECASE,
)
# The Python runtime writes "Exception: message" when it gives no separate errorType.
_TYPED_MESSAGE = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)): (.*)$", re.S
)

_ASYNC_STATUS: dict[str, InvocationStatus] = {
    "WAIT": "running",
    "RUNNING": "running",
    "SUCCESS": "succeeded",
    "FAIL": "failed",
    "DISCARD": "failed",
}

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,59}$")
_RUNTIME_RE = re.compile(r"^Python(3\.\d+)$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: the zip's entry module; FunctionGraph calls ``index.handler``.
_INDEX_PY = (
    '"""FunctionGraph entry point of a faasml deployment (handler ``index.handler``)."""\n\n'
    "from faasml.providers.huawei.handler import handler\n\n"
    '__all__ = ["handler"]\n'
)
_HANDLER = "index.handler"

# The connect timeout of a status request, in seconds (its read timeout is poll_timeout).
_POLL_CONNECT_TIMEOUT = 3.0
# Backoff bounds for throttled calls, in seconds.
_MAX_DELAY = 20.0
_MAX_RETRY_AFTER = 60.0


def _as_int(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


class FunctionGraphFunction(Function):
    """A FunctionGraph function running faasml's handler.

    :param function: the function name (``func_name``): a letter, then up to 59 letters, digits,
        ``_`` or ``-``.
    :param region: the region id (``cn-north-4`` ...); defaults to ``$HUAWEICLOUD_SDK_REGION``.
        It is part of the function URN, so it is needed with ``endpoint`` too.
    :param project_id: the project id of the region; defaults to
        ``$HUAWEICLOUD_SDK_PROJECT_ID``. Always passed to the SDK, which otherwise asks IAM.
    :param endpoint: the FunctionGraph endpoint, e.g. ``https://functiongraph.cn-north-4.
        myhuaweicloud.com``; default: the region's public endpoint.
    :param package: the function's package (application) name.
    :param access_key: the access key id, a string or ``{"$env": "VAR"}``; defaults to
        ``$HUAWEICLOUD_SDK_AK``.
    :param secret_key: the secret access key, likewise; defaults to ``$HUAWEICLOUD_SDK_SK``.
    :param security_token: the token of temporary credentials, likewise; defaults to
        ``$HUAWEICLOUD_SDK_SECURITY_TOKEN`` when set.
    :param timeout: the function's time limit in seconds (3 to 259200 per the API model; the quota
        page gives 900 s per request, and the API gateway stops waiting on a synchronous call
        after about 90 s, so long tasks should use :meth:`invoke_async`, as the executor does).
    :param memory_mb: the function's memory, 128 to 10240 MB.
    :param concurrency: how many invocations the executor keeps in flight (the account quota is
        100 concurrent executions by default).
    :param runtime: the FunctionGraph runtime, ``Python3.X``; dependencies are built for it.
    :param max_retries: how many times a throttled (429) request is retried before
        :class:`~faasml.errors.ThrottledError`.
    :param backoff: the first retry delay in seconds; it doubles per retry (up to 20 s), with
        jitter. A ``Retry-After`` header takes precedence.
    :param poll_interval: the least number of seconds between two status requests for one
        asynchronous invocation; :meth:`Invocation.poll` returns the last known status in between.
    :param client: a ready ``FunctionGraphClient`` (tests, custom HTTP settings); credentials are
        then not needed here.
    :raises ConfigurationError: an option is invalid or a credential is missing, naming it.
    """

    name: ClassVar[str] = "huawei"
    #: the largest raw payload whose envelope fits FunctionGraph's 256 KB asynchronous limit.
    max_payload_bytes: ClassVar[int] = _shim.largest_payload(ASYNC_REQUEST_LIMIT)
    deployable: ClassVar[bool] = True
    #: read timeout in seconds of an asynchronous-status request (:meth:`Invocation.poll`): a
    #: stalled request gives up after it and leaves the status as it was. Applies to the client
    #: this backend builds; a ``client=`` passed in is used for polls with its own settings.
    poll_timeout: float = 5.0

    def __init__(
        self,
        function: str = "faasml",
        *,
        region: str | None = None,
        project_id: str | Mapping[str, str] | None = None,
        endpoint: str | None = None,
        package: str = "default",
        access_key: str | Mapping[str, str] | None = None,
        secret_key: str | Mapping[str, str] | None = None,
        security_token: str | Mapping[str, str] | None = None,
        timeout: float = 900.0,
        memory_mb: int = 1024,
        concurrency: int = 100,
        runtime: str = "Python3.10",
        max_retries: int = 4,
        backoff: float = 0.5,
        poll_interval: float = 1.0,
        client: Any = None,
    ) -> None:
        if not isinstance(function, str) or not _NAME_RE.match(function):
            raise ConfigurationError(
                f"function must be a FunctionGraph function name (a letter, then up to 59 "
                f"letters, digits, '_' or '-'), got {function!r}"
            )
        if not isinstance(package, str) or not _NAME_RE.match(package):
            raise ConfigurationError(
                f"package must be a FunctionGraph package name, got {package!r}"
            )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 3 <= timeout <= 259200  # also rejects NaN
        ):
            raise ConfigurationError(
                f"timeout must be between 3 and 259200 seconds (FunctionGraph), got {timeout!r}"
            )
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int):
            raise ConfigurationError(f"memory_mb must be an integer, got {memory_mb!r}")
        if not 128 <= memory_mb <= 10240:
            raise ConfigurationError(f"memory_mb must be between 128 and 10240, got {memory_mb}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if not isinstance(runtime, str) or not _RUNTIME_RE.match(runtime):
            raise ConfigurationError(
                f"runtime must be a FunctionGraph Python runtime such as 'Python3.10', got "
                f"{runtime!r}"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        for option, value in (("backoff", backoff), ("poll_interval", poll_interval)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value < math.inf
            ):
                raise ConfigurationError(
                    f"{option} must be a number of seconds >= 0, got {value!r}"
                )

        region = region or os.environ.get("HUAWEICLOUD_SDK_REGION") or None
        if not region:
            raise ConfigurationError(
                "region is required for FunctionGraph (it is part of the function URN): pass "
                "region='cn-north-4' (for example) or export HUAWEICLOUD_SDK_REGION"
            )
        resolved_project = (
            resolve_secret(project_id, "project_id")  # type: ignore[arg-type]
            if project_id is not None
            else os.environ.get("HUAWEICLOUD_SDK_PROJECT_ID")
        )
        if not resolved_project:
            raise ConfigurationError(
                "project_id is required for FunctionGraph: pass project_id= or export "
                "HUAWEICLOUD_SDK_PROJECT_ID (without it the SDK would look it up in IAM)"
            )

        self.function = function
        self.region = region
        self.project_id = resolved_project
        self.package = package
        self.endpoint = (endpoint or f"https://functiongraph.{region}.myhuaweicloud.com").rstrip(
            "/"
        )
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.concurrency = concurrency
        self.runtime = runtime
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.poll_interval = float(poll_interval)
        #: the function URN every call addresses (the ``latest`` version).
        self.urn = f"urn:fss:{region}:{resolved_project}:function:{package}:{function}:latest"
        self._deployed_keys: list[str] = []
        self._closed = False
        # Response headers of the last SDK call made by this thread (see the module docstring).
        self._headers = threading.local()
        # The client of status polls, built on first use with a short read timeout.
        self._poll_client: Any = client
        self._poll_client_lock = threading.Lock()
        self._make_poll_client: Callable[[], Any] | None = None
        if client is not None:
            self._client = client
        else:
            self._client = self._build_client(
                endpoint=endpoint,
                access_key=access_key,
                secret_key=secret_key,
                security_token=security_token,
            )

    # ---- Function primitives

    def invoke(self, payload: bytes) -> bytes:
        """Run the function on ``payload`` synchronously and return its result.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes` (nothing is
            sent), or FunctionGraph refused the request or the result as too large.
        :raises FunctionError: the handler raised; carries ``remote_type`` and
            ``remote_traceback``.
        :raises InvocationTimeoutError: the function ran past its time limit.
        :raises WorkerDiedError: the runtime died (out of memory, exited).
        :raises NotFoundError: the function does not exist (run ``faasml deploy``).
        :raises ThrottledError: still throttled after ``max_retries`` retries.
        :raises AuthenticationError: the credentials were rejected.
        :raises PermissionDeniedError: the credentials may not invoke the function.
        :raises ServiceUnavailableError: FunctionGraph failed (5xx) or could not be reached.
        """
        data = self._check_payload(payload)
        request = InvokeFunctionRequest(
            function_urn=self.urn,
            body=_shim.wrap(data),
            x_cff_log_type="tail",
            x_cff_request_version="v1",
        )
        response = self._call("invoke_function", request)
        headers = self._last_headers()
        request_id = getattr(response, "request_id", None) or getattr(
            response, "x_cff_request_id", None
        )
        text = getattr(response, "result", None)
        document = _parse_json(text)
        failed = str(headers.get("X-Is-Func-Err", "false")).lower() == "true"
        if not failed and isinstance(document, Mapping) and _shim.ENVELOPE_KEY in document:
            try:
                return _shim.unwrap(document, "FunctionGraph result")
            except ValueError as exc:
                raise ProviderError(
                    f"the FunctionGraph function {self.function} returned a damaged result: {exc}",
                    provider=self.name,
                    request_id=request_id,
                ) from None
        raise self._failure(
            document,
            text,
            headers.get("X-Func-Err-Code"),
            request_id=request_id,
            execution_status=getattr(response, "status", None),
        )

    def invoke_async(self, payload: bytes) -> Invocation:
        """Queue an asynchronous run of the function on ``payload`` and return at once.

        :meth:`Invocation.poll` asks FunctionGraph's asynchronous-invocation records (at most
        once per ``poll_interval``); a failed run sets :attr:`Invocation.error` to the same
        typed error :meth:`invoke` would raise.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`.
        :raises NotFoundError: the function does not exist (run ``faasml deploy``).
        :raises ThrottledError: still throttled after ``max_retries`` retries.
        """
        data = self._check_payload(payload)
        response = self._call(
            "async_invoke_function",
            AsyncInvokeFunctionRequest(function_urn=self.urn, body=_shim.wrap(data)),
        )
        request_id = getattr(response, "request_id", None)
        if not request_id:
            raise ProviderError(
                "FunctionGraph accepted the asynchronous invocation but returned no request_id",
                provider=self.name,
            )
        return Invocation(id=str(request_id), status="running", _poll=self._poller())

    # ---- deployment

    def deploy(
        self,
        *,
        secret: str,
        environment: Mapping[str, str] | None = None,
        dependencies: bool = True,
    ) -> str:
        """Create the function, or update its code and configuration (idempotent).

        The zip holds faasml, ``index.py`` (handler ``index.handler``) and, with
        ``dependencies``, faasml's requirements built for the runtime's Python. ``secret`` goes
        into ``encrypted_user_data`` (FunctionGraph's encrypted variables) as ``FAASML_SECRET``;
        ``environment`` goes into ``user_data``.

        :returns: one line naming the function, what was done and the package digest.
        :raises ConfigurationError: a variable is invalid, the variables exceed FunctionGraph's
            20 / 4 KB limits, or the zip is over the 50 MB inline upload limit.
        :raises AuthenticationError: the credentials were rejected (and the other errors of
            :meth:`invoke` for the API calls).
        """
        if not isinstance(secret, str) or not secret:
            raise ConfigurationError("secret must be a non-empty string")
        env = dict(environment or {})
        for key, value in env.items():
            # Name the key only: the value may be a secret.
            if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
                raise ConfigurationError(f"environment variable name {key!r} is not valid")
            if not isinstance(value, str):
                raise ConfigurationError(f"environment variable {key!r} must have a string value")
        if SECRET_ENV in env:
            raise ConfigurationError(
                f"pass the signing secret as secret=, not as the {SECRET_ENV} environment variable"
            )
        user_data = json.dumps(env, sort_keys=True)
        encrypted_user_data = json.dumps({SECRET_ENV: secret})
        for field, variables, text in (
            ("user_data", env, user_data),
            ("encrypted_user_data", {SECRET_ENV: secret}, encrypted_user_data),
        ):
            if len(variables) > _ENV_MAX_VARS or len(text) > _ENV_MAX_CHARS:
                raise ConfigurationError(
                    f"FunctionGraph takes at most {_ENV_MAX_VARS} variables and {_ENV_MAX_CHARS} "
                    f"characters in {field}; got {len(variables)} variables, {len(text)} characters"
                )
        match = _RUNTIME_RE.match(self.runtime)
        assert match is not None  # validated in __init__
        archive = build_zip(
            {"index.py": _INDEX_PY},
            dependencies=runtime_requirements("huawei") if dependencies else [],
            python_version=match.group(1),
        )
        if len(archive) > _INLINE_CODE_LIMIT:
            raise ConfigurationError(
                f"the deployment zip is {len(archive)} bytes, over FunctionGraph's "
                f"{_INLINE_CODE_LIMIT} byte limit for code uploaded through the API; deploy with "
                "dependencies=False and provide them as a FunctionGraph dependency package"
            )
        code = FuncCode(file=base64.b64encode(archive).decode("ascii"))
        if self._exists():
            self._call(
                "update_function_code",
                UpdateFunctionCodeRequest(
                    function_urn=self.urn,
                    body=UpdateFunctionCodeRequestBody(
                        code_type="zip", code_filename="faasml.zip", func_code=code
                    ),
                ),
            )
            self._call(
                "update_function_config",
                UpdateFunctionConfigRequest(
                    function_urn=self.urn,
                    body=UpdateFunctionConfigRequestBody(
                        func_name=self.function,
                        runtime=self.runtime,
                        timeout=math.ceil(self.timeout),
                        handler=_HANDLER,
                        memory_size=self.memory_mb,
                        user_data=user_data,
                        encrypted_user_data=encrypted_user_data,
                    ),
                ),
            )
            action = "updated"
        else:
            self._call(
                "create_function",
                CreateFunctionRequest(
                    body=CreateFunctionRequestBody(
                        func_name=self.function,
                        package=self.package,
                        runtime=self.runtime,
                        handler=_HANDLER,
                        memory_size=self.memory_mb,
                        timeout=math.ceil(self.timeout),
                        code_type="zip",
                        code_filename="faasml.zip",
                        func_code=code,
                        user_data=user_data,
                        encrypted_user_data=encrypted_user_data,
                        description="faasml worker (created by faasml deploy)",
                    )
                ),
            )
            action = "created"
        self._deployed_keys = sorted([*env, SECRET_ENV])
        logger.info("%s FunctionGraph function %s", action, self.urn)
        return (
            f"{action} FunctionGraph function {self.urn} ({self.runtime}, {self.memory_mb} MB, "
            f"timeout {math.ceil(self.timeout)} s, zip {len(archive)} bytes, "
            f"sha256 {zip_digest(archive)[:12]})"
        )

    # ---- lifecycle and introspection

    def close(self) -> None:
        """Refuse further calls and stop status polls (an invocation's status stays as it was).

        Idempotent; the SDK clients hold no resources to release.
        """
        self._closed = True

    def environment(self) -> Mapping[str, str]:
        """The variables :meth:`deploy` gave the function, every value shown as ``"***"``."""
        return {key: "***" for key in self._deployed_keys}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(function={self.function!r}, region={self.region!r}, "
            f"project_id={self.project_id!r}, package={self.package!r}, "
            f"endpoint={self.endpoint!r}, runtime={self.runtime!r}, memory_mb={self.memory_mb}, "
            f"timeout={self.timeout:g}, concurrency={self.concurrency}, credentials='***', "
            f"environment={dict(self.environment())!r})"
        )

    # ---- internals: the client and its calls

    def _build_client(
        self,
        *,
        endpoint: str | None,
        access_key: str | Mapping[str, str] | None,
        secret_key: str | Mapping[str, str] | None,
        security_token: str | Mapping[str, str] | None,
    ) -> Any:
        ak = _credential(access_key, "access_key", "HUAWEICLOUD_SDK_AK")
        sk = _credential(secret_key, "secret_key", "HUAWEICLOUD_SDK_SK")
        token = _credential(security_token, "security_token", "HUAWEICLOUD_SDK_SECURITY_TOKEN")
        if not ak or not sk:
            raise ConfigurationError(
                "FunctionGraph needs an access key: pass access_key= and secret_key= (strings or "
                '{"$env": "VAR"}) or export HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK'
            )
        credentials = BasicCredentials(ak, sk, self.project_id)
        if token:
            credentials = credentials.with_security_token(token)
        headers = self._headers

        def keep_headers(**kwargs: Any) -> None:
            response = kwargs.get("response")
            if response is not None:
                headers.value = response.headers

        def make(timeout: tuple[float, float], handler: HttpHandler | None) -> Any:
            # The SDK's own retries stay off (0); throttling is retried here, with backoff.
            builder = (
                FunctionGraphClient.new_builder()
                .with_credentials(credentials)
                .with_http_config(HttpConfig(timeout=timeout, retry_times=0))
            )
            if handler is not None:
                builder = builder.with_http_handler(handler)
            if endpoint:
                builder = builder.with_endpoint(self.endpoint)
            else:
                try:
                    builder = builder.with_region(FunctionGraphRegion.value_of(self.region))
                except KeyError:
                    builder = builder.with_endpoint(self.endpoint)
            return builder.build()

        # Status polls must not block: a few seconds' read timeout (see poll_timeout).
        self._make_poll_client = lambda: make(
            (min(_POLL_CONNECT_TIMEOUT, self.poll_timeout), self.poll_timeout), None
        )
        # A sync invocation holds the connection while the function runs: wait a little longer
        # than the time limit before the client gives up.
        return make((10, self.timeout + 30), HttpHandler().add_response_handler(keep_headers))

    def _status_client(self) -> Any:
        """The client of status polls (short read timeout), built on first use."""
        with self._poll_client_lock:
            if self._poll_client is None:
                assert self._make_poll_client is not None  # set when no client= was given
                self._poll_client = self._make_poll_client()
            return self._poll_client

    def _last_headers(self) -> Mapping[str, str]:
        # requests' CaseInsensitiveDict: header names match in any case.
        value = getattr(self._headers, "value", None)
        return value if value is not None else {}

    def _call(self, operation: str, request: Any) -> Any:
        """Call the SDK ``operation``, retrying throttled requests; map SDK errors."""
        if self._closed:
            raise ServiceUnavailableError(
                f"the FunctionGraph function {self.function} backend is closed", provider=self.name
            )
        method: Callable[[Any], Any] = getattr(self._client, operation)
        attempt = 0
        while True:
            self._headers.value = None
            try:
                return method(request)
            except sdk_errors.ClientRequestException as exc:
                if exc.status_code == 429 and attempt < self.max_retries:
                    delay = self._retry_delay(attempt)
                    logger.debug(
                        "FunctionGraph throttled %s; retry %d in %.2f s",
                        operation,
                        attempt + 1,
                        delay,
                    )
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise self._api_error(exc, operation, attempts=attempt + 1) from exc
            except sdk_errors.SdkException as exc:
                raise self._api_error(exc, operation, attempts=attempt + 1) from exc

    def _retry_after(self) -> float | None:
        seconds = retry_after_seconds(self._last_headers().get("Retry-After"))
        return None if seconds is None else min(seconds, _MAX_RETRY_AFTER)

    def _retry_delay(self, attempt: int) -> float:
        retry_after = self._retry_after()
        if retry_after is not None:
            return retry_after
        return backoff_delay(attempt, self.backoff, _MAX_DELAY)

    def _api_error(self, exc: Exception, operation: str, *, attempts: int) -> Exception:
        """The faasml error for an SDK exception raised by ``operation``."""
        if isinstance(exc, sdk_errors.ServiceResponseException):
            status = exc.status_code
            code = str(exc.error_code) if exc.error_code is not None else None
            said = f"HTTP {status} {code}: {exc.error_msg}"
            common: dict[str, Any] = {
                "provider": self.name,
                "code": code,
                "status": status,
                "request_id": exc.request_id,
            }
            if status == 401:
                return AuthenticationError(
                    f"FunctionGraph rejected the credentials ({said}); check access_key/"
                    "secret_key (HUAWEICLOUD_SDK_AK/HUAWEICLOUD_SDK_SK), security_token and "
                    "project_id",
                    **common,
                )
            if status == 403:
                return PermissionDeniedError(
                    f"the credentials may not {operation.replace('_', ' ')} on {self.urn} "
                    f"({said}); grant the IAM user FunctionGraph permissions "
                    "(e.g. FunctionGraph FullAccess) in this project",
                    **common,
                )
            if status == 404:
                return NotFoundError(
                    f"FunctionGraph function {self.urn} was not found ({said}); run "
                    "`faasml deploy --provider huawei` to create it, or check function=, "
                    "package=, region= and project_id=",
                    **common,
                )
            code_number = re.search(r"(\d+)$", code or "")
            number = int(code_number.group(1)) if code_number is not None else None
            if status == 400 and number == _RESPONSE_TOO_LARGE:
                return PayloadTooLargeError(
                    f"FunctionGraph refused the result of {operation} as too large ({said}); "
                    f"results are limited to {SYNC_REQUEST_LIMIT} bytes",
                    **common,
                )
            if status == 413 or (status == 400 and number in _TOO_LARGE_CODES):
                return PayloadTooLargeError(
                    f"FunctionGraph refused the request body as too large ({said}); its limits "
                    f"are {SYNC_REQUEST_LIMIT} bytes for synchronous and {ASYNC_REQUEST_LIMIT} "
                    "bytes for asynchronous invocations",
                    **common,
                )
            if status == 429:
                return ThrottledError(
                    f"FunctionGraph throttled {operation} {attempts} times in a row ({said}); "
                    "lower concurrency= or ask Huawei Cloud to raise the function's quota",
                    retry_after=self._retry_after(),
                    **common,
                )
            if status >= 500:
                return ServiceUnavailableError(
                    f"FunctionGraph at {self.endpoint} failed {operation} ({said}); "
                    "try again later",
                    **common,
                )
            return ProviderError(f"FunctionGraph refused {operation} ({said})", **common)
        if isinstance(exc, sdk_errors.RequestTimeoutException):
            if operation == "invoke_function":
                return InvocationTimeoutError(
                    f"FunctionGraph did not answer the synchronous invocation of {self.function} "
                    f"within {self.timeout + 30:g} s (its time limit plus a margin); use "
                    "invoke_async for long tasks",
                    provider=self.name,
                )
            return ServiceUnavailableError(
                f"FunctionGraph at {self.endpoint} did not answer {operation} in time",
                provider=self.name,
            )
        if isinstance(exc, sdk_errors.ConnectionException):
            return ServiceUnavailableError(
                f"cannot reach FunctionGraph at {self.endpoint} ({type(exc).__name__}); check "
                "region=/endpoint= and the network",
                provider=self.name,
            )
        return ProviderError(
            f"FunctionGraph {operation} failed: {type(exc).__name__}", provider=self.name
        )

    def _exists(self) -> bool:
        try:
            self._call("show_function_config", ShowFunctionConfigRequest(function_urn=self.urn))
        except NotFoundError:
            return False
        return True

    def _check_payload(self, payload: bytes) -> bytes:
        return checked_payload(
            payload,
            self.max_payload_bytes,
            provider=self.name,
            platform="huawei function's",
            why=f"FunctionGraph takes {ASYNC_REQUEST_LIMIT} bytes per asynchronous request, "
            "and the base64 JSON envelope adds a third",
        )

    # ---- internals: reading failures

    def _failure(
        self,
        document: Any,
        text: Any,
        code: Any,
        *,
        request_id: str | None = None,
        execution_status: Any = None,
        discarded: bool = False,
    ) -> Exception:
        """The typed error for a failed run, from FunctionGraph's report and error code."""
        report: Mapping[str, Any] = document if isinstance(document, Mapping) else {}
        number = _as_int(code)
        if number in (None, 0):
            number = _as_int(report.get("errorCode"))
        message = str(report.get("errorMessage") or report.get("error_msg") or text or "")
        # The runtime's report of a handler exception names a type; the platform's own
        # (timeout, dead runtime) does not, so only those are read for timeout/crash words.
        platform_made = (
            not report.get("errorType")
            and not report.get("stackTrace")
            and _TYPED_MESSAGE.match(message) is None
        )
        common: dict[str, Any] = {
            "provider": self.name,
            "code": None if number is None else str(number),
            "request_id": request_id,
        }
        if number in _TIMEOUT_CODES or (platform_made and _TIMEOUT_TEXT.search(message)):
            return InvocationTimeoutError(
                f"the FunctionGraph function {self.function} ran past its time limit of "
                f"{self.timeout:g} s ({message}); raise timeout= and deploy again, or split the "
                "work into smaller tasks",
                **common,
            )
        if number in _CRASH_CODES or (platform_made and _CRASH_TEXT.search(message)):
            return WorkerDiedError(
                f"the FunctionGraph runtime running {self.function} died ({message}; code "
                f"{number}); if it ran out of memory, raise memory_mb= (now {self.memory_mb}) "
                "and deploy again",
                **common,
            )
        if number == _RESPONSE_TOO_LARGE:
            return PayloadTooLargeError(
                f"FunctionGraph refused the result of {self.function} as too large ({message}; "
                f"code {number}): results are limited to {SYNC_REQUEST_LIMIT} bytes; return large "
                "outputs through object storage",
                **common,
            )
        if number == _REQUEST_TOO_LARGE:
            return PayloadTooLargeError(
                f"FunctionGraph refused the request to {self.function} as too large ({message}; "
                f"code {number}): requests are limited to {SYNC_REQUEST_LIMIT} bytes synchronous "
                f"and {ASYNC_REQUEST_LIMIT} bytes asynchronous, the base64 envelope included; "
                "pass large inputs through object storage",
                **common,
            )
        if discarded:
            return ServiceUnavailableError(
                f"FunctionGraph discarded the asynchronous invocation {request_id} of "
                f"{self.function} ({message or 'no reason given'}); submit it again",
                **common,
            )
        if report.get("errorMessage") is not None or report.get("errorType") is not None:
            error = _remote_error(report)
            return FunctionError(
                error.message,
                remote_type=error.remote_type,
                remote_traceback=error.remote_traceback,
                **common,
            )
        return FunctionError(
            f"the FunctionGraph function {self.function} failed (execution status "
            f"{execution_status}, code {number}) without an error report: {str(text)[:500]!r}",
            remote_type=None,
            remote_traceback=None,
            **common,
        )

    def _poller(self) -> Callable[[Invocation], None]:
        """A poll function for one invocation that asks FunctionGraph at most every interval."""
        last = [-math.inf]

        def poll(invocation: Invocation) -> None:
            if self._closed:  # closed: no more requests; the status stays as it was
                return
            now = time.monotonic()
            if now - last[0] < self.poll_interval:
                return
            last[0] = now
            self._poll(invocation)

        return poll

    def _poll(self, invocation: Invocation) -> None:
        # A poll must never raise: any failure leaves the status as it was, for the next poll.
        # It must not block either: the status client gives up after poll_timeout seconds.
        if self._closed:
            return
        try:
            response = self._status_client().list_async_invocations(
                ListAsyncInvocationsRequest(function_urn=self.urn, request_id=invocation.id)
            )
            records = list(getattr(response, "invocations", None) or [])
            record = next((r for r in records if r.request_id == invocation.id), None)
            if record is None:  # not recorded yet: it is still being persisted
                return
            raw = str(record.status or "").upper()
            status = _ASYNC_STATUS.get(raw)
            if status is None or status == "running":
                return
            if status == "failed":
                invocation.error = self._failure(
                    _parse_json(record.error_message),
                    record.error_message,
                    record.error_code,
                    request_id=invocation.id,
                    discarded=raw == "DISCARD",
                )
            invocation.status = status
        except Exception as exc:  # noqa: BLE001 - see above; the reason goes to the debug log
            logger.debug("polling FunctionGraph invocation %s failed: %r", invocation.id, exc)


def _credential(value: str | Mapping[str, str] | None, what: str, env_var: str) -> str | None:
    if value is None:
        return os.environ.get(env_var) or None
    return resolve_secret(value, what)  # type: ignore[arg-type]


def _parse_json(text: Any) -> Any:
    if not isinstance(text, (str, bytes, bytearray)):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


def _stack_text(trace: Any) -> str | None:
    """The traceback text from a runtime's ``stackTrace`` (lines, or frame lists)."""
    if isinstance(trace, str):
        return trace
    if not isinstance(trace, list) or not trace:
        return None
    lines = []
    for entry in trace:
        if isinstance(entry, list):
            lines.append("  " + ", ".join(str(part) for part in entry) + "\n")
        else:
            text = str(entry)
            lines.append(text if text.endswith("\n") else text + "\n")
    return "".join(lines)


def _remote_error(report: Mapping[str, Any]) -> FunctionError:
    """A :class:`FunctionError` from the Python runtime's ``errorType``/``errorMessage`` report."""
    remote_type = report.get("errorType")
    message = str(report.get("errorMessage") or "")
    typed = _TYPED_MESSAGE.match(message)
    if typed is not None and (remote_type is None or typed.group(1) == remote_type):
        remote_type, message = typed.group(1), typed.group(2)
    return _shim.remote_error(
        {
            "type": str(remote_type or "Exception"),
            "message": message,
            "traceback": _stack_text(report.get("stackTrace")),
        },
        "FunctionGraph",
    )

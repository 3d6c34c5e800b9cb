"""``FunctionComputeFunction``: Alibaba Cloud Function Compute 2.0 through ``aliyun-fc2``.

Function Compute 2.0 keeps functions inside *services*; this backend invokes one function of one
service (``faasml``/``faasml`` by default) and :meth:`~FunctionComputeFunction.deploy` creates or
updates both. Facts the code relies on (``fc2`` 2.5.2 and Alibaba's FC 2.0 documentation):

* The Python event runtime passes the request body to ``handler(event, context)`` as raw bytes and
  returns the handler's bytes as the response body, so payloads travel without an envelope and
  :attr:`~FunctionComputeFunction.max_payload_bytes` is the platform limit itself: 128 KB for
  asynchronous invocations (what faasml's executor uses) and 32 MB for synchronous ones.
* Every HTTP status >= 400 raises the SDK's single ``fc2.FcError``; its message is the JSON error
  body (``errorCode``/``errorMessage``) plus ``RequestId``. A function error is *HTTP 200* with the
  header ``x-fc-error-type``; fc2 raises ``FcError(status_code=200)`` for it, with the body
  ``{"errorMessage", "errorType", "stackTrace"}``. FC's own reports of a time-out ("Function timed
  out after ...") and of a dead instance ("Process exited unexpectedly before completing request")
  carry no ``errorType``; a report with one comes from the handler and is always a
  :class:`~faasml.errors.FunctionError`, whatever its message says.
* 429 (``ResourceExhausted``: the concurrency quota) and 503 (``ResourceThrottled``: no instances
  to spare) refuse the request before it runs, so retrying them is safe. fc2 does not retry POST,
  and it drops response headers from ``FcError``, so no ``Retry-After`` reaches us.
* GET/PUT/DELETE that end in 500/502/504 are retried by fc2 itself (urllib3) and then surface as
  ``requests.exceptions.RetryError`` instead of ``FcError``.
* FC 2.0 reports the outcome of an asynchronous invocation only through destinations or stateful
  invocations, which fc2 2.5.2 has no call for; asynchronous invocations therefore stay
  ``"unknown"`` and faasml's executor relies on its completion messages.

fc2 logs failed requests on the root logger *with the request headers*, which carry the
``authorization`` (the AccessKey ID) and ``x-fc-security-token`` values. A filter on the root
logger masks those values in records that come from fc2.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import fc2
import requests

from faasml.config import SecretRef, resolve_secret
from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    FaaSMLError,
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
from faasml.interfaces import Function, Invocation
from faasml.providers import _package, _shim
from faasml.providers._common import backoff_delay, checked_payload
from faasml.runtime import SECRET_ENV

__all__ = ["FunctionComputeFunction"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_KIB = 1024
_MIB = 1024 * _KIB

#: environment variables Alibaba Cloud's tools read credentials from (aliyun CLI, Credentials SDK).
ACCESS_KEY_ID_ENV = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ACCESS_KEY_SECRET_ENV = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
SECURITY_TOKEN_ENV = "ALIBABA_CLOUD_SECURITY_TOKEN"

# FC 2.0 limits (product-overview/limits): execution time, memory, code package via the API.
_MAX_TIMEOUT = 86_400
_MIN_MEMORY_MB, _MAX_MEMORY_MB = 128, 32 * 1024
_MAX_CODE_BASE64 = 100 * _MIB
# Service and function names: a letter or underscore first, then letters, digits, _ and -.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
_REGION_RE = re.compile(r"^[a-z]{2}-[a-z0-9-]+$")
_RUNTIME_RE = re.compile(r"^python(3\.\d+)$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Function-error messages FC produces for a time-out and for an instance that died; read only in
# reports without an ``errorType`` (FC's own), never in a handler's exception.
_TIMEOUT_RE = re.compile(r"\btimed? ?out after\b", re.IGNORECASE)
_CRASH_RE = re.compile(
    r"process exited unexpectedly|out of memory|exceeded (?:the )?(?:maximum )?memory|"
    r"memory limit exceeded|runtime exited",
    re.IGNORECASE,
)
# Error codes of a 401/403 that mean "these credentials are wrong", not "not allowed".
_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyID",
        "InvalidAccessKeyId",
        "SignatureNotMatch",
        "SignatureDoesNotMatch",
        "InvalidSecurityToken",
        "SecurityTokenExpired",
        "RequestTimeTooSkewed",
    }
)
_ALREADY_EXISTS_CODES = frozenset({"ServiceAlreadyExists", "FunctionAlreadyExists"})

#: the file FC imports (handler string ``index.handler``): faasml's shim under FC's default name.
_INDEX_PY = (
    '"""Function Compute entry point generated by faasml deploy."""\n\n'
    "from faasml.providers.aliyun.handler import handler\n\n"
    '__all__ = ["handler"]\n'
)


class FunctionComputeFunction(Function):
    """One function of one Function Compute 2.0 service, invoked with ``fc2``.

    :param endpoint: the FC API endpoint, ``https://<account_id>.<region>.fc.aliyuncs.com`` by
        default (built from ``account_id`` and ``region``).
    :param account_id: the Alibaba Cloud account id (only to build ``endpoint``).
    :param region: the region id, e.g. ``"cn-hangzhou"`` (only to build ``endpoint``).
    :param service: the FC service holding the function.
    :param function: the function name.
    :param access_key_id: AccessKey ID, a string or ``{"$env": "VAR"}``; default
        ``$ALIBABA_CLOUD_ACCESS_KEY_ID``.
    :param access_key_secret: AccessKey secret, likewise; default
        ``$ALIBABA_CLOUD_ACCESS_KEY_SECRET``.
    :param security_token: STS token for temporary credentials, likewise; default
        ``$ALIBABA_CLOUD_SECURITY_TOKEN`` when set.
    :param timeout: the function's time limit in seconds (deployed rounded up to whole seconds,
        at most 86,400).
    :param memory_mb: the function's memory, a multiple of 64 between 128 and 32,768.
    :param concurrency: how many invocations faasml runs at once (FC's default quota is 100
        instances per region).
    :param runtime: the FC Python runtime, e.g. ``"python3.10"``; dependencies are fetched for it.
    :param max_retries: how often a throttled (429/503) invocation is retried, with exponential
        backoff and jitter, before :class:`~faasml.errors.ThrottledError`.
    :param client: a ready ``fc2.Client`` (credentials are then not needed here).
    :raises ConfigurationError: a value is missing or out of range, naming it.
    """

    name: ClassVar[str] = "aliyun"
    #: FC's asynchronous payload limit (128 KB); the body is the raw payload.
    max_payload_bytes: ClassVar[int] = 128 * _KIB
    #: FC's synchronous payload limit (32 MB), for reference: :meth:`invoke` keeps to
    #: :attr:`max_payload_bytes` so that code tested synchronously also runs asynchronously.
    sync_payload_bytes: ClassVar[int] = 32 * _MIB
    deployable: ClassVar[bool] = True
    #: FC handler string of the deployed zip (``index.py``, function ``handler``).
    handler: ClassVar[str] = "index.handler"
    #: first backoff delay in seconds after a throttled request, doubled on each retry.
    retry_base_delay: float = 0.5
    #: the longest single backoff delay in seconds.
    retry_max_delay: float = 20.0

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        account_id: str | None = None,
        region: str | None = None,
        service: str = "faasml",
        function: str = "faasml",
        access_key_id: str | SecretRef | None = None,
        access_key_secret: str | SecretRef | None = None,
        security_token: str | SecretRef | None = None,
        timeout: float = 600.0,
        memory_mb: int = 1024,
        concurrency: int = 100,
        runtime: str = "python3.10",
        max_retries: int = 4,
        client: Any = None,
    ) -> None:
        self.endpoint = _endpoint(endpoint, account_id, region)
        for what, value in (("service", service), ("function", function)):
            if not isinstance(value, str) or not _NAME_RE.match(value):
                raise ConfigurationError(
                    f"{what} must be 1-128 letters, digits, '_' or '-' starting with a letter "
                    f"or '_' (Function Compute's naming rule), got {value!r}"
                )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout <= _MAX_TIMEOUT  # also rejects NaN
        ):
            raise ConfigurationError(
                f"timeout must be a number of seconds in (0, {_MAX_TIMEOUT}] (Function Compute's "
                f"limit), got {timeout!r}"
            )
        if (
            isinstance(memory_mb, bool)
            or not isinstance(memory_mb, int)
            or not _MIN_MEMORY_MB <= memory_mb <= _MAX_MEMORY_MB
            or memory_mb % 64
        ):
            raise ConfigurationError(
                f"memory_mb must be a multiple of 64 from {_MIN_MEMORY_MB} to {_MAX_MEMORY_MB}, "
                f"got {memory_mb!r}"
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        runtime_match = _RUNTIME_RE.match(runtime) if isinstance(runtime, str) else None
        if runtime_match is None:
            raise ConfigurationError(
                f"runtime must be a Function Compute Python runtime such as 'python3.10', "
                f"got {runtime!r}"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}")

        self.service = service
        self.function = function
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.concurrency = concurrency
        self.runtime = runtime
        self.python_version = runtime_match.group(1)
        self.max_retries = max_retries
        self._deployed_env: tuple[str, ...] = ()
        self._closed = False
        self._lock = threading.Lock()
        _install_log_redaction()
        #: credential values to mask wherever FC or fc2 might echo them.
        self._masked: tuple[str, ...] = ()
        if client is None:
            client = self._make_client(access_key_id, access_key_secret, security_token)
        self._client = client

    # ---- Function primitives

    def invoke(self, payload: bytes) -> bytes:
        """Invoke the function synchronously and return its response body.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes` (not sent).
        :raises InvocationTimeoutError: the function ran past its time limit.
        :raises WorkerDiedError: the instance died (crash, ``os._exit``, out of memory).
        :raises FunctionError: the handler raised; carries ``remote_type``/``remote_traceback``.
        :raises ThrottledError: still throttled after ``max_retries`` retries.
        :raises NotFoundError: the service or function does not exist (run ``faasml deploy``).
        :raises AuthenticationError: the credentials are wrong or expired.
        :raises PermissionDeniedError: the credentials may not invoke this function.
        :raises ServiceUnavailableError: FC failed (5xx) or could not be reached.
        """
        data = self._check_payload(payload)
        response = self._request(
            "invoke",
            lambda: self._client.invoke_function(
                self.service,
                self.function,
                payload=data,
                headers={"x-fc-invocation-type": "Sync"},
            ),
        )
        return bytes(response.data or b"")

    def invoke_async(self, payload: bytes) -> Invocation:
        """Queue an asynchronous invocation and return at once.

        FC answers 202 with the request id, which becomes :attr:`Invocation.id`. FC 2.0 cannot
        report the outcome to this client, so the invocation's status stays ``"unknown"``.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes` (not sent).
        :raises ThrottledError: still throttled after ``max_retries`` retries.
        :raises NotFoundError: the service or function does not exist (run ``faasml deploy``).
        :raises AuthenticationError: the credentials are wrong or expired.
        :raises PermissionDeniedError: the credentials may not invoke this function.
        :raises ServiceUnavailableError: FC failed (5xx) or could not be reached.
        """
        data = self._check_payload(payload)
        response = self._request(
            "invoke",
            lambda: self._client.invoke_function(
                self.service,
                self.function,
                payload=data,
                headers={"x-fc-invocation-type": "Async"},
            ),
        )
        request_id = _header(response.headers, "x-fc-request-id") or uuid.uuid4().hex
        return Invocation(id=request_id, status="unknown")

    # ---- deployment

    def deploy(
        self,
        *,
        secret: str,
        environment: Mapping[str, str] | None = None,
        dependencies: bool = True,
    ) -> str:
        """Create or update the service and the function from a zip of faasml.

        The zip holds faasml, ``index.py`` (handler ``index.handler``) and, with
        ``dependencies``, faasml's runtime requirements installed for :attr:`runtime`. The
        function gets ``FAASML_SECRET`` and ``environment`` as its environment variables (they
        replace the previous ones), this backend's ``timeout`` and ``memory_mb``, and an
        instance concurrency of 1. Running it again updates the same function.

        :param secret: the signing secret, deployed as ``FAASML_SECRET``.
        :param environment: more variables, e.g. ``FAASML_HANDLER``.
        :param dependencies: bundle faasml's dependencies (pip, binary wheels for Linux).
        :returns: one line naming the function, its settings and the package.
        :raises ConfigurationError: the secret or a variable is invalid.
        :raises PayloadTooLargeError: the package is over FC's 100 MB limit for API uploads.
        :raises AuthenticationError: the credentials are wrong or expired.
        :raises PermissionDeniedError: the credentials may not create services or functions.
        :raises ServiceUnavailableError: FC failed or could not be reached.
        """
        if not isinstance(secret, str) or not secret:
            raise ConfigurationError("deploy needs a non-empty secret (the signing secret)")
        variables: dict[str, str] = {}
        for key, value in dict(environment or {}).items():
            # Name the key only: the value may be a secret.
            if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
                raise ConfigurationError(f"environment variable name {key!r} is not valid")
            if not isinstance(value, str):
                raise ConfigurationError(f"environment variable {key!r} must have a string value")
            variables[key] = value
        variables[SECRET_ENV] = secret

        archive = _package.build_zip(
            {"index.py": _INDEX_PY},
            dependencies=_package.runtime_requirements("aliyun") if dependencies else [],
            python_version=self.python_version,
        )
        encoded_size = 4 * ((len(archive) + 2) // 3)
        if encoded_size > _MAX_CODE_BASE64:
            raise PayloadTooLargeError(
                f"the deployment package is {encoded_size} bytes in base64, over Function "
                f"Compute's limit of {_MAX_CODE_BASE64} bytes for code uploaded through the API; "
                "deploy with dependencies=False and provide them as a layer",
                provider=self.name,
            )
        settings: dict[str, Any] = {
            "runtime": self.runtime,
            "handler": self.handler,
            "memorySize": self.memory_mb,
            "timeout": math.ceil(self.timeout),
            "environmentVariables": variables,
            # FC's Python runtime runs the requests of one instance as threads of one process;
            # faasml's runtime (and user code: global state, BLAS threads) assumes one task per
            # process, as on Lambda, so each instance takes one request at a time.
            "instanceConcurrency": 1,
        }
        with tempfile.TemporaryDirectory(prefix="faasml-fc-") as folder:
            # fc2 takes code as a path (or a directory to zip), never as bytes.
            path = Path(folder) / "code.zip"
            path.write_bytes(archive)
            service_action = self._ensure_service()
            function_action = self._put_function(str(path), settings)
        with self._lock:
            self._deployed_env = tuple(sorted(variables))
        logger.info(
            "%s Function Compute function %s/%s (%d variables, values not logged)",
            function_action,
            self.service,
            self.function,
            len(variables),
        )
        return (
            f"{function_action} function {self.service}/{self.function} "
            f"({service_action} service) at {self.endpoint}: {self.runtime}, "
            f"{self.memory_mb} MB, timeout {math.ceil(self.timeout)} s, "
            f"{len(archive)} byte package sha256:{_package.zip_digest(archive)[:12]}"
        )

    # ---- lifecycle and introspection

    def close(self) -> None:
        """Refuse further invocations. fc2 opens a session per request: nothing to release."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def environment(self) -> Mapping[str, str]:
        """The variables :meth:`deploy` gave the function, every value shown as ``"***"``."""
        with self._lock:
            return {key: "***" for key in self._deployed_env}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self.endpoint!r}, service={self.service!r}, "
            f"function={self.function!r}, timeout={self.timeout:g}, memory_mb={self.memory_mb}, "
            f"concurrency={self.concurrency}, runtime={self.runtime!r}, "
            f"max_retries={self.max_retries}, environment={dict(self.environment())!r})"
        )

    # ---- internals

    def _make_client(
        self,
        access_key_id: str | SecretRef | None,
        access_key_secret: str | SecretRef | None,
        security_token: str | SecretRef | None,
    ) -> Any:
        key_id = _credential(access_key_id, "access_key_id") or os.environ.get(ACCESS_KEY_ID_ENV)
        key_secret = _credential(access_key_secret, "access_key_secret") or os.environ.get(
            ACCESS_KEY_SECRET_ENV
        )
        token = _credential(security_token, "security_token") or os.environ.get(
            SECURITY_TOKEN_ENV, ""
        )
        missing = [
            f"{option} (or ${env})"
            for option, env, value in (
                ("access_key_id", ACCESS_KEY_ID_ENV, key_id),
                ("access_key_secret", ACCESS_KEY_SECRET_ENV, key_secret),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError(
                f"the aliyun provider needs credentials: set {' and '.join(missing)}"
            )
        # FC echoes an unknown AccessKey ID in its error message ("invalid access key ID '...'"):
        # it is masked there and in fc2's logs, like the token.
        self._masked = tuple(v for v in (key_id, token) if v and len(v) >= 4)
        _REDACTION.mask.update(self._masked)
        # The HTTP read timeout must outlast the function's own limit, or a slow but healthy
        # synchronous invocation would be cut off by the client before FC answers.
        return fc2.Client(
            endpoint=self.endpoint,
            accessKeyID=key_id,
            accessKeySecret=key_secret,
            securityToken=token,
            Timeout=math.ceil(self.timeout) + 30,
        )

    def _check_payload(self, payload: bytes) -> bytes:
        if self._closed:
            raise ServiceUnavailableError(
                f"the aliyun function {self.service}/{self.function} is closed", provider=self.name
            )
        return checked_payload(
            payload,
            self.max_payload_bytes,
            provider=self.name,
            platform="Function Compute",
            why="its limit for asynchronous invocations",
        )

    def _request(self, action: str, call: Callable[[], _T]) -> _T:
        """Run one fc2 call, retrying throttled requests, and translate its errors."""
        attempt = 0
        while True:
            try:
                return call()
            except fc2.FcError as exc:
                error = self._translate(exc, action, retries=attempt)
            except requests.exceptions.RetryError:
                error = ServiceUnavailableError(
                    f"Function Compute at {self.endpoint} kept failing with server errors while "
                    f"trying to {action} (fc2 gave up after its retries); try again later",
                    provider=self.name,
                )
            except requests.exceptions.JSONDecodeError:
                # fc2 parses every error body as JSON before raising; HTML comes from a proxy.
                error = ServiceUnavailableError(
                    f"{self.endpoint} answered the {action} request with an error that is not "
                    "Function Compute's JSON; check the endpoint and any proxy in between",
                    provider=self.name,
                )
            except requests.exceptions.RequestException as exc:
                error = ServiceUnavailableError(
                    f"cannot reach Function Compute at {self.endpoint} to {action}: "
                    f"{type(exc).__name__}; check the endpoint and the network",
                    provider=self.name,
                )
            retriable = isinstance(error, ThrottledError) or (
                isinstance(error, ServiceUnavailableError) and error.status == 503
            )
            if not retriable or attempt >= self.max_retries:
                raise error
            delay = backoff_delay(attempt, self.retry_base_delay, self.retry_max_delay)
            attempt += 1
            time.sleep(delay)

    def _translate(self, exc: Any, action: str, *, retries: int = 0) -> FaaSMLError:
        """The faasml error for ``exc``; ``retries`` is how many retries came before it."""
        status = int(getattr(exc, "status_code", 0) or 0)
        body = _error_body(getattr(exc, "message", ""))
        code = str(body.get("errorCode") or body.get("ErrorCode") or exc.err_code or "") or None
        message = self._redact(str(body.get("errorMessage") or body.get("ErrorMessage") or ""))
        request_id = str(getattr(exc, "request_id", "") or body.get("RequestId") or "") or None
        where = f"{self.service}/{self.function}"
        common: dict[str, Any] = {
            "provider": self.name,
            "code": code,
            "status": status,
            "request_id": request_id,
        }
        detail = " ".join(part for part in (str(status), code) if part)
        if message:
            detail = f"{detail}: {message}"

        if status == 200:
            return self._function_error(body, request_id, code)
        if status == 429:
            # The real count: max_retries=0, or a caller translating a first refusal, retried less.
            if retries:
                tried = f"after {retries} {'retry' if retries == 1 else 'retries'}"
            else:
                tried = "without a retry"
            return ThrottledError(
                f"Function Compute throttled the {action} of {where} ({detail}) {tried}: the "
                "account's concurrency quota is used up; lower concurrency= or raise the quota "
                "in Quota Center",
                **common,
            )
        if status == 404:
            return NotFoundError(
                f"Function Compute has no {where} at {self.endpoint} ({detail}); run "
                "`faasml deploy --provider aliyun` to create it",
                **common,
            )
        if status == 401 or (status == 403 and code in _AUTH_CODES):
            return AuthenticationError(
                f"Function Compute rejected the credentials for the {action} of {where} "
                f"({detail}); check ${ACCESS_KEY_ID_ENV}, ${ACCESS_KEY_SECRET_ENV} (and "
                f"${SECURITY_TOKEN_ENV} for STS) and the machine's clock",
                **common,
            )
        if status == 403:
            return PermissionDeniedError(
                f"the credentials may not {action} {where} ({detail}); grant the RAM user "
                "AliyunFCFullAccess or a policy allowing fc:* on this service",
                **common,
            )
        if status == 413 or code == "EntityTooLarge":
            return PayloadTooLargeError(
                f"Function Compute refused the {action} of {where} as too large ({detail}); the "
                f"limits are {self.max_payload_bytes} bytes asynchronous and "
                f"{self.sync_payload_bytes} bytes synchronous",
                **common,
            )
        if status == 409 and (code in _ALREADY_EXISTS_CODES or "exist" in message.lower()):
            return AlreadyExistsError(f"{where}: {detail}", **common)
        if status >= 500:
            return ServiceUnavailableError(
                f"Function Compute at {self.endpoint} failed the {action} of {where} ({detail}); "
                "try again later",
                **common,
            )
        return ProviderError(
            f"Function Compute refused the {action} of {where} ({detail})", **common
        )

    def _redact(self, text: str) -> str:
        for value in self._masked:
            text = text.replace(value, "***")
        return text

    def _function_error(
        self, body: Mapping[str, Any], request_id: str | None, code: str | None = None
    ) -> FaaSMLError:
        """The error for a function error report (HTTP 200 with ``x-fc-error-type``).

        Every error carries ``provider``, ``code`` and ``request_id`` attributes.
        """
        message = str(body.get("errorMessage") or body.get("ErrorMessage") or "")
        where = f"{self.service}/{self.function}"
        common: dict[str, Any] = {"provider": self.name, "code": code, "request_id": request_id}
        # FC's own time-out and crash reports have no errorType; the runtime's report of a
        # handler exception has one, and then the message is the handler's, whatever it says.
        # (fc2's "ErrorType" copies the x-fc-error-type header for non-JSON bodies: not a type.)
        platform_made = not body.get("errorType")
        if platform_made and _TIMEOUT_RE.search(message):
            return InvocationTimeoutError(
                f"the Function Compute function {where} ran past its time limit of "
                f"{self.timeout:g} s ({message}); raise timeout= and redeploy",
                **common,
            )
        if platform_made and _CRASH_RE.search(message):
            return WorkerDiedError(
                f"the Function Compute instance running {where} died before answering "
                f"({message}): the handler crashed, exited or ran out of its "
                f"{self.memory_mb} MB (raise memory_mb= and redeploy if so)",
                **common,
            )
        remote_type = str(body.get("errorType") or body.get("ErrorType") or "Exception")
        report = {
            "type": remote_type,
            "message": message,
            "traceback": _format_stack(body.get("stackTrace"), remote_type, message),
        }
        error = _shim.remote_error(report, "Function Compute")
        return FunctionError(
            error.message,
            remote_type=error.remote_type,
            remote_traceback=error.remote_traceback,
            **common,
        )

    def _ensure_service(self) -> str:
        try:
            self._request("read the service", lambda: self._client.get_service(self.service))
            return "existing"
        except NotFoundError:
            pass
        try:
            self._request(
                "create the service",
                lambda: self._client.create_service(
                    self.service, description="faasml functions (created by faasml deploy)"
                ),
            )
        except AlreadyExistsError:  # created meanwhile by a concurrent deploy
            return "existing"
        return "created"

    def _put_function(self, zip_path: str, settings: Mapping[str, Any]) -> str:
        def update() -> Any:
            return self._client.update_function(
                self.service, self.function, codeZipFile=zip_path, **settings
            )

        try:
            self._request(
                "read the function",
                lambda: self._client.get_function(self.service, self.function),
            )
        except NotFoundError:
            try:
                self._request(
                    "create the function",
                    lambda: self._client.create_function(
                        self.service, self.function, codeZipFile=zip_path, **settings
                    ),
                )
                return "created"
            except AlreadyExistsError:  # created meanwhile by a concurrent deploy
                pass
        self._request("update the function", update)
        return "updated"


# --------------------------------------------------------------------------- helpers


def _endpoint(endpoint: str | None, account_id: str | None, region: str | None) -> str:
    if endpoint is not None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"endpoint must be an http(s) URL such as "
                f"https://<account_id>.<region>.fc.aliyuncs.com, got {endpoint!r}"
            )
        return endpoint.rstrip("/")
    if not account_id or not region:
        raise ConfigurationError(
            "the aliyun provider needs endpoint= or both account_id= and region= (the endpoint "
            "is https://<account_id>.<region>.fc.aliyuncs.com)"
        )
    if not isinstance(account_id, str) or not account_id.isdigit():
        raise ConfigurationError(f"account_id must be the numeric account id, got {account_id!r}")
    if not isinstance(region, str) or not _REGION_RE.match(region):
        raise ConfigurationError(f"region must be a region id like 'cn-hangzhou', got {region!r}")
    return f"https://{account_id}.{region}.fc.aliyuncs.com"


def _credential(value: str | SecretRef | None, what: str) -> str | None:
    """``value`` resolved; an ``{"$env": "VAR"}`` whose variable is unset or empty is an error.

    An empty variable must not fall back to ``ALIBABA_CLOUD_*`` silently: the caller named it.
    """
    resolved = resolve_secret(value, what)
    if isinstance(value, Mapping) and not resolved:
        var = value.get("$env")
        raise ConfigurationError(
            f"{what} is read from ${var}, which is set but empty; export {var} with the value "
            "(or leave the option unset to use the ALIBABA_CLOUD_* variables)"
        )
    return resolved


def _error_body(message: object) -> dict[str, Any]:
    """The JSON error body fc2 put into ``FcError.message`` (empty when it is not JSON)."""
    try:
        parsed = json.loads(str(message))
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _header(headers: Any, name: str) -> str | None:
    """A response header, whatever the case of its name (fc2 passes requests' headers on)."""
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in dict(headers).items() if k.lower() == lowered), None)
    return str(value) if value is not None else None


def _format_stack(stack: object, remote_type: str, message: str) -> str | None:
    """FC's ``stackTrace`` as Python traceback text.

    The Python runtime sends one ``["File \\"/code/index.py\\"", "line 2", "in handler",
    "source"]`` list per frame; other runtimes send strings or an object.
    """
    if stack is None:
        return None
    lines = ["Traceback (most recent call last):\n"]
    if isinstance(stack, list):
        for frame in stack:
            if isinstance(frame, (list, tuple)) and len(frame) >= 3:
                location = ", ".join(str(part) for part in frame[:3])
                lines.append(f"  {location}\n")
                if len(frame) > 3 and frame[3]:
                    lines.append(f"    {frame[3]}\n")
            else:
                lines.append(f"  {frame}\n")
    else:
        lines.append(f"  {json.dumps(stack, default=str)}\n")
    lines.append(f"{remote_type}: {message}\n" if message else f"{remote_type}\n")
    return "".join(lines)


# A header in a dict's repr ('authorization': 'FC ak:sig'), or the token line fc2's signer logs.
_HEADER_VALUE_RE = re.compile(
    r"""(['"](?:authorization|x-fc-security-token)['"]\s*:\s*)(['"])(?:(?!\2).)*\2""",
    re.IGNORECASE,
)
_TOKEN_LINE_RE = re.compile(r"^(x-fc-security-token:).*$", re.IGNORECASE | re.MULTILINE)
_FC2_DIR = os.path.dirname(os.path.abspath(fc2.__file__))


class _RedactFc2Headers(logging.Filter):
    """Masks the signature and STS token in fc2's request logs (it logs on the root logger)."""

    def __init__(self) -> None:
        super().__init__()
        #: credential values (AccessKey IDs, STS tokens) of the clients created so far.
        self.mask: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if os.path.dirname(os.path.abspath(record.pathname)) == _FC2_DIR:
            try:
                text = record.getMessage()
            except Exception:  # a broken record is not ours to fix
                return True
            redacted = _HEADER_VALUE_RE.sub(r"\1\2***\2", text)
            redacted = _TOKEN_LINE_RE.sub(r"\1***", redacted)
            for value in list(self.mask):
                redacted = redacted.replace(value, "***")
            if redacted != text:
                record.msg, record.args = redacted, ()
        return True


_REDACTION = _RedactFc2Headers()


def _install_log_redaction() -> None:
    root = logging.getLogger()
    if _REDACTION not in root.filters:
        root.addFilter(_REDACTION)

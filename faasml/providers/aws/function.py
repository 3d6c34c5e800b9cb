"""The ``aws`` :class:`~faasml.interfaces.Function`: an AWS Lambda function running faasml.

How the contract maps onto Lambda (API version 2015-03-31):

* Lambda events are JSON, so payload and result travel as the envelope
  ``{"faasml": "<base64>"}`` (:mod:`faasml.providers._shim`). Lambda takes at most 6 MB in a
  synchronous and 1 MB in an asynchronous (``Event``) request; :attr:`max_payload_bytes` is the
  largest raw payload whose envelope fits the asynchronous limit, because that is how the
  executor invokes. Larger payloads are refused before anything is sent.
* :meth:`LambdaFunction.invoke` is ``Invoke`` with ``InvocationType=RequestResponse``. The HTTP
  status does not show a function failure; the ``X-Amz-Function-Error`` header does, and the body
  then holds Lambda's ``errorType``/``errorMessage``: a time-out becomes
  :class:`~faasml.errors.InvocationTimeoutError`, a runtime that exited or ran out of memory
  :class:`~faasml.errors.WorkerDiedError`, anything else :class:`~faasml.errors.FunctionError`.
* :meth:`LambdaFunction.invoke_async` is ``Invoke`` with ``InvocationType=Event`` (HTTP 202).
  Lambda tells nothing about an ``Event`` invocation afterwards, so its status stays
  ``"unknown"`` and the executor relies on completion messages.
* Throttling (429 ``TooManyRequestsException``, 502 ``EC2ThrottledException``) and service
  failures (5xx) are retried ``max_retries`` times with exponential backoff and jitter, waiting at
  least what ``Retry-After`` asks; botocore's own retries are off for ``Invoke`` so that this is
  the only retry loop and its bound holds.
* :meth:`LambdaFunction.deploy` uploads a zip of faasml (``CreateFunction``, or
  ``UpdateFunctionCode`` + ``UpdateFunctionConfiguration``), skips the code upload when
  ``CodeSha256`` is unchanged, and waits until Lambda reports the function ready.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import math
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from faasml.config import redact
from faasml.errors import (
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
from faasml.storage._aws_errors import (
    SecretValue,
    aws_session,
    error_codes,
    translate_error,
)
from faasml.storage._common import retry_after_seconds

__all__ = ["HANDLER", "LAMBDA_ERROR_MAP", "LambdaFunction"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_MB = 1024 * 1024
#: Lambda's request limits for ``Invoke`` (https://docs.aws.amazon.com/lambda/latest/dg/API_Invoke.html).
SYNC_REQUEST_LIMIT = 6 * _MB
ASYNC_REQUEST_LIMIT = 1 * _MB
#: the largest zip ``CreateFunction``/``UpdateFunctionCode`` take inline (``ZipFile``).
INLINE_ZIP_LIMIT = 50 * _MB
#: Lambda caps the total size of a function's environment variables at 4 KB.
ENVIRONMENT_LIMIT = 4 * 1024

#: the Lambda ``Handler`` setting: the runtime imports the dotted module from the zip root.
HANDLER = "faasml.providers.aws.handler.lambda_handler"
_HANDLER_FILE = "faasml/providers/aws/handler.py"

_SECRET_VAR = "FAASML_SECRET"
_RUNTIME_RE = re.compile(r"^python3\.(\d+)$")
_ARCHITECTURES = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
# Lambda: letters, digits and underscores, starting with a letter.
_ENV_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FUNCTION_NAME_RE = re.compile(
    r"^(arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:)?[A-Za-z0-9_-]{1,64}(:[\w$-]+)?$"
)

#: Lambda error codes the shared AWS table (:mod:`faasml.storage._aws_errors`) does not know, or
#: means something else by; everything else goes through that table and its HTTP status rules.
LAMBDA_ERROR_MAP: Mapping[str, type[ProviderError]] = {
    "ResourceNotFoundException": NotFoundError,
    "TooManyRequestsException": ThrottledError,
    "EC2ThrottledException": ThrottledError,
    "ServiceException": ServiceUnavailableError,
    "ResourceNotReadyException": ServiceUnavailableError,
    "EC2UnexpectedException": ServiceUnavailableError,
    "ENILimitReachedException": ServiceUnavailableError,
    "SnapStartNotReadyException": ServiceUnavailableError,
    "SnapStartTimeoutException": ServiceUnavailableError,
    # The function is Pending or an update is in progress: it will pass.
    "ResourceConflictException": ServiceUnavailableError,
    "RequestTooLargeException": PayloadTooLargeError,
    "SerializedRequestEntityTooLargeException": PayloadTooLargeError,
    "CodeStorageExceededException": PayloadTooLargeError,
    "KMSAccessDeniedException": PermissionDeniedError,
    "EC2AccessDeniedException": PermissionDeniedError,
    "AccessDeniedException": PermissionDeniedError,
    "UnrecognizedClientException": AuthenticationError,
    "InvalidSignatureException": AuthenticationError,
    "ExpiredTokenException": AuthenticationError,
}

#: ``errorType`` values Lambda writes when it stopped a handler at its time limit.
_TIMEOUT_TYPES = frozenset({"Sandbox.Timedout", "Function.TimedOut"})
#: ``errorType`` values Lambda writes when the runtime process died.
_CRASH_TYPES = frozenset({"Runtime.ExitError", "Runtime.OutOfMemory", "Runtime.Crash"})

# The retry loop sleeps through this name so that tests can observe the waits.
_sleep: Callable[[float], None] = time.sleep


#: the loggers that, at DEBUG, write request and response bodies (botocore) or request lines
#: (urllib3); :func:`_quiet_wire_logs` raises them to INFO while deploy sends the secret.
_WIRE_LOGGERS = ("botocore", "botocore.endpoint", "botocore.parsers", "urllib3")
# Logger levels are process-wide, so overlapping deploys in several threads share one raise:
# the first to enter saves the levels, the last to leave restores them. While any deploy runs,
# other threads' botocore/urllib3 DEBUG records are dropped too; nothing else is changed.
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: dict[str, int] = {}


@contextlib.contextmanager
def _quiet_wire_logs() -> Iterator[None]:
    """Keep botocore's and urllib3's DEBUG logs (which hold request/response bodies) off.

    ``CreateFunction``/``UpdateFunctionConfiguration`` send, and ``GetFunction``/
    ``GetFunctionConfiguration`` answer with, the function's environment, ``FAASML_SECRET``
    included; botocore logs those bodies at DEBUG. This raises :data:`_WIRE_LOGGERS`, and any
    of their descendants set below INFO, to at least INFO and restores the saved levels after.
    """
    global _quiet_depth
    with _quiet_lock:
        if _quiet_depth == 0:
            names = set(_WIRE_LOGGERS)
            for name, logger in list(logging.Logger.manager.loggerDict.items()):
                if (
                    isinstance(logger, logging.Logger)
                    and name.startswith(tuple(f"{root}." for root in _WIRE_LOGGERS))
                    and logger.level != logging.NOTSET
                ):
                    names.add(name)
            _quiet_saved.clear()
            for name in names:
                logger = logging.getLogger(name)
                _quiet_saved[name] = logger.level
                # NOTSET inherits (maybe DEBUG from the root): set INFO explicitly.
                if logger.level < logging.INFO:
                    logger.setLevel(logging.INFO)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                for name, level in _quiet_saved.items():
                    logging.getLogger(name).setLevel(level)
                _quiet_saved.clear()


class LambdaFunction(Function):
    """An AWS Lambda function deployed with faasml's handler.

    :param function_name: the Lambda function name (or ARN) to invoke and deploy.
    :param region: AWS region; ``None`` uses the boto3 default (``AWS_DEFAULT_REGION``, profile).
    :param endpoint_url: URL of a Lambda-compatible endpoint (an emulator); ``None`` is AWS.
    :param access_key_id: ``None`` uses the default credential chain (environment, profile,
        IAM role); otherwise a string or ``{"$env": "VAR"}``.
    :param secret_access_key: like ``access_key_id``.
    :param session_token: like ``access_key_id``, for temporary credentials.
    :param role: ARN of the IAM execution role; only :meth:`deploy` needs it, and only to create
        the function.
    :param timeout: the function's time limit in seconds (1 to 900), set by :meth:`deploy`.
    :param memory_mb: the function's memory in MB (128 to 10240), set by :meth:`deploy`.
    :param concurrency: how many invocations the executor keeps in flight (keep it within the
        account's or the function's reserved concurrency).
    :param runtime: the Lambda Python runtime, ``"python3.X"``.
    :param architecture: ``"x86_64"`` or ``"arm64"``; picks the wheels :meth:`deploy` bundles.
    :param max_retries: retries of a throttled or failed (5xx) ``Invoke`` before giving up.
    :param client: a prebuilt boto3 Lambda client (tests); credentials and endpoint are then
        ignored and the client is not closed.
    :raises ConfigurationError: an option is out of range, or an ``$env`` credential is unset.
    """

    name: ClassVar[str] = "aws"
    #: the largest raw payload whose envelope fits Lambda's 1 MB ``Event`` request limit.
    max_payload_bytes: ClassVar[int] = _shim.largest_payload(ASYNC_REQUEST_LIMIT)
    deployable: ClassVar[bool] = True
    #: first backoff delay in seconds; the n-th retry waits about ``retry_base_delay * 2**n``.
    retry_base_delay: float = 0.2
    #: the longest single backoff wait, and the longest ``Retry-After`` honoured by waiting.
    retry_max_delay: float = 20.0
    #: seconds between ``GetFunction`` polls while :meth:`deploy` waits for the function.
    deploy_poll_delay: float = 1.0
    #: how many polls :meth:`deploy` makes before giving up (5 minutes at the default delay).
    deploy_poll_attempts: int = 300

    def __init__(
        self,
        function_name: str = "faasml",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: SecretValue = None,
        secret_access_key: SecretValue = None,
        session_token: SecretValue = None,
        role: str | None = None,
        timeout: float = 900.0,
        memory_mb: int = 2048,
        concurrency: int = 100,
        runtime: str = "python3.11",
        architecture: str = "x86_64",
        max_retries: int = 4,
        client: Any = None,
    ) -> None:
        if not isinstance(function_name, str) or not _FUNCTION_NAME_RE.match(function_name):
            raise ConfigurationError(
                "function_name must be a Lambda function name (1-64 letters, digits, '-' or '_') "
                f"or a function ARN, got {function_name!r}"
            )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 1 <= timeout <= 900  # also rejects NaN
        ):
            raise ConfigurationError(
                f"timeout must be between 1 and 900 seconds (Lambda's limit), got {timeout!r}"
            )
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int):
            raise ConfigurationError(f"memory_mb must be an integer, got {memory_mb!r}")
        if not 128 <= memory_mb <= 10240:
            raise ConfigurationError(
                f"memory_mb must be between 128 and 10240 (Lambda's limits), got {memory_mb}"
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        match = _RUNTIME_RE.match(runtime) if isinstance(runtime, str) else None
        if match is None:
            raise ConfigurationError(
                f"runtime must be a Lambda Python runtime such as 'python3.11', got {runtime!r}"
            )
        if architecture not in _ARCHITECTURES:
            raise ConfigurationError(
                f"architecture must be one of {sorted(_ARCHITECTURES)}, got {architecture!r}"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if role is not None and (not isinstance(role, str) or not role.startswith("arn:")):
            raise ConfigurationError(
                f"role must be the ARN of an IAM role (arn:aws:iam::<account>:role/<name>), "
                f"got {role!r}"
            )
        self.function_name = function_name
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.concurrency = concurrency
        self.runtime = runtime
        self.architecture = architecture
        self.max_retries = max_retries
        self.role = role
        self._endpoint_url = endpoint_url
        self._credentials: dict[str, SecretValue] = {
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "session_token": session_token,
        }
        self._deployed_names: tuple[str, ...] = ()
        self._owns_client = client is None
        if client is None:
            session = aws_session(
                region=region,
                access_key_id=access_key_id,
                secret_access_key=secret_access_key,
                session_token=session_token,
            )
            # One attempt per call: the retry loop below is the only one, so max_retries is
            # the real bound. A synchronous Invoke holds the connection while the function
            # runs, so the read timeout must outlast the function's own time limit.
            config = Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                read_timeout=self.timeout + 60.0,
                connect_timeout=10.0,
                max_pool_connections=max(10, min(concurrency, 1000)),
            )
            with self._errors("creating the Lambda client"):
                client = session.client("lambda", endpoint_url=endpoint_url, config=config)
        self._client = client
        self.region: str = str(getattr(getattr(client, "meta", None), "region_name", "") or "")

    # ---- Function primitives

    def invoke(self, payload: bytes) -> bytes:
        """Run the function on ``payload`` (``RequestResponse``) and return its result.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`, or the
            result is over Lambda's 6 MB response limit.
        :raises FunctionError: the handler raised; ``remote_type`` is Lambda's ``errorType``.
        :raises InvocationTimeoutError: the function ran past its time limit.
        :raises WorkerDiedError: the runtime process exited or ran out of memory.
        :raises NotFoundError: the function does not exist (run ``faasml deploy``).
        :raises ThrottledError: still throttled after ``max_retries`` retries.
        """
        body = self._encode(payload)
        response = self._with_retries(
            "Invoke", lambda: self._invoke(body, "RequestResponse", read=True)
        )
        raw: bytes = response["Payload"]
        request_id = response.get("ResponseMetadata", {}).get("RequestId")
        if response.get("FunctionError"):
            raise self._function_failure(raw, request_id)
        try:
            return _shim.unwrap(json.loads(raw), "Lambda function's result")
        except ValueError as exc:
            raise ProviderError(
                f"the Lambda function {self.function_name!r} answered with something that is not "
                f"a faasml result ({exc}); its Handler must be {HANDLER!r}: run "
                "`faasml deploy --provider aws`",
                provider=self.name,
                request_id=request_id,
            ) from None

    def invoke_async(self, payload: bytes) -> Invocation:
        """Queue ``payload`` for the function (``Event``) and return at once.

        Lambda reports nothing on an ``Event`` invocation afterwards, so the status stays
        ``"unknown"``; the id is Lambda's request id.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`.
        :raises NotFoundError: the function does not exist (run ``faasml deploy``).
        :raises ThrottledError: still throttled after ``max_retries`` retries.
        """
        body = self._encode(payload)
        response = self._with_retries("Invoke", lambda: self._invoke(body, "Event", read=False))
        request_id = str(response.get("ResponseMetadata", {}).get("RequestId") or "")
        return Invocation(id=request_id or f"event-{time.monotonic_ns():x}")

    # ---- deployment

    def deploy(
        self,
        *,
        secret: str,
        environment: Mapping[str, str] | None = None,
        dependencies: bool = True,
    ) -> str:
        """Create the Lambda function, or bring an existing one up to date.

        The code is a zip of faasml (with its dependencies for the runtime's Python and this
        backend's architecture unless ``dependencies=False``); its upload is skipped when Lambda
        already has the same ``CodeSha256``. The configuration (runtime, handler, timeout,
        memory, environment) is updated only where it differs. Waits until Lambda reports the
        function ``Active`` and its last update ``Successful``.

        :param secret: the signing secret, deployed as ``FAASML_SECRET`` (never logged).
        :param environment: more variables (``FAASML_HANDLER`` ...).
        :param dependencies: bundle faasml's dependencies into the zip; ``False`` leaves them
            (numpy, scipy ...) to a Lambda layer attached to the function.
        :returns: one line saying what was deployed where (and, with ``dependencies=False``,
            that the dependencies must come from a Lambda layer). The secret is never in it,
            nor in botocore's or urllib3's logs while deploy runs (see :func:`_quiet_wire_logs`).
        :raises ConfigurationError: no ``role`` for a new function, a bad variable, or a zip
            over Lambda's 50 MB inline upload limit.
        """
        variables = self._variables(secret, environment)
        python = _RUNTIME_RE.match(self.runtime)
        assert python is not None  # checked in __init__
        archive = _package.build_zip(
            {},
            dependencies=_package.runtime_requirements() if dependencies else [],
            python_version=f"3.{python.group(1)}",
            platform=_ARCHITECTURES[self.architecture],
        )
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            if _HANDLER_FILE not in zipped.namelist():
                raise ConfigurationError(
                    f"the deployment zip lacks {_HANDLER_FILE}; reinstall faasml with the aws extra"
                )
        if len(archive) > INLINE_ZIP_LIMIT:
            raise ConfigurationError(
                f"the deployment zip is {len(archive) / _MB:.1f} MB, over Lambda's "
                f"{INLINE_ZIP_LIMIT // _MB} MB limit for a direct upload; deploy with "
                "dependencies=False (--no-dependencies) and provide them in a Lambda layer"
            )
        sha = base64.b64encode(hashlib.sha256(archive).digest()).decode("ascii")
        wanted: dict[str, Any] = {
            "Runtime": self.runtime,
            "Handler": HANDLER,
            "Timeout": max(1, math.ceil(self.timeout)),
            "MemorySize": self.memory_mb,
            "Environment": {"Variables": variables},
        }
        # The requests that set the environment, and the answers and waiter polls that echo it,
        # carry the secret: keep botocore's DEBUG body logging off for all of them.
        with _quiet_wire_logs():
            current = self._configuration()
            if current is None:
                action = self._create(archive, wanted)
            else:
                action = self._update(archive, sha, wanted, current)
        self._deployed_names = tuple(sorted(variables))
        where = f" in {self.region}" if self.region else ""
        layer = (
            ""
            if dependencies
            else "; dependencies not bundled: numpy, scipy and faasml's other requirements "
            "must come from a Lambda layer"
        )
        return (
            f"AWS Lambda function {self.function_name!r}{where}: {action} "
            f"({len(archive) / _MB:.1f} MB zip, {self.runtime}/{self.architecture}, "
            f"{self.memory_mb} MB, {wanted['Timeout']} s, handler {HANDLER}){layer}"
        )

    def delete(self) -> None:
        """Delete the Lambda function (``DeleteFunction``).

        :raises NotFoundError: the function does not exist.
        """
        with self._errors(f"deleting Lambda function {self.function_name!r}"):
            self._client.delete_function(FunctionName=self.function_name)

    # ---- lifecycle and introspection

    def close(self) -> None:
        """Close the HTTP connections of the client this backend built. Idempotent."""
        if self._owns_client:
            close = getattr(self._client, "close", None)
            if close is not None:
                close()

    def environment(self) -> Mapping[str, str]:
        """The variables the last :meth:`deploy` set, values shown as ``***``."""
        return {name: "***" for name in self._deployed_names}

    def __repr__(self) -> str:
        credentials = {k: redact(v) for k, v in self._credentials.items() if v is not None}
        endpoint = f", endpoint_url={self._endpoint_url!r}" if self._endpoint_url else ""
        shown = f", credentials={credentials!r}" if credentials else ""
        return (
            f"{type(self).__name__}(function_name={self.function_name!r}, "
            f"region={self.region!r}{endpoint}, timeout={self.timeout:g}, "
            f"memory_mb={self.memory_mb}, concurrency={self.concurrency}{shown})"
        )

    # ---- invoke internals

    def _encode(self, payload: bytes) -> bytes:
        data = checked_payload(
            payload,
            self.max_payload_bytes,
            provider=self.name,
            platform="aws function's",
            why=f"its base64 JSON envelope must fit Lambda's {ASYNC_REQUEST_LIMIT} byte limit "
            "for asynchronous invocations",
        )
        return json.dumps(_shim.wrap(data)).encode("ascii")

    def _invoke(self, body: bytes, kind: str, *, read: bool) -> dict[str, Any]:
        response: dict[str, Any] = self._client.invoke(
            FunctionName=self.function_name, InvocationType=kind, Payload=body
        )
        if read:
            # Read inside the retried block: a dropped connection surfaces here, as a botocore
            # error the caller maps.
            response["Payload"] = response["Payload"].read()
        return response

    def _with_retries(self, operation: str, call: Callable[[], _T]) -> _T:
        """Run ``call``, retrying throttling and 5xx answers with backoff; map the final error."""
        attempt = 0
        while True:
            try:
                return call()
            except (ClientError, BotoCoreError) as exc:
                error = self._translate(
                    exc, f"{operation} of Lambda function {self.function_name!r}"
                )
                retriable = isinstance(error, (ThrottledError, ServiceUnavailableError)) and (
                    isinstance(exc, ClientError)  # never re-send after a lost connection
                )
                retry_after = error.retry_after if isinstance(error, ThrottledError) else None
                if (
                    not retriable
                    or attempt >= self.max_retries
                    or (retry_after is not None and retry_after > self.retry_max_delay)
                ):
                    if retriable and attempt:
                        error.message = f"{error.message}; gave up after {attempt + 1} attempts"
                        error.args = (error.message,)
                    raise error from exc
                delay = backoff_delay(attempt, self.retry_base_delay, self.retry_max_delay)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                _log.info(
                    "Lambda %s of %r: %s; retry %d of %d in %.2f s",
                    operation,
                    self.function_name,
                    type(error).__name__,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                _sleep(delay)
                attempt += 1

    def _function_failure(self, raw: bytes, request_id: str | None) -> FaaSMLError:
        """The faasml error for an invocation Lambda answered with ``X-Amz-Function-Error``."""
        try:
            report = json.loads(raw)
        except ValueError:
            report = None
        if not isinstance(report, dict):
            text = raw[:500].decode("utf-8", errors="replace")
            return FunctionError(
                f"the AWS Lambda function {self.function_name!r} failed: {text}",
                remote_type="Exception",
                remote_traceback=None,
            )
        error_type = str(report.get("errorType") or "")
        message = str(report.get("errorMessage") or "")
        rid = f" (request id {request_id})" if request_id else ""
        if error_type in _TIMEOUT_TYPES or "Task timed out after" in message:
            return InvocationTimeoutError(
                f"the Lambda function {self.function_name!r} ran past its time limit "
                f"({message or error_type}){rid}; raise timeout= and run `faasml deploy "
                "--provider aws`, or split the work into smaller tasks",
                provider=self.name,
                code=error_type or None,
                request_id=request_id,
            )
        if error_type in _CRASH_TYPES or "Runtime exited" in message:
            hint = (
                f"; it ran out of its {self.memory_mb} MB: raise memory_mb and redeploy"
                if error_type == "Runtime.OutOfMemory" or "out of memory" in message.lower()
                else ""
            )
            return WorkerDiedError(
                f"the Lambda runtime running {self.function_name!r} died: "
                f"{error_type}: {message}{rid}{hint}"
            )
        if error_type == "Function.ResponseSizeTooLarge":
            return PayloadTooLargeError(
                f"the result of Lambda function {self.function_name!r} is over Lambda's "
                f"{SYNC_REQUEST_LIMIT} byte response limit ({message}){rid}; return large "
                "results through the object store",
                provider=self.name,
                code=error_type,
                request_id=request_id,
            )
        return _shim.remote_error(report, "AWS Lambda")

    # ---- deploy internals

    def _variables(self, secret: str, environment: Mapping[str, str] | None) -> dict[str, str]:
        if not isinstance(secret, str) or not secret:
            raise ConfigurationError("deploy needs a non-empty signing secret")
        variables = dict(environment or {})
        for key, value in variables.items():
            # Name the key only: the value may be a secret.
            if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
                raise ConfigurationError(
                    f"environment variable name {key!r} is not valid on Lambda (letters, digits "
                    "and '_', starting with a letter)"
                )
            if not isinstance(value, str):
                raise ConfigurationError(f"environment variable {key!r} must have a string value")
        if _SECRET_VAR in variables:
            raise ConfigurationError(
                f"pass the signing secret as secret=..., not as the {_SECRET_VAR} variable"
            )
        variables[_SECRET_VAR] = secret
        size = sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
        if size > ENVIRONMENT_LIMIT:
            raise ConfigurationError(
                f"the function's environment variables take {size} bytes, over Lambda's "
                f"{ENVIRONMENT_LIMIT} byte limit; pass fewer or shorter variables"
            )
        return variables

    def _configuration(self) -> dict[str, Any] | None:
        """``GetFunctionConfiguration``, or ``None`` when the function does not exist."""
        try:
            with self._errors(f"looking up Lambda function {self.function_name!r}"):
                config: dict[str, Any] = self._client.get_function_configuration(
                    FunctionName=self.function_name
                )
        except NotFoundError:
            return None
        return config

    def _create(self, archive: bytes, wanted: dict[str, Any]) -> str:
        if self.role is None:
            raise ConfigurationError(
                f"Lambda function {self.function_name!r} does not exist yet; creating it needs "
                "role= (the ARN of the IAM role it runs as, e.g. "
                "arn:aws:iam::123456789012:role/faasml-lambda)"
            )
        with self._errors(f"creating Lambda function {self.function_name!r}"):
            self._client.create_function(
                FunctionName=self.function_name,
                Role=self.role,
                Code={"ZipFile": archive},
                PackageType="Zip",
                Architectures=[self.architecture],
                Description="faasml worker (faasml deploy)",
                **wanted,
            )
        self._wait("function_active_v2", "become Active")
        return "created"

    def _update(
        self, archive: bytes, sha: str, wanted: dict[str, Any], current: dict[str, Any]
    ) -> str:
        if current.get("PackageType", "Zip") != "Zip":
            raise ConfigurationError(
                f"Lambda function {self.function_name!r} is a container image function; faasml "
                "deploys zip functions: delete it or choose another function_name"
            )
        # Lambda refuses an update while the function is still being created or updated
        # (ResourceConflictException), e.g. right after another deploy.
        if current.get("State") == "Pending":
            self._wait("function_active_v2", "become Active")
        if current.get("LastUpdateStatus") == "InProgress":
            self._wait("function_updated_v2", "finish its previous update")
        done = []
        architectures = current.get("Architectures") or [self.architecture]
        if current.get("CodeSha256") != sha or architectures != [self.architecture]:
            with self._errors(f"updating the code of Lambda function {self.function_name!r}"):
                self._client.update_function_code(
                    FunctionName=self.function_name,
                    ZipFile=archive,
                    Architectures=[self.architecture],
                )
            self._wait("function_updated_v2", "finish the code update")
            done.append("code")
        changes = {
            key: value
            for key, value in wanted.items()
            if _normalized(key, current.get(key)) != _normalized(key, value)
        }
        if self.role is not None and current.get("Role") != self.role:
            changes["Role"] = self.role
        if changes:
            with self._errors(
                f"updating the configuration of Lambda function {self.function_name!r}"
            ):
                self._client.update_function_configuration(
                    FunctionName=self.function_name, **changes
                )
            self._wait("function_updated_v2", "finish the configuration update")
            # Never log values: the environment holds the secret.
            done.append("configuration (" + ", ".join(sorted(changes)) + ")")
        return "updated " + " and ".join(done) if done else "unchanged"

    def _wait(self, waiter_name: str, what: str) -> None:
        waiter = self._client.get_waiter(waiter_name)
        try:
            with self._errors(f"waiting for Lambda function {self.function_name!r} to {what}"):
                waiter.wait(
                    FunctionName=self.function_name,
                    WaiterConfig={
                        "Delay": self.deploy_poll_delay,
                        "MaxAttempts": self.deploy_poll_attempts,
                    },
                )
        except WaiterError as exc:
            last = exc.last_response or {}
            config = last.get("Configuration", {}) if isinstance(last, dict) else {}
            reason = config.get("StateReason") or config.get("LastUpdateStatusReason") or exc
            raise ProviderError(
                f"Lambda function {self.function_name!r} did not {what}: {reason}",
                provider=self.name,
                code=config.get("StateReasonCode") or config.get("LastUpdateStatusReasonCode"),
            ) from exc

    # ---- errors

    @contextlib.contextmanager
    def _errors(self, resource: str) -> Iterator[None]:
        """Translate botocore exceptions raised in the block (``from`` them)."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, resource) from exc

    def _advice(self) -> dict[str, str]:
        return {
            "ResourceNotFoundException": (
                f"Lambda function {self.function_name!r} does not exist"
                f"{' in ' + self.region if self.region else ''}; run "
                "`faasml deploy --provider aws` (or check function_name and region)"
            ),
        }

    def _translate(self, exc: BaseException, resource: str) -> FaaSMLError:
        """Map a botocore exception, with Lambda's own codes first, to a faasml error."""
        advice = self._advice()
        if isinstance(exc, ClientError):
            code, _query = error_codes(exc)
            cls = LAMBDA_ERROR_MAP.get(code)
            if cls is not None:
                meta = exc.response.get("ResponseMetadata", {})
                status = meta.get("HTTPStatusCode")
                request_id = meta.get("RequestId") or None
                message = advice.get(code) or (
                    f"{resource}: {exc.response.get('Error', {}).get('Message') or 'failed'}"
                )
                details = ", ".join(
                    p for p in (code, f"HTTP {status}" if status else "", request_id or "") if p
                )
                text = f"{message} ({details})"
                common: dict[str, Any] = {
                    "provider": self.name,
                    "code": code,
                    "status": int(status) if status is not None else None,
                    "request_id": request_id,
                }
                if cls is ThrottledError:
                    headers = meta.get("HTTPHeaders", {}) or {}
                    return ThrottledError(text, retry_after=retry_after_seconds(headers), **common)
                return cls(text, **common)
        mapped = translate_error(exc, self.name, resource, messages=advice)
        if mapped is None:
            return ProviderError(f"{resource}: {exc}", provider=self.name)
        return mapped


def _normalized(key: str, value: Any) -> Any:
    """A configuration value as Lambda reports it, so unchanged settings compare equal."""
    if key == "Environment":
        return dict((value or {}).get("Variables") or {})
    return value

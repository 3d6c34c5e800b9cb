"""``OpenFaaSFunction``: faasml's handler as an OpenFaaS function, called through the gateway.

REST contract used (OpenFaaS gateway ``api-docs/spec.openapi.yml``, ``gateway/main.go``,
faas-provider ``proxy/proxy.go``, of-watchdog ``executor/http_runner.go``):

* ``POST /function/{name}[.{namespace}]`` proxies the body to the function and its answer back.
  Failures that do not come from the function itself:

  - 404, text ``error finding function ...``: the gateway's scaler does not know the function;
  - 504 with an empty body: of-watchdog killed the request at ``exec_timeout``;
  - 500 with an empty body: of-watchdog lost the function's process mid-request (it crashed);
  - 500 ``Can't reach service for: ...`` with ``X-OpenFaaS-Internal: proxy``: the gateway could
    not reach the container (restarting after a crash) or gave up at its ``upstream_timeout``;
  - 503 ``No endpoints available for: ...``: no ready replica (starting, crash-looping).

* ``POST /async-function/{name}`` queues the request (NATS) and answers 202 with ``X-Call-Id``.
  The queue-worker reports the result only to an ``X-Callback-Url``, which a driver has no server
  for, so asynchronous invocations stay ``"unknown"``; faasml's executor learns of completion
  from its PubSub. The NATS message carries the body base64-encoded inside JSON, under NATS's
  default 1 MiB ``max_payload``, which sets :attr:`OpenFaaSFunction.max_payload_bytes`.

* ``/system/functions`` (POST 202 creates, PUT 200 updates or 404) and ``/system/secrets``
  (POST creates or 409, PUT updates) deploy; they need HTTP Basic auth. A function POST after a
  404 PUT that finds the function created meanwhile (409) is followed by one more PUT, so the
  deployed spec is ours.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import requests
import requests.adapters

from faasml.config import SecretRef, resolve_secret
from faasml.errors import (
    AuthenticationError,
    ConfigurationError,
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
from faasml.providers import _shim
from faasml.providers._common import backoff_delay, checked_payload, excerpt, retry_after_seconds
from faasml.providers.openfaas.build import write_build_context
from faasml.providers.openfaas.handler import ERROR_HEADER, SECRET_NAME

__all__ = ["OpenFaaSFunction"]

logger = logging.getLogger(__name__)

#: NATS's default ``max_payload``, the ceiling of one queued (asynchronous) request.
NATS_MAX_PAYLOAD = 1024 * 1024
# What the queued request's JSON spends besides the base64 body: headers, path, function name,
# callback URL. Generous, because the gateway adds headers we do not control.
_QUEUE_ENVELOPE_ALLOWANCE = 16 * 1024

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # a Kubernetes DNS-1123 label
_PASSWORD_ENV = "OPENFAAS_PASSWORD"
# Seconds to wait for a TCP connection to the gateway; the read timeout follows ``timeout``.
_CONNECT_TIMEOUT = 10.0
# Seconds past the function's own time limit that we wait for the gateway's answer, so the
# watchdog's 504 reaches us before our own read timeout fires.
_READ_GRACE = 5.0
_SYSTEM_TIMEOUT = 30.0
# The default time limit: under the 60 s upstream_timeout of the gateway's Helm chart, so the
# watchdog's 504 (a clear InvocationTimeoutError) reaches the gateway before the gateway gives up
# on its own and answers a bare 500/502 that only the elapsed time tells from a crash.
_DEFAULT_TIMEOUT = 55.0
# The longest duration Go's time.ParseDuration accepts (int64 nanoseconds), in whole seconds.
_GO_MAX_SECONDS = (2**63 - 1) // 10**9
# Seconds the watchdog's read/write timeouts exceed exec_timeout, so it can still write its 504.
_WATCHDOG_GRACE = 2.0
_TEXT_EXCERPT = 300
# Indirections so tests can observe backoff waits and fake elapsed time without patching the
# time module for every thread of the process.
_sleep = time.sleep
_monotonic = time.monotonic


class OpenFaaSFunction(Function):
    """An OpenFaaS function running faasml's handler, invoked through the gateway.

    :param gateway: the gateway's base URL.
    :param function_name: the OpenFaaS function (service) name.
    :param namespace: the function's namespace; ``None`` uses the gateway's default.
    :param username: the gateway's Basic-auth user, used only for ``/system/*`` (deploy).
    :param password: its password, a string or ``{"$env": "VAR"}``; default
        ``$OPENFAAS_PASSWORD``, read only when :meth:`deploy` needs it.
    :param image: the container image :meth:`deploy` deploys (build it from
        :meth:`write_build_context`).
    :param timeout: the function's time limit in seconds, deployed as of-watchdog's
        ``exec_timeout``. Keep it below the gateway's ``upstream_timeout`` (60 s by default,
        hence the 55 s default): when it is equal or longer, the gateway may cut a long call off
        first and answer 500/502 instead of the watchdog's 504, which faasml reports as
        :class:`InvocationTimeoutError` only because the elapsed time reached ``timeout``.
    :param concurrency: how many invocations the executor keeps in flight.
    :param max_retries: how many times a throttled (429) request is retried, with exponential
        backoff and jitter or the server's ``Retry-After``, before :class:`ThrottledError`.
    :param session: a :class:`requests.Session` to send requests with (tests, proxies, TLS).
    :raises ConfigurationError: a value is out of range, naming it.

    :attr:`max_payload_bytes` is the limit of a queued (asynchronous) request, set by NATS; it is
    enforced on the synchronous :meth:`invoke` too, although the gateway would proxy larger
    bodies there, so one limit holds for both paths (faasml's executor uses
    :meth:`invoke_async`).
    """

    name: ClassVar[str] = "openfaas"
    #: the raw payload that still fits NATS's 1 MiB once base64-encoded in the queued request.
    max_payload_bytes: ClassVar[int] = (NATS_MAX_PAYLOAD - _QUEUE_ENVELOPE_ALLOWANCE) // 4 * 3
    deployable: ClassVar[bool] = True
    #: first backoff step, in seconds, when the gateway throttles and gives no Retry-After.
    retry_base_delay: ClassVar[float] = 0.2
    #: the longest single wait between two throttled attempts, in seconds.
    retry_max_delay: ClassVar[float] = 10.0

    def __init__(
        self,
        gateway: str = "http://127.0.0.1:8080",
        *,
        function_name: str = "faasml",
        namespace: str | None = None,
        username: str = "admin",
        password: str | SecretRef | None = None,
        image: str | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        concurrency: int = 50,
        max_retries: int = 4,
        session: requests.Session | None = None,
    ) -> None:
        if not isinstance(gateway, str) or not re.match(r"^https?://[^/\s]+", gateway):
            raise ConfigurationError(
                f"gateway must be an http(s) URL like http://127.0.0.1:8080, got {gateway!r}"
            )
        if not isinstance(function_name, str) or not _NAME_RE.match(function_name):
            raise ConfigurationError(
                "function_name must be a lowercase DNS label (a-z, 0-9, '-'), "
                f"got {function_name!r}"
            )
        if namespace is not None and (
            not isinstance(namespace, str) or not _NAME_RE.match(namespace)
        ):
            raise ConfigurationError(
                f"namespace must be a lowercase DNS label or None, got {namespace!r}"
            )
        if not isinstance(username, str) or not username:
            raise ConfigurationError("username must be a non-empty string")
        if password is not None and not isinstance(password, (str, Mapping)):
            raise ConfigurationError('password must be a string or {"$env": "VAR"}')
        if image is not None and (not isinstance(image, str) or not image.strip()):
            raise ConfigurationError(f"image must be a container image reference, got {image!r}")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (0 < timeout <= _GO_MAX_SECONDS - _WATCHDOG_GRACE)  # also rejects NaN
        ):
            raise ConfigurationError(
                "timeout must be a number of seconds > 0 and at most "
                f"{_GO_MAX_SECONDS - _WATCHDOG_GRACE:.0f} (Go's longest duration), "
                f"got {timeout!r}"
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}")

        self.gateway = gateway.rstrip("/")
        self.function_name = function_name
        self.namespace = namespace
        self.username = username
        self.image = image
        self.timeout = float(timeout)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self._password: str | SecretRef = (
            password if password is not None else {"$env": _PASSWORD_ENV}
        )
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            # One pooled connection per invocation in flight, so none waits for a socket.
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=2, pool_maxsize=max(10, concurrency)
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        self._deployed_environment: tuple[str, ...] = ()
        self._closed = False

    # ---- Function primitives

    def invoke(self, payload: bytes) -> bytes:
        """Call the function synchronously through ``/function/{name}`` and return its result.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`.
        :raises FunctionError: the handler raised; carries ``remote_type``/``remote_traceback``.
        :raises InvocationTimeoutError: the function ran past :attr:`timeout`.
        :raises WorkerDiedError: the function's process died while running it.
        :raises NotFoundError: the function is not deployed.
        :raises ThrottledError: still throttled after ``max_retries`` retries.
        :raises ServiceUnavailableError: the gateway is unreachable or has no ready replica.
        """
        data = self._check_payload(payload)
        started = _monotonic()
        try:
            response = self._send(
                "POST",
                self._function_path("function"),
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=(_CONNECT_TIMEOUT, self.timeout + _READ_GRACE),
            )
        except requests.Timeout as exc:  # only the read timeout: _send maps connect timeouts
            raise InvocationTimeoutError(
                f"the OpenFaaS gateway gave no answer within {self.timeout + _READ_GRACE:g} s "
                f"for function {self._qualified_name}, past its {self.timeout:g} s time limit",
                provider=self.name,
            ) from exc
        if response.status_code == 200 and ERROR_HEADER not in response.headers:
            return bytes(response.content)
        self._raise_invoke_error(response, _monotonic() - started)

    def invoke_async(self, payload: bytes) -> Invocation:
        """Queue ``payload`` through ``/async-function/{name}`` and return at once.

        The gateway answers 202 with the request's ``X-Call-Id``; its status stays
        ``"unknown"`` because OpenFaaS reports results only to a callback URL.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`.
        :raises NotFoundError: the function is not deployed.
        :raises ThrottledError: still throttled after ``max_retries`` retries.
        :raises ProviderError: any other answer than 202 (a subclass when it is known).
        """
        data = self._check_payload(payload)
        response = self._send(
            "POST",
            self._function_path("async-function"),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=(_CONNECT_TIMEOUT, _SYSTEM_TIMEOUT),
        )
        if response.status_code != 202:
            if response.status_code == 500 and "maximum payload" in response.text.lower():
                raise PayloadTooLargeError(
                    f"the OpenFaaS queue refused a request of {len(data)} bytes: "
                    f"{_excerpt(response)}; faasml allows {self.max_payload_bytes} bytes, which "
                    "fits NATS's default 1 MiB max_payload: raise max_payload on your NATS server "
                    "or send smaller payloads",
                    provider=self.name,
                    status=500,
                    request_id=response.headers.get("X-Call-Id"),
                )
            self._raise_common(response, f"queue a call of function {self._qualified_name}")
        call_id = response.headers.get("X-Call-Id") or uuid.uuid4().hex
        return Invocation(id=call_id, status="unknown")

    # ---- deployment

    def deploy(
        self,
        *,
        secret: str,
        environment: Mapping[str, str] | None = None,
        dependencies: bool = True,
    ) -> str:
        """Create or update the OpenFaaS function from :attr:`image` and its signing secret.

        The secret goes into the OpenFaaS secret ``faasml-secret`` (mounted as a file, read by the
        handler), never into envVars, which the API shows to anyone who may list functions.
        ``environment`` and the watchdog timeouts become envVars.

        :param secret: faasml's signing secret.
        :param environment: more variables for the function (``FAASML_HANDLER`` ...).
        :param dependencies: unused: the image carries faasml's dependencies.
        :returns: one line naming the function, image and gateway.
        :raises ConfigurationError: no ``image`` was given, or the environment is invalid.
        :raises AuthenticationError: the gateway refused the Basic-auth credentials.
        """
        if not isinstance(secret, str) or not secret:
            raise ConfigurationError("deploy needs the signing secret as a non-empty string")
        if self.image is None:
            raise ConfigurationError(
                "OpenFaaS deploys container images, not code archives: build one with "
                "OpenFaaSFunction.write_build_context('build/faasml') then "
                "`docker build -t <registry>/faasml:<tag> build/faasml && docker push "
                "<registry>/faasml:<tag>` (or `faas-cli build`/`publish`), and pass "
                "image='<registry>/faasml:<tag>' to the openfaas provider"
            )
        env = dict(environment or {})
        for key, value in env.items():
            # Name the key only: the value may be a secret.
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ConfigurationError(f"environment variable name {key!r} is not valid")
            if not isinstance(value, str) or "\0" in value:
                raise ConfigurationError(
                    f"environment variable {key!r} must have a string value without NUL bytes"
                )
        # The secret travels only as an OpenFaaS secret; an envVar would publish it.
        env.pop("FAASML_SECRET", None)
        auth = self._auth()

        secret_body: dict[str, Any] = {"name": SECRET_NAME, "value": secret}
        if self.namespace is not None:
            secret_body["namespace"] = self.namespace
        secret_what = f"the OpenFaaS secret {SECRET_NAME!r}"
        created = self._system(
            "POST", "/system/secrets", secret_body, auth, ok=(200, 201, 202, 409), what=secret_what
        )
        if created.status_code == 409:
            self._system(
                "PUT",
                "/system/secrets",
                secret_body,
                auth,
                ok=(200, 202),
                what=secret_what,
                gone="it was deleted after creating it answered 409; run the deploy again",
            )

        seconds = _go_duration(self.timeout)
        # The watchdog must be allowed to write its 504 after exec_timeout, so its HTTP server's
        # timeouts are a little longer.
        grace = _go_duration(self.timeout + _WATCHDOG_GRACE)
        deployment: dict[str, Any] = {
            "service": self.function_name,
            "image": self.image,
            "envVars": {
                **env,
                "exec_timeout": seconds,
                "read_timeout": grace,
                "write_timeout": grace,
            },
            "secrets": [SECRET_NAME],
            "labels": {"app.kubernetes.io/managed-by": "faasml", "faasml": "function"},
            "annotations": {"faasml/provider": self.name, "faasml/timeout": seconds},
        }
        if self.namespace is not None:
            deployment["namespace"] = self.namespace
        function_what = f"function {self._qualified_name}"
        updated = self._system(
            "PUT", "/system/functions", deployment, auth, ok=(200, 202, 404), what=function_what
        )
        action = "updated"
        if updated.status_code == 404:
            created = self._system(
                "POST",
                "/system/functions",
                deployment,
                auth,
                ok=(200, 201, 202, 409),
                what=function_what,
            )
            action = "created"
            if created.status_code == 409:
                # Another deploy created the function between our PUT and POST, with its spec,
                # not ours: apply ours by updating it after all.
                self._system(
                    "PUT",
                    "/system/functions",
                    deployment,
                    auth,
                    ok=(200, 202),
                    what=function_what,
                    gone="it was deleted after creating it answered 409; run the deploy again",
                )
                action = "updated"
        self._deployed_environment = tuple(sorted(env))
        logger.info(
            "%s OpenFaaS function %s (image %s) at %s",
            action,
            self._qualified_name,
            self.image,
            self.gateway,
        )
        return (
            f"{action} OpenFaaS function {self._qualified_name} from image {self.image} at "
            f"{self.gateway} (secret {SECRET_NAME!r}, exec_timeout {seconds})"
        )

    @classmethod
    def write_build_context(cls, directory: str | Path, *, python_version: str = "3.11") -> Path:
        """Write a Docker build context for the function image (``python3-http`` layout).

        See :func:`faasml.providers.openfaas.build.write_build_context`.
        """
        return write_build_context(directory, python_version=python_version)

    # ---- lifecycle and introspection

    def close(self) -> None:
        """Close the HTTP session if this backend created it. Idempotent."""
        if not self._closed:
            self._closed = True
            if self._owns_session:
                self._session.close()

    def environment(self) -> Mapping[str, str]:
        """The variables last deployed by :meth:`deploy`, values shown as ``***``."""
        return {key: "***" for key in self._deployed_environment}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(gateway={self.gateway!r}, "
            f"function_name={self.function_name!r}, namespace={self.namespace!r}, "
            f"username={self.username!r}, password='***', image={self.image!r}, "
            f"timeout={self.timeout:g}, concurrency={self.concurrency}, "
            f"environment={dict(self.environment())!r})"
        )

    # ---- internals

    @property
    def _qualified_name(self) -> str:
        return (
            self.function_name
            if self.namespace is None
            else f"{self.function_name}.{self.namespace}"
        )

    def _function_path(self, route: str) -> str:
        return f"/{route}/{self._qualified_name}"

    def _check_payload(self, payload: bytes) -> bytes:
        return checked_payload(
            payload,
            self.max_payload_bytes,
            provider=self.name,
            platform="OpenFaaS",
            why="a queued request is base64 in JSON under NATS's 1 MiB max_payload",
        )

    def _auth(self) -> tuple[str, str]:
        try:
            password = resolve_secret(self._password, "the OpenFaaS gateway password")
        except ConfigurationError as exc:
            raise AuthenticationError(
                f"{exc}; deploying needs the gateway's admin password (for example "
                "`export OPENFAAS_PASSWORD=$(kubectl get secret -n openfaas basic-auth "
                "-o jsonpath='{.data.basic-auth-password}' | base64 -d)`)",
                provider=self.name,
            ) from None
        if not password:
            raise AuthenticationError(
                "the OpenFaaS gateway password is empty; set OPENFAAS_PASSWORD or pass password=",
                provider=self.name,
            )
        return (self.username, password)

    def _system(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any],
        auth: tuple[str, str],
        *,
        ok: tuple[int, ...],
        what: str,
        gone: str | None = None,
    ) -> requests.Response:
        """Send a ``/system`` request about ``what``; return it when its status is in ``ok``.

        :param gone: why a 404 happened, when the caller knows (a concurrent delete); otherwise
            the message asks to check the gateway URL and the namespace.
        :raises ProviderError: any other status (a subclass when it is known).
        """
        response = self._send(
            method,
            path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            auth=auth,
            timeout=(_CONNECT_TIMEOUT, _SYSTEM_TIMEOUT),
        )
        if response.status_code in ok:
            return response
        action = f"{method} {path} for {what}"
        if response.status_code == 404:
            hint = gone or (
                "check the gateway URL and that the namespace "
                f"{self.namespace or '(the default)'} exists"
            )
            raise NotFoundError(
                f"the OpenFaaS gateway at {self.gateway} answered 404 to {action}: "
                f"{_excerpt(response)}; {hint}",
                provider=self.name,
                status=404,
                request_id=response.headers.get("X-Call-Id"),
            )
        self._raise_common(response, action)

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request, retrying 429 answers; map connection failures.

        :raises ThrottledError: still 429 after :attr:`max_retries` retries.
        :raises ServiceUnavailableError: the gateway cannot be reached.
        """
        if self._closed:
            raise ServiceUnavailableError(
                "the OpenFaaS function backend is closed", provider=self.name
            )
        url = self.gateway + path
        attempt = 0
        while True:
            try:
                response: requests.Response = self._session.request(method, url, **kwargs)
            except requests.ConnectTimeout as exc:
                raise ServiceUnavailableError(
                    f"the OpenFaaS gateway at {self.gateway} did not accept a connection within "
                    f"{_CONNECT_TIMEOUT:g} s; check the gateway URL and the network",
                    provider=self.name,
                ) from exc
            except requests.Timeout as exc:
                if path.startswith("/function/"):
                    raise  # invoke() knows the function's time limit and reports it
                raise ServiceUnavailableError(
                    f"the OpenFaaS gateway at {self.gateway} gave no answer to {method} {path} "
                    f"within {_SYSTEM_TIMEOUT:g} s",
                    provider=self.name,
                ) from exc
            except requests.ConnectionError as exc:
                raise ServiceUnavailableError(
                    f"cannot reach the OpenFaaS gateway at {self.gateway}: {exc}; check the "
                    "gateway URL and that `faas-cli list --gateway "
                    f"{self.gateway}` works",
                    provider=self.name,
                ) from exc
            if response.status_code != 429:
                return response
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt >= self.max_retries:
                raise ThrottledError(
                    f"the OpenFaaS gateway throttled {method} {path} (429) "
                    f"{attempt + 1} times; lower the concurrency or raise the function's "
                    f"limits: {_excerpt(response)}",
                    retry_after=retry_after,
                    provider=self.name,
                    status=429,
                    request_id=response.headers.get("X-Call-Id"),
                )
            if retry_after is not None:
                delay = min(retry_after, self.retry_max_delay)
            else:
                delay = backoff_delay(attempt, self.retry_base_delay, self.retry_max_delay)
            logger.debug(
                "OpenFaaS gateway throttled %s %s; retrying in %.2f s", method, path, delay
            )
            response.close()
            _sleep(delay)
            attempt += 1

    def _raise_invoke_error(self, response: requests.Response, elapsed: float) -> NoReturn:
        status = response.status_code
        request_id = response.headers.get("X-Call-Id")
        name = self._qualified_name
        if ERROR_HEADER in response.headers:
            try:
                report = json.loads(response.content)
            except ValueError:
                report = None
            if isinstance(report, dict):
                raise _shim.remote_error(report, "OpenFaaS")
            raise ProviderError(
                f"function {name} sent an unreadable error report: {_excerpt(response)}",
                provider=self.name,
                status=status,
                request_id=request_id,
            )
        if status == 504:
            raise InvocationTimeoutError(
                f"function {name} ran past its {self.timeout:g} s time limit and the watchdog "
                "stopped it (504); raise timeout and redeploy",
                provider=self.name,
                status=status,
                request_id=request_id,
            )
        if status in (500, 502):
            # The watchdog answers 500 with X-Duration-Seconds when the process died mid-request
            # (it reports its own exec_timeout as 504). The gateway answers 500 "Can't reach
            # service" without that header when the container is unreachable or its
            # upstream_timeout cut the call off; only the elapsed time tells those two apart.
            from_gateway = "X-Duration-Seconds" not in response.headers
            if from_gateway and elapsed >= self.timeout:
                raise InvocationTimeoutError(
                    f"function {name} gave no answer within its {self.timeout:g} s time limit "
                    f"(gateway answered {status}: {_excerpt(response)}); raise "
                    "timeout, and the gateway's upstream_timeout if it is lower",
                    provider=self.name,
                    status=status,
                    request_id=request_id,
                )
            raise WorkerDiedError(
                f"the process running function {name} died before answering (HTTP {status}: "
                f"{_excerpt(response)}); check `faas-cli logs {self.function_name}`",
                provider=self.name,
                status=status,
                request_id=request_id,
            )
        if status == 503:
            raise ServiceUnavailableError(
                f"function {name} has no ready replica (503: {_excerpt(response)}); it may be "
                f"starting or crash-looping, see `faas-cli describe {self.function_name}`",
                provider=self.name,
                status=status,
                request_id=request_id,
            )
        if 200 <= status < 300:
            raise ProviderError(
                f"function {name} answered HTTP {status} instead of 200: {_excerpt(response)}",
                provider=self.name,
                status=status,
                request_id=request_id,
            )
        self._raise_common(response, f"invoke function {name}")

    def _raise_common(self, response: requests.Response, action: str) -> NoReturn:
        status = response.status_code
        detail = _excerpt(response)
        kwargs: dict[str, Any] = {
            "provider": self.name,
            "status": status,
            "request_id": response.headers.get("X-Call-Id"),
        }
        if status == 401:
            raise AuthenticationError(
                f"the OpenFaaS gateway at {self.gateway} refused the credentials of user "
                f"{self.username!r} to {action} (401); check OPENFAAS_PASSWORD / password=",
                **kwargs,
            )
        if status == 403:
            raise PermissionDeniedError(
                f"user {self.username!r} may not {action} on {self.gateway} (403): {detail}",
                **kwargs,
            )
        if status == 404:
            raise NotFoundError(
                f"could not {action}: the OpenFaaS gateway at {self.gateway} has no function "
                f"{self._qualified_name} (404: {detail}); run `faasml deploy --provider openfaas`",
                **kwargs,
            )
        if status == 413:
            raise PayloadTooLargeError(
                f"the OpenFaaS gateway refused the request body to {action} (413): {detail}",
                **kwargs,
            )
        if status in (502, 503, 504) or status >= 500:
            raise ServiceUnavailableError(
                f"the OpenFaaS gateway at {self.gateway} failed to {action} "
                f"(HTTP {status}): {detail}",
                **kwargs,
            )
        raise ProviderError(
            f"the OpenFaaS gateway at {self.gateway} refused to {action} (HTTP {status}): {detail}",
            **kwargs,
        )


def _go_duration(seconds: float) -> str:
    """``seconds`` as a Go duration string without exponent notation (``"5s"``, ``"500ms"``).

    Whole seconds are written in seconds, anything else in milliseconds (at least 1: of-watchdog
    reads a zero ``exec_timeout`` as no limit at all).
    """
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


def _excerpt(response: requests.Response) -> str:
    """The start of a response body, for error messages."""
    return excerpt(response.text, _TEXT_EXCERPT)

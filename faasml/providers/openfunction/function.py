"""The ``openfunction`` Function backend: OpenFunction HTTP functions on Kubernetes.

OpenFunction runs a synchronous function as a Knative service built from a container image. The
function is a functions-framework-python HTTP function (:mod:`faasml.providers.openfunction.
handler`): the request body is the faasml payload, the response body the result, both raw bytes.

Two HTTP endpoints are involved, both spoken with :mod:`requests` (the ``kubernetes`` client is
deliberately not used: it conflicts with botocore's ``python-dateutil`` pin):

* the **function URL**, taken from ``url=`` or from the Function object's ``status.addresses``
  (``External`` preferred, else ``Internal``); invocations POST to it through Knative's
  activator and queue-proxy, whose answers are mapped to faasml errors:

  ======================================  ===================================================
  answer                                  faasml error
  ======================================  ===================================================
  200                                     the result
  500 + ``X-Faasml-Error``                :class:`~faasml.errors.FunctionError` (handler raised)
  504 (``request timeout``)               :class:`~faasml.errors.InvocationTimeoutError`
  502 (proxy lost the container)          :class:`~faasml.errors.WorkerDiedError`
  503 ``pending request queue full``      retried with backoff, then ThrottledError
  503 (other: no ready container)         :class:`~faasml.errors.WorkerDiedError`
  429                                     retried with backoff, then ThrottledError
  404                                     :class:`~faasml.errors.NotFoundError` (deploy first)
  413                                     :class:`~faasml.errors.PayloadTooLargeError`
  401 / 403                               Authentication / PermissionDenied
  other 5xx, connection refused           :class:`~faasml.errors.ServiceUnavailableError`
  ======================================  ===================================================

* the **Kubernetes API** (``api_server`` + bearer ``token``, or the in-cluster service account,
  or ``$KUBECONFIG``'s current context), used to read the function's address and by
  :meth:`OpenFunctionFunction.deploy` to create or replace the ``core.openfunction.io/v1beta2``
  Function and the Secret holding ``FAASML_SECRET``. Kubernetes ``Status`` answers map to
  faasml errors the same way (401, 403, 404, 409 :class:`~faasml.errors.AlreadyExistsError`,
  422, 429, 5xx).

OpenFunction's asynchronous functions need Dapr inside the cluster, which the driver cannot
reach, so :meth:`OpenFunctionFunction.invoke_async` runs the synchronous call on a pool of
``concurrency`` threads and reports its outcome through the :class:`OpenFunctionInvocation`.

There is no zip upload: a function is an image. :meth:`OpenFunctionFunction.write_build_context`
writes a Docker build context for it; :meth:`~OpenFunctionFunction.deploy` takes ``image=``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import requests

from faasml.config import SecretRef, resolve_secret
from faasml.errors import (
    AlreadyExistsError,
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
from faasml.interfaces import Function, Invocation
from faasml.providers import _shim
from faasml.providers._common import backoff_delay, checked_payload, excerpt, retry_after_seconds
from faasml.providers.openfunction.handler import ERROR_HEADER

__all__ = ["OpenFunctionFunction", "OpenFunctionInvocation"]

logger = logging.getLogger(__name__)

_PROVIDER = "openfunction"
_MIB = 1024 * 1024
_GROUP_VERSION = "core.openfunction.io/v1beta2"
_FUNCTIONS_PATH = "/apis/core.openfunction.io/v1beta2/namespaces/{ns}/functions"
_SECRETS_PATH = "/api/v1/namespaces/{ns}/secrets"
_SECRET_KEY = "FAASML_SECRET"
_CONTAINER_PORT = 8080
# A Kubernetes object name / namespace (RFC 1123 label; Function names become DNS labels).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Kubernetes' rule for container environment variable names.
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_DEPLOY_HINT = "run `faasml deploy --provider openfunction`"
# Seconds to connect to an endpoint; invocations then wait for the function's own time limit.
_CONNECT_TIMEOUT = 10.0
# Extra seconds past ``timeout`` before the driver stops waiting for an answer itself: Knative
# answers 504 at the limit, so this only fires when the path to the cluster hangs.
_READ_GRACE = 30.0
# Seconds the driver waits for each Kubernetes API answer.
_API_TIMEOUT = 30.0
_FUNCTIONS_FRAMEWORK = "functions-framework>=3.5,<4"
# The extras of the store and PubSub the hook names as defaults (default_storage="redis",
# default_pubsub="redis"): the image needs their client libraries (the ``redis`` package).
_DEFAULT_BACKEND_EXTRAS = ("redis",)
# Read-and-replace attempts of deploy before it gives up on a Function that keeps changing.
_CONFLICT_ATTEMPTS = 5
# A container image reference pinned to content (``repo@sha256:<digest>``).
_DIGEST_PINNED = re.compile(r"@sha256:[0-9a-fA-F]{64}$")


# --------------------------------------------------------------------------- Kubernetes access


@dataclass
class _KubeAPI:
    """Where and how to reach the Kubernetes API; the token never appears in its repr."""

    server: str
    token: str | None = field(default=None, repr=False)
    #: ``requests``' ``verify``: a CA bundle path, ``True`` (system CAs) or ``False``.
    verify: bool | str = True
    #: where the settings came from, for error messages (never the token).
    source: str = ""


def _in_cluster(token: str | None, ca_cert: str | None, insecure: bool) -> _KubeAPI | None:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    token_file = _SERVICE_ACCOUNT / "token"
    if not host or not port or not token_file.is_file():
        return None
    if ":" in host:  # an IPv6 service address needs brackets in a URL
        host = f"[{host}]"
    ca_file = _SERVICE_ACCOUNT / "ca.crt"
    verify: bool | str = ca_cert or (str(ca_file) if ca_file.is_file() else True)
    return _KubeAPI(
        server=f"https://{host}:{port}",
        token=token or token_file.read_text().strip(),
        verify=False if insecure else verify,
        source="the in-cluster service account",
    )


def _kubeconfig_paths() -> list[Path]:
    listed = os.environ.get("KUBECONFIG")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def _from_kubeconfig(
    token: str | None, ca_cert: str | None, insecure: bool, temp_files: list[str]
) -> _KubeAPI | None:
    """The current context of the first existing kubeconfig file, for bearer-token users."""
    path = next((p for p in _kubeconfig_paths() if p.is_file()), None)
    if path is None:
        return None
    try:
        import yaml
    except ImportError:
        raise ConfigurationError(
            f"reading the kubeconfig {path} needs PyYAML (pip install pyyaml); or pass "
            "api_server= and token= to the openfunction backend"
        ) from None
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read the kubeconfig {path}: {exc}") from None

    def named(section: str, wanted: str) -> dict[str, Any]:
        for entry in config.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == wanted:
                return dict(entry.get(section[:-1]) or {})
        raise ConfigurationError(f"the kubeconfig {path} has no {section[:-1]} named {wanted!r}")

    current = config.get("current-context")
    if not current:
        raise ConfigurationError(
            f"the kubeconfig {path} has no current-context; run `kubectl config use-context` "
            "or pass api_server= and token="
        )
    context = named("contexts", current)
    cluster = named("clusters", str(context.get("cluster", "")))
    user = named("users", str(context.get("user", ""))) if context.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ConfigurationError(f"cluster of context {current!r} in {path} has no server")

    def relative(value: str) -> str:
        # kubeconfig paths are relative to the file that names them.
        return str((path.parent / Path(value).expanduser()).resolve())

    verify: bool | str = True
    if ca_cert:
        verify = ca_cert
    elif cluster.get("certificate-authority-data"):
        # requests wants a CA *file*; it is removed again by close().
        handle, name = tempfile.mkstemp(prefix="faasml-k8s-ca-", suffix=".crt")
        with os.fdopen(handle, "wb") as out:
            out.write(base64.b64decode(cluster["certificate-authority-data"]))
        temp_files.append(name)
        verify = name
    elif cluster.get("certificate-authority"):
        verify = relative(str(cluster["certificate-authority"]))
    if insecure or cluster.get("insecure-skip-tls-verify"):
        verify = False

    if token is None:
        if user.get("token"):
            token = str(user["token"])
        elif user.get("tokenFile"):
            token = Path(relative(str(user["tokenFile"]))).read_text().strip()
        elif any(k in user for k in ("exec", "auth-provider", "client-certificate", "username")):
            raise ConfigurationError(
                f"the kubeconfig user of context {current!r} ({path}) does not use a bearer "
                "token (exec plugins, auth providers, client certificates and basic auth are "
                "not supported): pass token= (e.g. from `kubectl create token <account>`)"
            )
    return _KubeAPI(str(server).rstrip("/"), token, verify, f"kubeconfig {path} ({current})")


# --------------------------------------------------------------------------- invocations


@dataclass(eq=False)
class OpenFunctionInvocation(Invocation):
    """An invocation running on the backend's thread pool; updated in place when it ends.

    :param result: the function's answer, once ``status == "succeeded"``.
    """

    result: bytes | None = field(default=None, repr=False)  # may be megabytes: keep logs short
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def done(self) -> bool:
        """Return whether the invocation has finished, successfully or not."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the invocation finishes or ``timeout`` seconds pass; return whether done."""
        return self._done.wait(timeout)

    def _finish(self, result: bytes | None, error: BaseException | None) -> None:
        # Fields first, status last: whoever sees the final status also sees the outcome.
        self.result = result
        self.error = error
        self.status = "failed" if error is not None else "succeeded"
        self._done.set()

    # Mutable handles: identity semantics let callers keep them in sets and dicts.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


# --------------------------------------------------------------------------- the backend


class OpenFunctionFunction(Function):
    """An OpenFunction (Knative) HTTP function running faasml's handler shim.

    :param name: the Function object's name (a DNS label); not to be confused with the class
        attribute :attr:`name`, the registry name ``"openfunction"``; read it as
        :attr:`function_name`.
    :param url: the function's HTTP address; ``None`` reads it from the Function's
        ``status.addresses`` (External preferred, else Internal) through the Kubernetes API.
    :param namespace: the namespace of the Function and its Secret.
    :param api_server: Kubernetes API URL (``https://host:6443``); ``None`` uses the in-cluster
        service account, else ``$KUBECONFIG`` (or ``~/.kube/config``)'s current context.
    :param token: bearer token for the API, a string or ``{"$env": "VAR"}``; never shown.
    :param ca_cert: path of the CA bundle that signed the API server's certificate.
    :param insecure: skip TLS verification of the API server (test clusters only).
    :param image: the container image :meth:`deploy` runs (see :meth:`write_build_context`).
    :param timeout: the per-request time limit in seconds; it must match the cluster's Knative
        revision timeout (``revision-timeout-seconds`` in ``config-defaults``, 300 s by default),
        which is what stops a request on the platform.
    :param concurrency: invocations in flight at once (threads of :meth:`invoke_async`, and the
        Function's ``maxReplicas``).
    :param max_retries: times a throttled request (429, or Knative's full request queue) is
        retried with exponential backoff and jitter before :class:`ThrottledError`.
    :param session: a :class:`requests.Session` to send requests with (tests, proxies, custom
        TLS); by default the backend makes and closes its own.
    :raises ConfigurationError: a value is out of range, naming the option.
    """

    name: ClassVar[str] = "openfunction"
    #: functions-framework-python's Flask app reads at most ``MAX_CONTENT_LENGTH`` (10 MiB) of a
    #: body (a larger one fails before the handler runs, as a bare 500); Knative's queue-proxy
    #: adds no limit. Bodies are raw bytes, so there is no encoding growth to account for.
    max_payload_bytes: ClassVar[int] = 10 * _MIB
    deployable: ClassVar[bool] = True
    #: first throttling backoff in seconds; doubles per retry, with jitter, up to the cap.
    retry_base_delay: ClassVar[float] = 0.2
    retry_max_delay: ClassVar[float] = 20.0
    #: seconds :meth:`deploy` waits for the Function to be Running, and its polling interval.
    deploy_wait: ClassVar[float] = 600.0
    deploy_poll_interval: ClassVar[float] = 2.0

    def __init__(
        self,
        name: str = "faasml",
        *,
        url: str | None = None,
        namespace: str = "default",
        api_server: str | None = None,
        token: str | SecretRef | None = None,
        ca_cert: str | None = None,
        insecure: bool = False,
        image: str | None = None,
        timeout: float = 300.0,
        concurrency: int = 32,
        max_retries: int = 4,
        session: requests.Session | None = None,
    ) -> None:
        for option, value in (("name", name), ("namespace", namespace)):
            if not isinstance(value, str) or not _DNS_LABEL.match(value):
                raise ConfigurationError(
                    f"{option} must be a Kubernetes name (lowercase letters, digits and '-', "
                    f"at most 63 characters), got {value!r}"
                )
        if url is not None and (
            not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url)
        ):
            raise ConfigurationError(f"url must be an http:// or https:// URL, got {url!r}")
        if api_server is not None and (
            not isinstance(api_server, str) or not re.match(r"^https?://[^/\s]+", api_server)
        ):
            raise ConfigurationError(
                f"api_server must be an https:// URL of the Kubernetes API, got {api_server!r}"
            )
        if token is not None and not isinstance(token, (str, Mapping)):
            raise ConfigurationError('token must be a string or {"$env": "VAR"}')
        if ca_cert is not None and not isinstance(ca_cert, str):
            raise ConfigurationError(f"ca_cert must be a file path, got {ca_cert!r}")
        if image is not None and (not isinstance(image, str) or not image.strip()):
            raise ConfigurationError(f"image must be a container image reference, got {image!r}")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (0 < timeout < math.inf)  # also rejects NaN
        ):
            raise ConfigurationError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}")

        self.function_name = name
        self.namespace = namespace
        self.api_server = api_server.rstrip("/") if api_server else None
        self.image = image
        self.ca_cert = ca_cert
        self.insecure = bool(insecure)
        self.timeout = float(timeout)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self._fixed_url = url
        self._url: str | None = url
        self._token = token  # resolved when used: it may be an {"$env": ...} reference
        self._environment_names: list[str] = []
        self._lock = threading.Lock()
        self._closed = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._kube: _KubeAPI | None = None
        self._temp_files: list[str] = []
        #: the sleep used between throttled attempts (tests replace it to stay fast).
        self._sleep: Callable[[float], None] = time.sleep
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            # One pooled connection per thread that may invoke at once, so none is discarded.
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=4, pool_maxsize=max(10, concurrency)
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        # Releases the pool, the session and temporary CA files if the object is collected
        # without close(); it holds those, never ``self``.
        self._resources = _Resources(temp_files=self._temp_files)
        self._finalizer = weakref.finalize(
            self, _release, self._resources, self._session if self._owns_session else None
        )

    # ---- Function primitives

    def invoke(self, payload: bytes) -> bytes:
        """POST ``payload`` to the function and return the response body.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes` (checked
            before sending) or the platform refused it (413).
        :raises FunctionError: the handler raised; carries ``remote_type``/``remote_traceback``.
        :raises InvocationTimeoutError: Knative stopped the request at its time limit (504).
        :raises WorkerDiedError: the container died or is not ready (502, 503).
        :raises ThrottledError: still throttled after ``max_retries`` retries.
        :raises NotFoundError: no function at the URL (deploy it first).
        :raises ServiceUnavailableError: the endpoint is unreachable or answered another 5xx,
            or the backend is closed.
        """
        data = self._check_payload(payload)
        return self._call(data)

    def invoke_async(self, payload: bytes) -> OpenFunctionInvocation:
        """Start :meth:`invoke` on the backend's thread pool and return at once.

        The invocation turns ``"succeeded"`` (with :attr:`OpenFunctionInvocation.result`) or
        ``"failed"`` (with :attr:`~faasml.interfaces.Invocation.error` mapped as in
        :meth:`invoke`) when the request ends.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`.
        :raises ServiceUnavailableError: the backend is closed.
        """
        data = self._check_payload(payload)
        invocation = OpenFunctionInvocation(id=uuid.uuid4().hex, status="running")
        with self._lock:  # so close() cannot shut the pool down between the check and submit
            if self._closed:
                raise self._closed_error()
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.concurrency,
                    thread_name_prefix=f"faasml-openfunction-{id(self):x}",
                )
                self._resources.pool = self._pool
            future = self._pool.submit(self._call, data)
        future.add_done_callback(lambda done: self._settle(invocation, done))
        return invocation

    # ---- deployment

    def deploy(
        self,
        *,
        secret: str,
        environment: Mapping[str, str] | None = None,
        dependencies: bool = True,
    ) -> str:
        """Create or replace the Function (and its Secret) and wait until it is Running.

        The Secret ``<name>-faasml`` holds ``FAASML_SECRET``; the Function's container reads it
        through ``valueFrom.secretKeyRef``, so the secret is never part of the Function object.
        ``environment`` becomes plain container variables (``FAASML_HANDLER`` ...).

        :param secret: the signing secret (never logged or shown).
        :param environment: more variables for the function container.
        :param dependencies: unused: an image carries its dependencies
            (:meth:`write_build_context` installs them).
        :returns: one line naming the Function, its image and its URL.
        :raises ConfigurationError: no ``image`` (build one first), or a bad variable.
        :raises AuthenticationError: the API rejected the token.
        :raises PermissionDeniedError: the token may not write Functions or Secrets there.
        :raises NotFoundError: OpenFunction's Function CRD is not installed in the cluster.
        :raises AlreadyExistsError: the Function kept changing between read and replace (409
            Conflict on every one of 5 attempts).
        :raises ProviderError: the Function failed to start or did not start in time.
        """
        del dependencies  # the image provides them
        if self._closed:
            raise self._closed_error()
        if not self.image:
            raise ConfigurationError(
                "OpenFunction runs a container image and takes no code upload: write a build "
                "context with OpenFunctionFunction(...).write_build_context('build/'), run "
                "`docker build -t <registry>/faasml-fn:<tag> build/` and `docker push` it, then "
                "pass image='<registry>/faasml-fn:<tag>'"
            )
        if not isinstance(secret, str) or not secret:
            raise ConfigurationError("deploy needs a non-empty signing secret")
        env = dict(environment or {})
        for key, value in env.items():
            # Name the key only: the value may be a secret.
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise ConfigurationError(f"environment variable name {key!r} is not valid")
            if key == _SECRET_KEY:
                raise ConfigurationError(
                    f"{_SECRET_KEY} comes from deploy(secret=...), not from environment"
                )
            if not isinstance(value, str):
                raise ConfigurationError(f"environment variable {key!r} must have a string value")
        api = self._api()
        secret_name = f"{self.function_name}-faasml"
        logger.info(
            "deploying OpenFunction function %s/%s (image %s) through %s",
            self.namespace,
            self.function_name,
            self.image,
            api.source,
        )
        self._apply_secret(api, secret_name, secret)
        created = self._apply_function(api, self._function_body(env, secret_name))
        logger.info(
            "%s function %s/%s; waiting until it is Running",
            "created" if created else "replaced",
            self.namespace,
            self.function_name,
        )
        url = self._wait_running(api)
        with self._lock:
            self._environment_names = sorted([*env, _SECRET_KEY])
            if self._fixed_url is None:
                self._url = url
        return (
            f"OpenFunction function {self.namespace}/{self.function_name} "
            f"{'created' if created else 'updated'} from image {self.image}, running at "
            f"{self._fixed_url or url}"
        )

    @classmethod
    def write_build_context(
        cls,
        directory: str | os.PathLike[str],
        *,
        dependencies: bool = True,
        python_version: str = "3.11",
    ) -> Path:
        """Write a Docker build context whose image serves faasml as an OpenFunction function.

        Files: ``Dockerfile`` (``python:<python_version>-slim``, functions-framework with
        ``FUNCTION_TARGET=handler`` and ``FUNCTION_SIGNATURE_TYPE=http`` on port 8080),
        ``requirements.txt``, ``main.py`` (the entry module functions-framework loads) and a copy
        of the ``faasml`` package. Build and push it, then pass the tag as ``image=``.

        :param directory: where to write (created if missing; faasml's copy is replaced).
        :param dependencies: install faasml's runtime dependencies in the image, with the client
            libraries of the store and PubSub ``connect("openfunction")`` uses by default
            (Redis); ``False`` when a base image already provides them.
        :param python_version: the ``python:<version>-slim`` base image's version.
        :returns: ``directory`` as a :class:`~pathlib.Path`.
        :raises ValueError: ``python_version`` is not like ``"3.11"``.
        """
        from faasml.providers._package import (
            check_python_version,
            copy_package,
            runtime_requirements,
        )

        check_python_version(python_version)
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        requirements = [_FUNCTIONS_FRAMEWORK]
        if dependencies:
            requirements += runtime_requirements(_PROVIDER)
            for extra in _DEFAULT_BACKEND_EXTRAS:
                requirements += runtime_requirements(extra)
        requirements = list(dict.fromkeys(requirements))
        files = {
            "Dockerfile": _DOCKERFILE.format(port=_CONTAINER_PORT, python=python_version),
            "requirements.txt": "\n".join(requirements) + "\n",
            "main.py": _MAIN_PY,
        }
        for name, text in files.items():
            (target / name).write_text(text)
        return copy_package(target)

    # ---- lifecycle and introspection

    def close(self) -> None:
        """Stop accepting invocations, cancel queued ones and release connections. Idempotent.

        Requests already sent run to their end on the platform; their invocations still settle.
        """
        with self._lock:
            self._closed = True
        self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    @property
    def url(self) -> str | None:
        """The function URL in use: given, discovered, or ``None`` until first needed."""
        return self._url

    def environment(self) -> Mapping[str, str]:
        """The variables :meth:`deploy` gave the function, every value shown as ``"***"``."""
        return {key: "***" for key in self._environment_names}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.function_name!r}, namespace={self.namespace!r}, "
            f"url={self._url!r}, api_server={self.api_server!r}, image={self.image!r}, "
            f"token={'***' if self._token is not None else None}, timeout={self.timeout:g}, "
            f"concurrency={self.concurrency}, environment={dict(self.environment())!r})"
        )

    # ---- invocation internals

    def _check_payload(self, payload: bytes) -> bytes:
        data = checked_payload(
            payload,
            self.max_payload_bytes,
            provider=_PROVIDER,
            platform="OpenFunction",
            why="functions-framework's MAX_CONTENT_LENGTH",
        )
        if self._closed:
            raise self._closed_error()
        return data

    def _call(self, data: bytes) -> bytes:
        """One invocation: POST, retrying only throttling answers, then map the answer."""
        url = self._function_url()
        attempt = 0
        while True:
            try:
                response = self._session.post(
                    url,
                    data=data,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=(_CONNECT_TIMEOUT, self.timeout + _READ_GRACE),
                )
            except requests.exceptions.Timeout as exc:
                if isinstance(exc, requests.exceptions.ConnectTimeout):
                    raise ServiceUnavailableError(
                        f"could not connect to the OpenFunction function at {url} within "
                        f"{_CONNECT_TIMEOUT:g} s",
                        provider=_PROVIDER,
                    ) from None
                raise InvocationTimeoutError(
                    f"no answer from {url} within {self.timeout + _READ_GRACE:g} s (the "
                    f"function's {self.timeout:g} s limit plus {_READ_GRACE:g} s); check that "
                    "timeout= matches the cluster's Knative revision-timeout-seconds",
                    provider=_PROVIDER,
                ) from None
            except requests.exceptions.ConnectionError as exc:
                raise ServiceUnavailableError(
                    f"cannot reach the OpenFunction function at {url}: {exc.__class__.__name__}; "
                    "check the URL (status.addresses) and that the gateway is reachable from here",
                    provider=_PROVIDER,
                ) from None
            if response.status_code == 200:
                return bytes(response.content)
            throttled = response.status_code == 429 or (
                response.status_code == 503 and "queue full" in response.text
            )
            if throttled and attempt < self.max_retries:
                delay = self._backoff(
                    attempt, retry_after_seconds(response.headers.get("Retry-After"))
                )
                logger.debug(
                    "OpenFunction function %s throttled (HTTP %d); retry %d/%d in %.2f s",
                    url,
                    response.status_code,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                self._sleep(delay)
                attempt += 1
                continue
            raise self._invoke_error(response, url, attempts=attempt + 1)

    def _invoke_error(self, response: requests.Response, url: str, attempts: int) -> Exception:
        status = response.status_code
        request_id = response.headers.get("X-Request-Id")
        text = excerpt(response.text)
        where = f"the OpenFunction function {self.namespace}/{self.function_name} ({url})"
        common: dict[str, Any] = {"provider": _PROVIDER, "status": status, "request_id": request_id}
        if status == 500 and response.headers.get(ERROR_HEADER):
            try:
                report = json.loads(response.content)
            except ValueError:
                report = None
            if isinstance(report, dict):
                return _shim.remote_error(report, "OpenFunction")
            return FunctionError(
                f"{where} raised, but its error report is not JSON: {text}",
                remote_type="faasml.errors.FunctionError",
                remote_traceback="",
                **common,
            )
        if status == 429 or (status == 503 and "queue full" in response.text):
            return ThrottledError(
                f"{where} is throttling requests (HTTP {status}: {text}); gave up after "
                f"{attempts} attempts: lower concurrency or raise the function's maxReplicas",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                **common,
            )
        if status == 504:
            return InvocationTimeoutError(
                f"{where} ran past its time limit: Knative answered 504 ({text}); the limit is "
                "the cluster's revision-timeout-seconds",
                **common,
            )
        if status == 502:
            return WorkerDiedError(
                f"{where} lost its container mid-request: Knative answered 502 ({text}); "
                "the process crashed, ran out of memory or was killed",
                **common,
            )
        if status == 503:
            return WorkerDiedError(
                f"{where} has no ready container: Knative answered 503 ({text}); it crashed "
                "and is restarting, or cannot start (see `kubectl get pods`)",
                **common,
            )
        if status == 404:
            if self._fixed_url is None:
                with self._lock:  # the address may have changed: read it again next time
                    self._url = None
            return NotFoundError(
                f"{where} does not exist (HTTP 404): {_DEPLOY_HINT}", code="NotFound", **common
            )
        if status == 413:
            return PayloadTooLargeError(
                f"{where} refused the request body as too large (HTTP 413); the limit is "
                f"{self.max_payload_bytes} bytes",
                **common,
            )
        if status == 401:
            return AuthenticationError(
                f"{where} requires authentication (HTTP 401): the gateway in front of it is "
                "protected; pass a session= that authenticates",
                **common,
            )
        if status == 403:
            return PermissionDeniedError(f"{where} refused the request (HTTP 403)", **common)
        if status >= 500:
            return ServiceUnavailableError(
                f"{where} failed outside the handler: HTTP {status} ({text})", **common
            )
        return ProviderError(f"{where} answered HTTP {status}: {text}", **common)

    def _settle(
        self, invocation: OpenFunctionInvocation, done: concurrent.futures.Future[bytes]
    ) -> None:
        if done.cancelled():
            invocation._finish(None, self._closed_error())
            return
        error = done.exception()
        if error is None:
            invocation._finish(done.result(), None)
        else:
            invocation._finish(None, error)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_max_delay)
        return backoff_delay(attempt, self.retry_base_delay, self.retry_max_delay)

    def _closed_error(self) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"the openfunction backend for {self.namespace}/{self.function_name} is closed",
            provider=_PROVIDER,
        )

    def _function_url(self) -> str:
        url = self._url
        if url is not None:
            return url
        function = self._get_function(self._api())
        if function is None:
            raise NotFoundError(
                f"there is no OpenFunction function {self.namespace}/{self.function_name}: "
                f"{_DEPLOY_HINT}",
                provider=_PROVIDER,
                code="NotFound",
                status=404,
            )
        url = _address(function)
        if url is None:
            state = (function.get("status") or {}).get("serving", {}).get("state") or "unknown"
            raise ServiceUnavailableError(
                f"the OpenFunction function {self.namespace}/{self.function_name} has no address "
                f"yet (serving state {state!r}); wait until `kubectl get function "
                f"{self.function_name} -n {self.namespace}` shows it Running, or pass url=",
                provider=_PROVIDER,
            )
        with self._lock:
            self._url = url
        return url

    # ---- Kubernetes API internals

    def _api(self) -> _KubeAPI:
        if self._kube is not None:
            return self._kube
        token = resolve_secret(self._token, "the openfunction token")
        if token == "" and isinstance(self._token, Mapping):
            # Empty would mean "no token" to one source and "fall back" to another: refuse it.
            var = self._token["$env"]
            raise ConfigurationError(
                f"the openfunction token is read from ${var}, which is set but empty; export "
                f"{var} with the token, or unset token= to use the service account or kubeconfig"
            )
        if self.api_server is not None:
            verify: bool | str = False if self.insecure else (self.ca_cert or True)
            api = _KubeAPI(self.api_server, token, verify, "api_server=")
        else:
            found = _in_cluster(token, self.ca_cert, self.insecure) or _from_kubeconfig(
                token, self.ca_cert, self.insecure, self._temp_files
            )
            if found is None:
                raise ConfigurationError(
                    "the openfunction backend cannot find the Kubernetes API: pass url= (the "
                    "function's address), or api_server= and token=, or run inside the cluster, "
                    "or point $KUBECONFIG at a kubeconfig with a token user"
                )
            api = found
        self._kube = api
        return api

    def _request(
        self, api: _KubeAPI, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> requests.Response:
        """Send one API request, retrying 429 answers; other statuses go back to the caller."""
        headers = {"Accept": "application/json"}
        if api.token:
            headers["Authorization"] = f"Bearer {api.token}"
        attempt = 0
        while True:
            try:
                response = self._session.request(
                    method,
                    api.server + path,
                    json=body,
                    headers=headers,
                    verify=api.verify,
                    timeout=(_CONNECT_TIMEOUT, _API_TIMEOUT),
                )
            except requests.exceptions.RequestException as exc:
                raise ServiceUnavailableError(
                    f"cannot reach the Kubernetes API at {api.server} (from {api.source}): "
                    f"{exc.__class__.__name__}",
                    provider=_PROVIDER,
                ) from None
            if response.status_code == 429 and attempt < self.max_retries:
                self._sleep(
                    self._backoff(attempt, retry_after_seconds(response.headers.get("Retry-After")))
                )
                attempt += 1
                continue
            return response

    def _api_error(self, response: requests.Response, action: str) -> ProviderError:
        """The faasml error for a Kubernetes ``Status`` answer to ``action``."""
        status = response.status_code
        try:
            document = response.json()
        except ValueError:
            document = {}
        if not isinstance(document, dict):
            document = {}
        reason = str(document.get("reason") or "")
        message = str(document.get("message") or excerpt(response.text))
        common: dict[str, Any] = {
            "provider": _PROVIDER,
            "status": status,
            "code": reason or None,
            "request_id": response.headers.get("Audit-Id"),
        }
        text = f"Kubernetes API refused to {action}: {message}"
        if status == 401:
            return AuthenticationError(
                f"{text} (401 Unauthorized): the token is missing, wrong or expired; pass "
                "token= or fix the kubeconfig user",
                **common,
            )
        if status == 403:
            return PermissionDeniedError(
                f"{text} (403 Forbidden): grant the account get/create/update on "
                f"functions.core.openfunction.io and secrets in namespace {self.namespace}",
                **common,
            )
        if status == 404:
            return NotFoundError(f"{text} (404)", **common)
        if status == 409:
            return AlreadyExistsError(f"{text} (409 {reason or 'Conflict'})", **common)
        if status == 422:
            return ProviderError(f"{text} (422 Invalid)", **common)
        if status == 429:
            return ThrottledError(
                f"{text} (429, after {self.max_retries + 1} attempts)",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                **common,
            )
        if status >= 500:
            return ServiceUnavailableError(f"{text} (HTTP {status})", **common)
        return ProviderError(f"{text} (HTTP {status})", **common)

    def _get_function(self, api: _KubeAPI) -> dict[str, Any] | None:
        path = _FUNCTIONS_PATH.format(ns=self.namespace) + f"/{self.function_name}"
        response = self._request(api, "GET", path)
        if response.status_code == 200:
            document = response.json()
            return document if isinstance(document, dict) else {}
        if response.status_code == 404:
            if _crd_missing(response):
                raise self._crd_error(response)
            return None
        raise self._api_error(response, f"read function {self.namespace}/{self.function_name}")

    def _crd_error(self, response: requests.Response) -> NotFoundError:
        return NotFoundError(
            f"the cluster at {self._api().server} does not serve {_GROUP_VERSION} functions: "
            "install OpenFunction (https://openfunction.dev/docs/getting-started/installation/)",
            provider=_PROVIDER,
            status=404,
            code="NotFound",
            request_id=response.headers.get("Audit-Id"),
        )

    def _apply_secret(self, api: _KubeAPI, secret_name: str, secret: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "faasml"},
            },
            "type": "Opaque",
            "stringData": {_SECRET_KEY: secret},
        }
        path = _SECRETS_PATH.format(ns=self.namespace)
        response = self._request(api, "POST", path, body)
        if response.status_code == 409:
            # Secrets allow an unconditional replace: no resourceVersion needed.
            logger.debug("secret %s/%s exists; replacing it", self.namespace, secret_name)
            response = self._request(api, "PUT", f"{path}/{secret_name}", body)
        if response.status_code not in (200, 201):
            raise self._api_error(response, f"write secret {self.namespace}/{secret_name}")

    def _function_body(self, env: Mapping[str, str], secret_name: str) -> dict[str, Any]:
        import faasml

        container_env: list[dict[str, Any]] = [
            {"name": key, "value": env[key]} for key in sorted(env)
        ]
        container_env.append(
            {
                "name": _SECRET_KEY,
                "valueFrom": {"secretKeyRef": {"name": secret_name, "key": _SECRET_KEY}},
            }
        )
        return {
            "apiVersion": _GROUP_VERSION,
            "kind": "Function",
            "metadata": {
                "name": self.function_name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "faasml"},
            },
            "spec": {
                "version": f"v{faasml.__version__}",
                "image": self.image,
                "serving": {
                    "triggers": {"http": {"port": _CONTAINER_PORT}},
                    "scaleOptions": {"minReplicas": 0, "maxReplicas": self.concurrency},
                    # One faasml task per container at a time: tasks are CPU-bound, so the
                    # autoscaler should add pods rather than pile requests onto one.
                    "annotations": {"autoscaling.knative.dev/target": "1"},
                    "template": {
                        "containers": [
                            {
                                "name": "function",
                                "imagePullPolicy": _pull_policy(self.image),
                                "env": container_env,
                            }
                        ]
                    },
                    # OpenFunction bounds how long the serving may take to become Running by
                    # this; the per-request limit is Knative's revision timeout (see timeout=).
                    "timeout": f"{math.ceil(self.timeout)}s",
                },
            },
        }

    def _apply_function(self, api: _KubeAPI, body: dict[str, Any]) -> bool:
        """Create the Function, or replace it when it exists; return whether it was created."""
        path = _FUNCTIONS_PATH.format(ns=self.namespace)
        what = f"write function {self.namespace}/{self.function_name}"
        response = self._request(api, "POST", path, body)
        if response.status_code == 201:
            return True
        if response.status_code == 404 and _crd_missing(response):
            raise self._crd_error(response)
        if response.status_code != 409:
            raise self._api_error(response, what)
        # It exists: replace it at its current resourceVersion. A 409 Conflict means someone
        # changed it in between, so read it again (a few times at most).
        for _ in range(_CONFLICT_ATTEMPTS):
            current = self._get_function(api)
            if current is None:  # deleted in between: create it after all
                response = self._request(api, "POST", path, body)
                if response.status_code == 201:
                    return True
                if response.status_code != 409:
                    raise self._api_error(response, what)
                continue
            replacement = json.loads(json.dumps(body))
            version = (current.get("metadata") or {}).get("resourceVersion")
            replacement["metadata"]["resourceVersion"] = version
            response = self._request(api, "PUT", f"{path}/{self.function_name}", replacement)
            if response.status_code == 200:
                return False
            if response.status_code != 409:
                raise self._api_error(response, what)
        error = self._api_error(response, what)
        raise AlreadyExistsError(
            f"gave up writing function {self.namespace}/{self.function_name} after "
            f"{_CONFLICT_ATTEMPTS} attempts: it kept changing between read and replace (409 "
            f"Conflict; someone else is updating it?); last answer: {error}",
            provider=_PROVIDER,
            status=error.status,
            code=error.code,
            request_id=error.request_id,
        )

    def _wait_running(self, api: _KubeAPI) -> str:
        deadline = time.monotonic() + self.deploy_wait
        state = "unknown"
        while True:
            function = self._get_function(api)
            if function is None:
                raise NotFoundError(
                    f"the OpenFunction function {self.namespace}/{self.function_name} vanished "
                    "while deploying (deleted by someone else?)",
                    provider=_PROVIDER,
                    status=404,
                )
            serving = (function.get("status") or {}).get("serving") or {}
            state = str(serving.get("state") or "unknown")
            url = _address(function)
            if state == "Running" and url is not None:
                return url
            if state in ("Failed", "Timeout"):
                detail = (
                    ": ".join(str(serving[k]) for k in ("reason", "message") if serving.get(k))
                    or "no reason given"
                )
                raise ProviderError(
                    f"the OpenFunction function {self.namespace}/{self.function_name} did not "
                    f"start (serving state {state}: {detail}); see `kubectl describe function "
                    f"{self.function_name} -n {self.namespace}`",
                    provider=_PROVIDER,
                    code=state,
                )
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"the OpenFunction function {self.namespace}/{self.function_name} was not "
                    f"Running with an address after {self.deploy_wait:g} s (serving state "
                    f"{state!r}); see `kubectl describe function {self.function_name} -n "
                    f"{self.namespace}`",
                    provider=_PROVIDER,
                    code="DeployTimeout",
                )
            self._sleep(self.deploy_poll_interval)


# --------------------------------------------------------------------------- helpers


@dataclass
class _Resources:
    """What the finalizer releases: the thread pool (made on first use) and temp CA files."""

    temp_files: list[str]
    pool: concurrent.futures.ThreadPoolExecutor | None = None


def _release(resources: _Resources, session: requests.Session | None) -> None:
    if resources.pool is not None:
        resources.pool.shutdown(wait=False, cancel_futures=True)
    if session is not None:
        session.close()
    for name in resources.temp_files:
        try:
            os.unlink(name)
        except OSError:
            pass  # already gone
    resources.temp_files.clear()


def _pull_policy(image: str | None) -> str:
    """``IfNotPresent`` for an image pinned by digest (its content cannot change), else
    ``Always``: a tag pushed again must reach nodes that cached its previous content."""
    return "IfNotPresent" if image and _DIGEST_PINNED.search(image) else "Always"


def _address(function: Mapping[str, Any]) -> str | None:
    """The function's URL from ``status.addresses``: External preferred, else Internal."""
    addresses = (function.get("status") or {}).get("addresses") or []
    by_type = {
        str(a.get("type")): str(a.get("value"))
        for a in addresses
        if isinstance(a, Mapping) and a.get("value")
    }
    return by_type.get("External") or by_type.get("Internal")


def _crd_missing(response: requests.Response) -> bool:
    """Whether a 404 means the resource *type* is unknown (CRD not installed), not the object.

    The API server answers an unknown path with a Status whose ``details`` names no object.
    """
    try:
        document = response.json()
    except ValueError:
        return True
    details = document.get("details") if isinstance(document, dict) else None
    return not (isinstance(details, dict) and details.get("name"))


_DOCKERFILE = """\
# faasml on OpenFunction: a functions-framework-python HTTP function.
# Build and push:  docker build -t <registry>/faasml-fn:<tag> .
#                  docker push <registry>/faasml-fn:<tag>
FROM python:{python}-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PORT={port} \\
    FUNCTION_SOURCE=/app/main.py \\
    FUNCTION_TARGET=handler \\
    FUNCTION_SIGNATURE_TYPE=http
COPY requirements.txt /app/requirements.txt
RUN pip install -r /app/requirements.txt
COPY faasml /app/faasml
COPY main.py /app/main.py
EXPOSE {port}
CMD ["functions-framework", "--source=/app/main.py", "--target=handler", \\
     "--signature-type=http", "--port={port}"]
"""

_MAIN_PY = '''\
"""Entry module functions-framework loads (FUNCTION_SOURCE): faasml's OpenFunction shim."""

from faasml.providers.openfunction.handler import handler

__all__ = ["handler"]
'''

"""An emulated OpenFunction cluster for the openfunction provider's tests, on ``responses``.

No Kubernetes can run here, so this module plays the two HTTP endpoints the backend talks to,
following their documented contracts:

* **The Kubernetes API subset** faasml uses (Secrets and ``core.openfunction.io/v1beta2``
  Functions): bearer-token check (401 with a ``Status`` body), create (201; 409
  ``AlreadyExists``), get (404 ``NotFound`` with ``details``), replace (``resourceVersion``
  optimistic locking: 409 ``Conflict`` on a stale one; custom resources refuse an update without
  one, 422), delete, ``Audit-Id`` headers, an unknown path answering the API server's bare 404,
  Secrets' ``stringData`` folded into base64 ``data``. After a write the Function reports
  ``status.serving.state`` ``Starting`` with no address for ``starting_polls`` reads, then
  ``Running`` with ``status.addresses`` (External ``http://<name>.<ns>.<domain>/``, Internal
  ``http://<name>.<ns>.svc.cluster.local/``), as OpenFunction's controller does once the Knative
  service is ready. An image that was never pushed makes the serving ``Failed`` (ErrImagePull).
* **The function URL** behind Knative. Each "pod" is a warm process of
  :class:`~faasml.testing.platform.HandlerHost` running :func:`pod`, which builds the same
  Flask app functions-framework-python builds for an HTTP function (``MAX_CONTENT_LENGTH`` 10
  MiB, every path routed to ``FUNCTION_TARGET`` loaded from ``FUNCTION_SOURCE``) and passes the
  request through it, so the real handler shim answers. The container's environment is the
  image's ``ENV`` lines (from the pushed build context's Dockerfile) plus the Function's
  ``env``, with ``valueFrom.secretKeyRef`` resolved from the stored Secret. The queue-proxy's
  answers are reproduced from knative/serving: a request past the revision timeout gets 504
  ``request timeout`` (``NewTimeToFirstByteTimeoutHandler``); a container that dies mid-request
  gets 502 with the proxy error text (``network.ErrorHandler``: ``http.StatusBadGateway``).
  The revision timeout is cluster configuration (``revision-timeout-seconds``), as on Knative:
  OpenFunction passes no per-request timeout to the revision. Pods are started (imports, app
  built: the readiness probe) before the Function reports ``Running``, so start-up does not
  count against that limit; a pod killed at the limit is replaced, as Kubernetes restarts it.

Injected answers (429 with ``Retry-After``, 503 ``pending request queue full``, any status)
are served before the real ones, for error-mapping tests.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import responses

from faasml.testing.platform import HandlerHost

FUNCTIONS_GROUP = "core.openfunction.io"
FUNCTIONS_VERSION = "v1beta2"
# functions-framework-python: ``MAX_CONTENT_LENGTH = 10 * 1024 * 1024`` on its Flask app.
MAX_CONTENT_LENGTH = 10 * 1024 * 1024

_SECRETS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/secrets(?:/(?P<name>[^/]+))?$")
_FUNCTIONS = re.compile(
    rf"^/apis/{re.escape(FUNCTIONS_GROUP)}/{FUNCTIONS_VERSION}/namespaces/(?P<ns>[^/]+)"
    r"/functions(?:/(?P<name>[^/]+))?$"
)

Answer = tuple[int, dict[str, str], bytes]
# Runs when a pod process starts (as ``sitecustomize``): functions-framework imports Flask and
# the function's source at container start, before the pod is ready.
_POD_STARTUP = """\
import flask
import werkzeug.test

import faasml.providers.openfunction.handler
import faasml.testing.handlers
"""
# Bodies larger than this travel to the pod process through a temporary file.
_HOST_ARGUMENT_LIMIT = 4 * 1024 * 1024


# --------------------------------------------------------------------------- the pod side


_apps: dict[str, Any] = {}


def _app() -> Any:
    """The pod's Flask app, built once per process as functions-framework does at start-up.

    Mirrors ``functions_framework.create_app`` for ``FUNCTION_SIGNATURE_TYPE=http``: the module
    at ``$FUNCTION_SOURCE`` is loaded, ``$FUNCTION_TARGET`` is the view for every path, the app
    has ``MAX_CONTENT_LENGTH`` set and reads the whole body after each request.
    """
    import flask

    source = os.environ["FUNCTION_SOURCE"]
    target = os.environ["FUNCTION_TARGET"]
    app = _apps.get(source)
    if app is None:
        spec = importlib.util.spec_from_file_location("main", source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        function = getattr(module, target)
        app = flask.Flask(target)
        app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH

        def view(path: str) -> Any:
            return function(flask.request._get_current_object())

        app.add_url_rule("/", "run", view, defaults={"path": ""}, methods=["GET", "POST", "PUT"])
        app.add_url_rule("/<path:path>", "run", view, methods=["GET", "POST", "PUT"])

        @app.after_request
        def read_request(response: Any) -> Any:
            flask.request.get_data()
            return response

        _apps[source] = app
    return app


def pod(kind: str, *args: Any) -> Any:
    """What one emulated pod does: ``pod("probe", hold)`` or ``pod("request", ...)``.

    A probe starts the app (the container becomes ready) and holds the pod ``hold`` seconds, so
    that concurrent probes reach every pod; a request runs through the app (:func:`serve`).
    """
    if kind == "probe":
        _app()
        time.sleep(args[0])
        return True
    if kind == "request-file":
        path = Path(args[0])
        body = path.read_bytes()
        path.unlink()
        return serve(body, *args[1:])
    return serve(*args)


def serve(body: bytes, headers: Mapping[str, str], method: str, path: str) -> Answer:
    """Run one HTTP request through the pod's functions-framework Flask app."""
    client = _app().test_client()
    response = client.open(path, method=method, data=body, headers=dict(headers))
    return response.status_code, dict(response.headers), response.get_data()


# --------------------------------------------------------------------------- the cluster side


def k8s_status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A Kubernetes ``Status`` failure object, as the API server sends with error codes."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        status["details"] = details
    return status


@dataclass
class _Image:
    """A pushed image: the build context and the environment its Dockerfile sets."""

    context: Path
    env: dict[str, str]


@dataclass
class _Deployed:
    """The running revision of one Function."""

    host: HandlerHost
    environment: dict[str, str]


@dataclass
class _Function:
    obj: dict[str, Any]
    reads_until_ready: int
    deployed: _Deployed | None = None
    invocations: int = 0


@dataclass
class OpenFunctionCluster:
    """The emulated cluster; call :meth:`start` (registers the routes) and :meth:`close`.

    :param mock: the active ``responses.RequestsMock``.
    :param api_server: URL of the emulated Kubernetes API.
    :param token: the bearer token the API accepts.
    :param domain: the gateway domain of External addresses.
    :param revision_timeout: Knative's ``revision-timeout-seconds`` (per-request limit).
    :param replicas: pods (warm processes) serving each function at once.
    :param starting_polls: Function reads that still show ``Starting`` after each write.
    """

    mock: responses.RequestsMock
    api_server: str = "https://k8s.emulated.test:6443"
    token: str = "emulated-cluster-token-5b1e"
    domain: str = "ofn.emulated.test"
    revision_timeout: float = 3.0
    replicas: int = 4
    starting_polls: int = 1
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    functions: dict[tuple[str, str], _Function] = field(default_factory=dict)
    images: dict[str, _Image] = field(default_factory=dict)
    #: every API request as ``(method, path)``.
    api_log: list[tuple[str, str]] = field(default_factory=list)
    _version: int = 100
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _api_injected: deque[tuple[str | None, str | None, Answer]] = field(default_factory=deque)
    _fn_injected: deque[Answer] = field(default_factory=deque)
    _routes: set[str] = field(default_factory=set)
    _startup: str | None = None

    # ---- set-up

    def start(self) -> OpenFunctionCluster:
        """Register the API routes with the mock."""
        pattern = re.compile(re.escape(self.api_server) + r"/.*")
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            self.mock.add_callback(method, pattern, callback=self._api)
        return self

    def push_image(self, image: str, context: Path) -> None:
        """Make ``image`` pullable: the build context ``docker build`` would have used.

        The image's environment comes from the Dockerfile's ``ENV`` lines; ``/app/`` (the
        image's ``WORKDIR``, where the context is copied) maps to the context directory.
        """
        dockerfile = (context / "Dockerfile").read_text()
        joined = re.sub(r"\\\n\s*", " ", dockerfile)
        env: dict[str, str] = {}
        for line in joined.splitlines():
            if line.startswith("ENV "):
                for key, value in re.findall(r"(\w+)=(\S+)", line[4:]):
                    env[key] = value.replace("/app/", f"{context}/")
        self.images[image] = _Image(context, env)

    def reset_injections(self) -> None:
        """Forget injected answers that were not served."""
        self._api_injected.clear()
        self._fn_injected.clear()

    def close(self) -> None:
        """Stop every pod."""
        with self._lock:
            for function in self.functions.values():
                if function.deployed is not None:
                    function.deployed.host.close()
                    function.deployed = None
            if self._startup is not None:
                shutil.rmtree(self._startup, ignore_errors=True)
                self._startup = None

    def _startup_dir(self) -> str:
        """A directory whose ``sitecustomize`` does what a container does when it starts."""
        if self._startup is None:
            self._startup = tempfile.mkdtemp(prefix="faasml-ofn-pod-")
            Path(self._startup, "sitecustomize.py").write_text(_POD_STARTUP)
        return self._startup

    # ---- fault injection

    def inject_api(
        self,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` API requests (of ``method``, whose path contains ``path``)
        with ``status``; ``body`` is a JSON document or bytes."""
        # The API server labels every answer with an Audit-Id.
        answer = _answer(status, body, {"Audit-Id": str(uuid.uuid4()), **(headers or {})})
        self._api_injected.extend([(method, path, answer)] * times)

    def inject_function(
        self,
        status: int,
        body: Any = b"",
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` function requests with ``status`` instead of the pod."""
        self._fn_injected.extend([_answer(status, body, headers)] * times)

    def throttle_function(self, times: int, retry_after: str | None = None) -> None:
        """The next ``times`` function requests get 429 (with ``Retry-After`` when given)."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self.inject_function(429, b"Too Many Requests", headers, times)

    # ---- introspection for assertions

    def function(self, name: str, namespace: str = "default") -> dict[str, Any]:
        """The stored Function object."""
        return copy.deepcopy(self.functions[(namespace, name)].obj)

    def secret_value(self, name: str, key: str, namespace: str = "default") -> str:
        """A decoded value of a stored Secret."""
        return base64.b64decode(self.secrets[(namespace, name)]["data"][key]).decode()

    def pod_environment(self, name: str, namespace: str = "default") -> dict[str, str]:
        """The environment the function's container runs with (secrets resolved)."""
        deployed = self.functions[(namespace, name)].deployed
        assert deployed is not None, "the function is not running"
        return dict(deployed.environment)

    def invocations(self, name: str, namespace: str = "default") -> int:
        """How many requests reached the function's pods."""
        return self.functions[(namespace, name)].invocations

    # ---- Kubernetes API

    def _api(self, request: Any) -> Answer:
        path = request.path_url.split("?", 1)[0]
        self.api_log.append((request.method, path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json(401, k8s_status(401, "Unauthorized", "Unauthorized"))
        for index, (method, part, answer) in enumerate(self._api_injected):
            if (method is None or method == request.method) and (part is None or part in path):
                del self._api_injected[index]
                return answer
        body = json.loads(request.body) if request.body else None
        with self._lock:
            if match := _SECRETS.match(path):
                return self._resource(request.method, match, body, "secrets", self.secrets)
            if match := _FUNCTIONS.match(path):
                return self._function_api(request.method, match, body)
        # What the API server answers for a resource type it does not serve.
        return _json(
            404, k8s_status(404, "NotFound", "the server could not find the requested resource")
        )

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _resource(
        self,
        method: str,
        match: re.Match[str],
        body: dict[str, Any] | None,
        kind: str,
        store: dict[tuple[str, str], dict[str, Any]],
    ) -> Answer:
        namespace, name = match["ns"], match["name"]
        if method == "POST" and name is None:
            assert body is not None
            name = body["metadata"]["name"]
            if (namespace, name) in store:
                return _json(409, _exists(kind, name))
            obj = self._stored(body, namespace)
            store[(namespace, name)] = obj
            return _json(201, obj)
        if name is None:
            return _json(405, k8s_status(405, "MethodNotAllowed", "method not allowed"))
        current = store.get((namespace, name))
        if current is None:
            return _json(404, _not_found(kind, name))
        if method == "GET":
            return _json(200, current)
        if method == "DELETE":
            del store[(namespace, name)]
            return _json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        if method == "PUT":
            assert body is not None
            wanted = body["metadata"].get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                return _json(409, _conflict(kind, name))
            obj = self._stored(body, namespace, previous=current)
            store[(namespace, name)] = obj
            return _json(200, obj)
        return _json(405, k8s_status(405, "MethodNotAllowed", "method not allowed"))

    def _stored(
        self, body: dict[str, Any], namespace: str, previous: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        meta["namespace"] = namespace
        meta["resourceVersion"] = self._next_version()
        meta["uid"] = previous["metadata"]["uid"] if previous else str(uuid.uuid4())
        meta["creationTimestamp"] = (
            previous["metadata"]["creationTimestamp"] if previous else "2026-01-01T00:00:00Z"
        )
        if obj.get("kind") == "Secret":
            # The API server folds write-only stringData into base64 data.
            data = dict(obj.get("data") or {})
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(value.encode()).decode()
            obj["data"] = data
        return obj

    def _function_api(
        self, method: str, match: re.Match[str], body: dict[str, Any] | None
    ) -> Answer:
        namespace, name = match["ns"], match["name"]
        key = (namespace, name or (body or {}).get("metadata", {}).get("name", ""))
        existing = self.functions.get(key)
        if method in ("POST", "PUT"):
            assert body is not None
            if body.get("apiVersion") != f"{FUNCTIONS_GROUP}/{FUNCTIONS_VERSION}" or (
                body.get("kind") != "Function"
            ):
                return _json(400, k8s_status(400, "BadRequest", "wrong apiVersion or kind"))
            if not (body.get("spec") or {}).get("image"):
                return _json(
                    422,
                    k8s_status(
                        422,
                        "Invalid",
                        f'Function.core.openfunction.io "{key[1]}" is invalid: '
                        "spec.image: Required value",
                    ),
                )
            if (
                method == "PUT"
                and existing is not None
                and not body["metadata"].get("resourceVersion")
            ):
                # Custom resources allow no unconditional update.
                return _json(
                    422,
                    k8s_status(
                        422,
                        "Invalid",
                        f'functions.core.openfunction.io "{key[1]}" is invalid: '
                        "metadata.resourceVersion: Invalid value: 0x0: must be specified for an "
                        "update",
                    ),
                )
        store = {k: f.obj for k, f in self.functions.items()}
        status, headers, raw = self._resource(method, match, body, "functions", store)
        if method in ("POST", "PUT") and status in (200, 201):
            obj = json.loads(raw)
            obj["status"] = {"serving": {"state": "Starting"}}
            if existing is not None and existing.deployed is not None:
                existing.deployed.host.close()  # the new revision replaces the old pods
            self.functions[key] = _Function(obj, self.starting_polls)
            return _json(status, obj)
        if method == "DELETE" and status == 200:
            gone = self.functions.pop(key)
            if gone.deployed is not None:
                gone.deployed.host.close()
        if method == "GET" and status == 200 and existing is not None:
            self._progress(key, existing)
            return _json(200, existing.obj)
        return status, headers, raw

    def _progress(self, key: tuple[str, str], function: _Function) -> None:
        """Advance a Starting function one read towards Running (the controller's work)."""
        serving = function.obj["status"]["serving"]
        if serving["state"] != "Starting":
            return
        if function.reads_until_ready > 0:
            function.reads_until_ready -= 1
            return
        spec = function.obj["spec"]
        image = self.images.get(spec["image"])
        if image is None:
            serving.update(
                state="Failed",
                reason="ErrImagePull",
                message=f'failed to pull image "{spec["image"]}": not found',
            )
            return
        environment = dict(image.env)
        # The container's start-up (imports) happens before Knative sends it traffic, so it
        # must not count against the per-request limit the pod processes enforce.
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (self._startup_dir(), os.environ.get("PYTHONPATH", "")) if p
        )
        namespace, name = key
        environment["POD_NAMESPACE"] = namespace
        for container in spec["serving"]["template"]["containers"]:
            if container["name"] != "function":
                continue
            for entry in container.get("env", []):
                if "value" in entry:
                    environment[entry["name"]] = entry["value"]
                    continue
                ref = entry["valueFrom"]["secretKeyRef"]
                secret = self.secrets.get((namespace, ref["name"]))
                if secret is None or ref["key"] not in secret.get("data", {}):
                    serving.update(
                        state="Failed",
                        reason="CreateContainerConfigError",
                        message=f'secret "{ref["name"]}" not found',
                    )
                    return
                environment[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        host = HandlerHost(
            f"{__name__}:pod",
            environment=environment,
            timeout=self.revision_timeout,
            concurrency=self.replicas,
        )
        # Knative routes traffic only to pods that passed their readiness probe, i.e. whose
        # functions-framework app has started: start every pod before reporting Running.
        with ThreadPoolExecutor(self.replicas) as probes:
            ready = list(probes.map(lambda _: host.call("probe", 0.3), range(self.replicas)))
        failed = [outcome for outcome in ready if not outcome.ok]
        if failed:
            host.close()
            serving.update(
                state="Failed", reason="RevisionFailed", message=f"readiness probe failed: {failed}"
            )
            return
        function.deployed = _Deployed(host, environment)
        external = f"http://{name}.{namespace}.{self.domain}/"
        function.obj["status"] = {
            "serving": {"state": "Running", "resourceRef": f"{name}-serving", "service": name},
            "addresses": [
                {"type": "External", "value": external},
                {"type": "Internal", "value": f"http://{name}.{namespace}.svc.cluster.local/"},
            ],
            "route": {"hosts": [f"{name}.{namespace}.{self.domain}"], "paths": []},
        }
        if external not in self._routes:
            self._routes.add(external)
            for method in ("GET", "POST", "PUT"):
                self.mock.add_callback(
                    method,
                    re.compile(re.escape(external) + ".*"),
                    callback=lambda request, key=key: self._invoke(key, request),
                )

    # ---- the function URL (gateway -> activator -> queue-proxy -> pod)

    def _invoke(self, key: tuple[str, str], request: Any) -> Answer:
        with self._lock:
            function = self.functions.get(key)
            deployed = function.deployed if function is not None else None
            if deployed is None:
                # The gateway has no route for the host any more.
                return 404, {"Content-Type": "text/plain"}, b""
            if self._fn_injected:
                return self._fn_injected.popleft()
            assert function is not None
            function.invocations += 1
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        # The proxies re-frame the body: its length reaches the pod from the body itself.
        skip = {"content-length", "transfer-encoding", "connection", "host"}
        headers = {k: str(v) for k, v in request.headers.items() if k.lower() not in skip}
        if len(body) > _HOST_ARGUMENT_LIMIT:
            # HandlerHost's pool refuses arguments over 6 MiB (the local provider's limit), but
            # functions-framework takes 10 MiB: big bodies reach the pod through a file.
            handle, spill = tempfile.mkstemp(prefix="faasml-ofn-body-")
            with os.fdopen(handle, "wb") as out:
                out.write(body)
            call = ("request-file", spill, headers, request.method, request.path_url)
        else:
            call = ("request", body, headers, request.method, request.path_url)
        outcome = deployed.host.call(*call)
        text = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
        if outcome.timed_out:
            return 504, {"Content-Type": "text/plain; charset=utf-8"}, b"request timeout"
        if outcome.crashed:
            return 502, text, b"EOF\n"
        if outcome.error is not None:  # the emulator's own failure: make it loud
            raise AssertionError(f"the emulated pod failed: {outcome.error}")
        status, headers_out, payload = outcome.value
        return int(status), headers_out, payload


def _answer(status: int, body: Any, headers: Mapping[str, str] | None) -> Answer:
    if isinstance(body, (dict, list)):
        return (
            status,
            {"Content-Type": "application/json", **(headers or {})},
            json.dumps(body).encode(),
        )
    data = body if isinstance(body, bytes) else str(body or "").encode()
    return status, dict(headers or {}), data


def _json(status: int, document: Mapping[str, Any]) -> Answer:
    return (
        status,
        {"Content-Type": "application/json", "Audit-Id": str(uuid.uuid4())},
        json.dumps(document).encode(),
    )


def _qualified(kind: str) -> str:
    return "secrets" if kind == "secrets" else f"functions.{FUNCTIONS_GROUP}"


def _details(kind: str, name: str) -> dict[str, str]:
    details = {"name": name, "kind": kind}
    if kind == "functions":
        details["group"] = FUNCTIONS_GROUP
    return details


def _exists(kind: str, name: str) -> dict[str, Any]:
    return k8s_status(
        409, "AlreadyExists", f'{_qualified(kind)} "{name}" already exists', **_details(kind, name)
    )


def _not_found(kind: str, name: str) -> dict[str, Any]:
    return k8s_status(
        404, "NotFound", f'{_qualified(kind)} "{name}" not found', **_details(kind, name)
    )


def _conflict(kind: str, name: str) -> dict[str, Any]:
    return k8s_status(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(kind)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        **_details(kind, name),
    )

"""Tests of the ``openfunction`` Function provider against the emulated cluster (emulator.py)."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

import faasml
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
from faasml.providers import openfunction as provider_module
from faasml.providers._package import runtime_requirements
from faasml.providers.openfunction import function as function_module
from faasml.providers.openfunction import handler as shim
from faasml.providers.openfunction.function import (
    OpenFunctionFunction,
    OpenFunctionInvocation,
    _address,
)
from faasml.testing.conformance.function import FunctionTests

from .emulator import OpenFunctionCluster, k8s_status

pytest.importorskip("flask")  # the emulated pods run functions-framework's Flask app

pytestmark = pytest.mark.timeout(120)

SECRET = "openfunction-signing-secret-3f9a"
IMAGE = "registry.emulated.test/faasml-fn:test"
DISPATCH = {"FAASML_HANDLER": "faasml.testing.handlers:dispatch"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's build context, written once by the backend itself."""
    directory = tmp_path_factory.mktemp("image")
    assert OpenFunctionFunction.write_build_context(directory) == directory
    return directory


@pytest.fixture
def cluster(build_context: Path) -> Iterator[OpenFunctionCluster]:
    """A fresh cluster with one pod per function, for deployment tests."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        emulated = OpenFunctionCluster(mock, revision_timeout=3.0, replicas=1).start()
        emulated.push_image(IMAGE, build_context)
        yield emulated
        emulated.close()


@pytest.fixture(scope="module")
def shared(build_context: Path) -> Iterator[OpenFunctionCluster]:
    """A cluster where the function ``shared`` is deployed once, for invocation tests.

    Do not combine with ``cluster`` in one test: each has its own mock.
    """
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        emulated = OpenFunctionCluster(mock, revision_timeout=1.5, replicas=2).start()
        emulated.push_image(IMAGE, build_context)
        make_backend(emulated, "shared").deploy(secret=SECRET, environment=DISPATCH)
        yield emulated
        emulated.close()


class Sleeps(list[float]):
    """Records the backend's sleeps instead of sleeping (keeps backoff tests fast)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def slept(backend: OpenFunctionFunction) -> list[float]:
    """The delays a backend made by :func:`make_backend` would have slept."""
    recorder = backend._sleep
    assert isinstance(recorder, Sleeps)
    return recorder


def make_backend(cluster: OpenFunctionCluster, name: str = "faasml", **options: Any) -> Any:
    options.setdefault("api_server", cluster.api_server)
    options.setdefault("token", cluster.token)
    options.setdefault("image", IMAGE)
    options.setdefault("timeout", cluster.revision_timeout)
    options.setdefault("concurrency", 4)
    backend = OpenFunctionFunction(name, **options)
    backend._sleep = Sleeps()
    return backend


@pytest.fixture
def deployed(shared: OpenFunctionCluster) -> Iterator[OpenFunctionFunction]:
    """A new backend for the already deployed function ``shared`` (its URL is discovered)."""
    shared.reset_injections()
    backend = make_backend(shared, "shared")
    yield backend
    backend.close()
    shared.reset_injections()


# --------------------------------------------------------------------------- conformance


class TestOpenFunctionConformance(FunctionTests):
    # Every capability fixture stays True: Knative reports timeouts (504) and lost containers
    # (502), and invoke_async tracks each request on a thread, so status is known.
    # One deployment serves the whole class, as a real function serves many requests: its pods
    # stay warm between tests.
    @pytest.fixture(scope="class")
    @classmethod
    def function(cls, build_context: Path) -> Iterator[OpenFunctionFunction]:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            cluster = OpenFunctionCluster(mock, revision_timeout=3.0, replicas=4).start()
            cluster.push_image(IMAGE, build_context)
            backend = make_backend(cluster, "conformance")
            backend.deploy(
                secret=SECRET,
                environment={**DISPATCH, **FunctionTests.ENVIRONMENT},
                dependencies=False,
            )
            yield backend
            backend.close()
            cluster.close()


# --------------------------------------------------------------------------- registration


def test_hook_registers_the_backend_lazily() -> None:
    (record,) = provider_module.faasml_function_backends()
    assert record.name == "openfunction"
    assert record.cls == "faasml.providers.openfunction.function:OpenFunctionFunction"
    assert record.extra == "openfunction"
    assert record.requires == ("requests",)
    assert (record.default_storage, record.default_pubsub) == ("redis", "redis")


def test_constructor_rejects_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="name must be a Kubernetes name"):
        OpenFunctionFunction("Not_A_Name")
    with pytest.raises(ConfigurationError, match="url must be"):
        OpenFunctionFunction(url="ftp://x")
    with pytest.raises(ConfigurationError, match="timeout"):
        OpenFunctionFunction(timeout=0)
    with pytest.raises(ConfigurationError, match="concurrency"):
        OpenFunctionFunction(concurrency=0)
    with pytest.raises(ConfigurationError, match="max_retries"):
        OpenFunctionFunction(max_retries=-1)


# --------------------------------------------------------------------------- deploy


def test_deploy_creates_then_updates_secret_and_function(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster, concurrency=6)
    first = backend.deploy(secret=SECRET, environment={**DISPATCH, "A": "1"})
    assert "created" in first and IMAGE in first and "faasml" in first
    created = cluster.function("faasml")
    spec = created["spec"]
    assert created["apiVersion"] == "core.openfunction.io/v1beta2"
    assert spec["image"] == IMAGE
    assert spec["version"] == f"v{faasml.__version__}"
    assert spec["serving"]["triggers"]["http"]["port"] == 8080
    assert spec["serving"]["scaleOptions"]["maxReplicas"] == 6
    assert spec["serving"]["timeout"] == "3s"
    (container,) = spec["serving"]["template"]["containers"]
    assert container["name"] == "function"
    # A tag can be pushed again with new content: nodes must pull it, not reuse their cache.
    assert container["imagePullPolicy"] == "Always"
    env = {e["name"]: e for e in container["env"]}
    assert env["FAASML_HANDLER"]["value"] == DISPATCH["FAASML_HANDLER"]
    assert env["FAASML_SECRET"] == {
        "name": "FAASML_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "faasml-faasml", "key": "FAASML_SECRET"}},
    }
    assert SECRET not in json.dumps(created)  # the Function only references the Secret
    assert cluster.secret_value("faasml-faasml", "FAASML_SECRET") == SECRET
    assert cluster.pod_environment("faasml")["FAASML_SECRET"] == SECRET
    assert backend.url == "http://faasml.default.ofn.emulated.test/"
    assert backend.invoke(b"env_value:A") == b"1"

    cluster.api_log.clear()
    second = backend.deploy(secret=SECRET + "-rotated", environment={**DISPATCH, "A": "2"})
    assert "updated" in second
    updated = cluster.function("faasml")
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert ("PUT", "/api/v1/namespaces/default/secrets/faasml-faasml") in cluster.api_log
    assert (
        "PUT",
        "/apis/core.openfunction.io/v1beta2/namespaces/default/functions/faasml",
    ) in cluster.api_log
    assert cluster.secret_value("faasml-faasml", "FAASML_SECRET") == SECRET + "-rotated"
    assert backend.invoke(b"env_value:A") == b"2"
    # Deploying the same thing again is harmless.
    assert "updated" in backend.deploy(secret=SECRET, environment={**DISPATCH, "A": "2"})
    assert backend.invoke(b"env_value:A") == b"2"
    backend.close()


def test_deploy_waits_for_running_and_polls_boundedly(cluster: OpenFunctionCluster) -> None:
    cluster.starting_polls = 3
    backend = make_backend(cluster)
    backend.deploy(secret=SECRET, environment=DISPATCH)
    assert slept(backend) == [backend.deploy_poll_interval] * 3
    backend.close()

    cluster.starting_polls = 10**6  # never becomes Running
    stuck = make_backend(cluster, "stuck")
    stuck.deploy_wait = 0.0  # type: ignore[misc]
    with pytest.raises(ProviderError, match="was not Running") as caught:
        stuck.deploy(secret=SECRET)
    assert caught.value.code == "DeployTimeout"


def test_deploy_secret_never_logged_or_shown(
    cluster: OpenFunctionCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = make_backend(cluster)
    backend.deploy(secret=SECRET, environment=DISPATCH)
    assert backend.invoke(b"echo:x") == b"x"
    assert SECRET not in caplog.text
    assert cluster.token not in caplog.text
    assert SECRET not in repr(backend) and cluster.token not in repr(backend)
    assert dict(backend.environment()) == {"FAASML_HANDLER": "***", "FAASML_SECRET": "***"}
    backend.close()


def test_deploy_without_image_explains_how_to_build(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster, image=None)
    with pytest.raises(ConfigurationError, match="write_build_context.*docker build"):
        backend.deploy(secret=SECRET)
    assert cluster.api_log == []  # refused before touching the cluster


def test_deploy_rejects_secret_in_environment(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster)
    with pytest.raises(ConfigurationError, match="FAASML_SECRET comes from deploy"):
        backend.deploy(secret=SECRET, environment={"FAASML_SECRET": "other"})
    with pytest.raises(ConfigurationError, match="not valid"):
        backend.deploy(secret=SECRET, environment={"1=bad": "x"})


def test_deploy_rereads_on_resource_version_conflict(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster)
    backend.deploy(secret=SECRET, environment=DISPATCH)
    # Someone else updates the Function between our read and our replace.
    cluster.inject_api(
        409,
        k8s_status(409, "Conflict", "the object has been modified", name="faasml"),
        method="PUT",
        path="/functions/faasml",
    )
    cluster.api_log.clear()
    assert "updated" in backend.deploy(secret=SECRET, environment={**DISPATCH, "B": "b"})
    puts = [p for m, p in cluster.api_log if m == "PUT" and p.endswith("/functions/faasml")]
    assert len(puts) == 2
    assert backend.invoke(b"env_value:B") == b"b"
    backend.close()


def test_deploy_of_an_image_pinned_by_digest_pulls_only_if_absent(
    cluster: OpenFunctionCluster, build_context: Path
) -> None:
    pinned = "registry.emulated.test/faasml-fn@sha256:" + "0123456789abcdef" * 4
    cluster.push_image(pinned, build_context)
    backend = make_backend(cluster, image=pinned)
    backend.deploy(secret=SECRET, environment=DISPATCH)
    (container,) = cluster.function("faasml")["spec"]["serving"]["template"]["containers"]
    assert container["imagePullPolicy"] == "IfNotPresent"  # a digest's content never changes
    assert backend.invoke(b"echo:pinned") == b"pinned"
    backend.close()
    tagged_and_pinned = "registry.emulated.test/faasml-fn:1@sha256:" + "ab" * 32
    assert function_module._pull_policy(tagged_and_pinned) == "IfNotPresent"
    assert function_module._pull_policy("registry.emulated.test/sha256:latest") == "Always"


def test_deploy_gives_up_on_a_function_that_keeps_changing(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster)
    backend.deploy(secret=SECRET, environment=DISPATCH)
    cluster.inject_api(
        409,
        k8s_status(409, "Conflict", "the object has been modified", name="faasml"),
        method="PUT",
        path="/functions/faasml",
        times=5,
    )
    cluster.api_log.clear()
    with pytest.raises(
        AlreadyExistsError, match="gave up writing function default/faasml after 5 attempts"
    ) as caught:
        backend.deploy(secret=SECRET, environment={**DISPATCH, "B": "b"})
    assert caught.value.status == 409 and caught.value.code == "Conflict"
    assert caught.value.provider == "openfunction" and caught.value.request_id
    puts = [p for m, p in cluster.api_log if m == "PUT" and p.endswith("/functions/faasml")]
    assert len(puts) == 5
    backend.close()


def test_api_already_exists_is_mapped(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster)
    exists = k8s_status(409, "AlreadyExists", 'secrets "faasml-faasml" already exists')
    cluster.inject_api(409, exists, method="POST", path="/secrets")
    cluster.inject_api(409, exists, method="PUT", path="/secrets/faasml-faasml")
    with pytest.raises(
        AlreadyExistsError, match='secrets "faasml-faasml" already exists'
    ) as caught:
        backend.deploy(secret=SECRET)
    assert caught.value.status == 409 and caught.value.code == "AlreadyExists"
    assert caught.value.provider == "openfunction" and caught.value.request_id


def test_deploy_of_an_unpullable_image_fails_with_the_reason(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster, image="registry.emulated.test/missing:1")
    with pytest.raises(ProviderError, match="ErrImagePull") as caught:
        backend.deploy(secret=SECRET)
    assert caught.value.code == "Failed"


def test_deploy_without_openfunction_installed(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster)
    cluster.inject_api(
        404,
        k8s_status(404, "NotFound", "the server could not find the requested resource"),
        method="POST",
        path="/functions",
    )
    with pytest.raises(NotFoundError, match="install OpenFunction"):
        backend.deploy(secret=SECRET)


def test_api_wrong_token_is_an_authentication_error(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster, token="not-the-token-0000")
    with pytest.raises(AuthenticationError, match="401") as caught:
        backend.deploy(secret=SECRET)
    assert "not-the-token-0000" not in str(caught.value)
    assert caught.value.status == 401 and caught.value.code == "Unauthorized"


def test_api_forbidden_is_a_permission_error(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster)
    forbidden = k8s_status(
        403,
        "Forbidden",
        'secrets is forbidden: User "system:serviceaccount:default:ci" cannot create resource '
        '"secrets" in API group "" in the namespace "default"',
    )
    cluster.inject_api(403, forbidden, method="POST", path="/secrets")
    with pytest.raises(PermissionDeniedError, match="cannot create resource") as caught:
        backend.deploy(secret=SECRET)
    assert caught.value.request_id  # the Audit-Id, for the cluster's audit log


def test_api_throttling_is_retried_then_reported(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster, max_retries=2)
    cluster.inject_api(429, k8s_status(429, "TooManyRequests", "slow down"), {"Retry-After": "1"})
    backend.deploy(secret=SECRET, environment=DISPATCH)
    assert slept(backend)[0] == 1.0  # Retry-After honoured
    cluster.inject_api(429, k8s_status(429, "TooManyRequests", "slow down"), times=3)
    with pytest.raises(ThrottledError, match="429"):
        backend.deploy(secret=SECRET, environment=DISPATCH)
    cluster.inject_api(500, k8s_status(500, "InternalError", "etcdserver: request timed out"))
    with pytest.raises(ServiceUnavailableError, match="etcdserver"):
        backend.deploy(secret=SECRET, environment=DISPATCH)
    backend.close()


def test_api_validation_error_is_reported(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster)
    cluster.inject_api(
        422,
        k8s_status(422, "Invalid", "spec.image: Required value"),
        method="POST",
        path="/functions",
    )
    with pytest.raises(ProviderError, match="422 Invalid") as caught:
        backend.deploy(secret=SECRET)
    assert caught.value.code == "Invalid"


# --------------------------------------------------------------------------- address discovery


def test_url_is_discovered_from_status_addresses(
    shared: OpenFunctionCluster, deployed: OpenFunctionFunction
) -> None:
    assert deployed.url is None
    assert deployed.invoke(b"echo:found") == b"found"
    assert deployed.url == "http://shared.default.ofn.emulated.test/"
    shared.api_log.clear()
    given = make_backend(shared, "shared", url=deployed.url, api_server=None, token=None)
    assert given.invoke(b"echo:given") == b"given"
    assert shared.api_log == []  # a given url needs no Kubernetes API
    given.close()


def test_missing_function_tells_to_deploy(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster, "never-deployed")
    with pytest.raises(NotFoundError, match=re.escape("faasml deploy --provider openfunction")):
        backend.invoke(b"echo:x")
    backend.close()


def test_address_prefers_external_then_internal() -> None:
    both = {
        "status": {
            "addresses": [
                {"type": "Internal", "value": "http://f.ns.svc.cluster.local/"},
                {"type": "External", "value": "http://f.ns.example.com/"},
            ]
        }
    }
    assert _address(both) == "http://f.ns.example.com/"
    internal = {"status": {"addresses": [both["status"]["addresses"][0]]}}
    assert _address(internal) == "http://f.ns.svc.cluster.local/"
    assert _address({"status": {}}) is None


def test_kubeconfig_current_context_with_token_user(
    shared: OpenFunctionCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
current-context: emulated
contexts:
- name: emulated
  context: {{cluster: emulated, user: deployer}}
clusters:
- name: emulated
  cluster:
    server: {shared.api_server}
    certificate-authority-data: {base64.b64encode(b"-----BEGIN CERTIFICATE-----").decode()}
users:
- name: deployer
  user: {{token: {shared.token}}}
"""
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    backend = make_backend(shared, "shared", api_server=None, token=None)
    assert backend.invoke(b"echo:kube") == b"kube"  # the address was read with the kubeconfig
    assert backend.url == "http://shared.default.ofn.emulated.test/"
    (ca_file,) = backend._temp_files
    assert Path(ca_file).read_bytes() == b"-----BEGIN CERTIFICATE-----"
    backend.close()
    assert not os.path.exists(ca_file)


def test_kubeconfig_without_token_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        """
current-context: c
contexts: [{name: c, context: {cluster: k, user: u}}]
clusters: [{name: k, cluster: {server: "https://k.test:6443"}}]
users: [{name: u, user: {exec: {command: aws}}}]
"""
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigurationError, match="pass token="):
        OpenFunctionFunction(image=IMAGE).deploy(secret=SECRET)


def test_no_cluster_configuration_names_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigurationError, match="url=.*api_server=.*token="):
        OpenFunctionFunction().invoke(b"x")


def test_token_from_environment_variable(
    shared: OpenFunctionCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMULATED_K8S_TOKEN", shared.token)
    backend = make_backend(shared, "shared", token={"$env": "EMULATED_K8S_TOKEN"})
    assert backend.invoke(b"echo:env-token") == b"env-token"  # the API accepted the token
    assert shared.token not in repr(backend)
    backend.close()
    unset = make_backend(shared, "shared", token={"$env": "EMULATED_K8S_TOKEN_UNSET"})
    with pytest.raises(ConfigurationError, match="EMULATED_K8S_TOKEN_UNSET"):
        unset.invoke(b"echo:x")


@pytest.mark.parametrize("source", ["api_server", "kubeconfig", "in-cluster"])
def test_token_from_an_empty_environment_variable_is_refused(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unreachable endpoints: without the check, each source would go on with no token (or the
    # service account's) and fail later with some other error, or not at all.
    monkeypatch.setenv("EMULATED_K8S_TOKEN_EMPTY", "")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    options: dict[str, Any] = {"token": {"$env": "EMULATED_K8S_TOKEN_EMPTY"}}
    if source == "api_server":
        options["api_server"] = "https://127.0.0.1:1"
    elif source == "kubeconfig":
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            """
current-context: c
contexts: [{name: c, context: {cluster: k, user: u}}]
clusters: [{name: k, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: kubeconfig-token}}]
"""
        )
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    else:
        account = tmp_path / "serviceaccount"
        account.mkdir()
        (account / "token").write_text("service-account-token")
        monkeypatch.setattr(function_module, "_SERVICE_ACCOUNT", account)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    backend = OpenFunctionFunction(**options)
    with pytest.raises(ConfigurationError, match=r"\$EMULATED_K8S_TOKEN_EMPTY.*set but empty"):
        backend.invoke(b"echo:x")
    backend.close()


# --------------------------------------------------------------------------- invoke errors


def test_throttling_is_retried_with_growing_backoff(
    shared: OpenFunctionCluster, deployed: OpenFunctionFunction
) -> None:
    before = shared.invocations("shared")
    shared.throttle_function(3)
    assert deployed.invoke(b"echo:eventually") == b"eventually"
    sleeps = slept(deployed)
    assert len(sleeps) == 3
    base = deployed.retry_base_delay
    for attempt, delay in enumerate(sleeps):  # equal jitter: [half, full] of base * 2**n
        assert base * 2**attempt / 2 <= delay <= base * 2**attempt
    assert shared.invocations("shared") == before + 1  # throttled requests never reached a pod


def test_throttling_honours_retry_after(
    shared: OpenFunctionCluster, deployed: OpenFunctionFunction
) -> None:
    shared.throttle_function(1, retry_after="1.5")
    assert deployed.invoke(b"echo:ok") == b"ok"
    assert slept(deployed) == [1.5]


def test_throttling_exhausted_raises_throttled(
    shared: OpenFunctionCluster, deployed: OpenFunctionFunction
) -> None:
    before = shared.invocations("shared")
    shared.throttle_function(deployed.max_retries + 1, retry_after="2")
    with pytest.raises(ThrottledError, match="gave up after 5 attempts") as caught:
        deployed.invoke(b"echo:x")
    assert caught.value.retry_after == 2.0
    assert caught.value.status == 429
    assert shared.invocations("shared") == before
    assert deployed.invoke(b"echo:after") == b"after"


def test_knative_queue_full_counts_as_throttling(
    shared: OpenFunctionCluster, deployed: OpenFunctionFunction
) -> None:
    shared.inject_function(503, b"pending request queue full\n", times=2)
    assert deployed.invoke(b"echo:queued") == b"queued"
    assert len(slept(deployed)) == 2


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "match"),
    [
        (504, b"activator request timeout", {}, InvocationTimeoutError, "time limit"),
        (502, b"dial tcp 127.0.0.1:8080: connect: connection refused", {}, WorkerDiedError, "502"),
        (503, b"no healthy upstream", {}, WorkerDiedError, "no ready container"),
        (
            500,
            b"<h1>Internal Server Error</h1>",
            {},
            ServiceUnavailableError,
            "outside the handler",
        ),
        (404, b"", {}, NotFoundError, "faasml deploy --provider openfunction"),
        (413, b"Request Entity Too Large", {}, PayloadTooLargeError, str(10 * 1024 * 1024)),
        (401, b"", {}, AuthenticationError, "401"),
        (403, b"", {}, PermissionDeniedError, "403"),
        (500, b"not json", {"X-Faasml-Error": "1"}, FunctionError, "not JSON"),
    ],
)
def test_platform_answers_map_to_faasml_errors(
    shared: OpenFunctionCluster,
    deployed: OpenFunctionFunction,
    status: int,
    body: bytes,
    headers: dict[str, str],
    error: type[Exception],
    match: str,
) -> None:
    request_id = f"request-{status}-{error.__name__}"
    shared.inject_function(status, body, {**headers, "X-Request-Id": request_id})
    with pytest.raises(error, match=re.escape(match)) as caught:
        deployed.invoke(b"echo:x")
    assert slept(deployed) == []  # only throttling is retried by the backend
    # Every mapped error carries where it came from, for logs and support tickets.
    assert getattr(caught.value, "provider", None) == "openfunction"
    assert getattr(caught.value, "status", None) == status
    assert getattr(caught.value, "request_id", None) == request_id


def test_body_over_the_app_limit_never_reaches_the_handler(
    shared: OpenFunctionCluster, deployed: OpenFunctionFunction
) -> None:
    # Lift the client-side check to see what the platform itself does with such a body:
    # Flask raises 413 when the body is read, then functions-framework's after_request hook
    # reads it again and Flask turns that into a plain 500. That is why invoke() refuses
    # payloads over max_payload_bytes before sending them.
    deployed.max_payload_bytes = 11 * 1024 * 1024  # type: ignore[misc]
    with pytest.raises(ServiceUnavailableError, match="HTTP 500") as caught:
        deployed.invoke(b"echo:" + bytes(10 * 1024 * 1024))
    assert not isinstance(caught.value, FunctionError)
    assert caught.value.status == 500
    # The shim's documentation says what happens: a bare 500, not a 413.
    doc = " ".join((shim.handler.__doc__ or "").split())
    assert "bare 500" in doc and "413 when too large" not in doc


def test_unreachable_endpoint_is_service_unavailable(cluster: OpenFunctionCluster) -> None:
    backend = make_backend(cluster, url="http://unreachable.emulated.test/")
    with pytest.raises(ServiceUnavailableError, match="cannot reach"):
        backend.invoke(b"echo:x")
    backend.close()


def test_handler_error_carries_remote_details(deployed: OpenFunctionFunction) -> None:
    with pytest.raises(FunctionError) as caught:
        deployed.invoke(b"env_value:FAASML_NOT_SET_ANYWHERE")
    assert caught.value.remote_type == "KeyError"
    assert "env_value" in (caught.value.remote_traceback or "")


# --------------------------------------------------------------------------- async


def test_async_invocation_reports_result_and_mapped_errors(
    shared: OpenFunctionCluster, deployed: OpenFunctionFunction
) -> None:
    ok = deployed.invoke_async(b"echo:async")
    assert isinstance(ok, OpenFunctionInvocation)
    assert ok.wait(30)
    assert ok.poll() == "succeeded" and ok.result == b"async"
    shared.throttle_function(deployed.max_retries + 1)
    throttled = deployed.invoke_async(b"echo:x")
    assert throttled.wait(30)
    assert throttled.poll() == "failed"
    assert isinstance(throttled.error, ThrottledError)
    timed_out = deployed.invoke_async(b"sleep_then_echo:20")
    assert timed_out.poll() == "running"
    assert timed_out.wait(30)
    assert isinstance(timed_out.error, InvocationTimeoutError)


def test_closed_backend_refuses_work(deployed: OpenFunctionFunction) -> None:
    deployed.close()
    deployed.close()  # idempotent
    assert deployed.closed
    with pytest.raises(ServiceUnavailableError, match="closed"):
        deployed.invoke(b"echo:x")
    with pytest.raises(ServiceUnavailableError, match="closed"):
        deployed.invoke_async(b"echo:x")


# --------------------------------------------------------------------------- shim and image


class _FakeRequest:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def get_data(self) -> bytes:
        return self._data


def test_shim_answers_200_with_the_result_and_500_with_a_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAASML_HANDLER", "faasml.testing.handlers:dispatch")
    body, status, headers = shim.handler(_FakeRequest(b"echo:\x00\xff"))
    assert (body, status) == (b"\x00\xff", 200)
    assert headers["Content-Type"] == "application/octet-stream"
    body, status, headers = shim.handler(_FakeRequest(b"raise_value_error:bad"))
    assert status == 500 and headers[shim.ERROR_HEADER] == "1"
    report = json.loads(body)
    assert report["type"] == "ValueError" and report["message"] == "bad"


def test_build_context_is_consistent(build_context: Path) -> None:
    dockerfile = (build_context / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    assert "FUNCTION_TARGET=handler" in joined
    assert "FUNCTION_SIGNATURE_TYPE=http" in joined
    assert "FUNCTION_SOURCE=/app/main.py" in joined
    assert '"--target=handler"' in joined and '"--port=8080"' in joined
    # Every COPY source exists in the context.
    for source in re.findall(r"^COPY (\S+) ", dockerfile, flags=re.M):
        assert (build_context / source).exists(), source
    requirements = (build_context / "requirements.txt").read_text().split()
    assert any(r.startswith("functions-framework") for r in requirements)
    for requirement in runtime_requirements("openfunction"):
        assert requirement in requirements
    # main.py, as functions-framework loads it, exposes the shim under FUNCTION_TARGET.
    spec = importlib.util.spec_from_file_location("main", build_context / "main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.handler is shim.handler
    copied = build_context / "faasml" / "providers" / "openfunction" / "handler.py"
    assert copied.read_text() == Path(shim.__file__).read_text()
    assert not list(build_context.rglob("*.pyc"))


def test_build_context_installs_the_default_backends_clients(
    build_context: Path, tmp_path: Path
) -> None:
    # connect("openfunction") uses the redis store and pubsub unless told otherwise, and the
    # function imports them inside the image: their client library must be installed there.
    (record,) = provider_module.faasml_function_backends()
    assert (record.default_storage, record.default_pubsub) == ("redis", "redis")
    requirements = (build_context / "requirements.txt").read_text().split()
    for requirement in runtime_requirements("redis"):
        assert requirement in requirements
    assert any(re.match(r"redis\b", r) for r in requirements)
    assert len(requirements) == len(set(requirements))
    assert "FROM python:3.11-slim" in (build_context / "Dockerfile").read_text()

    other = OpenFunctionFunction.write_build_context(tmp_path / "py312", python_version="3.12")
    assert "FROM python:3.12-slim" in (other / "Dockerfile").read_text()
    with pytest.raises(ValueError, match="python_version"):
        OpenFunctionFunction.write_build_context(tmp_path / "bad", python_version="3.12-alpine")


# --------------------------------------------------------------------------- end to end


def test_end_to_end_map_runs_through_the_shim(cluster: OpenFunctionCluster, tmp_path: Path) -> None:
    backend = make_backend(cluster, "e2e")
    backend.deploy(secret=SECRET)  # default handler: faasml.runtime:handle
    assert "FAASML_HANDLER" not in cluster.pod_environment("e2e")
    with faasml.connect(
        backend,
        storage="file",
        pubsub="local",
        storage_options={"root": str(tmp_path / "store")},
        pubsub_options={"path": str(tmp_path / "q")},
        secret=SECRET,
        retries=0,
        progress=False,
    ) as cloud:
        assert list(cloud.map(pow, [2, 3], [5, 2])) == [32, 9]
    assert cluster.invocations("e2e") >= 2

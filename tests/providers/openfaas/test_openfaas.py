"""OpenFaaSFunction against the emulated gateway (see ``emulator.py`` for what it is based on)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import faasml
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
from faasml.providers.openfaas import handler as shim
from faasml.providers.openfaas.function import NATS_MAX_PAYLOAD, OpenFaaSFunction
from faasml.testing.conformance.function import FunctionTests

from .emulator import DEFAULT_NAMESPACE, GatewayEmulator, iter_log, parse_duration

SECRET = "signing-secret-0b9e4c"
IMAGE = "registry.test/faasml:1"
DISPATCH_ENV = {"FAASML_HANDLER": "faasml.testing.handlers:dispatch", **FunctionTests.ENVIRONMENT}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayEmulator]:
    with GatewayEmulator(tmp_path / "gateway") as emulator:
        yield emulator


def make_backend(gateway: GatewayEmulator, **options: object) -> OpenFaaSFunction:
    settings: dict[str, object] = {
        "password": gateway.password,
        "image": IMAGE,
        "timeout": 3.0,
        "concurrency": 8,
    }
    settings.update(options)
    return OpenFaaSFunction(gateway.url, **settings)  # type: ignore[arg-type]


@pytest.fixture
def backend(gateway: GatewayEmulator) -> Iterator[OpenFaaSFunction]:
    function = make_backend(gateway)
    function.deploy(secret=SECRET, environment=DISPATCH_ENV, dependencies=False)
    yield function
    function.close()


# --------------------------------------------------------------------------- conformance


class TestOpenFaaSConformance(FunctionTests):
    @pytest.fixture(scope="class")
    @classmethod
    def shared_gateway(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEmulator]:
        # One gateway for the class: its warm replicas survive between tests, as on a real
        # cluster, instead of starting worker processes for every test.
        with GatewayEmulator(tmp_path_factory.mktemp("gateway"), replicas=4) as emulator:
            yield emulator

    @pytest.fixture
    def function(self, shared_gateway: GatewayEmulator) -> Iterator[OpenFaaSFunction]:
        backend = make_backend(shared_gateway, timeout=2.0, concurrency=4)
        backend.deploy(secret=SECRET, environment=DISPATCH_ENV, dependencies=False)
        yield backend
        backend.close()

    @pytest.fixture
    def supports_invocation_status(self) -> bool:
        # The queue-worker reports an asynchronous result only by POSTing it to an
        # X-Callback-Url; the driver runs no server to receive it, so status stays "unknown".
        return False


# --------------------------------------------------------------------------- invocation


def test_invoke_sends_raw_bytes_and_reads_the_mounted_secret(
    gateway: GatewayEmulator, backend: OpenFaaSFunction
) -> None:
    payload = bytes(range(256))
    assert backend.invoke(b"echo:" + payload) == payload
    # The secret reached the handler through the mounted file, not an envVar.
    assert backend.invoke(b"env_value:FAASML_SECRET") == SECRET.encode()
    deployed = gateway.functions[f"faasml.{DEFAULT_NAMESPACE}"]
    assert "FAASML_SECRET" not in deployed["envVars"]
    assert SECRET not in str(deployed)


def test_throttled_then_success_is_retried(
    gateway: GatewayEmulator, backend: OpenFaaSFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("faasml.providers.openfaas.function._sleep", sleeps.append)
    gateway.throttle(2, prefix="/function/")
    assert backend.invoke(b"echo:ok") == b"ok"
    assert len(sleeps) == 2
    assert 0 < sleeps[0] <= OpenFaaSFunction.retry_base_delay
    assert sleeps[1] <= 2 * OpenFaaSFunction.retry_base_delay
    statuses = [status for _m, _p, status in iter_log(gateway, "/function/")]
    assert statuses == [429, 429, 200]


def test_retry_after_is_honoured(
    gateway: GatewayEmulator, backend: OpenFaaSFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("faasml.providers.openfaas.function._sleep", sleeps.append)
    gateway.throttle(1, retry_after="3", prefix="/function/")
    assert backend.invoke(b"echo:ok") == b"ok"
    assert sleeps == [3.0]


def test_throttling_exhausted_raises_throttled(
    gateway: GatewayEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("faasml.providers.openfaas.function._sleep", lambda s: None)
    backend = make_backend(gateway, max_retries=2)
    backend.deploy(secret=SECRET, environment=DISPATCH_ENV)
    gateway.throttle(10, retry_after="7", prefix="/function/")
    with pytest.raises(ThrottledError) as caught:
        backend.invoke(b"echo:x")
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429
    assert len(list(iter_log(gateway, "/function/"))) == 3  # first try + 2 retries


def test_missing_function_says_to_deploy(gateway: GatewayEmulator) -> None:
    backend = make_backend(gateway, function_name="never-deployed")
    with pytest.raises(NotFoundError) as caught:
        backend.invoke(b"echo:x")
    assert "faasml deploy --provider openfaas" in str(caught.value)
    assert caught.value.status == 404
    with pytest.raises(NotFoundError):
        backend.invoke_async(b"echo:x")


def test_handler_error_keeps_remote_type_and_traceback(backend: OpenFaaSFunction) -> None:
    with pytest.raises(FunctionError) as caught:
        backend.invoke(b"raise_value_error:bad input")
    assert caught.value.remote_type == "ValueError"
    assert "bad input" in str(caught.value)
    assert "raise_value_error" in (caught.value.remote_traceback or "")


@pytest.mark.parametrize(
    ("status", "body", "headers", "error"),
    [
        (500, b"", {}, WorkerDiedError),  # of-watchdog lost the process mid-request
        (
            500,
            b"Can't reach service for: faasml.",
            {"X-OpenFaaS-Internal": "proxy"},
            WorkerDiedError,
        ),
        (502, b"Bad Gateway", {}, WorkerDiedError),
        (503, b"No endpoints available for: faasml.", {}, ServiceUnavailableError),
        (504, b"", {}, InvocationTimeoutError),
        (401, b"Unauthorized", {}, AuthenticationError),
        (403, b"Forbidden", {}, PermissionDeniedError),
        (413, b"Request Entity Too Large", {}, PayloadTooLargeError),
        (400, b"Bad Request", {}, ProviderError),
    ],
)
def test_gateway_answers_map_to_typed_errors(
    gateway: GatewayEmulator,
    backend: OpenFaaSFunction,
    status: int,
    body: bytes,
    headers: dict[str, str],
    error: type[Exception],
) -> None:
    gateway.fail_next(
        1,
        status=status,
        body=body,
        headers={"Content-Type": "text/plain", "X-Call-Id": "call-77", **headers},
        prefix="/function/",
    )
    with pytest.raises(error) as caught:
        backend.invoke(b"echo:x")
    assert type(caught.value) is error
    assert getattr(caught.value, "status", None) == status
    assert getattr(caught.value, "request_id", None) == "call-77"
    assert backend.invoke(b"echo:after") == b"after"


def test_gateway_500_after_the_time_limit_is_a_timeout(
    gateway: GatewayEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway answers "Can't reach service" when its upstream_timeout cuts the call off;
    # only the elapsed time tells it from a crash.
    backend = make_backend(gateway, timeout=0.2)
    backend.deploy(secret=SECRET, environment=DISPATCH_ENV)
    clock = iter([100.0, 100.5])
    monkeypatch.setattr("faasml.providers.openfaas.function._monotonic", lambda: next(clock))
    gateway.fail_next(1, status=500, body=b"Can't reach service for: faasml.", prefix="/function/")
    with pytest.raises(InvocationTimeoutError):
        backend.invoke(b"echo:x")


def test_real_timeout_and_crash_through_the_watchdog(gateway: GatewayEmulator) -> None:
    backend = make_backend(gateway, timeout=1.0)
    backend.deploy(secret=SECRET, environment=DISPATCH_ENV)
    started = time.monotonic()
    with pytest.raises(InvocationTimeoutError) as caught:
        backend.invoke(b"sleep_then_echo:10")
    assert caught.value.status == 504
    assert 0.9 <= time.monotonic() - started < 4.0
    with pytest.raises(WorkerDiedError):
        backend.invoke(b"exit_process:")
    assert backend.invoke(b"echo:back") == b"back"


def test_unreachable_gateway_is_service_unavailable() -> None:
    backend = OpenFaaSFunction("http://127.0.0.1:9", password="x", timeout=1.0)
    with pytest.raises(ServiceUnavailableError) as caught:
        backend.invoke(b"echo:x")
    assert "http://127.0.0.1:9" in str(caught.value)


def test_payload_limit_is_checked_before_sending(
    gateway: GatewayEmulator, backend: OpenFaaSFunction
) -> None:
    limit = OpenFaaSFunction.max_payload_bytes
    # At the limit, the queued JSON (base64 body) still fits NATS's max_payload.
    assert 4 * ((limit + 2) // 3) + 16 * 1024 <= NATS_MAX_PAYLOAD
    before = len(gateway.log)
    with pytest.raises(PayloadTooLargeError) as caught:
        backend.invoke_async(b"x" * (limit + 1))
    assert str(limit) in str(caught.value)
    assert len(gateway.log) == before, "nothing may be sent"
    invocation = backend.invoke_async(b"echo:" + b"y" * (limit - 5))
    assert gateway.wait_async(invocation.id).status == 200


# --------------------------------------------------------------------------- async


def test_invoke_async_queues_and_returns_the_call_id(
    gateway: GatewayEmulator, backend: OpenFaaSFunction
) -> None:
    started = time.monotonic()
    invocation = backend.invoke_async(b"sleep_then_echo:0.3")
    assert time.monotonic() - started < 0.25
    assert invocation.id in gateway.async_calls
    assert invocation.poll() == "unknown"  # OpenFaaS reports only to a callback URL
    call = gateway.wait_async(invocation.id)
    assert (call.status, call.body) == (200, b"0.3")
    assert invocation.poll() == "unknown"


def test_invoke_async_errors(
    gateway: GatewayEmulator, backend: OpenFaaSFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("faasml.providers.openfaas.function._sleep", lambda s: None)
    gateway.throttle(1, prefix="/async-function/")
    assert backend.invoke_async(b"echo:x").id  # retried after the 429
    gateway.fail_next(1, status=500, body=b"nats: maximum payload exceeded")
    with pytest.raises(PayloadTooLargeError):
        backend.invoke_async(b"echo:x")
    gateway.fail_next(1, status=500, body=b"nats: connection closed")
    with pytest.raises(ServiceUnavailableError):
        backend.invoke_async(b"echo:x")
    gateway.fail_next(1, status=200, body=b"")
    with pytest.raises(ProviderError):
        backend.invoke_async(b"echo:x")


# --------------------------------------------------------------------------- deploy


def test_deploy_creates_then_updates(
    gateway: GatewayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend(gateway, namespace="team-a", timeout=5.0)
    with caplog.at_level(logging.DEBUG):
        first = backend.deploy(secret=SECRET, environment={"FAASML_HANDLER": "m:f", "A": "1"})
        second = backend.deploy(secret=SECRET + "-new", environment={"FAASML_HANDLER": "m:f"})
    assert first.startswith("created OpenFaaS function faasml.team-a")
    assert second.startswith("updated OpenFaaS function faasml.team-a")
    assert IMAGE in first
    system = [(m, p, s) for m, p, s in gateway.log]
    assert system == [
        ("POST", "/system/secrets", 201),
        ("PUT", "/system/functions", 404),
        ("POST", "/system/functions", 202),
        ("POST", "/system/secrets", 409),
        ("PUT", "/system/secrets", 200),
        ("PUT", "/system/functions", 200),
    ]
    assert gateway.secrets[("team-a", shim.SECRET_NAME)] == SECRET + "-new"
    deployed = gateway.functions["faasml.team-a"]
    assert deployed["image"] == IMAGE
    assert deployed["namespace"] == "team-a"
    assert deployed["secrets"] == [shim.SECRET_NAME]
    assert deployed["envVars"] == {
        "FAASML_HANDLER": "m:f",
        "exec_timeout": "5s",
        "read_timeout": "7s",
        "write_timeout": "7s",
    }
    assert deployed["labels"] and deployed["annotations"]
    for _method, _path, body in gateway.system_bodies:
        if body.get("service"):
            assert SECRET not in str(body)
    assert SECRET not in caplog.text
    assert SECRET not in first + second
    assert backend.environment() == {"FAASML_HANDLER": "***"}


def test_new_secret_alone_reaches_the_warm_replicas(
    gateway: GatewayEmulator, backend: OpenFaaSFunction
) -> None:
    key = f"faasml.{DEFAULT_NAMESPACE}"

    def ask_all(payload: bytes) -> list[bytes]:
        # More concurrent calls than replicas, each long enough that every replica serves one.
        with ThreadPoolExecutor(2 * gateway.replicas) as pool:
            return list(pool.map(backend.invoke, [payload] * (2 * gateway.replicas)))

    assert ask_all(b"sleep_then_echo:0.3") == [b"0.3"] * (2 * gateway.replicas)
    assert backend.invoke(b"env_value:FAASML_SECRET") == SECRET.encode()
    host = gateway._hosts[key]
    answer = backend.deploy(secret="rotated-secret-77", environment=DISPATCH_ENV)
    assert answer.startswith("updated")
    # The function spec did not change, so the replicas were not replaced ...
    assert gateway._hosts[key] is host
    # ... yet they answer with the new secret, read from the updated file (each of them read
    # the old one above, so any answer from a replica that kept it would show here).
    seen = set(ask_all(b"env_value:FAASML_SECRET"))
    assert seen == {b"rotated-secret-77"}


def test_deploy_after_a_concurrent_create_applies_our_spec(gateway: GatewayEmulator) -> None:
    # Another driver creates the function between our PUT (404) and our POST (409).
    make_backend(gateway).deploy(secret=SECRET, environment={"FAASML_HANDLER": "theirs:f"})
    gateway.log.clear()
    gateway.fail_next(1, status=404, body=b"function not found", prefix="/system/functions")
    answer = make_backend(gateway, timeout=4.0).deploy(
        secret=SECRET, environment={"FAASML_HANDLER": "ours:f"}
    )
    assert list(iter_log(gateway, "/system/functions")) == [
        ("PUT", "/system/functions", 404),
        ("POST", "/system/functions", 409),
        ("PUT", "/system/functions", 200),
    ]
    assert answer.startswith("updated OpenFaaS function faasml ")
    deployed = gateway.functions[f"faasml.{DEFAULT_NAMESPACE}"]
    assert deployed["envVars"]["FAASML_HANDLER"] == "ours:f"
    assert deployed["envVars"]["exec_timeout"] == "4s"


def test_system_404s_name_what_is_missing(gateway: GatewayEmulator) -> None:
    backend = make_backend(gateway)
    # The secret exists (409) but is gone by the PUT: not a missing *function*.
    gateway.fail_next(1, status=409, body=b"secret exists", prefix="/system/secrets")
    gateway.fail_next(1, status=404, body=b"secret not found", prefix="/system/secrets")
    with pytest.raises(NotFoundError) as caught:
        backend.deploy(secret=SECRET)
    message = str(caught.value)
    assert "PUT /system/secrets for the OpenFaaS secret 'faasml-secret'" in message
    assert "deleted" in message
    assert "has no function" not in message and "faasml deploy --provider" not in message
    assert SECRET not in message
    # The function vanishes between the 409 and the retried PUT.
    gateway.fail_next(1, status=404, body=b"not found", prefix="/system/functions")
    gateway.fail_next(1, status=409, body=b"exists", prefix="/system/functions")
    gateway.fail_next(1, status=404, body=b"not found", prefix="/system/functions")
    with pytest.raises(NotFoundError) as caught:
        backend.deploy(secret=SECRET)
    assert "PUT /system/functions for function faasml" in str(caught.value)
    assert "deleted" in str(caught.value)


@pytest.mark.parametrize(
    ("timeout", "exec_timeout", "read_timeout"),
    [(1234567.0, "1234567s", "1234569s"), (0.5, "500ms", "2500ms"), (3.25, "3250ms", "5250ms")],
)
def test_deployed_timeouts_are_plain_go_durations(
    gateway: GatewayEmulator, timeout: float, exec_timeout: str, read_timeout: str
) -> None:
    make_backend(gateway, timeout=timeout).deploy(secret=SECRET)
    env_vars = gateway.functions[f"faasml.{DEFAULT_NAMESPACE}"]["envVars"]
    assert env_vars["exec_timeout"] == exec_timeout  # not "1.23457e+06s"
    assert env_vars["read_timeout"] == env_vars["write_timeout"] == read_timeout
    assert parse_duration(exec_timeout, 0.0) == pytest.approx(timeout)


def test_default_timeout_is_under_the_gateway_upstream_timeout() -> None:
    # The gateway's default upstream_timeout is 60 s; an equal exec_timeout races it.
    assert OpenFaaSFunction(password="x").timeout < 60.0


def test_deploy_never_puts_the_secret_in_env_vars(gateway: GatewayEmulator) -> None:
    backend = make_backend(gateway)
    backend.deploy(secret=SECRET, environment={"FAASML_SECRET": SECRET})
    assert "FAASML_SECRET" not in gateway.functions[f"faasml.{DEFAULT_NAMESPACE}"]["envVars"]


def test_deploy_needs_an_image(gateway: GatewayEmulator) -> None:
    backend = make_backend(gateway, image=None)
    with pytest.raises(ConfigurationError) as caught:
        backend.deploy(secret=SECRET)
    assert "write_build_context" in str(caught.value)
    assert "docker build" in str(caught.value)
    assert gateway.log == []


def test_deploy_with_wrong_password_is_an_authentication_error(gateway: GatewayEmulator) -> None:
    backend = make_backend(gateway, password="wrong-password-1")
    with pytest.raises(AuthenticationError) as caught:
        backend.deploy(secret=SECRET)
    assert caught.value.status == 401
    assert "wrong-password-1" not in str(caught.value)
    assert SECRET not in str(caught.value)


def test_password_from_the_environment(
    gateway: GatewayEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENFAAS_PASSWORD", raising=False)
    default = OpenFaaSFunction(gateway.url, image=IMAGE)
    with pytest.raises(AuthenticationError) as caught:
        default.deploy(secret=SECRET)
    assert "OPENFAAS_PASSWORD" in str(caught.value)
    monkeypatch.setenv("OPENFAAS_PASSWORD", gateway.password)
    assert default.deploy(secret=SECRET).startswith("created")
    monkeypatch.setenv("MY_GW_PW", gateway.password)
    explicit = OpenFaaSFunction(gateway.url, image=IMAGE, password={"$env": "MY_GW_PW"})
    assert explicit.deploy(secret=SECRET).startswith("updated")
    assert gateway.password not in repr(explicit)


def test_repr_hides_credentials_and_secret(backend: OpenFaaSFunction) -> None:
    shown = repr(backend)
    assert "gateway-password-5d1c" not in shown
    assert SECRET not in shown
    assert FunctionTests.ENVIRONMENT["FAASML_CONFORMANCE_VAR"] not in shown
    assert "password='***'" in shown


@pytest.mark.parametrize(
    "options",
    [
        {"gateway": "gateway:8080"},
        {"function_name": "Bad_Name"},
        {"namespace": "UPPER"},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"timeout": 1e20},  # longer than any Go duration
        {"concurrency": 0},
        {"max_retries": -1},
        {"image": " "},
    ],
)
def test_invalid_options_are_configuration_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        OpenFaaSFunction(**options)  # type: ignore[arg-type]


def test_emulated_system_api_lists_deletes_and_requires_basic_auth(
    gateway: GatewayEmulator, backend: OpenFaaSFunction
) -> None:
    auth = ("admin", gateway.password)
    assert requests.get(f"{gateway.url}/system/functions", timeout=5).status_code == 401
    listed = requests.get(f"{gateway.url}/system/functions", auth=auth, timeout=5).json()
    assert [f["name"] for f in listed] == ["faasml"]
    secrets = requests.get(f"{gateway.url}/system/secrets", auth=auth, timeout=5).json()
    assert secrets == [{"name": shim.SECRET_NAME}]  # names only, never values
    gone = requests.delete(
        f"{gateway.url}/system/functions", json={"functionName": "faasml"}, auth=auth, timeout=5
    )
    assert gone.status_code == 200
    with pytest.raises(NotFoundError):
        backend.invoke(b"echo:x")


# --------------------------------------------------------------------------- handler shim


class _Event:
    def __init__(self, body: bytes) -> None:
        self.body = body


def test_handler_reads_the_secret_file_and_reports_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_SECRET", "")  # restored (removed) after the test
    monkeypatch.setattr(shim, "_from_file", None)
    monkeypatch.setenv("FAASML_HANDLER", "faasml.testing.handlers:dispatch")
    monkeypatch.setenv(shim.SECRETS_DIR_ENV, str(tmp_path))
    (tmp_path / shim.SECRET_NAME).write_text("from-file\n")
    ok = shim.handle(_Event(b"env_value:FAASML_SECRET"), None)
    assert ok == {
        "statusCode": 200,
        "body": b"from-file",
        "headers": {"Content-Type": "application/octet-stream"},
    }
    failed = shim.handle(_Event(b"nonexistent_handler:"), None)
    assert failed["statusCode"] == 500
    assert failed["headers"][shim.ERROR_HEADER] == "1"
    report = json.loads(failed["body"])
    assert report["type"] == "ValueError" and "dispatch payload" in report["message"]


def test_handler_follows_a_rotated_secret_file_but_not_an_explicit_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recorded, so the value the handler puts there is removed after the test.
    monkeypatch.setenv("FAASML_SECRET", "")
    monkeypatch.setattr(shim, "_from_file", None)
    monkeypatch.setenv("FAASML_HANDLER", "faasml.testing.handlers:dispatch")
    monkeypatch.setenv(shim.SECRETS_DIR_ENV, str(tmp_path))
    secret_file = tmp_path / shim.SECRET_NAME

    def secret_seen() -> bytes:
        answer = shim.handle(_Event(b"env_value:FAASML_SECRET"), None)
        assert answer["statusCode"] == 200
        return bytes(answer["body"])

    secret_file.write_text("first-secret\n")
    assert secret_seen() == b"first-secret"
    # Same size, rewritten at once: a stat-based check could miss it, the content does not.
    secret_file.write_text("other-secret\n")
    assert secret_seen() == b"other-secret"
    secret_file.write_text("")  # mid-update or emptied: keep the last good value
    assert secret_seen() == b"other-secret"
    secret_file.unlink()
    assert secret_seen() == b"other-secret"
    # An operator's FAASML_SECRET is never replaced by the file.
    monkeypatch.setenv("FAASML_SECRET", "operator-secret")
    secret_file.write_text("file-secret")
    assert secret_seen() == b"operator-secret"


# --------------------------------------------------------------------------- image build


def test_build_context_is_consistent_and_serves_the_shim(tmp_path: Path) -> None:
    root = OpenFaaSFunction.write_build_context(tmp_path / "ctx")
    dockerfile = (root / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            source = line.split()[1]
            assert (root / source).exists(), f"Dockerfile copies missing {source}"
    assert 'fprocess="python index.py"' in dockerfile and 'mode="http"' in dockerfile
    assert "of-watchdog" in dockerfile
    assert (root / "faasml" / "providers" / "openfaas" / "handler.py").read_text() == Path(
        shim.__file__
    ).read_text()
    assert (
        "from faasml.providers.openfaas.handler import handle"
        in (root / "function" / "handler.py").read_text()
    )
    requirements = (root / "requirements.txt").read_text()
    assert "cloudpickle" in requirements and "redis" in requirements
    assert not list(root.rglob("__pycache__"))

    # Run the image's server (what of-watchdog proxies to) from the context's own faasml copy.
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / shim.SECRET_NAME).write_text(SECRET + "\n")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(root),
        "FAASML_UPSTREAM_PORT": str(port),
        "FAASML_HANDLER": "faasml.testing.handlers:dispatch",
        shim.SECRETS_DIR_ENV: str(tmp_path / "secrets"),
    }
    server = subprocess.Popen([sys.executable, "index.py"], cwd=root, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = requests.post(url, data=b"echo:\x00\xffhi", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "index.py did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        assert answer.content == b"\x00\xffhi"
        secret = requests.post(url, data=b"env_value:FAASML_SECRET", timeout=5)
        assert secret.content == SECRET.encode()  # the trailing newline is not the secret
        failed = requests.post(url, data=b"raise_value_error:nope", timeout=5)
        assert failed.status_code == 500
        assert failed.headers[shim.ERROR_HEADER] == "1"
        assert failed.json()["type"] == "ValueError"
    finally:
        server.terminate()
        server.wait(timeout=10)


# --------------------------------------------------------------------------- end to end


def _deploy_default(gateway: GatewayEmulator) -> OpenFaaSFunction:
    backend = make_backend(gateway, timeout=10.0, concurrency=2)
    backend.deploy(secret=SECRET, dependencies=False)
    return backend


def test_end_to_end_job_through_the_gateway(gateway: GatewayEmulator, tmp_path: Path) -> None:
    backend = _deploy_default(gateway)
    # The default handler (faasml.runtime:handle) runs with the secret from the mounted file.
    assert "FAASML_HANDLER" not in gateway.functions[f"faasml.{DEFAULT_NAMESPACE}"]["envVars"]
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
    assert any(path.startswith("/async-function/") for _m, path, _s in gateway.log)

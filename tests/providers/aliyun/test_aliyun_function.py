"""The aliyun Function backend against the Function Compute 2.0 emulator."""

from __future__ import annotations

import base64
import io
import json
import logging
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import faasml
from faasml.errors import (
    AuthenticationError,
    ConfigurationError,
    FaaSMLError,
    FunctionError,
    InvocationTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ThrottledError,
    WorkerDiedError,
)
from faasml.interfaces import Function
from faasml.providers.aliyun.function import FunctionComputeFunction
from faasml.testing.conformance.function import FunctionTests

from .emulator import FunctionComputeEmulator

ENDPOINT = "https://1234567890.cn-hangzhou.fc.aliyuncs.com"
KEY_ID = "LTAI-test-key-id-4f1c"
KEY_SECRET = "test-key-secret-9b7e2d"
SECRET = "faasml-signing-secret-5d21"
TEST_ENVIRONMENT = {
    "FAASML_HANDLER": "faasml.testing.handlers:dispatch",
    **FunctionTests.ENVIRONMENT,
}


def make_backend(**options: Any) -> FunctionComputeFunction:
    settings: dict[str, Any] = {
        "access_key_id": KEY_ID,
        "access_key_secret": KEY_SECRET,
        "timeout": 3.0,
        "memory_mb": 512,
        "concurrency": 2,
    }
    settings.update(options)
    backend = FunctionComputeFunction(ENDPOINT, **settings)
    backend.retry_base_delay = 0.001  # keep backoff tests fast; the schedule is what counts
    return backend


@pytest.fixture
def emulator() -> Iterator[FunctionComputeEmulator]:
    with FunctionComputeEmulator(ENDPOINT, {KEY_ID: KEY_SECRET}, instances=2) as fc:
        yield fc


@pytest.fixture
def deployed(emulator: FunctionComputeEmulator) -> FunctionComputeFunction:
    backend = make_backend()
    backend.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    return backend


class TestFunctionComputeConformance(FunctionTests):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_deployment(cls) -> Iterator[FunctionComputeFunction]:
        # One deployment for the whole suite: starting instances is most of a test's time here.
        with FunctionComputeEmulator(ENDPOINT, {KEY_ID: KEY_SECRET}, instances=2):
            backend = make_backend()
            backend.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
            yield backend

    @pytest.fixture
    def function(self, conformance_deployment: FunctionComputeFunction) -> Function:
        return conformance_deployment

    @pytest.fixture
    def supports_invocation_status(self) -> bool:
        # FC 2.0 reports asynchronous outcomes only to destinations or stateful invocations,
        # and aliyun-fc2 2.5.2 has no call to query either: the status stays "unknown".
        return False


# --------------------------------------------------------------------------- configuration


def test_endpoint_is_built_from_account_and_region() -> None:
    backend = FunctionComputeFunction(
        account_id="1234567890", region="cn-shanghai", access_key_id="a", access_key_secret="b"
    )
    assert backend.endpoint == "https://1234567890.cn-shanghai.fc.aliyuncs.com"


def test_missing_endpoint_and_credentials_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigurationError, match="account_id"):
        FunctionComputeFunction(access_key_id="a", access_key_secret="b")
    for var in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigurationError, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        FunctionComputeFunction(ENDPOINT)
    with pytest.raises(ConfigurationError, match="memory_mb"):
        FunctionComputeFunction(ENDPOINT, access_key_id="a", access_key_secret="b", memory_mb=100)
    with pytest.raises(ConfigurationError, match="timeout"):
        FunctionComputeFunction(ENDPOINT, access_key_id="a", access_key_secret="b", timeout=90_000)


def test_credentials_from_env_references_never_show(
    emulator: FunctionComputeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_AK", KEY_ID)
    monkeypatch.setenv("MY_SK", KEY_SECRET)
    backend = make_backend(access_key_id={"$env": "MY_AK"}, access_key_secret={"$env": "MY_SK"})
    backend.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    assert backend.invoke(b"echo:hi") == b"hi"
    shown = repr(backend) + str(dict(backend.environment()))
    for value in (KEY_ID, KEY_SECRET, SECRET, "conformance-secret-7f3a"):
        assert value not in shown
    assert backend.environment()["FAASML_SECRET"] == "***"


@pytest.mark.parametrize("option", ["access_key_id", "access_key_secret", "security_token"])
def test_an_empty_env_reference_is_a_configuration_error(
    option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ALIBABA_CLOUD_* fallback is set: an empty named variable must not fall back to it.
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET)
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "sts-token-value-77")
    monkeypatch.setenv("MY_EMPTY_CREDENTIAL", "")
    with pytest.raises(ConfigurationError, match=r"\$MY_EMPTY_CREDENTIAL.*empty") as caught:
        reference: dict[str, Any] = {option: {"$env": "MY_EMPTY_CREDENTIAL"}}
        FunctionComputeFunction(ENDPOINT, **reference)
    assert option in str(caught.value)


def test_default_credentials_come_from_alibaba_cloud_variables(
    emulator: FunctionComputeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET)
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "sts-token-value-77")
    backend = FunctionComputeFunction(ENDPOINT, timeout=3.0)
    backend.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    assert backend.invoke(b"echo:sts") == b"sts"
    assert emulator.calls[-1].headers["x-fc-security-token"] == "sts-token-value-77"


# --------------------------------------------------------------------------- deploy


def test_deploy_creates_then_updates_and_uploads_a_loadable_zip(
    emulator: FunctionComputeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend()
    with caplog.at_level(logging.DEBUG):
        first = backend.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    assert first.startswith("created function faasml/faasml (created service)")
    assert set(emulator.services) == {"faasml"}
    config = emulator.functions[("faasml", "faasml")].config
    assert config["handler"] == "index.handler"
    assert config["runtime"] == "python3.10"
    assert (config["timeout"], config["memorySize"], config["instanceConcurrency"]) == (3, 512, 1)
    assert config["environmentVariables"] == {"FAASML_SECRET": SECRET, **TEST_ENVIRONMENT}

    create = next(c for c in emulator.calls if c.method == "POST" and c.path.endswith("/functions"))
    archive = zipfile.ZipFile(
        io.BytesIO(base64.b64decode(json.loads(create.body)["code"]["zipFile"]))
    )
    names = set(archive.namelist())
    assert {"index.py", "faasml/__init__.py", "faasml/providers/aliyun/handler.py"} <= names
    assert b"from faasml.providers.aliyun.handler import handler" in archive.read("index.py")

    second = backend.deploy(
        secret=SECRET,
        environment={"FAASML_HANDLER": "faasml.testing.handlers:dispatch"},
        dependencies=False,
    )
    assert second.startswith("updated function faasml/faasml (existing service)")
    assert len(emulator.functions) == 1
    updated = emulator.functions[("faasml", "faasml")].config
    # FC replaces the variables as a whole: the conformance variable is gone.
    assert updated["environmentVariables"] == {
        "FAASML_SECRET": SECRET,
        "FAASML_HANDLER": "faasml.testing.handlers:dispatch",
    }
    assert backend.invoke(b"echo:updated") == b"updated"
    for value in (SECRET, KEY_SECRET, KEY_ID):
        assert value not in caplog.text
        assert value not in first + second


def test_deploy_rejects_bad_variables(emulator: FunctionComputeEmulator) -> None:
    backend = make_backend()
    with pytest.raises(ConfigurationError, match="BAD-NAME"):
        backend.deploy(secret=SECRET, environment={"BAD-NAME": "x"}, dependencies=False)
    with pytest.raises(ConfigurationError, match="secret"):
        backend.deploy(secret="", dependencies=False)
    assert emulator.functions == {}


def test_deploy_bundles_the_aliyun_dependencies_for_the_runtime(
    emulator: FunctionComputeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faasml.providers import _package

    real_build_zip = _package.build_zip
    seen: dict[str, Any] = {}

    def build_zip(entry_files: Any, **options: Any) -> bytes:
        seen.update(options)
        return real_build_zip(entry_files)  # pip cannot reach an index here

    monkeypatch.setattr(_package, "build_zip", build_zip)
    make_backend(runtime="python3.9").deploy(secret=SECRET)
    assert seen["python_version"] == "3.9"
    assert seen["dependencies"] == _package.runtime_requirements("aliyun")
    assert any(r.startswith("aliyun-fc2") for r in seen["dependencies"])
    assert emulator.functions[("faasml", "faasml")].config["runtime"] == "python3.9"


# --------------------------------------------------------------------------- error mapping


def test_missing_function_says_to_deploy(emulator: FunctionComputeEmulator) -> None:
    backend = make_backend()
    with pytest.raises(NotFoundError, match="faasml deploy --provider aliyun") as caught:
        backend.invoke(b"echo:x")
    assert caught.value.code == "ServiceNotFound" and caught.value.status == 404
    emulator.services["faasml"] = {"serviceName": "faasml"}
    with pytest.raises(NotFoundError, match="faasml deploy --provider aliyun") as caught:
        backend.invoke_async(b"echo:x")
    assert caught.value.code == "FunctionNotFound"


def test_throttling_is_retried_with_backoff_then_succeeds(
    deployed: FunctionComputeFunction,
    emulator: FunctionComputeEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delays: list[float] = []
    monkeypatch.setattr("faasml.providers.aliyun.function.time.sleep", delays.append)
    deployed.retry_base_delay = 1.0
    emulator.inject(429, "ResourceExhausted", times=2)
    emulator.inject(503, "ResourceThrottled", times=1)
    before = len(emulator.invocation_calls())
    assert deployed.invoke(b"echo:after throttling") == b"after throttling"
    assert len(emulator.invocation_calls()) - before == 4
    assert len(delays) == 3
    # Exponential with jitter: attempt n waits between 2**n / 2 and 2**n seconds.
    for attempt, delay in enumerate(delays):
        assert 2**attempt / 2 <= delay <= 2**attempt


def test_throttling_exhausted_raises_throttled(
    deployed: FunctionComputeFunction, emulator: FunctionComputeEmulator
) -> None:
    deployed.max_retries = 2
    emulator.inject(429, "ResourceExhausted", times=3)
    before = len(emulator.invocation_calls())
    with pytest.raises(ThrottledError, match="quota") as caught:
        deployed.invoke_async(b"echo:x")
    assert caught.value.status == 429 and caught.value.code == "ResourceExhausted"
    assert caught.value.request_id
    assert len(emulator.invocation_calls()) - before == 3


@pytest.mark.parametrize(
    ("max_retries", "said"), [(0, "without a retry"), (1, "after 1 retry"), (3, "after 3 retries")]
)
def test_throttled_error_states_the_real_number_of_retries(
    deployed: FunctionComputeFunction,
    emulator: FunctionComputeEmulator,
    max_retries: int,
    said: str,
) -> None:
    deployed.max_retries = max_retries
    emulator.inject(429, "ResourceExhausted", times=max_retries + 1)
    with pytest.raises(ThrottledError) as caught:
        deployed.invoke(b"echo:x")
    assert said in str(caught.value)
    # The count is the one that happened, not the configured maximum.
    exc = SimpleNamespace(
        status_code=429, message=json.dumps({"errorCode": "ResourceExhausted"}), err_code=""
    )
    translated = deployed._translate(exc, "invoke", retries=1)
    assert "after 1 retry:" in str(translated) and f"{max_retries} retries" not in str(translated)


def test_no_resources_exhausted_is_service_unavailable(
    deployed: FunctionComputeFunction, emulator: FunctionComputeEmulator
) -> None:
    deployed.max_retries = 1
    emulator.inject(503, "ResourceThrottled", times=2)
    with pytest.raises(ServiceUnavailableError) as caught:
        deployed.invoke(b"echo:x")
    assert caught.value.status == 503


def test_internal_error_is_not_retried(
    deployed: FunctionComputeFunction, emulator: FunctionComputeEmulator
) -> None:
    emulator.inject(500, "InternalServerError")
    before = len(emulator.invocation_calls())
    with pytest.raises(ServiceUnavailableError, match="try again later") as caught:
        deployed.invoke(b"echo:x")
    assert caught.value.code == "InternalServerError"
    # An invocation may have run: repeating it is the executor's decision, not the client's.
    assert len(emulator.invocation_calls()) - before == 1


def test_server_errors_on_management_calls_are_service_unavailable(
    emulator: FunctionComputeEmulator,
) -> None:
    # fc2 retries a GET that ends in 502 itself (urllib3), then raises RetryError, not FcError.
    emulator.inject(502, "InternalServerError", times=6, api=True)
    with pytest.raises(ServiceUnavailableError, match="kept failing"):
        make_backend().deploy(secret=SECRET, dependencies=False)
    assert [c.status for c in emulator.calls] == [502] * 6


def test_a_non_json_error_body_is_service_unavailable(
    deployed: FunctionComputeFunction, emulator: FunctionComputeEmulator
) -> None:
    emulator.inject(502, "<html>Bad Gateway</html>")
    with pytest.raises(ServiceUnavailableError, match="not Function Compute's JSON"):
        deployed.invoke(b"echo:x")


def test_wrong_credentials_are_authentication_errors(
    deployed: FunctionComputeFunction, caplog: pytest.LogCaptureFixture
) -> None:
    wrong_secret = make_backend(access_key_secret="not-the-secret-31")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(AuthenticationError, match="ALIBABA_CLOUD_ACCESS_KEY_SECRET") as caught:
            wrong_secret.invoke(b"echo:x")
    assert caught.value.code == "SignatureNotMatch"
    unknown_key = make_backend(access_key_id="LTAI-unknown-id-88")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(AuthenticationError) as caught:
            unknown_key.invoke(b"echo:x")
    assert caught.value.code == "InvalidAccessKeyID"
    # fc2 logs failed requests with their headers; the signature header is masked.
    assert "Client error: 403" in caplog.text
    assert KEY_ID not in caplog.text and "LTAI-unknown-id-88" not in caplog.text
    assert "not-the-secret-31" not in caplog.text


def test_access_denied_is_permission_denied(
    deployed: FunctionComputeFunction, emulator: FunctionComputeEmulator
) -> None:
    emulator.deny_all = True
    with pytest.raises(PermissionDeniedError, match="AliyunFCFullAccess") as caught:
        deployed.invoke(b"echo:x")
    assert caught.value.code == "AccessDenied"


def test_oversized_payloads_are_refused_before_sending(
    deployed: FunctionComputeFunction, emulator: FunctionComputeEmulator
) -> None:
    before = len(emulator.calls)
    with pytest.raises(PayloadTooLargeError, match="131072"):
        deployed.invoke_async(bytes(128 * 1024 + 1))
    assert len(emulator.calls) == before


def test_platform_entity_too_large_maps_to_payload_too_large(
    deployed: FunctionComputeFunction, emulator: FunctionComputeEmulator
) -> None:
    emulator.inject(400, "EntityTooLarge")
    with pytest.raises(PayloadTooLargeError, match="131072") as caught:
        deployed.invoke(b"echo:x")
    assert caught.value.code == "EntityTooLarge"


def test_function_error_carries_the_remote_frames(deployed: FunctionComputeFunction) -> None:
    with pytest.raises(FunctionError) as caught:
        deployed.invoke(b"raise_value_error:bad input")
    error = caught.value
    assert error.remote_type == "ValueError"
    assert error.remote_traceback is not None
    assert error.remote_traceback.startswith("Traceback (most recent call last):")
    assert 'faasml/testing/handlers.py", line' in error.remote_traceback
    assert error.remote_traceback.endswith("ValueError: bad input\n")


@pytest.mark.parametrize(
    "message", ["Function timed out after 3 seconds", "ran out of memory while parsing"]
)
def test_a_handler_exception_is_a_function_error_whatever_its_message(
    deployed: FunctionComputeFunction, message: str
) -> None:
    # The runtime's report of a handler exception has an errorType: it is never FC's own
    # time-out or crash report, which are retriable.
    with pytest.raises(FaaSMLError) as caught:
        deployed.invoke(b"raise_value_error:" + message.encode())
    error = caught.value
    assert type(error) is FunctionError and not error.retriable
    assert error.remote_type == "ValueError"
    assert message in str(error)
    assert error.request_id and error.provider == "aliyun"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"errorMessage": "Function timed out after 3 seconds"}, InvocationTimeoutError),
        (
            {"errorMessage": "Process exited unexpectedly before completing request"},
            WorkerDiedError,
        ),
        ({"errorMessage": "Process exited unexpectedly", "errorType": "SystemExit"}, FunctionError),
        ({"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}, FunctionError),
    ],
)
def test_every_function_failure_carries_provider_code_and_request_id(
    deployed: FunctionComputeFunction, body: dict[str, Any], expected: type[Exception]
) -> None:
    error = deployed._function_error(body, "req-42", "SomeCode")
    assert type(error) is expected
    assert error.request_id == "req-42"  # type: ignore[attr-defined]
    assert error.provider == "aliyun"  # type: ignore[attr-defined]
    assert error.code == "SomeCode"  # type: ignore[attr-defined]
    # They cross process boundaries: the attributes survive pickling.
    copy = pickle.loads(pickle.dumps(error))
    assert copy.request_id == "req-42"  # type: ignore[attr-defined]


def test_a_dead_instance_is_a_worker_died_error_with_the_request_id(
    deployed: FunctionComputeFunction,
) -> None:
    with pytest.raises(WorkerDiedError, match="died before answering") as caught:
        deployed.invoke(b"exit_process:")
    assert caught.value.request_id  # type: ignore[attr-defined]
    assert caught.value.provider == "aliyun"  # type: ignore[attr-defined]


def test_async_invocation_returns_the_request_id_and_runs(
    deployed: FunctionComputeFunction, emulator: FunctionComputeEmulator
) -> None:
    invocation = deployed.invoke_async(b"echo:queued")
    call = emulator.invocation_calls()[-1]
    assert call.headers["x-fc-invocation-type"] == "Async" and call.status == 202
    assert invocation.poll() == "unknown"
    assert len(invocation.id) == 36  # FC's request id
    (outcome,) = emulator.wait_async(1)
    assert outcome.value == b"queued"
    deployed.close()
    with pytest.raises(ServiceUnavailableError, match="closed"):
        deployed.invoke_async(b"echo:late")


# --------------------------------------------------------------------------- end to end


def pow_job(tmp_path: Path, backend: FunctionComputeFunction) -> list[int]:
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
        return list(cloud.map(pow, [2, 3], [5, 2]))


def test_a_faasml_job_runs_end_to_end(emulator: FunctionComputeEmulator, tmp_path: Path) -> None:
    backend = make_backend(timeout=30.0)
    backend.deploy(secret=SECRET, dependencies=False)  # the default handler: faasml.runtime
    assert (
        "FAASML_HANDLER"
        not in emulator.functions[("faasml", "faasml")].config["environmentVariables"]
    )
    assert pow_job(tmp_path, backend) == [32, 9]
    assert any(
        c.headers.get("x-fc-invocation-type") == "Async" for c in emulator.invocation_calls()
    )

"""Tests of the ``huawei`` Function provider against the FunctionGraph emulator."""

from __future__ import annotations

import base64
import io
import json
import logging
import pickle
import socket
import time
import zipfile
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import responses

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
from faasml.providers import _shim
from faasml.providers.huawei import faasml_function_backends
from faasml.providers.huawei import function as function_module
from faasml.providers.huawei.function import FunctionGraphFunction
from faasml.providers.huawei.handler import handler as shim_handler
from faasml.testing.conformance.function import FunctionTests

from .emulator import FunctionGraphEmulator

pytestmark = pytest.mark.timeout(120)

DISPATCH = "faasml.testing.handlers:dispatch"
SECRET = "signing-secret-5d1e"
SECRET_KEY = "sk-value-9c2b7e"


def backend(emulator: FunctionGraphEmulator, **options: Any) -> FunctionGraphFunction:
    """A backend pointed at ``emulator`` (fast retries and polls unless overridden)."""
    settings: dict[str, Any] = {
        "region": emulator.region,
        "project_id": emulator.project_id,
        "endpoint": emulator.endpoint,
        "access_key": emulator.access_key,
        "secret_key": SECRET_KEY,
        "timeout": 3.0,
        "concurrency": 2,
        "backoff": 0.001,
        "poll_interval": 0.02,
    }
    settings.update(options)
    name = settings.pop("function", "faasml")
    return FunctionGraphFunction(name, **settings)


def deploy_dispatch(function: FunctionGraphFunction) -> str:
    return function.deploy(
        secret=SECRET,
        environment={"FAASML_HANDLER": DISPATCH, **FunctionTests.ENVIRONMENT},
        dependencies=False,
    )


@pytest.fixture
def emulator() -> Iterator[FunctionGraphEmulator]:
    emu = FunctionGraphEmulator()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        emu.install(mock)
        yield emu
    emu.close()


@pytest.fixture
def deployed(emulator: FunctionGraphEmulator) -> FunctionGraphFunction:
    function = backend(emulator)
    deploy_dispatch(function)
    return function


def wait_done(invocation: faasml.Invocation, limit: float = 30.0) -> str:
    deadline = time.monotonic() + limit
    while invocation.poll() in ("running", "unknown"):
        assert time.monotonic() < deadline, f"invocation {invocation.id} did not finish"
        time.sleep(0.02)
    return invocation.status


# --------------------------------------------------------------------------- conformance


class TestFunctionGraphConformance(FunctionTests):
    @pytest.fixture(scope="class")
    @classmethod
    def deployment(cls) -> Iterator[FunctionGraphEmulator]:
        # One emulated function for the class: its warm runtimes serve every test, as on the
        # platform; each test still gets a fresh backend object.
        emu = FunctionGraphEmulator()
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            emu.install(mock)
            deploy_dispatch(backend(emu))
            yield emu
        emu.close()

    @pytest.fixture
    def function(self, deployment: FunctionGraphEmulator) -> Iterator[FunctionGraphFunction]:
        function = backend(deployment)
        yield function
        function.close()


# --------------------------------------------------------------------------- invoke


def test_invoke_sends_the_documented_request(
    emulator: FunctionGraphEmulator, deployed: FunctionGraphFunction
) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as spy:
        # A second mock would shadow the first: route through the emulator and keep the calls.
        emulator.install(spy)
        assert deployed.invoke(b"echo:\x00\xff") == b"\x00\xff"
        (call,) = spy.calls
    request = call.request
    assert request.method == "POST"
    # The SDK percent-encodes the URN path parameter (providers.md §1).
    assert f"/v2/{emulator.project_id}/fgs/functions/urn%3Afss%3A" in request.url
    assert request.url.endswith("%3Afaasml%3Alatest/invocations")
    assert request.headers["X-Cff-Log-Type"] == "tail"
    assert request.headers["X-CFF-Request-Version"] == "v1"
    assert request.headers["Authorization"].startswith("SDK-HMAC-SHA256 Access=")
    assert SECRET_KEY not in str(request.headers)
    assert json.loads(request.body) == _shim.wrap(b"echo:\x00\xff")


def test_throttled_invoke_is_retried_then_succeeds(
    emulator: FunctionGraphEmulator, deployed: FunctionGraphFunction
) -> None:
    emulator.inject("invoke_function", 429, error_code="FSS.0429", times=2)
    assert deployed.invoke(b"echo:ok") == b"ok"
    invokes = [status for op, status in emulator.calls if op == "invoke_function"]
    assert invokes == [429, 429, 200]


def test_throttling_past_max_retries_raises_throttled_with_retry_after(
    emulator: FunctionGraphEmulator,
) -> None:
    function = backend(emulator, max_retries=2)
    deploy_dispatch(function)
    emulator.inject(
        "invoke_function", 429, error_code="FSS.0429", headers={"Retry-After": "0.1"}, times=5
    )
    started = time.monotonic()
    with pytest.raises(ThrottledError) as caught:
        function.invoke(b"echo:never")
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.retry_after == pytest.approx(0.1)
    assert error.status == 429 and error.code == "FSS.0429" and error.provider == "huawei"
    assert "3 times" in str(error)
    assert elapsed >= 0.2, "Retry-After must be honoured between the attempts"
    assert [s for op, s in emulator.calls if op == "invoke_function"] == [429, 429, 429]


def test_backoff_grows_exponentially_with_jitter(emulator: FunctionGraphEmulator) -> None:
    function = backend(emulator, backoff=0.5)
    delays = [function._retry_delay(attempt) for attempt in range(6)]
    for attempt, delay in enumerate(delays):
        ceiling = min(20.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize(
    ("status", "code", "expected", "hint"),
    [
        (401, "APIGW.0301", AuthenticationError, "HUAWEICLOUD_SDK_AK"),
        (403, "FSS.0403", PermissionDeniedError, "permissions"),
        (404, "FSS.1051", NotFoundError, "faasml deploy --provider huawei"),
        (413, "APIGW.0413", PayloadTooLargeError, "262144"),
        (400, "FSS.4140", PayloadTooLargeError, "262144"),
        (400, "FSS.0400", ProviderError, "refused invoke_function"),
        (500, "FSS.0500", ServiceUnavailableError, "try again later"),
        (503, "FSS.0503", ServiceUnavailableError, "try again later"),
    ],
)
def test_api_errors_map_to_typed_errors(
    emulator: FunctionGraphEmulator,
    deployed: FunctionGraphFunction,
    status: int,
    code: str,
    expected: type[ProviderError],
    hint: str,
) -> None:
    emulator.inject("invoke_function", status, error_code=code, error_msg="platform says no")
    with pytest.raises(expected) as caught:
        deployed.invoke(b"echo:x")
    error = caught.value
    assert type(error) is expected
    assert error.status == status and error.code == code and error.provider == "huawei"
    assert error.request_id  # the emulator's X-Request-Id, for support tickets
    assert hint in str(error) and "platform says no" in str(error)
    # Only throttling is retried: one call, no retry storm on other errors.
    assert [s for op, s in emulator.calls if op == "invoke_function"] == [status]


def test_missing_function_says_to_deploy(emulator: FunctionGraphEmulator) -> None:
    with pytest.raises(NotFoundError) as caught:
        backend(emulator, function="never-deployed").invoke(b"echo:x")
    assert caught.value.code == "FSS.1051"
    assert "faasml deploy --provider huawei" in str(caught.value)
    with pytest.raises(NotFoundError):
        backend(emulator, function="never-deployed").invoke_async(b"echo:x")


def test_wrong_credentials_raise_authentication_error_without_the_key(
    emulator: FunctionGraphEmulator, deployed: FunctionGraphFunction
) -> None:
    intruder = backend(emulator, access_key="SOMEONEELSE")
    with pytest.raises(AuthenticationError) as caught:
        intruder.invoke(b"echo:x")
    assert caught.value.status == 401
    assert SECRET_KEY not in str(caught.value) and SECRET_KEY not in repr(caught.value)


def test_unreachable_endpoint_raises_service_unavailable(emulator: FunctionGraphEmulator) -> None:
    # Nothing answers this host: the SDK raises ConnectionException.
    function = backend(emulator, endpoint="https://functiongraph.elsewhere.example.com")
    with pytest.raises(ServiceUnavailableError) as caught:
        function.invoke(b"echo:x")
    assert "functiongraph.elsewhere.example.com" in str(caught.value)


def test_oversized_payload_is_refused_before_sending(
    emulator: FunctionGraphEmulator, deployed: FunctionGraphFunction
) -> None:
    limit = FunctionGraphFunction.max_payload_bytes
    # The largest payload whose base64 JSON envelope fits the 256 KB asynchronous limit.
    assert _shim.wrapped_size(limit) <= 256 * 1024 < _shim.wrapped_size(limit + 1)
    before = len(emulator.calls)
    for call in (deployed.invoke, deployed.invoke_async):
        with pytest.raises(PayloadTooLargeError) as caught:
            call(bytes(limit + 1))
        assert str(limit) in str(caught.value)
    assert len(emulator.calls) == before
    invocation = deployed.invoke_async(b"echo:" + bytes(limit - 5))
    assert wait_done(invocation) == "succeeded"


def test_closed_backend_refuses_calls(deployed: FunctionGraphFunction) -> None:
    deployed.close()
    deployed.close()
    with pytest.raises(ServiceUnavailableError, match="closed"):
        deployed.invoke(b"echo:x")


# --------------------------------------------------------------------------- async status


def test_async_handler_exception_is_reported_on_the_invocation(
    deployed: FunctionGraphFunction,
) -> None:
    invocation = deployed.invoke_async(b"raise_value_error:async boom")
    assert wait_done(invocation) == "failed"
    assert isinstance(invocation.error, FunctionError)
    assert invocation.error.remote_type == "ValueError"
    assert "async boom" in str(invocation.error)
    assert "raise_value_error" in (invocation.error.remote_traceback or "")


def test_async_timeout_is_reported_on_the_invocation(deployed: FunctionGraphFunction) -> None:
    invocation = deployed.invoke_async(b"sleep_then_echo:30")
    assert wait_done(invocation) == "failed"
    assert isinstance(invocation.error, InvocationTimeoutError)
    assert invocation.error.code == "4010"


def test_failed_poll_leaves_the_status_unchanged(
    emulator: FunctionGraphEmulator, deployed: FunctionGraphFunction
) -> None:
    invocation = deployed.invoke_async(b"echo:later")
    emulator.inject("list_async_invocations", 500, times=1)
    emulator.inject("list_async_invocations", 429, times=1)
    assert invocation.poll() == "running"  # 500: no exception, nothing learned
    time.sleep(0.03)
    assert invocation.poll() == "running"  # 429: not retried inside a poll
    assert wait_done(invocation) == "succeeded"


def test_polls_are_rate_limited(emulator: FunctionGraphEmulator) -> None:
    function = backend(emulator, poll_interval=30.0)
    deploy_dispatch(function)
    invocation = function.invoke_async(b"echo:x")
    for _ in range(20):
        invocation.poll()
    assert [op for op, _ in emulator.calls].count("list_async_invocations") == 1


def test_closed_backend_stops_polling(
    emulator: FunctionGraphEmulator, deployed: FunctionGraphFunction
) -> None:
    invocation = deployed.invoke_async(b"sleep_then_echo:0.5")
    deployed.close()
    polls_before = [op for op, _ in emulator.calls].count("list_async_invocations")
    time.sleep(0.8)  # it has finished on the platform by now; a poll would learn so
    for _ in range(3):
        assert invocation.poll() == "running"
        time.sleep(0.03)
    assert [op for op, _ in emulator.calls].count("list_async_invocations") == polls_before


def test_a_stalled_status_request_gives_up_quickly() -> None:
    # A server that accepts connections (the kernel's backlog) and never answers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        function = FunctionGraphFunction(
            "faasml",
            region="cn-north-4",
            project_id="p",
            endpoint=f"http://127.0.0.1:{port}",
            access_key="AK",
            secret_key="SK",
            timeout=3,
            poll_interval=0,
        )
        function.poll_timeout = 0.5
        invocation = faasml.Invocation(id="r-9", status="running", _poll=function._poller())
        started = time.monotonic()
        assert invocation.poll() == "running"
        # Not the synchronous client's read timeout (timeout + 30 s).
        assert time.monotonic() - started < 5.0
        assert invocation.error is None


class FakeClient:
    """A stand-in ``FunctionGraphClient`` returning canned SDK responses (``client=``)."""

    def __init__(self, result: str = "", record: Any = None) -> None:
        self.result = result
        self.record = record

    def invoke_function(self, request: Any) -> Any:
        return SimpleNamespace(request_id="r-1", result=self.result, status=500)

    def async_invoke_function(self, request: Any) -> Any:
        return SimpleNamespace(request_id="r-2")

    def list_async_invocations(self, request: Any) -> Any:
        return SimpleNamespace(invocations=[self.record])


def fake(result: str = "", record: Any = None) -> FunctionGraphFunction:
    return FunctionGraphFunction(
        "faasml",
        region="cn-north-4",
        project_id="p",
        timeout=3,
        poll_interval=0,
        client=FakeClient(result, record),
    )


@pytest.mark.parametrize(
    ("report", "expected", "remote_type"),
    [
        # The shape Huawei's console documents: the type prefixed to the message, no errorType.
        (
            {"errorMessage": "Exception: package.index", "stackTrace": []},
            FunctionError,
            "Exception",
        ),
        (
            {"errorMessage": "KeyError: 'x'", "errorType": "KeyError", "stackTrace": ["l1\n"]},
            FunctionError,
            "KeyError",
        ),
        (
            {"errorCode": 4010, "errorMessage": "invoke function timeout"},
            InvocationTimeoutError,
            None,
        ),
        (
            {"errorCode": 4211, "errorMessage": "init function timeout"},
            InvocationTimeoutError,
            None,
        ),
        (
            {"errorCode": 4205, "errorMessage": "runtime memory limit exceeded"},
            WorkerDiedError,
            None,
        ),
        ({"errorMessage": "runtime process exited unexpectedly"}, WorkerDiedError, None),
        # A handler's own TimeoutError is the handler's exception, not the platform's limit.
        (
            {"errorMessage": "TimeoutError: timed out", "stackTrace": []},
            FunctionError,
            "TimeoutError",
        ),
        (
            {"errorCode": 4004, "errorMessage": "response body exceeds limit"},
            PayloadTooLargeError,
            None,
        ),
        ("not json at all", FunctionError, None),
    ],
)
def test_function_error_reports_map_to_typed_errors(
    report: Any, expected: type[Exception], remote_type: str | None
) -> None:
    result = report if isinstance(report, str) else json.dumps(report)
    with pytest.raises(expected) as caught:
        fake(result).invoke(b"x")
    if remote_type is not None:
        assert isinstance(caught.value, FunctionError)
        assert caught.value.remote_type == remote_type


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ({"errorCode": 4010, "errorMessage": "invoke function timeout"}, InvocationTimeoutError),
        ({"errorCode": 4205, "errorMessage": "runtime memory limit exceeded"}, WorkerDiedError),
        ({"errorMessage": "runtime process exited unexpectedly"}, WorkerDiedError),
        ({"errorCode": 4004, "errorMessage": "response body exceeds limit"}, PayloadTooLargeError),
        ({"errorMessage": "ValueError: v", "errorType": "ValueError"}, FunctionError),
        ({"status": "weird"}, FunctionError),  # no report at all
    ],
)
def test_every_function_failure_carries_provider_code_and_request_id(
    report: dict[str, Any], expected: type[Exception]
) -> None:
    with pytest.raises(expected) as caught:
        fake(json.dumps(report)).invoke(b"x")
    error = caught.value
    assert type(error) is expected
    assert error.request_id == "r-1"  # type: ignore[attr-defined]
    assert error.provider == "huawei"  # type: ignore[attr-defined]
    assert hasattr(error, "code")
    if "errorCode" in report:
        assert error.code == str(report["errorCode"])  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(error))  # errors cross process boundaries
    assert copy.request_id == "r-1"


def test_async_worker_died_carries_the_request_id() -> None:
    record = SimpleNamespace(
        request_id="r-2", status="FAIL", error_code=4205, error_message="memory limit exceeded"
    )
    invocation = fake(record=record).invoke_async(b"x")
    assert invocation.poll() == "failed"
    assert isinstance(invocation.error, WorkerDiedError)
    assert invocation.error.request_id == "r-2"  # type: ignore[attr-defined]
    assert invocation.error.code == "4205"  # type: ignore[attr-defined]


def test_response_and_request_too_large_say_which() -> None:
    with pytest.raises(PayloadTooLargeError) as response:
        fake(json.dumps({"errorCode": 4004, "errorMessage": "response too big"})).invoke(b"x")
    assert "result" in str(response.value) and "results are limited to 6291456" in str(
        response.value
    )
    with pytest.raises(PayloadTooLargeError) as request:
        fake(json.dumps({"errorCode": 4140, "errorMessage": "request too big"})).invoke(b"x")
    text = str(request.value)
    assert "request" in text and "results" not in text
    assert "6291456" in text and "262144" in text


@pytest.mark.parametrize(
    ("status", "code", "message", "expected", "state"),
    [
        ("WAIT", 0, "", None, "running"),
        ("RUNNING", 0, "", None, "running"),
        ("SUCCESS", 0, "", None, "succeeded"),
        ("FAIL", 4010, "invoke function timeout", InvocationTimeoutError, "failed"),
        ("FAIL", 4205, "runtime memory limit exceeded", WorkerDiedError, "failed"),
        ("FAIL", 4002, json.dumps({"errorMessage": "ValueError: v"}), FunctionError, "failed"),
        ("DISCARD", 0, "request expired", ServiceUnavailableError, "failed"),
    ],
)
def test_async_records_map_to_statuses_and_errors(
    status: str, code: int, message: str, expected: type[Exception] | None, state: str
) -> None:
    record = SimpleNamespace(
        request_id="r-2", status=status, error_code=code, error_message=message
    )
    invocation = fake(record=record).invoke_async(b"x")
    assert invocation.poll() == state
    if expected is None:
        assert invocation.error is None
    else:
        assert isinstance(invocation.error, expected)


# --------------------------------------------------------------------------- deploy


def test_deploy_creates_then_updates_and_uploads_the_shim(
    emulator: FunctionGraphEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    function = backend(emulator, memory_mb=512, timeout=60)
    first = function.deploy(
        secret=SECRET, environment={"FAASML_HANDLER": DISPATCH}, dependencies=False
    )
    second = function.deploy(
        secret=SECRET, environment={"FAASML_HANDLER": DISPATCH}, dependencies=False
    )
    assert first.startswith("created FunctionGraph function " + function.urn)
    assert second.startswith("updated FunctionGraph function " + function.urn)
    assert [op for op, _ in emulator.calls] == [
        "show_function_config",
        "create_function",
        "show_function_config",
        "update_function_code",
        "update_function_config",
    ]
    (deployed,) = emulator.functions.values()
    assert (deployed.created, deployed.code_updates, deployed.config_updates) == (1, 1, 1)
    assert (deployed.memory_size, deployed.timeout, deployed.handler) == (512, 60, "index.handler")

    operation, create = emulator.bodies[0]
    assert operation == "create_function"
    assert create["code_type"] == "zip" and create["runtime"] == "Python3.10"
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(create["func_code"]["file"])))
    names = set(archive.namelist())
    assert {"index.py", "faasml/__init__.py", "faasml/providers/huawei/handler.py"} <= names
    assert "faasml.providers.huawei.handler import handler" in archive.read("index.py").decode()
    # The secret travels only in FunctionGraph's encrypted variables.
    assert json.loads(create["encrypted_user_data"]) == {"FAASML_SECRET": SECRET}
    assert json.loads(create["user_data"]) == {"FAASML_HANDLER": DISPATCH}
    _, update = emulator.bodies[2]
    assert json.loads(update["encrypted_user_data"]) == {"FAASML_SECRET": SECRET}

    assert function.environment() == {"FAASML_HANDLER": "***", "FAASML_SECRET": "***"}
    for text in (first, second, repr(function), caplog.text):
        assert SECRET not in text and SECRET_KEY not in text
    # The deployed function really runs with that environment.
    assert function.invoke(b"env_value:FAASML_SECRET") == SECRET.encode()


def test_deploy_builds_dependencies_for_the_runtime(
    emulator: FunctionGraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    real_build = function_module.build_zip

    def spy_build(entry_files: Any, **options: Any) -> bytes:
        seen.update(options)
        return real_build(entry_files)  # without pip: no network here

    monkeypatch.setattr(function_module, "build_zip", spy_build)
    backend(emulator, runtime="Python3.9").deploy(secret=SECRET)
    assert seen["python_version"] == "3.9"
    assert list(seen["dependencies"]) == function_module.runtime_requirements("huawei")


@pytest.mark.parametrize(
    "environment",
    [
        {"FAASML_SECRET": "x"},
        {"1BAD": "x"},
        {f"VAR_{i}": "x" for i in range(21)},
        {"BIG": "x" * 5000},
    ],
)
def test_deploy_rejects_bad_environments(
    emulator: FunctionGraphEmulator, environment: dict[str, str]
) -> None:
    with pytest.raises(ConfigurationError):
        backend(emulator).deploy(secret=SECRET, environment=environment, dependencies=False)
    assert emulator.calls == []


# --------------------------------------------------------------------------- configuration


def test_credentials_from_env_references_never_show(
    emulator: FunctionGraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HW_AK", emulator.access_key)
    monkeypatch.setenv("HW_SK", SECRET_KEY)
    function = backend(emulator, access_key={"$env": "HW_AK"}, secret_key={"$env": "HW_SK"})
    deploy_dispatch(function)
    assert function.invoke(b"echo:ok") == b"ok"
    for text in (repr(function), str(function), str(dict(function.environment()))):
        assert SECRET_KEY not in text and emulator.access_key not in text and SECRET not in text


def test_defaults_come_from_the_sdk_environment(
    emulator: FunctionGraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", emulator.access_key)
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", SECRET_KEY)
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", emulator.project_id)
    monkeypatch.setenv("HUAWEICLOUD_SDK_REGION", emulator.region)
    function = FunctionGraphFunction(endpoint=emulator.endpoint, timeout=3)
    assert function.urn == emulator.urn("faasml")
    deploy_dispatch(function)
    assert function.invoke(b"echo:env") == b"env"


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_AK"),
        ("HUAWEICLOUD_SDK_PROJECT_ID", "HUAWEICLOUD_SDK_PROJECT_ID"),
        ("HUAWEICLOUD_SDK_REGION", "HUAWEICLOUD_SDK_REGION"),
    ],
)
def test_missing_settings_name_what_to_set(
    monkeypatch: pytest.MonkeyPatch, unset: str, named: str
) -> None:
    for var, value in (
        ("HUAWEICLOUD_SDK_AK", "ak"),
        ("HUAWEICLOUD_SDK_SK", "sk"),
        ("HUAWEICLOUD_SDK_PROJECT_ID", "p"),
        ("HUAWEICLOUD_SDK_REGION", "cn-north-4"),
    ):
        monkeypatch.setenv(var, value)
    monkeypatch.delenv(unset)
    with pytest.raises(ConfigurationError, match=named):
        FunctionGraphFunction()


def test_unset_env_reference_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="FAASML_TEST_UNSET_SK"):
        FunctionGraphFunction(
            region="cn-north-4",
            project_id="p",
            access_key="ak",
            secret_key={"$env": "FAASML_TEST_UNSET_SK"},
        )


@pytest.mark.parametrize(
    "options",
    [
        {"function": "9starts-with-digit"},
        {"timeout": 1},
        {"timeout": float("nan")},
        {"memory_mb": 64},
        {"runtime": "Node.js16.17"},
        {"concurrency": 0},
        {"max_retries": -1},
        {"backoff": -1.0},
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any]) -> None:
    settings: dict[str, Any] = {
        "region": "cn-north-4",
        "project_id": "p",
        "access_key": "ak",
        "secret_key": "sk",
    }
    settings.update(options)
    name = settings.pop("function", "faasml")
    with pytest.raises(ConfigurationError):
        FunctionGraphFunction(name, **settings)


def test_registration_record() -> None:
    (record,) = faasml_function_backends()
    assert record.name == "huawei"
    assert record.extra == "huawei"
    assert record.requires == ("huaweicloudsdkfunctiongraph",)
    assert (record.default_storage, record.default_pubsub) == ("obs", "smn")
    assert record.cls == "faasml.providers.huawei.function:FunctionGraphFunction"


# --------------------------------------------------------------------------- the shim


def test_shim_unwraps_runs_and_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASML_HANDLER", DISPATCH)
    assert shim_handler(_shim.wrap(b"echo:\x01\x02"), None) == _shim.wrap(b"\x01\x02")
    with pytest.raises(ValueError, match="not a faasml envelope"):
        shim_handler({"message": "Hello World"}, None)
    with pytest.raises(ValueError, match="conformance"):
        shim_handler(_shim.wrap(b"raise_value_error:conformance"), None)


# --------------------------------------------------------------------------- end to end


def test_a_faasml_job_runs_through_functiongraph(
    emulator: FunctionGraphEmulator, tmp_path: Any
) -> None:
    function = backend(emulator, timeout=30)
    function.deploy(secret=SECRET, dependencies=False)  # the default handler: faasml.runtime
    with faasml.connect(
        function,
        storage="file",
        pubsub="local",
        storage_options={"root": str(tmp_path / "store")},
        pubsub_options={"path": str(tmp_path / "q")},
        secret=SECRET,
        retries=0,
        progress=False,
    ) as cloud:
        assert list(cloud.map(pow, [2, 3], [5, 2])) == [32, 9]
    assert any(op in ("invoke_function", "async_invoke_function") for op, _ in emulator.calls)

"""OpenWhisk backend behaviour beyond the shared suite: configuration, deploy, errors, polling."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import time
import zipfile
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
from faasml.providers.openwhisk import faasml_function_backends
from faasml.providers.openwhisk.function import OpenWhiskFunction, OpenWhiskInvocation
from faasml.providers.openwhisk.handler import main

from .emulator import OpenWhiskEmulator
from .support import API_HOST, AUTH, SECRET, TEST_ENVIRONMENT, make_function

ACTION_PATH = "/api/v1/namespaces/_/actions/faasml"


def _posts(emulator: OpenWhiskEmulator) -> list[int]:
    """Statuses of the invoke requests the controller answered, in order."""
    return [status for method, path, status in emulator.log if method == "POST"]


def _wait(invocation: OpenWhiskInvocation, limit: float = 30.0) -> str:
    deadline = time.monotonic() + limit
    while invocation.poll() == "running":
        assert time.monotonic() < deadline, "the invocation never finished"
        time.sleep(0.02)
    return invocation.status


# --------------------------------------------------------------------------- registration


def test_registration_record() -> None:
    (record,) = faasml_function_backends()
    assert record.name == "openwhisk"
    assert record.cls == "faasml.providers.openwhisk.function:OpenWhiskFunction"
    assert record.extra == "openwhisk"
    assert record.requires == ("requests",)
    assert (record.default_storage, record.default_pubsub) == ("redis", "redis")


# --------------------------------------------------------------------------- configuration


def test_credentials_default_to_the_wsk_property_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    props = tmp_path / "wskprops"
    props.write_text(f"# written by wsk\nAPIHOST=openwhisk.example.org:443\nAUTH={AUTH}\n")
    monkeypatch.setenv("WSK_CONFIG_FILE", str(props))
    function = OpenWhiskFunction()
    assert function.api_host == "https://openwhisk.example.org:443"
    assert AUTH.split(":")[1] not in repr(function)


def test_missing_credentials_name_both_ways_to_configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSK_CONFIG_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigurationError) as caught:
        OpenWhiskFunction()
    message = str(caught.value)
    assert "api_host=" in message and "auth=" in message
    assert "wsk property set" in message and str(tmp_path / "absent") in message


def test_auth_from_an_environment_reference(
    emulator: OpenWhiskEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OW_TEST_AUTH", AUTH)
    function = OpenWhiskFunction(API_HOST, {"$env": "OW_TEST_AUTH"}, timeout=3.0)
    with pytest.raises(NotFoundError):  # authenticated, the action just is not there yet
        function.invoke(b"echo:x")
    assert emulator.log[-1][2] == 404


def test_malformed_auth_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        OpenWhiskFunction(API_HOST, "no-colon-in-this-key")
    assert "no-colon-in-this-key" not in str(caught.value)
    assert "uuid:key" in str(caught.value)


@pytest.mark.parametrize("timeout", [0.05, 300.5, math.nan, True])
def test_timeout_outside_openwhisks_range_is_refused(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match=r"0\.1 to 300"):
        OpenWhiskFunction(API_HOST, AUTH, timeout=timeout)


@pytest.mark.parametrize("memory_mb", [64, 1024])
def test_memory_outside_openwhisks_range_is_refused(memory_mb: int) -> None:
    with pytest.raises(ConfigurationError, match="128 to 512"):
        OpenWhiskFunction(API_HOST, AUTH, memory_mb=memory_mb)


def test_payload_limit_accounts_for_base64_and_json() -> None:
    from faasml.providers._shim import wrapped_size

    limit = OpenWhiskFunction.max_payload_bytes
    assert wrapped_size(limit) <= 1024 * 1024 < wrapped_size(limit + 1)


# --------------------------------------------------------------------------- deploy


def test_deploy_creates_then_updates_the_action(emulator: OpenWhiskEmulator) -> None:
    function = make_function()
    first = function.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    second = function.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    assert first.startswith("created OpenWhisk action /_/faasml") and "version 0.0.1" in first
    assert second.startswith("updated OpenWhisk action /_/faasml") and "version 0.0.2" in second
    assert list(emulator.actions) == [("guest", "faasml")]
    puts = [(m, p) for m, p, s in emulator.log if m == "PUT"]
    assert puts == [("PUT", ACTION_PATH)] * 2
    assert function.invoke(b"echo:still works") == b"still works"


def test_deploy_uploads_faasml_with_the_entry_file_limits_and_init_parameters(
    emulator: OpenWhiskEmulator,
) -> None:
    function = make_function(timeout=2.5, memory_mb=512, kind="python:3.10")
    function.deploy(secret=SECRET, environment={"FAASML_HANDLER": "m:f"}, dependencies=False)
    action = emulator.actions[("guest", "faasml")]
    archive = zipfile.ZipFile(io.BytesIO(action.code))
    names = set(archive.namelist())
    assert {"__main__.py", "faasml/__init__.py", "faasml/providers/openwhisk/handler.py"} <= names
    entry = archive.read("__main__.py").decode()
    assert "from faasml.providers.openwhisk.handler import main" in entry
    assert (action.kind, action.main) == ("python:3.10", "main")
    assert action.limits == {"timeout": 2500, "memory": 512, "concurrency": 1}
    params = {p["key"]: p for p in action.parameters}
    assert params["FAASML_SECRET"] == {"key": "FAASML_SECRET", "value": SECRET, "init": True}
    assert params["FAASML_HANDLER"]["init"] is True
    # Init parameters become the container's environment, never activation arguments.
    assert action.defaults() == {}
    assert action.environment() == {"FAASML_SECRET": SECRET, "FAASML_HANDLER": "m:f"}


def test_deploy_never_shows_the_secret(
    emulator: OpenWhiskEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    function = make_function()
    with caplog.at_level(logging.DEBUG):
        line = function.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    hidden = [SECRET, *TEST_ENVIRONMENT.values(), AUTH.split(":")[1]]
    shown = [line, caplog.text, repr(function), str(dict(function.environment()))]
    for value in hidden:
        assert not any(value in text for text in shown), value
    assert function.environment() == {
        "FAASML_SECRET": "***",
        "FAASML_HANDLER": "***",
        "FAASML_CONFORMANCE_VAR": "***",
    }
    assert "FAASML_SECRET" in line  # the names are shown, the values never


def test_deploy_refuses_the_secret_in_environment(emulator: OpenWhiskEmulator) -> None:
    with pytest.raises(ConfigurationError, match="secret=") as caught:
        make_function().deploy(
            secret=SECRET, environment={"FAASML_SECRET": "other-value"}, dependencies=False
        )
    assert "other-value" not in str(caught.value)
    assert not emulator.actions


def test_deploy_with_a_kind_the_controller_lacks(emulator: OpenWhiskEmulator) -> None:
    with pytest.raises(ConfigurationError, match="'python:3.9' is not supported") as caught:
        make_function(kind="python:3.9").deploy(secret=SECRET, dependencies=False)
    # The controller's status and transaction id travel with the error, and the hint fits.
    assert caught.value.status == 400  # type: ignore[attr-defined]
    assert caught.value.code is not None  # type: ignore[attr-defined]
    assert caught.value.provider == "openwhisk"  # type: ignore[attr-defined]
    assert "check kind, timeout and memory_mb" in str(caught.value)


def test_deploy_with_wrong_credentials(emulator: OpenWhiskEmulator) -> None:
    function = OpenWhiskFunction(API_HOST, "someone:wrong-key")
    with pytest.raises(AuthenticationError) as caught:
        function.deploy(secret=SECRET, dependencies=False)
    assert caught.value.status == 401
    assert "wrong-key" not in str(caught.value)


# --------------------------------------------------------------------------- error mapping


def test_throttled_invocations_are_retried_then_succeed(
    deployed: OpenWhiskFunction, emulator: OpenWhiskEmulator
) -> None:
    emulator.throttle(2)
    assert deployed.invoke(b"echo:after throttling") == b"after throttling"
    assert _posts(emulator) == [429, 429, 200]


def test_throttling_past_max_retries_raises_throttled(emulator: OpenWhiskEmulator) -> None:
    function = make_function(max_retries=2)
    function.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    emulator.throttle(5, retry_after="0")
    with pytest.raises(ThrottledError) as caught:
        function.invoke(b"echo:x")
    assert caught.value.status == 429 and caught.value.retry_after == 0.0
    assert "Too many requests" in str(caught.value)
    assert _posts(emulator) == [429, 429, 429]


def test_retry_after_is_honoured(deployed: OpenWhiskFunction, emulator: OpenWhiskEmulator) -> None:
    deployed.invoke(b"echo:warm")
    emulator.throttle(1, retry_after="0.4")
    started = time.monotonic()
    assert deployed.invoke(b"echo:x") == b"x"
    assert time.monotonic() - started >= 0.4


def test_async_invocations_are_retried_when_throttled(
    deployed: OpenWhiskFunction, emulator: OpenWhiskEmulator
) -> None:
    emulator.throttle(1)
    invocation = deployed.invoke_async(b"echo:async")
    assert _wait(invocation) == "succeeded"
    assert invocation.result == b"async"


def test_wrong_credentials_raise_authentication_error(
    deployed: OpenWhiskFunction, emulator: OpenWhiskEmulator
) -> None:
    stranger = OpenWhiskFunction(API_HOST, "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:wrong")
    with pytest.raises(AuthenticationError, match="401") as caught:
        stranger.invoke(b"echo:x")
    assert "The supplied authentication is invalid" in str(caught.value)
    assert caught.value.code is not None  # the controller's transaction id


def test_another_namespace_raises_permission_denied(deployed: OpenWhiskFunction) -> None:
    other = OpenWhiskFunction(API_HOST, AUTH, namespace="someone-else")
    with pytest.raises(PermissionDeniedError, match="403"):
        other.invoke(b"echo:x")


def test_missing_action_says_how_to_deploy(emulator: OpenWhiskEmulator) -> None:
    function = make_function(action="not-deployed")
    for call in (function.invoke, function.invoke_async):
        with pytest.raises(NotFoundError, match="faasml deploy --provider openwhisk"):
            call(b"echo:x")


def test_payload_over_the_limit_is_refused_before_sending(
    deployed: OpenWhiskFunction, emulator: OpenWhiskEmulator
) -> None:
    with pytest.raises(PayloadTooLargeError, match=str(deployed.max_payload_bytes)):
        deployed.invoke_async(bytes(deployed.max_payload_bytes + 1))
    assert _posts(emulator) == []


def test_controller_413_raises_payload_too_large(
    deployed: OpenWhiskFunction, emulator: OpenWhiskEmulator
) -> None:
    # A backend that thinks the limit is higher: the controller's own 413 is still mapped.
    deployed.max_payload_bytes = 2 * 1024 * 1024  # type: ignore[misc]
    with pytest.raises(PayloadTooLargeError, match="413"):
        deployed.invoke(bytes(1024 * 1024))
    assert _posts(emulator) == [413]


@pytest.mark.parametrize("status", [500, 503])
def test_platform_5xx_raises_service_unavailable(
    deployed: OpenWhiskFunction, emulator: OpenWhiskEmulator, status: int
) -> None:
    emulator.fail(status)
    with pytest.raises(ServiceUnavailableError) as caught:
        deployed.invoke(b"echo:x")
    assert caught.value.status == status
    assert deployed.invoke(b"echo:next") == b"next"


def test_unreachable_controller_raises_service_unavailable(emulator: OpenWhiskEmulator) -> None:
    function = OpenWhiskFunction("https://unreachable.test", AUTH)
    with pytest.raises(ServiceUnavailableError, match="unreachable.test"):
        function.invoke(b"echo:x")


def test_oversized_result_maps_to_payload_too_large(deployed: OpenWhiskFunction) -> None:
    record = {
        "response": {
            "status": "action developer error",
            "result": {
                "error": "The action produced a response that exceeded the allowed length: "
                "2097152 > 1048576 bytes."
            },
        }
    }
    result, error = deployed._record_outcome(record, "abc")
    assert result is None and isinstance(error, PayloadTooLargeError)


def test_memory_exhaustion_maps_to_worker_died(deployed: OpenWhiskFunction) -> None:
    error = deployed._result_error("The action exhausted its memory and was aborted.", "abc")
    assert isinstance(error, WorkerDiedError)


# --------------------------------------------------------------------------- blocking 202


def test_blocking_invoke_past_the_controller_wait_polls_the_activation(
    deployed: OpenWhiskFunction, emulator: OpenWhiskEmulator
) -> None:
    emulator.blocking_wait = 0.1
    assert deployed.invoke(b"sleep_then_echo:0.6") == b"0.6"
    assert _posts(emulator) == [202]
    gets = [status for method, path, status in emulator.log if "/activations/" in path]
    assert gets[0] == 404 and gets[-1] == 200


def test_blocking_invoke_past_the_wait_and_the_time_limit_times_out(
    emulator: OpenWhiskEmulator,
) -> None:
    emulator.blocking_wait = 0.1
    function = make_function(timeout=1.0)
    function.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    with pytest.raises(InvocationTimeoutError, match="1000 milliseconds"):
        function.invoke(b"sleep_then_echo:5")


# --------------------------------------------------------------------------- async polling


def test_async_status_comes_from_the_activation_record(
    deployed: OpenWhiskFunction, emulator: OpenWhiskEmulator
) -> None:
    invocation = deployed.invoke_async(b"sleep_then_echo:0.3")
    assert invocation.poll() == "running"
    assert ("GET", f"/api/v1/namespaces/_/activations/{invocation.id}", 404) in emulator.log
    assert _wait(invocation) == "succeeded"
    assert invocation.result == b"0.3" and invocation.error is None


def test_async_handler_error_carries_the_remote_traceback(deployed: OpenWhiskFunction) -> None:
    invocation = deployed.invoke_async(b"raise_value_error:async boom")
    assert _wait(invocation) == "failed"
    assert isinstance(invocation.error, FunctionError)
    assert invocation.error.remote_type == "ValueError"
    assert "async boom" in (invocation.error.remote_traceback or "")


def test_async_timeout_is_reported(emulator: OpenWhiskEmulator) -> None:
    function = make_function(timeout=0.5)
    function.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    invocation = function.invoke_async(b"sleep_then_echo:5")
    assert _wait(invocation) == "failed"
    assert isinstance(invocation.error, InvocationTimeoutError)


def test_a_slow_poll_leaves_the_status_running(
    deployed: OpenWhiskFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    invocation = deployed.invoke_async(b"echo:x")

    def slow(*args: object, **kwargs: object) -> requests.Response:
        raise requests.ReadTimeout("no answer within the poll timeout")

    monkeypatch.setattr(deployed._session, "get", slow)
    assert invocation.poll() == "running"
    monkeypatch.undo()
    assert _wait(invocation) == "succeeded"


# --------------------------------------------------------------------------- the shim


def test_shim_wraps_results_and_reports_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASML_HANDLER", "faasml.testing.handlers:dispatch")
    payload = base64.b64encode(b"echo:\x00\xff").decode()
    assert main({"faasml": payload}) == {"faasml": base64.b64encode(b"\x00\xff").decode()}
    failed = main({"faasml": base64.b64encode(b"raise_value_error:shim").decode()})
    assert failed["error"]["type"] == "ValueError" and "shim" in failed["error"]["message"]
    malformed = main({"not": "an envelope"})
    assert malformed["error"]["type"] == "ValueError"


# --------------------------------------------------------------------------- end to end


def test_a_faasml_job_runs_through_the_openwhisk_backend(
    emulator: OpenWhiskEmulator, tmp_path: Path
) -> None:
    backend = make_function(timeout=30.0)
    line = backend.deploy(secret=SECRET, dependencies=False)  # the default handler: the runtime
    assert line.startswith("created")
    assert emulator.actions[("guest", "faasml")].environment() == {"FAASML_SECRET": SECRET}
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
    assert any(method == "POST" for method, _, _ in emulator.log)


# --------------------------------------------------------------------------- transport failures


def test_blocking_invoke_without_an_answer_times_out(
    deployed: OpenWhiskFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    def silent(*args: object, **kwargs: object) -> requests.Response:
        raise requests.ReadTimeout("no answer")

    monkeypatch.setattr(deployed._session, "request", silent)
    with pytest.raises(InvocationTimeoutError, match="no answer within"):
        deployed.invoke(b"echo:x")
    with pytest.raises(ServiceUnavailableError, match="did not answer"):
        deployed.invoke_async(b"echo:x")


def test_deploy_bundles_the_runtime_requirements_for_the_kind(
    emulator: OpenWhiskEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faasml.providers import _package
    from faasml.providers.openwhisk import function as module

    seen: dict[str, object] = {}

    def build(entry_files: dict[str, str], **options: object) -> bytes:
        seen.update(options)
        # pip cannot reach an index here: build the same zip without the dependencies.
        return _package.build_zip(entry_files)

    monkeypatch.setattr(module, "build_zip", build)
    make_function(kind="python:3.11").deploy(secret=SECRET)
    assert seen["dependencies"] == _package.runtime_requirements("openwhisk")
    assert "requests>=2.28" in seen["dependencies"]  # type: ignore[operator]
    assert (seen["python_version"], seen["platform"]) == ("3.11", "manylinux2014_x86_64")


# --------------------------------------------------------------------------- review fixes


def _canned(status: int, body: str, headers: dict[str, str] | None = None) -> requests.Response:
    """A controller answer built by hand, for answers the emulator never gives."""
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.headers.update({"Content-Type": "application/json", **(headers or {})})
    response.url = f"{API_HOST}{ACTION_PATH}"
    return response


def _answer(
    monkeypatch: pytest.MonkeyPatch, function: OpenWhiskFunction, **by_method: requests.Response
) -> None:
    """Make ``function``'s session answer each HTTP method with a canned response."""

    def request(method: str, url: str, **kwargs: object) -> requests.Response:
        return by_method[method]

    monkeypatch.setattr(function._session, "request", request)


def test_connect_timeout_on_a_blocking_invoke_is_an_unreachable_controller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    function = make_function()

    def unreachable(*args: object, **kwargs: object) -> requests.Response:
        raise requests.ConnectTimeout("connect timed out")

    monkeypatch.setattr(function._session, "request", unreachable)
    with pytest.raises(ServiceUnavailableError, match="openwhisk.test") as caught:
        function.invoke(b"echo:x")
    assert not isinstance(caught.value, InvocationTimeoutError)
    assert "ConnectTimeout" in str(caught.value)


def test_invoke_time_400_carries_the_controllers_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    function = make_function()
    body = json.dumps({"error": "The request content was malformed.", "code": "tx-4711"})
    _answer(monkeypatch, function, POST=_canned(400, body))
    for call in (function.invoke, function.invoke_async):
        with pytest.raises(ConfigurationError) as caught:
            call(b"echo:x")
        error = caught.value
        assert (error.status, error.code) == (400, "tx-4711")  # type: ignore[attr-defined]
        message = str(error)
        assert "The request content was malformed." in message
        assert "refused the activation request" in message
        assert "memory_mb" not in message  # the deploy hint is for deploy requests only


@pytest.mark.parametrize(
    ("call", "status", "body"),
    [
        ("invoke", 202, '["not", "an", "object"]'),
        ("invoke_async", 202, '"a string"'),
        ("invoke", 200, "<html>" + "gateway page " * 100 + "</html>"),
        ("deploy", 200, "[1, 2, 3]"),
    ],
    ids=["invoke-202-list", "invoke_async-202-string", "invoke-200-html", "deploy-200-list"],
)
def test_malformed_controller_bodies_raise_provider_error_quoting_them(
    monkeypatch: pytest.MonkeyPatch, call: str, status: int, body: str
) -> None:
    function = make_function()
    _answer(
        monkeypatch,
        function,
        POST=_canned(status, body),
        GET=_canned(404, '{"error": "The requested resource does not exist."}'),
        PUT=_canned(status, body),
    )
    with pytest.raises(ProviderError) as caught:
        if call == "deploy":
            function.deploy(secret=SECRET, dependencies=False)
        else:
            getattr(function, call)(b"echo:x")
    message = str(caught.value)
    assert body[:40] in message
    if len(body) > 200:
        assert f"({len(body)} characters)" in message and body not in message


def test_a_malformed_activation_record_fails_the_invocation_quoting_it(
    deployed: OpenWhiskFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    invocation = deployed.invoke_async(b"echo:x")
    monkeypatch.setattr(deployed._session, "get", lambda *a, **k: _canned(200, '["record"]'))
    assert invocation.poll() == "failed"
    assert isinstance(invocation.error, ProviderError)
    assert '["record"]' in str(invocation.error)


def test_a_kind_without_a_python_version_refuses_to_build_dependencies() -> None:
    function = make_function(kind="python:3")
    with pytest.raises(ConfigurationError) as caught:
        function.deploy(secret=SECRET)
    message = str(caught.value)
    assert "'python:3'" in message and "python:X.Y" in message
    assert "dependencies=False" in message


def test_python_default_builds_for_the_platform_default(
    emulator: OpenWhiskEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faasml.providers import _package
    from faasml.providers.openwhisk import function as module

    seen: dict[str, object] = {}

    def build(entry_files: dict[str, str], **options: object) -> bytes:
        seen.update(options)
        return _package.build_zip(entry_files)

    monkeypatch.setattr(module, "build_zip", build)
    make_function(kind="python:default").deploy(secret=SECRET)
    assert seen["python_version"] == "3.10"


def test_a_too_large_zip_names_the_limit_the_size_and_a_deployable_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from faasml.providers.openwhisk import function as module

    archive = bytes(37 * 1024 * 1024)  # 49.3 MB as base64
    monkeypatch.setattr(module, "build_zip", lambda *a, **k: archive)
    with pytest.raises(PayloadTooLargeError) as caught:
        make_function().deploy(secret=SECRET, dependencies=False)
    message = str(caught.value)
    assert "48 MB" in message and str(len(archive)) in message
    assert "--no-dependencies" in message and "numpy" in message
    assert "custom runtime image" not in message


def test_a_400_while_polling_fails_the_invocation(
    deployed: OpenWhiskFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    invocation = deployed.invoke_async(b"echo:x")
    body = json.dumps({"error": "The activation id is not valid.", "code": "tx-400"})
    monkeypatch.setattr(deployed._session, "get", lambda *a, **k: _canned(400, body))
    assert invocation.poll() == "failed"
    assert isinstance(invocation.error, ConfigurationError)
    assert invocation.error.status == 400  # type: ignore[attr-defined]
    assert "The activation id is not valid." in str(invocation.error)


def test_the_async_record_deadline_is_documented() -> None:
    doc = OpenWhiskFunction.invoke_async.__doc__ or ""
    assert "+ 30 s after submission" in " ".join(doc.split())
    assert "queued" in doc and "InvocationTimeoutError" in doc

"""LambdaFunction against the Lambda emulator: error mapping, retries, Event invokes, deploy."""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable
from typing import Any

import pytest

import faasml
from faasml.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ThrottledError,
)
from faasml.providers.aws import function as lambda_module
from faasml.providers.aws.function import HANDLER, LambdaFunction

from .conftest import CREDENTIALS, SECRET
from .emulator import ASYNC_LIMIT, LambdaEmulator

DISPATCH = {"FAASML_HANDLER": "faasml.testing.handlers:dispatch"}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the backoff waits instead of sleeping."""
    waits: list[float] = []
    monkeypatch.setattr(lambda_module, "_sleep", waits.append)
    return waits


@pytest.fixture
def echo(make_backend: Callable[..., LambdaFunction]) -> LambdaFunction:
    backend = make_backend("errors", max_retries=2)
    backend.deploy(secret=SECRET, environment=DISPATCH, dependencies=False)
    return backend


def _invokes(emulator: LambdaEmulator, since: int) -> list[int]:
    return [record.status for record in emulator.invocations[since:]]


# ---- throttling and service errors


def test_throttled_then_success_retries_with_retry_after(
    echo: LambdaFunction, emulator: LambdaEmulator, sleeps: list[float]
) -> None:
    before = len(emulator.invocations)
    emulator.inject("TooManyRequestsException", 2, retry_after="0.5")
    assert echo.invoke(b"echo:hi") == b"hi"
    assert _invokes(emulator, before) == [429, 429, 200]
    assert len(sleeps) == 2 and all(wait >= 0.5 for wait in sleeps)


def test_throttling_exhausted_raises_throttled_error(
    echo: LambdaFunction, emulator: LambdaEmulator, sleeps: list[float]
) -> None:
    before = len(emulator.invocations)
    emulator.inject("TooManyRequestsException", 3, retry_after="1")
    with pytest.raises(ThrottledError) as caught:
        echo.invoke(b"echo:hi")
    assert _invokes(emulator, before) == [429, 429, 429]  # first try + max_retries=2
    assert caught.value.retry_after == 1.0
    assert caught.value.code == "TooManyRequestsException"
    assert caught.value.status == 429
    assert "3 attempts" in str(caught.value)
    assert sleeps == [1.0, 1.0]


def test_retry_after_longer_than_the_cap_is_not_waited_for(
    echo: LambdaFunction, emulator: LambdaEmulator, sleeps: list[float]
) -> None:
    emulator.inject("TooManyRequestsException", 1, retry_after="3600")
    with pytest.raises(ThrottledError) as caught:
        echo.invoke(b"echo:hi")
    assert caught.value.retry_after == 3600.0
    assert sleeps == []


def test_backoff_grows_exponentially_without_retry_after(
    echo: LambdaFunction, emulator: LambdaEmulator, sleeps: list[float]
) -> None:
    echo.retry_base_delay = 0.1
    emulator.inject("TooManyRequestsException", 2)
    assert echo.invoke(b"echo:ok") == b"ok"
    first, second = sleeps
    assert 0.05 <= first <= 0.1 and 0.1 <= second <= 0.2


def test_service_error_then_success(
    echo: LambdaFunction, emulator: LambdaEmulator, sleeps: list[float]
) -> None:
    before = len(emulator.invocations)
    emulator.inject("ServiceException", 1)
    assert echo.invoke(b"echo:again") == b"again"
    assert _invokes(emulator, before) == [500, 200]


def test_service_error_exhausted_raises_service_unavailable(
    echo: LambdaFunction, emulator: LambdaEmulator, sleeps: list[float]
) -> None:
    emulator.inject("ServiceException", 3)
    with pytest.raises(ServiceUnavailableError) as caught:
        echo.invoke(b"echo:x")
    assert caught.value.status == 500
    assert caught.value.code == "ServiceException"
    assert len(sleeps) == 2


def test_ec2_throttling_counts_as_throttling(
    echo: LambdaFunction, emulator: LambdaEmulator, sleeps: list[float]
) -> None:
    emulator.inject("EC2ThrottledException", 1)
    assert echo.invoke(b"echo:x") == b"x"
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("UnrecognizedClientException", AuthenticationError),
        ("AccessDeniedException", PermissionDeniedError),
    ],
)
def test_credential_errors_are_not_retried(
    echo: LambdaFunction,
    emulator: LambdaEmulator,
    sleeps: list[float],
    code: str,
    error: type[Exception],
) -> None:
    emulator.inject(code, 1)
    with pytest.raises(error):
        echo.invoke(b"echo:x")
    assert sleeps == []


def test_missing_function_raises_not_found_naming_deploy(
    make_backend: Callable[..., LambdaFunction], sleeps: list[float]
) -> None:
    backend = make_backend("never-deployed")
    for call in (backend.invoke, backend.invoke_async):
        with pytest.raises(NotFoundError) as caught:
            call(b"echo:x")
        assert "faasml deploy --provider aws" in str(caught.value)
        assert caught.value.status == 404
    assert sleeps == []


def test_too_large_payload_is_refused_before_sending(
    echo: LambdaFunction, emulator: LambdaEmulator
) -> None:
    before = len(emulator.requests)
    with pytest.raises(PayloadTooLargeError) as caught:
        echo.invoke_async(bytes(echo.max_payload_bytes + 1))
    assert str(echo.max_payload_bytes) in str(caught.value)
    assert len(emulator.requests) == before
    # The limit is exact: the envelope of a payload at the limit fits the 1 MB Event limit.
    assert lambda_module._shim.wrapped_size(echo.max_payload_bytes) <= ASYNC_LIMIT
    assert lambda_module._shim.wrapped_size(echo.max_payload_bytes + 1) > ASYNC_LIMIT


def test_service_side_413_maps_to_payload_too_large(
    echo: LambdaFunction, emulator: LambdaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lift the client-side check to see what Lambda itself answers.
    monkeypatch.setattr(LambdaFunction, "max_payload_bytes", 4 * ASYNC_LIMIT)
    with pytest.raises(PayloadTooLargeError) as caught:
        echo.invoke_async(b"echo:" + bytes(ASYNC_LIMIT))
    assert caught.value.status == 413
    assert caught.value.code == "RequestTooLargeException"


def test_event_invocation_is_accepted_and_status_unknown(
    echo: LambdaFunction, emulator: LambdaEmulator
) -> None:
    invocation = echo.invoke_async(b"echo:background")
    record = emulator.invocations[-1]
    assert (record.invocation_type, record.status) == ("Event", 202)
    assert invocation.id == record.request_id
    assert invocation.poll() == "unknown"


# ---- deploy


def test_deploy_creates_then_skips_then_updates(
    make_backend: Callable[..., LambdaFunction], emulator: LambdaEmulator
) -> None:
    backend = make_backend("deploy-cycle", memory_mb=512)
    uploads = len(emulator.uploads)
    line = backend.deploy(secret=SECRET, environment=DISPATCH, dependencies=False)
    assert "'deploy-cycle'" in line and "created" in line
    assert len(emulator.uploads) == uploads + 1
    config = emulator.functions["deploy-cycle"].config
    assert config["State"] == "Active"  # deploy waited for Pending to pass
    assert config["Handler"] == HANDLER
    assert config["MemorySize"] == 512 and config["Timeout"] == 3
    assert config["Environment"]["Variables"] == {**DISPATCH, "FAASML_SECRET": SECRET}
    assert backend.invoke(b"echo:deployed") == b"deployed"

    requests = len(emulator.requests)
    assert "unchanged" in backend.deploy(secret=SECRET, environment=DISPATCH, dependencies=False)
    assert len(emulator.uploads) == uploads + 1
    assert [m for m, _ in emulator.requests[requests:]] == ["GET"]  # only the lookup

    changed = make_backend("deploy-cycle", memory_mb=1024, timeout=5.0)
    line = changed.deploy(secret=SECRET, environment=DISPATCH, dependencies=False)
    assert "updated configuration (MemorySize, Timeout)" in line
    assert len(emulator.uploads) == uploads + 1
    assert emulator.functions["deploy-cycle"].config["MemorySize"] == 1024
    assert emulator.functions["deploy-cycle"].config["LastUpdateStatus"] == "Successful"


def test_deploy_uploads_changed_code_and_waits_between_updates(
    make_backend: Callable[..., LambdaFunction],
    emulator: LambdaEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = make_backend("code-change")
    backend.deploy(secret=SECRET, environment=DISPATCH, dependencies=False)
    build = lambda_module._package.build_zip

    def changed_zip(entry_files: dict[str, str], **options: Any) -> bytes:
        return build({"VERSION.txt": "2"}, **options)

    monkeypatch.setattr(lambda_module._package, "build_zip", changed_zip)
    requests = len(emulator.requests)
    line = backend.deploy(secret="another-secret", environment=DISPATCH, dependencies=False)
    assert "updated code and configuration (Environment)" in line
    puts = [path for method, path in emulator.requests[requests:] if method == "PUT"]
    assert puts == [
        "/2015-03-31/functions/code-change/code",
        "/2015-03-31/functions/code-change/configuration",
    ]
    with zipfile.ZipFile(io.BytesIO(emulator.uploads[-1])) as zipped:
        assert "VERSION.txt" in zipped.namelist()
    assert backend.invoke(b"env_value:FAASML_SECRET") == b"another-secret"


def test_deployed_zip_has_faasml_and_the_handler(
    make_backend: Callable[..., LambdaFunction], emulator: LambdaEmulator
) -> None:
    backend = make_backend("zip-contents")
    backend.deploy(secret=SECRET, dependencies=False)
    with zipfile.ZipFile(io.BytesIO(emulator.uploads[-1])) as zipped:
        names = set(zipped.namelist())
    assert {
        "faasml/__init__.py",
        "faasml/runtime/__init__.py",
        "faasml/providers/aws/handler.py",
    } <= names
    assert SECRET.encode() not in emulator.uploads[-1]


def test_deploy_never_shows_the_secret(
    make_backend: Callable[..., LambdaFunction], caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend("secret-check")
    with caplog.at_level(logging.DEBUG, logger="faasml"):
        line = backend.deploy(secret=SECRET, environment=DISPATCH, dependencies=False)
        backend.deploy(secret=SECRET + "-new", environment=DISPATCH, dependencies=False)
    for text in (line, caplog.text, repr(backend), str(dict(backend.environment()))):
        assert SECRET not in text
    assert dict(backend.environment()) == {"FAASML_HANDLER": "***", "FAASML_SECRET": "***"}


def test_deploy_keeps_the_secret_out_of_botocore_debug_logs(
    make_backend: Callable[..., LambdaFunction], caplog: pytest.LogCaptureFixture
) -> None:
    # A user who turned on botocore's wire logging: it writes request and response bodies.
    wire = [logging.getLogger(name) for name in lambda_module._WIRE_LOGGERS]
    saved = [logger.level for logger in wire]
    for logger in wire:
        logger.setLevel(logging.DEBUG)
    try:
        backend = make_backend("secret-wire")
        with caplog.at_level(logging.DEBUG):  # every logger, from the root
            backend.deploy(secret=SECRET, environment=DISPATCH, dependencies=False)  # create
            # update: the lookup answers with the old secret, the request sends the new one
            backend.deploy(secret=SECRET + "-rotated", environment=DISPATCH, dependencies=False)
            # The levels the user chose are back, and botocore logs at DEBUG again.
            assert [logger.level for logger in wire] == [logging.DEBUG] * len(wire)
            before = len(caplog.records)
            assert backend.invoke(b"echo:after") == b"after"
            assert any(r.name.startswith("botocore") for r in caplog.records[before:])
    finally:
        for logger, level in zip(wire, saved, strict=True):
            logger.setLevel(level)
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.name


def test_deploy_without_dependencies_names_the_lambda_layer(
    make_backend: Callable[..., LambdaFunction],
) -> None:
    line = make_backend("no-deps").deploy(secret=SECRET, dependencies=False)
    assert "numpy" in line and "scipy" in line and "Lambda layer" in line


def test_deploy_without_role_names_the_option(make_backend: Callable[..., LambdaFunction]) -> None:
    backend = make_backend("no-role", role=None)
    with pytest.raises(ConfigurationError, match="role="):
        backend.deploy(secret=SECRET, dependencies=False)


def test_deploy_refuses_a_zip_over_the_inline_limit(
    make_backend: Callable[..., LambdaFunction], monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("faasml/providers/aws/handler.py", "")
        archive.writestr("big.bin", bytes(51 * 1024 * 1024))  # stored: the zip really is 51 MB
    monkeypatch.setattr(lambda_module._package, "build_zip", lambda *a, **k: buffer.getvalue())
    with pytest.raises(ConfigurationError, match="50 MB"):
        make_backend("too-big").deploy(secret=SECRET, dependencies=False)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"FAASML_SECRET": "x"}, "secret="),
        ({"1BAD": "x"}, "not valid"),
        ({"BIG": "x" * 5000}, "4096"),
    ],
)
def test_deploy_validates_the_environment(
    make_backend: Callable[..., LambdaFunction], environment: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_backend("bad-env").deploy(secret=SECRET, environment=environment, dependencies=False)


# ---- configuration and secrets


def test_repr_hides_credentials(emulator: LambdaEmulator) -> None:
    backend = LambdaFunction(
        region="eu-west-1",
        endpoint_url=emulator.endpoint_url,
        session_token="tok-9f8e",
        **CREDENTIALS,
    )
    text = repr(backend)
    for value in (*CREDENTIALS.values(), "tok-9f8e"):
        assert value not in text
    assert "'***'" in text and "eu-west-1" in text
    backend.close()


def test_credentials_from_environment_references(
    emulator: LambdaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_LAMBDA_KEY", "AKIDFROMENV")
    monkeypatch.setenv("TEST_LAMBDA_SECRET", "secret-from-env")
    backend = LambdaFunction(
        region="us-east-1",
        endpoint_url=emulator.endpoint_url,
        access_key_id={"$env": "TEST_LAMBDA_KEY"},
        secret_access_key={"$env": "TEST_LAMBDA_SECRET"},
    )
    assert backend._client._request_signer._credentials.access_key == "AKIDFROMENV"
    assert "{'$env': 'TEST_LAMBDA_KEY'}" in repr(backend)
    monkeypatch.delenv("TEST_LAMBDA_SECRET")
    with pytest.raises(ConfigurationError, match="TEST_LAMBDA_SECRET"):
        LambdaFunction(
            region="us-east-1",
            access_key_id={"$env": "TEST_LAMBDA_KEY"},
            secret_access_key={"$env": "TEST_LAMBDA_SECRET"},
        )


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": 901},
        {"memory_mb": 64},
        {"concurrency": 0},
        {"runtime": "nodejs20.x"},
        {"architecture": "sparc"},
        {"max_retries": -1},
        {"role": "faasml-role"},
    ],
)
def test_bad_options_raise_configuration_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        LambdaFunction(region="us-east-1", **CREDENTIALS, **options)


# ---- a real job end to end


def test_end_to_end_map_runs_through_lambda(
    make_backend: Callable[..., LambdaFunction], tmp_path: Any
) -> None:
    backend = make_backend("e2e", timeout=30.0)
    backend.deploy(secret=SECRET, dependencies=False)
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


def test_deploy_waits_for_a_function_still_being_created(
    make_backend: Callable[..., LambdaFunction],
    emulator: LambdaEmulator,
    lambda_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(emulator, "settle_seconds", 0.5)
    lambda_client.create_function(
        FunctionName="pending",
        Role="arn:aws:iam::123456789012:role/other",
        Runtime="python3.11",
        Handler="app.handler",
        Code={"ZipFile": lambda_module._package.build_zip({}, dependencies=[])},
    )
    assert emulator.functions["pending"].config["State"] == "Pending"
    line = make_backend("pending").deploy(secret=SECRET, dependencies=False)
    # Updating a Pending function would have been refused with 409 ResourceConflictException.
    assert "updated configuration (Environment, Handler, MemorySize, Role)" in line
    assert emulator.functions["pending"].config["Handler"] == HANDLER
    get_configuration = ("GET", "/2015-03-31/functions/pending/configuration")
    polls = emulator.requests[emulator.requests.index(get_configuration) :]
    assert polls.count(("GET", "/2015-03-31/functions/pending")) >= 2  # the waiter polled

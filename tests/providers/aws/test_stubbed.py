"""LambdaFunction against botocore's Stubber: function-error bodies and throttling, no network."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from faasml.errors import (
    FunctionError,
    InvocationTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProviderError,
    ThrottledError,
    WorkerDiedError,
)
from faasml.providers._shim import wrap
from faasml.providers.aws import function as lambda_module
from faasml.providers.aws.function import LambdaFunction

SYNC = {"FunctionName": "faasml", "InvocationType": "RequestResponse", "Payload": ANY}


@pytest.fixture
def stubbed() -> Iterator[tuple[LambdaFunction, Stubber]]:
    client = boto3.client(
        "lambda",
        region_name="us-east-1",
        aws_access_key_id="AKIDSTUB",
        aws_secret_access_key="stub-secret",
    )
    with Stubber(client) as stubber:
        yield LambdaFunction(client=client, max_retries=2, memory_mb=512), stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(lambda_module, "_sleep", waits.append)
    return waits


def _answer(body: Any, function_error: str | None = None) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response: dict[str, Any] = {
        "StatusCode": 200,
        "ExecutedVersion": "$LATEST",
        "Payload": StreamingBody(io.BytesIO(raw), len(raw)),
    }
    if function_error:
        response["FunctionError"] = function_error
    return response


def test_success_unwraps_the_envelope(stubbed: tuple[LambdaFunction, Stubber]) -> None:
    backend, stubber = stubbed
    stubber.add_response("invoke", _answer(wrap(b"\x00result\xff")), SYNC)
    assert backend.invoke(b"payload") == b"\x00result\xff"


def test_unhandled_exception_becomes_function_error(
    stubbed: tuple[LambdaFunction, Stubber],
) -> None:
    backend, stubber = stubbed
    report = {
        "errorMessage": "bad input",
        "errorType": "ValueError",
        "requestId": "6f1d4c0e-0000-4000-8000-000000000000",
        "stackTrace": [
            '  File "/var/task/faasml/providers/aws/handler.py", line 30, in lambda_handler\n'
            "    return wrap(target()(unwrap(event)))\n",
            '  File "/var/task/app.py", line 3, in handle\n    raise ValueError("bad input")\n',
        ],
    }
    stubber.add_response("invoke", _answer(report, "Unhandled"), SYNC)
    with pytest.raises(FunctionError) as caught:
        backend.invoke(b"x")
    assert caught.value.remote_type == "ValueError"
    assert "bad input" in str(caught.value)
    assert caught.value.remote_traceback is not None
    assert 'app.py", line 3, in handle' in caught.value.remote_traceback


@pytest.mark.parametrize(
    ("report", "error", "text"),
    [
        (
            {
                "errorType": "Sandbox.Timedout",
                "errorMessage": "RequestId: r-1 Error: Task timed out after 3.00 seconds",
            },
            InvocationTimeoutError,
            "timeout=",
        ),
        (  # the older spelling, without errorType
            {"errorMessage": "2023-06-04T12:04:07Z r-2 Task timed out after 3.00 seconds"},
            InvocationTimeoutError,
            "Task timed out",
        ),
        (
            {
                "errorType": "Runtime.ExitError",
                "errorMessage": "RequestId: r-3 Error: Runtime exited with error: exit status 1",
            },
            WorkerDiedError,
            "exit status 1",
        ),
        (
            {
                "errorType": "Runtime.OutOfMemory",
                "errorMessage": "RequestId: r-4 Error: Runtime exited with error: signal: killed",
            },
            WorkerDiedError,
            "512 MB",
        ),
        (
            {
                "errorType": "Function.ResponseSizeTooLarge",
                "errorMessage": "Response payload size exceeded maximum allowed payload size "
                "(6291556 bytes).",
            },
            PayloadTooLargeError,
            "object store",
        ),
    ],
)
def test_platform_failures_map_to_typed_errors(
    stubbed: tuple[LambdaFunction, Stubber],
    report: dict[str, str],
    error: type[Exception],
    text: str,
) -> None:
    backend, stubber = stubbed
    stubber.add_response("invoke", _answer(report, "Unhandled"), SYNC)
    with pytest.raises(error, match=text):
        backend.invoke(b"x")


def test_handled_error_and_non_json_error_body(stubbed: tuple[LambdaFunction, Stubber]) -> None:
    backend, stubber = stubbed
    stubber.add_response(
        "invoke", _answer({"errorType": "KeyError", "errorMessage": "'k'"}, "Handled"), SYNC
    )
    stubber.add_response("invoke", _answer(b"<html>gateway</html>", "Unhandled"), SYNC)
    with pytest.raises(FunctionError) as caught:
        backend.invoke(b"x")
    assert caught.value.remote_type == "KeyError"
    with pytest.raises(FunctionError, match="gateway"):
        backend.invoke(b"x")


def test_result_that_is_not_an_envelope_names_the_handler(
    stubbed: tuple[LambdaFunction, Stubber],
) -> None:
    backend, stubber = stubbed
    stubber.add_response("invoke", _answer({"statusCode": 200, "body": "hello"}), SYNC)
    with pytest.raises(ProviderError, match="faasml.providers.aws.handler.lambda_handler"):
        backend.invoke(b"x")


def test_throttled_then_success(
    stubbed: tuple[LambdaFunction, Stubber], sleeps: list[float]
) -> None:
    backend, stubber = stubbed
    stubber.add_client_error(
        "invoke",
        "TooManyRequestsException",
        "Rate Exceeded.",
        429,
        response_meta={"HTTPHeaders": {"retry-after": "2"}},
    )
    stubber.add_response("invoke", _answer(wrap(b"ok")), SYNC)
    assert backend.invoke(b"x") == b"ok"
    assert sleeps == [2.0]


def test_throttling_exhausted(stubbed: tuple[LambdaFunction, Stubber], sleeps: list[float]) -> None:
    backend, stubber = stubbed
    for _ in range(3):
        stubber.add_client_error("invoke", "TooManyRequestsException", "Rate Exceeded.", 429)
    with pytest.raises(ThrottledError) as caught:
        backend.invoke_async(b"x")
    assert caught.value.retry_after is None
    assert len(sleeps) == 2
    assert sleeps[0] <= backend.retry_base_delay and sleeps[1] <= 2 * backend.retry_base_delay


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("ResourceNotFoundException", 404, NotFoundError),
        ("KMSAccessDeniedException", 502, PermissionDeniedError),
        ("InvalidRequestContentException", 400, ProviderError),
    ],
)
def test_client_errors_are_mapped_without_retry(
    stubbed: tuple[LambdaFunction, Stubber],
    sleeps: list[float],
    code: str,
    status: int,
    error: type[ProviderError],
) -> None:
    backend, stubber = stubbed
    stubber.add_client_error("invoke", code, "nope", status)
    with pytest.raises(error) as caught:
        backend.invoke(b"x")
    assert caught.value.status == status
    assert sleeps == []

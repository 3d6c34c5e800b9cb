"""The botocore -> faasml error table shared by the s3 and sqs backends: every row, and the helpers.

ClientErrors come from ``botocore.stub.Stubber`` on offline clients (nothing is sent anywhere);
client-side botocore errors are constructed directly.
"""

from __future__ import annotations

import email.utils
import pickle
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    FaaSMLError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ThrottledError,
)
from faasml.storage._aws_errors import (
    BOTOCORE_ERROR_MAP,
    ERROR_CODE_MAP,
    MESSAGE_RULES,
    STATUS_MAP,
    aws_session,
    error_from_code,
    has_error_code,
    map_aws_errors,
    secret_for_config,
    translate_error,
)


@pytest.fixture
def s3() -> Iterator[Any]:
    """An S3 client that can only be stubbed: its endpoint is a closed loopback port."""
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    yield client
    client.close()


def _client_error(
    client: Any,
    code: str,
    *,
    status: int = 400,
    message: str = "service said no",
    headers: dict[str, str] | None = None,
    error_meta: dict[str, str] | None = None,
) -> ClientError:
    """Return the ClientError botocore raises for ``code`` (produced through a Stubber)."""
    meta: dict[str, Any] = {"RequestId": "req-123"}
    if headers is not None:
        meta["HTTPHeaders"] = headers
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "list_buckets",
            service_error_code=code,
            service_message=message,
            http_status_code=status,
            service_error_meta=error_meta,
            response_meta=meta,
        )
        with pytest.raises(ClientError) as caught:
            client.list_buckets()
    return caught.value


def _mapped(exc: BaseException, resource: str = "thing 'x'") -> BaseException:
    """Raise ``exc`` inside ``map_aws_errors`` and return what comes out."""
    with pytest.raises(BaseException) as caught:
        with map_aws_errors("s3", resource):
            raise exc
    return caught.value


# ---------------------------------------------------------------- the tables, row by row

# Written out independently of the module's tables, so that a wrong row fails a test.
EXPECTED_BY_CODE: dict[str, type[ProviderError]] = {
    "NoSuchKey": NotFoundError,
    "NoSuchBucket": NotFoundError,
    "NoSuchUpload": NotFoundError,
    "404": NotFoundError,
    "NotFound": NotFoundError,
    "AWS.SimpleQueueService.NonExistentQueue": NotFoundError,
    "QueueDoesNotExist": NotFoundError,
    "ResourceNotFoundException": NotFoundError,
    "AccessDenied": PermissionDeniedError,
    "AccessDeniedException": PermissionDeniedError,
    "AuthorizationError": PermissionDeniedError,
    "403": PermissionDeniedError,
    "InvalidAccessKeyId": AuthenticationError,
    "SignatureDoesNotMatch": AuthenticationError,
    "ExpiredToken": AuthenticationError,
    "ExpiredTokenException": AuthenticationError,
    "InvalidClientTokenId": AuthenticationError,
    "UnrecognizedClientException": AuthenticationError,
    "SlowDown": ThrottledError,
    "Throttling": ThrottledError,
    "ThrottlingException": ThrottledError,
    "Throttled": ThrottledError,
    "RequestThrottled": ThrottledError,
    "RequestLimitExceeded": ThrottledError,
    "TooManyRequestsException": ThrottledError,
    "ServiceUnavailable": ServiceUnavailableError,
    "InternalError": ServiceUnavailableError,
    "InternalFailure": ServiceUnavailableError,
    "500": ServiceUnavailableError,
    "503": ServiceUnavailableError,
    "ConditionalRequestConflict": ServiceUnavailableError,
    "PreconditionFailed": AlreadyExistsError,
    "412": AlreadyExistsError,
    "BucketAlreadyExists": AlreadyExistsError,
    "EntityTooLarge": PayloadTooLargeError,
    "BatchRequestTooLong": PayloadTooLargeError,
}

EXPECTED_BY_STATUS: dict[int, type[ProviderError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    412: AlreadyExistsError,
    413: PayloadTooLargeError,
    429: ThrottledError,
    500: ServiceUnavailableError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
}

EXPECTED_RULES = [
    ("InvalidParameter", "Invalid parameter: Message too long", PayloadTooLargeError),
    ("InvalidParameterValue", "Message must be shorter: too long", PayloadTooLargeError),
]


def test_the_expectations_cover_every_row() -> None:
    assert set(EXPECTED_BY_CODE) == set(ERROR_CODE_MAP)
    assert set(EXPECTED_BY_STATUS) == set(STATUS_MAP)
    assert [code for code, _, _ in EXPECTED_RULES] == [code for code, _, _ in MESSAGE_RULES]


@pytest.mark.parametrize(("code", "expected"), sorted(EXPECTED_BY_CODE.items()))
def test_every_error_code_row(s3: Any, code: str, expected: type[ProviderError]) -> None:
    # 400 for every code: the code alone must pick the class, not the status fallback.
    error = _client_error(s3, code, status=400)
    mapped = _mapped(error)
    assert type(mapped) is expected
    assert isinstance(mapped, ProviderError)
    assert mapped.code == code
    assert mapped.status == 400
    assert mapped.request_id == "req-123"
    assert mapped.provider == "s3"
    assert mapped.__cause__ is error
    assert "thing 'x'" in str(mapped) and "service said no" in str(mapped)
    assert code in str(mapped) and "req-123" in str(mapped)


@pytest.mark.parametrize(("code", "message", "expected"), EXPECTED_RULES)
def test_every_message_rule(
    s3: Any, code: str, message: str, expected: type[ProviderError]
) -> None:
    mapped = _mapped(_client_error(s3, code, message=message))
    assert type(mapped) is expected
    # The same code with another message is not about size.
    other = _mapped(_client_error(s3, code, message="Invalid parameter: TopicArn"))
    assert type(other) is ProviderError
    assert other.code == code


@pytest.mark.parametrize(("status", "expected"), sorted(EXPECTED_BY_STATUS.items()))
def test_every_status_row(s3: Any, status: int, expected: type[ProviderError]) -> None:
    mapped = _mapped(_client_error(s3, "SomeCodeNobodyKnows", status=status))
    assert type(mapped) is expected
    assert mapped.code == "SomeCodeNobodyKnows"
    assert mapped.status == status


def test_unknown_code_and_status_is_a_plain_provider_error(s3: Any) -> None:
    mapped = _mapped(_client_error(s3, "TeapotError", status=418))
    assert type(mapped) is ProviderError
    assert (mapped.code, mapped.status, mapped.request_id) == ("TeapotError", 418, "req-123")


def test_query_error_code_is_used_when_the_code_is_unknown(s3: Any) -> None:
    # SQS (JSON protocol) may report an unmodeled code with the query code alongside.
    error = _client_error(s3, "Odd", error_meta={"QueryErrorCode": "QueueDoesNotExist"})
    mapped = _mapped(error)
    assert type(mapped) is NotFoundError
    assert mapped.code == "QueueDoesNotExist"
    assert has_error_code(error, "QueueDoesNotExist")
    assert has_error_code(error, "Odd")
    assert not has_error_code(error, "NoSuchKey")
    assert not has_error_code(ValueError("x"), "Odd")


@pytest.mark.parametrize(
    ("botocore_error", "expected"),
    [
        (ConnectTimeoutError(endpoint_url="http://10.9.8.7:9000"), ServiceUnavailableError),
        (ReadTimeoutError(endpoint_url="http://10.9.8.7:9000"), ServiceUnavailableError),
        (ConnectionClosedError(endpoint_url="http://10.9.8.7:9000"), ServiceUnavailableError),
        (EndpointConnectionError(endpoint_url="http://10.9.8.7:9000"), ServiceUnavailableError),
        (NoCredentialsError(), AuthenticationError),
        (
            PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
            AuthenticationError,
        ),
        (NoRegionError(), ConfigurationError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.__name__,
)
def test_every_botocore_error_row(botocore_error: Exception, expected: type[FaaSMLError]) -> None:
    mapped = _mapped(botocore_error)
    assert type(mapped) is expected
    assert mapped.__cause__ is botocore_error
    assert "thing 'x'" in str(mapped)
    if expected is ServiceUnavailableError:
        assert "http://10.9.8.7:9000" in str(mapped), "the endpoint must be named"
        assert mapped.provider == "s3"
    elif expected is AuthenticationError:
        assert "AWS_ACCESS_KEY_ID" in str(mapped) and "AWS_SECRET_ACCESS_KEY" in str(mapped)
    else:
        assert "AWS_DEFAULT_REGION" in str(mapped)


def test_the_botocore_rows_above_cover_the_table() -> None:
    assert {cls for cls, _ in BOTOCORE_ERROR_MAP} == {
        ConnectTimeoutError,
        ReadTimeoutError,
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        NoRegionError,
    }


def test_other_exceptions_pass_through_untouched() -> None:
    error = ValueError("not from botocore")
    assert _mapped(error) is error
    assert translate_error(error, "s3", "x") is None


def test_message_override_for_a_code(s3: Any) -> None:
    error = _client_error(s3, "NoSuchBucket", status=404)
    with pytest.raises(NotFoundError) as caught:
        with map_aws_errors("s3", "bucket 'b'", messages={"NoSuchBucket": "make the bucket"}):
            raise error
    assert str(caught.value).startswith("make the bucket (NoSuchBucket, HTTP 404")


# ---------------------------------------------------------------- Retry-After


def test_retry_after_seconds_is_kept(s3: Any) -> None:
    mapped = _mapped(_client_error(s3, "SlowDown", status=503, headers={"Retry-After": "7"}))
    assert isinstance(mapped, ThrottledError)
    assert mapped.retry_after == 7.0
    assert mapped.retriable


def test_retry_after_http_date_is_converted(s3: Any) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    mapped = _mapped(_client_error(s3, "Throttling", headers={"retry-after": when}))
    assert isinstance(mapped, ThrottledError)
    assert mapped.retry_after is not None and 100 < mapped.retry_after <= 121


@pytest.mark.parametrize("headers", [None, {"Retry-After": "soon-ish"}])
def test_retry_after_absent_or_garbled_is_none(s3: Any, headers: dict[str, str] | None) -> None:
    mapped = _mapped(_client_error(s3, "ThrottlingException", headers=headers))
    assert isinstance(mapped, ThrottledError)
    assert mapped.retry_after is None


# ---------------------------------------------------------------- helpers


def test_error_from_code_for_batch_failures() -> None:
    error = error_from_code("sqs", "publish to topic 't'", "AccessDenied", "no publish for you")
    assert type(error) is PermissionDeniedError
    assert str(error) == "publish to topic 't': no publish for you (AccessDenied)"
    assert (error.code, error.status, error.request_id) == ("AccessDenied", None, None)
    too_big = error_from_code("sqs", "t", "InvalidParameter", "Message too long")
    assert type(too_big) is PayloadTooLargeError


def test_mapped_errors_pickle_with_their_attributes(s3: Any) -> None:
    mapped = _mapped(_client_error(s3, "PreconditionFailed", status=412))
    again = pickle.loads(pickle.dumps(mapped))
    assert type(again) is AlreadyExistsError
    assert (again.code, again.status, again.request_id, again.provider) == (
        "PreconditionFailed",
        412,
        "req-123",
        "s3",
    )


def test_secret_for_config_keeps_references_only() -> None:
    assert secret_for_config("s3", "access_key_id", None) is None
    assert secret_for_config("s3", "access_key_id", {"$env": "MY_KEY"}) == {"$env": "MY_KEY"}
    with pytest.raises(ConfigurationError, match=r'"\$env"') as caught:
        secret_for_config("s3", "secret_access_key", "literal-secret-value")
    assert "literal-secret-value" not in str(caught.value)
    assert "secret_access_key" in str(caught.value)


def test_aws_session_resolves_env_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASML_TEST_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("FAASML_TEST_SECRET", "s3cr3t")
    session = aws_session(
        region="eu-west-1",
        access_key_id={"$env": "FAASML_TEST_KEY_ID"},
        secret_access_key={"$env": "FAASML_TEST_SECRET"},
        session_token=None,
    )
    credentials = session.get_credentials()
    assert credentials is not None
    assert (credentials.access_key, credentials.secret_key) == ("AKIDTEST", "s3cr3t")
    assert session.region_name == "eu-west-1"


def test_aws_session_refuses_half_credentials_and_unset_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigurationError, match="both"):
        aws_session(region=None, access_key_id="AKID", secret_access_key=None, session_token=None)
    monkeypatch.delenv("FAASML_TEST_UNSET", raising=False)
    with pytest.raises(ConfigurationError, match="FAASML_TEST_UNSET"):
        aws_session(
            region=None,
            access_key_id={"$env": "FAASML_TEST_UNSET"},
            secret_access_key={"$env": "FAASML_TEST_UNSET"},
            session_token=None,
        )

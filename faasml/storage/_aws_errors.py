"""AWS helpers shared by the ``s3`` and ``sqs`` backends: botocore error translation, sessions.

Every boto3 call of those backends runs inside :func:`map_aws_errors`, the single boundary where
botocore exceptions become :mod:`faasml.errors`. The translation is table-driven:

1. :data:`MESSAGE_RULES`: an error code whose meaning depends on its message (SNS reports an
   oversized message as ``InvalidParameter`` with "Message too long");
2. :data:`ERROR_CODE_MAP`: the service's error code (``NoSuchKey``, ``SlowDown`` ...);
3. :data:`STATUS_MAP`: the HTTP status, for codes the table does not know;
4. :data:`BOTOCORE_ERROR_MAP`: client-side failures (endpoint unreachable, no credentials ...);

and anything else becomes a plain :class:`~faasml.errors.ProviderError`. The faasml error keeps
the service's code, the HTTP status and the request id, and is raised ``from`` the botocore one.

:func:`aws_session`, :func:`aws_clients` and :func:`secrets_for_config` implement the credential
rules both backends share: the default boto3 chain unless credentials are given, given ones may be
``{"$env": "VAR"}`` references, and only references (never values) go into ``to_config()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from faasml.config import resolve_secret
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
from faasml.storage._common import SecretValue, exportable_secret, retry_after_seconds

__all__ = [
    "BOTOCORE_ERROR_MAP",
    "SecretValue",
    "ERROR_CODE_MAP",
    "MESSAGE_RULES",
    "STATUS_MAP",
    "error_codes",
    "error_from_code",
    "has_error_code",
    "map_aws_errors",
    "translate_error",
    "aws_clients",
    "aws_credentials",
    "aws_session",
    "secret_for_config",
    "secrets_for_config",
]

#: botocore ``ClientError`` codes (S3, SQS, SNS) -> the faasml error raised for them.
ERROR_CODE_MAP: Mapping[str, type[ProviderError]] = {
    # missing things
    "NoSuchKey": NotFoundError,
    "NoSuchBucket": NotFoundError,
    "NoSuchUpload": NotFoundError,
    "404": NotFoundError,  # S3 HEAD responses have no body, so the code is the status
    "NotFound": NotFoundError,  # SNS: topic or subscription
    "AWS.SimpleQueueService.NonExistentQueue": NotFoundError,
    "QueueDoesNotExist": NotFoundError,
    "ResourceNotFoundException": NotFoundError,
    # valid credentials, missing permission
    "AccessDenied": PermissionDeniedError,
    "AccessDeniedException": PermissionDeniedError,
    "AuthorizationError": PermissionDeniedError,
    "403": PermissionDeniedError,
    # bad or expired credentials
    "InvalidAccessKeyId": AuthenticationError,
    "SignatureDoesNotMatch": AuthenticationError,
    "ExpiredToken": AuthenticationError,
    "ExpiredTokenException": AuthenticationError,
    "InvalidClientTokenId": AuthenticationError,
    "UnrecognizedClientException": AuthenticationError,
    # throttling
    "SlowDown": ThrottledError,
    "Throttling": ThrottledError,
    "ThrottlingException": ThrottledError,
    "Throttled": ThrottledError,  # SNS
    "RequestThrottled": ThrottledError,  # SQS
    "RequestLimitExceeded": ThrottledError,
    "TooManyRequestsException": ThrottledError,
    # the service is failing
    "ServiceUnavailable": ServiceUnavailableError,
    "InternalError": ServiceUnavailableError,
    "InternalFailure": ServiceUnavailableError,
    "500": ServiceUnavailableError,
    "503": ServiceUnavailableError,
    # S3: a concurrent conditional write is in progress ("try again"): retriable
    "ConditionalRequestConflict": ServiceUnavailableError,
    # write-once objects and names taken by someone else
    "PreconditionFailed": AlreadyExistsError,
    "412": AlreadyExistsError,
    "BucketAlreadyExists": AlreadyExistsError,
    # size limits
    "EntityTooLarge": PayloadTooLargeError,
    "BatchRequestTooLong": PayloadTooLargeError,
}

#: ``(code, lower-case text in the error message, faasml error)``, checked before the code table.
MESSAGE_RULES: tuple[tuple[str, str, type[ProviderError]], ...] = (
    ("InvalidParameter", "too long", PayloadTooLargeError),  # SNS Publish
    ("InvalidParameterValue", "too long", PayloadTooLargeError),  # SQS SendMessage
)

#: HTTP status -> faasml error, for error codes :data:`ERROR_CODE_MAP` does not list.
STATUS_MAP: Mapping[int, type[ProviderError]] = {
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

_ENV_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
    "credentials), or AWS_PROFILE, or run where an IAM role is attached"
)

#: client-side botocore failures -> faasml error; the first matching class wins (subclasses of
#: ``EndpointConnectionError`` such as ``ConnectTimeoutError`` come before it).
BOTOCORE_ERROR_MAP: tuple[tuple[type[BotoCoreError], type[FaaSMLError]], ...] = (
    (ConnectTimeoutError, ServiceUnavailableError),
    (ReadTimeoutError, ServiceUnavailableError),
    (ConnectionClosedError, ServiceUnavailableError),
    (EndpointConnectionError, ServiceUnavailableError),
    (NoCredentialsError, AuthenticationError),
    (PartialCredentialsError, AuthenticationError),
    (NoRegionError, ConfigurationError),
)


def error_codes(exc: ClientError) -> tuple[str, str]:
    """Return ``(code, query code)`` of a ``ClientError`` (``""`` for what the service omitted).

    SQS speaks JSON but still reports its older query-protocol code (``QueueDoesNotExist`` for
    ``AWS.SimpleQueueService.NonExistentQueue``) as ``QueryErrorCode``.
    """
    error = exc.response.get("Error", {})
    return str(error.get("Code", "") or ""), str(error.get("QueryErrorCode", "") or "")


def has_error_code(exc: BaseException, *codes: str) -> bool:
    """Whether ``exc`` is a ``ClientError`` whose code or query code is one of ``codes``."""
    return isinstance(exc, ClientError) and any(c in codes for c in error_codes(exc) if c)


def _pick_class(code: str, message: str, status: int | None) -> type[ProviderError]:
    lowered = message.lower()
    for rule_code, text, cls in MESSAGE_RULES:
        if code == rule_code and text in lowered:
            return cls
    if code in ERROR_CODE_MAP:
        return ERROR_CODE_MAP[code]
    if status is not None and status in STATUS_MAP:
        return STATUS_MAP[status]
    return ProviderError


def error_from_code(
    provider: str,
    resource: str,
    code: str,
    message: str,
    *,
    status: int | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
    description: str | None = None,
) -> ProviderError:
    """Build the faasml error for an AWS error code (also used for batch entry failures).

    :param provider: backend name stored on the error (``"s3"``, ``"sqs"``).
    :param resource: what was being accessed, e.g. ``"object 'a/b' in s3://bucket"``.
    :param code: the AWS error code.
    :param message: the AWS error message.
    :param status: the HTTP status, if any.
    :param request_id: the AWS request id, if any.
    :param retry_after: seconds to wait, for throttling errors.
    :param description: replaces ``"<resource>: <AWS message>"`` as the start of the message.
    """
    cls = _pick_class(code, message, status)
    details = ", ".join(
        part
        for part in (
            code or None,
            f"HTTP {status}" if status is not None else None,
            f"request id {request_id}" if request_id else None,
        )
        if part
    )
    text = description if description is not None else f"{resource}: {message or 'failed'}"
    if details:
        text = f"{text} ({details})"
    common: dict[str, Any] = {
        "provider": provider,
        "code": code or None,
        "status": status,
        "request_id": request_id,
    }
    if cls is ThrottledError:
        return ThrottledError(text, retry_after=retry_after, **common)
    return cls(text, **common)


def translate_error(
    exc: BaseException,
    provider: str,
    resource: str,
    *,
    messages: Mapping[str, str] | None = None,
) -> FaaSMLError | None:
    """Return the faasml error for a botocore exception, or ``None`` if it is not one we map.

    :param exc: the exception raised by boto3.
    :param provider: backend name stored on the error.
    :param resource: what was being accessed (named in the message).
    :param messages: error code -> message replacing the default one for that code (used, for
        instance, to turn ``NoSuchBucket`` into advice on creating the bucket).
    """
    if isinstance(exc, ClientError):
        code, query_code = error_codes(exc)
        if code not in ERROR_CODE_MAP and query_code in ERROR_CODE_MAP:
            code = query_code
        meta = exc.response.get("ResponseMetadata", {})
        status_raw = meta.get("HTTPStatusCode")
        status = int(status_raw) if status_raw is not None else None
        headers = meta.get("HTTPHeaders", {}) or {}
        return error_from_code(
            provider,
            resource,
            code,
            str(exc.response.get("Error", {}).get("Message", "") or ""),
            status=status,
            request_id=meta.get("RequestId") or None,
            retry_after=retry_after_seconds(headers),
            description=(messages or {}).get(code),
        )
    for botocore_cls, cls in BOTOCORE_ERROR_MAP:
        if isinstance(exc, botocore_cls):
            return _client_side_error(exc, cls, provider, resource)
    return None


def _client_side_error(
    exc: BotoCoreError, cls: type[FaaSMLError], provider: str, resource: str
) -> FaaSMLError:
    if cls is ServiceUnavailableError:
        endpoint = getattr(exc, "kwargs", {}).get("endpoint_url", "the endpoint")
        return ServiceUnavailableError(
            f"{resource}: cannot reach {endpoint} ({type(exc).__name__}: {exc})",
            provider=provider,
        )
    if cls is AuthenticationError:
        return AuthenticationError(
            f"{resource}: no usable AWS credentials ({exc}); {_ENV_HINT}", provider=provider
        )
    return ConfigurationError(
        f"{resource}: no AWS region configured; pass region=... or set AWS_DEFAULT_REGION "
        f"(or AWS_REGION) ({exc})"
    )


@contextlib.contextmanager
def map_aws_errors(
    provider: str, resource: str, *, messages: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Translate botocore exceptions raised in the block into faasml errors (``from`` them).

    :param provider: backend name stored on the error (``"s3"``, ``"sqs"``).
    :param resource: what the block accesses, named in every message.
    :param messages: error code -> replacement message (see :func:`translate_error`).
    """
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        mapped = translate_error(exc, provider, resource, messages=messages)
        if mapped is None:
            raise
        raise mapped from exc


# --------------------------------------------------------------------------- credentials


def aws_session(
    *,
    region: str | None,
    access_key_id: SecretValue,
    secret_access_key: SecretValue,
    session_token: SecretValue,
) -> boto3.session.Session:
    """Build a boto3 session; ``None`` credentials fall back to the default boto3 chain.

    :raises ConfigurationError: a ``{"$env": "VAR"}`` credential names an unset variable, or
        only one of ``access_key_id`` / ``secret_access_key`` is given.
    """
    key_id = resolve_secret(access_key_id, "access_key_id")
    secret = resolve_secret(secret_access_key, "secret_access_key")
    token = resolve_secret(session_token, "session_token")
    if (key_id is None) != (secret is None):
        raise ConfigurationError(
            "give both access_key_id and secret_access_key, or neither (to use the default "
            "AWS credential chain: environment, profile, IAM role)"
        )
    return boto3.session.Session(
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=token,
        region_name=region,
    )


def aws_credentials(
    access_key_id: SecretValue, secret_access_key: SecretValue, session_token: SecretValue
) -> dict[str, SecretValue]:
    """The credential options of an AWS backend by name (for :func:`aws_clients` and config)."""
    return {
        "access_key_id": access_key_id,
        "secret_access_key": secret_access_key,
        "session_token": session_token,
    }


def aws_clients(
    provider: str,
    resource: str,
    services: tuple[str, ...],
    *,
    region: str | None,
    endpoint_url: str | None,
    credentials: Mapping[str, SecretValue],
    max_attempts: int,
    **config: Any,
) -> dict[str, Any]:
    """boto3 clients of ``services`` on one session, with botocore's adaptive retries.

    :param provider: backend name put on errors.
    :param resource: what the clients are for, named in errors.
    :param credentials: :func:`aws_credentials`; ``None`` values use the default chain.
    :param max_attempts: attempts per request, the first included.
    :param config: more ``botocore.config.Config`` options (``max_pool_connections`` ...).
    :raises ConfigurationError: see :func:`aws_session`; or no region can be found.
    """
    session = aws_session(
        region=region,
        access_key_id=credentials.get("access_key_id"),
        secret_access_key=credentials.get("secret_access_key"),
        session_token=credentials.get("session_token"),
    )
    options = Config(retries={"max_attempts": max_attempts, "mode": "adaptive"}, **config)
    with map_aws_errors(provider, resource):
        return {
            service: session.client(service, endpoint_url=endpoint_url, config=options)
            for service in services
        }


def secret_for_config(backend: str, name: str, value: SecretValue) -> dict[str, str] | None:
    """Return ``value`` as it may appear in ``to_config()``: ``None`` or an ``$env`` reference.

    :raises ConfigurationError: ``value`` is a literal secret, which must not travel in task
        payloads; the message says what to pass instead.
    """
    return exportable_secret(
        value,
        name,
        message=(
            f"{backend}: {name} was given as a literal value, and to_config() never ships secret "
            f'values; pass {name}={{"$env": "VAR"}} (read from the environment where the backend '
            "is rebuilt), or leave it unset to use the default AWS credential chain (environment, "
            "profile, IAM role)"
        ),
    )


def secrets_for_config(backend: str, secrets: Mapping[str, SecretValue]) -> dict[str, Any]:
    """The ``to_config()`` entries of a backend's credentials: references only, unset ones left out.

    :raises ConfigurationError: a credential is a literal value (see :func:`secret_for_config`).
    """
    exported = {name: secret_for_config(backend, name, value) for name, value in secrets.items()}
    return {name: ref for name, ref in exported.items() if ref is not None}

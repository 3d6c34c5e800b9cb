"""An :class:`~faasml.interfaces.ObjectStore` on Alibaba Cloud OSS, through ``oss2``.

OSS facts this backend is built on (OSS API reference and ``oss2`` 2.19 source):

* ``put(..., if_absent=True)`` sends ``x-oss-forbid-overwrite: true``: OSS creates the object
  only if the key is free and answers 409 ``FileAlreadyExists`` otherwise, atomically, so
  ``supports_conditional_put`` is true. (OSS ignores the header in buckets with versioning
  enabled or suspended; do not point this store at such a bucket for write-once objects.)
* ``oss2``'s ``byte_range=(start, last)`` is *inclusive*, and ``(None, n)`` means "the last n
  bytes"; ``get(key, start, end)`` converts from faasml's ``data[start:end]`` and never sends the
  suffix form. By default OSS *ignores* an out-of-range ``Range`` and returns the whole object
  with 200; this backend sends ``x-oss-range-behavior: standard``, so a start past the end is 416
  (``b""``) and an end past it is clamped, and it still slices a 200 answer itself.
* Full downloads are checked against OSS's CRC-64 (``x-oss-hash-crc64ecma``); uploads are checked
  by ``oss2`` itself.
* OSS answers ``DeleteObject`` with 204 whether or not the key exists, so :meth:`delete` sends a
  HEAD first to report a missing key.
* Signatures: with ``region`` (given, or read from an ``oss-<region>[-internal].aliyuncs.com``
  endpoint) requests are signed with V4, which OSS requires for accounts and buckets created
  since 2025; otherwise (custom domains, IP endpoints) with V1.
* Credentials: ``access_key_id``/``access_key_secret`` (and ``security_token`` for STS) as
  ``{"$env": "VAR"}`` references, or none at all to use ``oss2``'s environment provider
  (``OSS_ACCESS_KEY_ID``, ``OSS_ACCESS_KEY_SECRET``, ``OSS_SESSION_TOKEN``, read per request).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from faasml.config import resolve_secret
from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    FaaSMLError,
    MissingDependencyError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ThrottledError,
)
from faasml.interfaces import ObjectInfo, ObjectStore, validate_key
from faasml.storage._common import (
    HTTP_STATUS_MAP,
    SecretValue,
    byte_view,
    exportable_secrets,
    is_empty_range,
    listed_key,
    normalize_prefix,
    retry_after_seconds,
    slice_answer,
)

if TYPE_CHECKING:
    import oss2

__all__ = ["ERROR_CODE_MAP", "OSSObjectStore"]


_INSTALL_HINT = 'pip install "faasml[aliyun]"'
_ENV_VARS = ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET")
_REGION_RE = re.compile(r"^oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$")
#: endpoints whose "region" part is not a region (transfer acceleration).
_NOT_REGIONS = frozenset({"accelerate", "accelerate-overseas"})
_LIST_PAGE = 1000

#: OSS error code (or oss2 exception class) -> faasml error. The single translation table of
#: this backend; see :meth:`OSSObjectStore._map_errors`. Codes from the OSS error reference.
ERROR_CODE_MAP: dict[str, type[ProviderError]] = {
    "NoSuchKey": NotFoundError,
    "NoSuchBucket": NotFoundError,
    "FileAlreadyExists": AlreadyExistsError,
    "BucketAlreadyExists": AlreadyExistsError,
    "InvalidAccessKeyId": AuthenticationError,
    "SignatureDoesNotMatch": AuthenticationError,
    "InvalidSecurityToken": AuthenticationError,
    "SecurityTokenExpired": AuthenticationError,
    "RequestTimeTooSkewed": AuthenticationError,
    "MissingCredentials": AuthenticationError,  # oss2 ClientError: no key in the environment
    "AccessDenied": PermissionDeniedError,
    "UserDisable": PermissionDeniedError,
    "QpsLimitExceeded": ThrottledError,
    "TotalQpsLimitExceeded": ThrottledError,
    "MetaOperationQpsLimitExceeded": ThrottledError,
    "ActiveRequestLimitExceeded": ThrottledError,
    "DownloadTrafficRateLimitExceeded": ThrottledError,
    "UploadTrafficRateLimitExceeded": ThrottledError,
    "CpuLimitExceeded": ThrottledError,
    "ServiceUnavailable": ServiceUnavailableError,
    "InternalError": ServiceUnavailableError,
    "RequestError": ServiceUnavailableError,  # oss2: the request never got an answer
    "InconsistentError": ServiceUnavailableError,  # CRC-64 mismatch: corrupted in transit
}
#: HTTP status -> faasml error, for answers whose code is not in the table (HEAD has no body).
STATUS_MAP: Mapping[int, type[ProviderError]] = HTTP_STATUS_MAP


def region_from_endpoint(endpoint: str) -> str | None:
    """Return ``cn-hangzhou`` for ``https://oss-cn-hangzhou[-internal].aliyuncs.com``, else None."""
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    found = _REGION_RE.match(host)
    if found is None or found.group(1) in _NOT_REGIONS:
        return None
    return found.group(1)


class OSSObjectStore(ObjectStore):
    """Objects in an Alibaba Cloud OSS bucket.

    :param bucket: the bucket name.
    :param endpoint: ``https://oss-<region>.aliyuncs.com`` (or ``-internal`` from inside Alibaba
        Cloud, a custom domain, or any OSS-compatible server).
    :param access_key_id: ``{"$env": "VAR"}`` (or a string, which :meth:`to_config` refuses);
        ``None`` with ``access_key_secret=None`` reads ``OSS_ACCESS_KEY_ID``,
        ``OSS_ACCESS_KEY_SECRET`` and ``OSS_SESSION_TOKEN`` from the environment per request.
    :param access_key_secret: the secret, as ``{"$env": "VAR"}``.
    :param security_token: the STS token of temporary credentials, as ``{"$env": "VAR"}``.
    :param prefix: a key prefix inside the bucket under which this store keeps its objects.
    :param region: the region id (``cn-hangzhou``) for V4 signatures; read from the endpoint when
        it is an ``oss-<region>.aliyuncs.com`` endpoint. Without one, requests use V1 signatures.
    :param create_bucket: create the bucket now if it does not exist.
    :param connect_timeout: seconds before a connection attempt or a stalled read fails.
    :param bucket_obj: a ready ``oss2.Bucket`` (tests); such a store cannot be exported.
    :raises ConfigurationError: incomplete credentials, no credentials in the environment, or an
        invalid prefix.
    :raises MissingDependencyError: ``oss2`` is not installed.
    """

    name: ClassVar[str] = "oss"
    supports_conditional_put: bool = True

    def __init__(
        self,
        bucket: str,
        endpoint: str,
        *,
        access_key_id: SecretValue = None,
        access_key_secret: SecretValue = None,
        security_token: SecretValue = None,
        prefix: str = "",
        region: str | None = None,
        create_bucket: bool = False,
        connect_timeout: float = 30.0,
        bucket_obj: oss2.Bucket | None = None,
    ) -> None:
        try:
            import oss2
        except ImportError as exc:
            raise MissingDependencyError(
                f"the oss object store needs oss2: {_INSTALL_HINT}"
            ) from exc
        if not isinstance(bucket, str) or not bucket:
            raise ConfigurationError(f"bucket must be a non-empty string, got {bucket!r}")
        if not isinstance(endpoint, str) or "://" not in endpoint:
            raise ConfigurationError(
                f"endpoint must be a URL like https://oss-cn-hangzhou.aliyuncs.com, got "
                f"{endpoint!r}"
            )
        self._bucket_name = bucket
        self._endpoint = endpoint.rstrip("/")
        self._id_option = access_key_id
        self._secret_option = access_key_secret
        self._token_option = security_token
        self._prefix = normalize_prefix(prefix)
        self._region_option = region
        self._region = region or region_from_endpoint(self._endpoint)
        self._connect_timeout = float(connect_timeout)
        self._closed = False
        self._injected = bucket_obj is not None
        if bucket_obj is not None:
            self._bucket: oss2.Bucket = bucket_obj
        else:
            auth = self._auth()
            try:
                self._bucket = oss2.Bucket(
                    auth,
                    self._endpoint,
                    bucket,
                    connect_timeout=self._connect_timeout,
                    app_name="faasml",
                    region=self._region,
                )
            except oss2.exceptions.ClientError as exc:  # an invalid bucket name
                raise ConfigurationError(
                    f"invalid OSS bucket {bucket!r}: {exc.body.removeprefix('ClientError: ')}"
                ) from exc
        if create_bucket:
            with self._map_errors("create the bucket"):
                try:
                    self._bucket.create_bucket()
                except oss2.exceptions.ServerError as exc:
                    # Already there, and (as far as OSS tells) ours; a bucket owned by another
                    # account fails later with AccessDenied, naming the bucket.
                    if exc.code != "BucketAlreadyExists":
                        raise

    def _auth(self) -> Any:
        from oss2 import ProviderAuth, ProviderAuthV4
        from oss2.credentials import (
            CredentialsProvider,
            EnvironmentVariableCredentialsProvider,
            StaticCredentialsProvider,
        )

        key_id = resolve_secret(self._id_option, "OSS access_key_id")
        secret = resolve_secret(self._secret_option, "OSS access_key_secret")
        token = resolve_secret(self._token_option, "OSS security_token")
        provider: CredentialsProvider
        if key_id is None and secret is None:
            if token is not None:
                raise ConfigurationError(
                    "security_token needs access_key_id and access_key_secret (the STS pair)"
                )
            missing = [var for var in _ENV_VARS if not os.environ.get(var)]
            if missing:
                raise ConfigurationError(
                    f"no OSS credentials: pass access_key_id= and access_key_secret= as "
                    f'{{"$env": "VAR"}}, or export {" and ".join(missing)}'
                )
            provider = EnvironmentVariableCredentialsProvider()
        elif key_id is None or secret is None:
            raise ConfigurationError(
                "pass both access_key_id= and access_key_secret= (or neither, to read "
                "OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET from the environment)"
            )
        else:
            provider = StaticCredentialsProvider(key_id, secret, token or "")
        return ProviderAuthV4(provider) if self._region else ProviderAuth(provider)

    def _name(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceUnavailableError(
                f"{self!r} is closed; create a new store", provider=self.name
            )

    # ------------------------------------------------------------------ error boundary

    @contextlib.contextmanager
    def _map_errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Translate ``oss2`` exceptions into faasml errors, using :data:`ERROR_CODE_MAP`.

        The only place ``oss2`` errors are caught; OSS's code wins over the HTTP status, which
        is the fallback for bodiless answers (HEAD).
        """
        import oss2.exceptions as ox

        self._check_open()
        try:
            yield
        except FaaSMLError:
            raise
        except ox.OssError as exc:
            raise self._translate(exc, action, key) from exc

    def _translate(self, exc: Exception, action: str, key: str | None) -> ProviderError:
        import oss2.exceptions as ox

        where = f"OSS at {self._endpoint}"
        bucket = self._bucket_name
        status = getattr(exc, "status", None)
        code = str(getattr(exc, "code", "") or "")
        if isinstance(exc, ox.RequestError):
            code = "RequestError"
        elif isinstance(exc, ox.InconsistentError):
            code = "InconsistentError"
        elif isinstance(exc, ox.ClientError) and "access key" in str(exc).lower():
            # EnvironmentVariableCredentialsProvider: "Access key id should not be null ..."
            code = "MissingCredentials"
        request_id = getattr(exc, "request_id", None) or None
        message = str(getattr(exc, "message", "") or "") or str(getattr(exc, "body", "") or "")
        kw: dict[str, Any] = {
            "provider": self.name,
            "code": code or None,
            "status": status if isinstance(status, int) and status > 0 else None,
            "request_id": request_id,
        }
        what = f"object {key!r} in bucket {bucket!r}" if key else f"bucket {bucket!r}"
        cls = ERROR_CODE_MAP.get(code)
        if cls is None and kw["status"] is not None:
            cls = STATUS_MAP.get(kw["status"])
            if cls is None and kw["status"] >= 500:
                cls = ServiceUnavailableError
        if cls is NotFoundError:
            if code == "NoSuchBucket":
                return NotFoundError(
                    f"OSS bucket {bucket!r} does not exist at {self._endpoint}; create it or "
                    "pass create_bucket=True",
                    **kw,
                )
            suffix = "" if code == "NoSuchKey" else " (or the bucket does not exist)"
            return NotFoundError(f"{what} does not exist{suffix} ({where})", **kw)
        if cls is AlreadyExistsError:
            return AlreadyExistsError(f"{what} already exists ({where})", **kw)
        if cls is AuthenticationError:
            hint = (
                f"export {' and '.join(_ENV_VARS)}"
                if code == "MissingCredentials"
                else "check access_key_id/access_key_secret (and security_token for STS keys)"
            )
            return AuthenticationError(
                f"{where} rejected the credentials while trying to {action} {what} "
                f"({code or status}: {message}); {hint}",
                **kw,
            )
        if cls is PermissionDeniedError:
            return PermissionDeniedError(
                f"{where}: the credentials may not {action} {what} ({code}: {message})", **kw
            )
        if cls is ThrottledError:
            headers = getattr(exc, "headers", None)
            return ThrottledError(
                f"{where} throttled the request to {action} {what} ({code}); retry later",
                retry_after=retry_after_seconds(headers if isinstance(headers, Mapping) else {}),
                **kw,
            )
        if cls is ServiceUnavailableError:
            detail = str(getattr(exc, "exception", None) or message or exc)
            return ServiceUnavailableError(
                f"{where} is unavailable (could not {action} {what}: {code or status} {detail})",
                **kw,
            )
        return ProviderError(
            f"{where} failed to {action} {what} ({code or status}: {message or exc})", **kw
        )

    # ------------------------------------------------------------------ primitives

    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        """Upload ``data`` under ``key`` (``PutObject``).

        :param key: the object key.
        :param data: the bytes (copied before the upload starts).
        :param if_absent: create only if the key is free (``x-oss-forbid-overwrite``, atomic).
        :raises AlreadyExistsError: ``if_absent`` and the key exists.
        """
        name = self._name(key)
        payload = byte_view(data).tobytes()
        headers = {"x-oss-forbid-overwrite": "true"} if if_absent else None
        with self._map_errors("write", key):
            self._bucket.put_object(name, payload, headers=headers)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Return the object's bytes, or ``data[start:end]``.

        ``start == end`` (or ``end < start``) returns ``b""`` without a request.

        :raises NotFoundError: the key or the bucket does not exist.
        :raises ValueError: a negative bound.
        """
        import oss2.exceptions as ox
        from oss2 import utils

        self._check_range(start, end)
        name = self._name(key)
        if is_empty_range(start, end):
            return b""
        lo = start or 0
        with self._map_errors("read", key):
            if lo == 0 and end is None:
                result = self._bucket.get_object(name)
                data = bytes(result.read())
                utils.check_crc(
                    "get object", result.client_crc, result.server_crc, result.request_id
                )
                return data
            last = None if end is None else end - 1
            try:
                result = self._bucket.get_object(
                    name,
                    byte_range=(lo, last),
                    headers={"x-oss-range-behavior": "standard"},
                )
            except ox.ServerError as exc:
                if exc.status == 416:  # start past the end: the slice is empty
                    return b""
                raise
            data = bytes(result.read())
        # A 200 to a ranged request: the range was ignored and the whole object came back.
        return slice_answer(data, lo, end, whole=result.status == 200)

    def head(self, key: str) -> ObjectInfo:
        """Return the object's size, modification time and etag (``HeadObject``).

        :raises NotFoundError: the key does not exist.
        """
        name = self._name(key)
        with self._map_errors("read the metadata of", key):
            result = self._bucket.head_object(name)
        return ObjectInfo(
            key=key,
            size=int(result.content_length or 0),
            last_modified=float(result.last_modified) if result.last_modified else None,
            etag=str(result.etag) if result.etag else None,
        )

    def delete(self, key: str) -> None:
        """Delete the object (a HEAD first: OSS answers 204 for missing keys too).

        :raises NotFoundError: the key does not exist.
        """
        name = self._name(key)
        with self._map_errors("delete", key):
            self._bucket.head_object(name)
            self._bucket.delete_object(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, sorted by key (ListObjectsV2).

        OSS lists keys in UTF-8 byte order, which is code-point order, so pages stream through
        without being collected. Names that are not valid faasml keys (``dir/`` markers written
        by the console, for instance) are skipped.
        """
        import oss2

        full = self._prefix + str(prefix)
        with self._map_errors("list"):
            for info in oss2.ObjectIteratorV2(self._bucket, prefix=full, max_keys=_LIST_PAGE):
                key = listed_key(str(info.key), self._prefix)
                if key is None:
                    continue
                yield ObjectInfo(
                    key=key,
                    size=int(info.size),
                    last_modified=float(info.last_modified) if info.last_modified else None,
                    etag=str(info.etag) if info.etag else None,
                )

    # ------------------------------------------------------------------ lifecycle

    def to_config(self) -> dict[str, Any]:
        """Return constructor kwargs that rebuild this store in another process.

        :raises ConfigurationError: a credential was given as a literal string (pass
            ``{"$env": "VAR"}``), or the store wraps an injected ``bucket_obj``.
        """
        if self._injected:
            raise ConfigurationError(
                f"{self!r} wraps an injected oss2.Bucket, which cannot be rebuilt in another "
                "process; build the store from bucket= and endpoint="
            )
        config: dict[str, Any] = {"bucket": self._bucket_name, "endpoint": self._endpoint}
        secrets = {
            "access_key_id": self._id_option,
            "access_key_secret": self._secret_option,
            "security_token": self._token_option,
        }
        config.update(exportable_secrets(secrets, runner="store"))
        if self._prefix:
            config["prefix"] = self._prefix
        if self._region_option:
            config["region"] = self._region_option
        config["connect_timeout"] = self._connect_timeout
        return config

    def close(self) -> None:
        """Close the HTTP connection pool (unless the bucket object was injected). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._injected:
            session = getattr(getattr(self._bucket, "session", None), "session", None)
            if session is not None:
                session.close()

    def __repr__(self) -> str:
        prefix = f", prefix={self._prefix!r}" if self._prefix else ""
        return f"OSSObjectStore(bucket={self._bucket_name!r}, endpoint={self._endpoint!r}{prefix})"

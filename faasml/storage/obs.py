"""An :class:`~faasml.interfaces.ObjectStore` on Huawei Cloud OBS, through ``esdk-obs-python``.

What the SDK (``obs`` 3.26, ``obs/client.py``) does that shapes this backend:

* **Errors are returned, not raised.** Every call returns a result with ``.status``,
  ``.errorCode``, ``.errorMessage`` and ``.requestId``; only transport failures (DNS, refused or
  reset connections, TLS) raise. Both paths go through :meth:`OBSObjectStore._map_errors`.
  HEAD answers carry no body, so a missing key there is a bare 404 without ``errorCode``.
* **No conditional create.** OBS's PutObject reference lists no ``If-None-Match`` or
  forbid-overwrite header (unlike OSS's ``x-oss-forbid-overwrite``), so ``put(...,
  if_absent=True)`` checks with a HEAD and then uploads: not atomic, and
  ``supports_conditional_put`` is false.
* **Ranges** go as ``GetObjectHeader(range="first-last")`` (inclusive; the SDK adds
  ``bytes=``). OBS answers 416 for a start past the end (``b""`` here) and clamps the end.
* **DeleteObject** answers 204 for missing keys too, so :meth:`OBSObjectStore.delete` HEADs first.
* **TLS is not verified by default** (``ssl_verify=False`` in the SDK, whose SSL context loads no
  CA certificates). This backend passes ``certifi``'s CA bundle unless told otherwise.
* **Signatures.** ``signature="v4"`` (the default here) needs the region; it is read from an
  ``obs.<region>.myhuaweicloud.com`` server or given as ``region=``. The SDK's signature
  negotiation (an extra HEAD per bucket) is turned off: the signature is chosen here.
* **Credentials**: ``{"$env": "VAR"}`` references, or none to let the SDK read
  ``OBS_ACCESS_KEY_ID``, ``OBS_SECRET_ACCESS_KEY`` and ``OBS_SECURITY_TOKEN`` per request.
* **Listing timestamps**: the SDK turns listing dates into local-time strings, losing the zone
  (and getting DST wrong), so :meth:`OBSObjectStore.list` leaves ``last_modified`` unset;
  :meth:`OBSObjectStore.head` reports it exactly.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

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
    range_spec,
    retry_after_seconds,
    slice_answer,
)

if TYPE_CHECKING:
    from obs import ObsClient

__all__ = ["ERROR_CODE_MAP", "OBSObjectStore"]

Signature = Literal["v4", "v2", "obs"]

_INSTALL_HINT = 'pip install "faasml[huawei]"'
_ENV_VARS = ("OBS_ACCESS_KEY_ID", "OBS_SECRET_ACCESS_KEY")
_REGION_RE = re.compile(r"^obs\.([a-z0-9-]+)\.(?:myhuaweicloud|myhwclouds|huaweicloud)\.")
_LIST_PAGE = 1000

#: OBS error code -> faasml error. The single translation table of this backend; see
#: :meth:`OBSObjectStore._map_errors`. Codes from "OBS Server-Side Error Codes".
ERROR_CODE_MAP: dict[str, type[ProviderError]] = {
    "NoSuchKey": NotFoundError,
    "NoSuchBucket": NotFoundError,
    "BucketAlreadyExists": AlreadyExistsError,
    "InvalidAccessKeyId": AuthenticationError,
    "SignatureDoesNotMatch": AuthenticationError,
    "RequestTimeTooSkewed": AuthenticationError,
    "InvalidToken": AuthenticationError,
    "ExpiredToken": AuthenticationError,
    "AccessDenied": PermissionDeniedError,
    "AccessForbidden": PermissionDeniedError,
    "AllAccessDisabled": PermissionDeniedError,
    "AccountProblem": PermissionDeniedError,
    "FrozenUserId": PermissionDeniedError,
    "InArrearOrInsufficientBalance": PermissionDeniedError,
    "SlowDown": ThrottledError,
    "TooManyRequests": ThrottledError,
    "ServiceUnavailable": ServiceUnavailableError,
    "InternalError": ServiceUnavailableError,
    "ConnectionError": ServiceUnavailableError,  # raised by the SDK: no answer at all
}
#: HTTP status -> faasml error, for answers without a code (HEAD) or with an unknown one.
STATUS_MAP: Mapping[int, type[ProviderError]] = HTTP_STATUS_MAP


class _ErrorResult(Exception):
    """Carries an OBS result whose status is an error to :meth:`OBSObjectStore._map_errors`."""

    def __init__(self, result: Any) -> None:
        super().__init__(f"OBS answered {result.status} {result.errorCode}")
        self.result = result


def region_from_server(server: str) -> str | None:
    """Return ``cn-north-4`` for ``https://obs.cn-north-4.myhuaweicloud.com``, else None."""
    host = server.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    found = _REGION_RE.match(host)
    return found.group(1) if found else None


def _default_ca_bundle() -> str | bool:
    try:
        import certifi
    except ImportError:
        import ssl

        paths = ssl.get_default_verify_paths()
        return paths.cafile or paths.openssl_cafile or True
    return str(certifi.where())


class OBSObjectStore(ObjectStore):
    """Objects in a Huawei Cloud OBS bucket.

    :param bucket: the bucket name.
    :param server: ``https://obs.<region>.myhuaweicloud.com`` or any OBS/S3-compatible server.
    :param access_key_id: ``{"$env": "VAR"}`` (a string works but :meth:`to_config` refuses it);
        ``None`` with ``secret_access_key=None`` lets the SDK read ``OBS_ACCESS_KEY_ID``,
        ``OBS_SECRET_ACCESS_KEY`` and ``OBS_SECURITY_TOKEN`` per request.
    :param secret_access_key: the secret key, as ``{"$env": "VAR"}``.
    :param security_token: the token of temporary credentials, as ``{"$env": "VAR"}``.
    :param prefix: a key prefix inside the bucket under which this store keeps its objects.
    :param path_style: address the bucket in the path instead of the host name (needed for IP
        servers and most emulators).
    :param signature: ``"v4"``, ``"v2"`` or ``"obs"``.
    :param region: the region, for V4 signatures and bucket creation; read from an
        ``obs.<region>.myhuaweicloud.com`` server when not given.
    :param create_bucket: create the bucket now (in ``region``) if it does not exist.
    :param timeout: seconds before a stalled connection fails.
    :param max_retries: how many times the SDK retries a failed request (with back-off).
    :param ssl_verify: verify TLS certificates (with certifi's CA bundle), or a CA bundle path.
    :param client: a ready ``obs.ObsClient`` (tests); such a store cannot be exported.
    :raises ConfigurationError: incomplete credentials, no region for V4, or a bad prefix.
    :raises MissingDependencyError: ``esdk-obs-python`` is not installed.
    """

    name: ClassVar[str] = "obs"
    #: OBS has no conditional create: ``if_absent`` is check-then-put, not atomic.
    supports_conditional_put: bool = False

    def __init__(
        self,
        bucket: str,
        server: str,
        *,
        access_key_id: SecretValue = None,
        secret_access_key: SecretValue = None,
        security_token: SecretValue = None,
        prefix: str = "",
        path_style: bool = False,
        signature: Signature = "v4",
        region: str | None = None,
        create_bucket: bool = False,
        timeout: float = 60.0,
        max_retries: int = 3,
        ssl_verify: bool | str = True,
        client: ObsClient | None = None,
    ) -> None:
        try:
            from obs import ObsClient as _ObsClient
        except ImportError as exc:
            raise MissingDependencyError(
                f"the obs object store needs esdk-obs-python: {_INSTALL_HINT}"
            ) from exc
        if not isinstance(bucket, str) or not bucket:
            raise ConfigurationError(f"bucket must be a non-empty string, got {bucket!r}")
        if not isinstance(server, str) or "://" not in server:
            raise ConfigurationError(
                "server must be a URL like https://obs.cn-north-4.myhuaweicloud.com, got "
                f"{server!r}"
            )
        if signature not in ("v4", "v2", "obs"):
            raise ConfigurationError(f"signature must be 'v4', 'v2' or 'obs', got {signature!r}")
        self._bucket = bucket
        self._server = server.rstrip("/")
        self._id_option = access_key_id
        self._secret_option = secret_access_key
        self._token_option = security_token
        self._prefix = normalize_prefix(prefix)
        self._path_style = bool(path_style)
        self._signature: Signature = signature
        self._region_option = region
        self._region = region or region_from_server(self._server)
        self._timeout = float(timeout)
        self._max_retries = int(max_retries)
        self._ssl_verify = ssl_verify
        self._closed = False
        self._injected = client is not None
        if client is not None:
            self._client: ObsClient = client
        else:
            if signature == "v4" and not self._region:
                raise ConfigurationError(
                    f"V4 signatures need the region: pass region= (the server {self._server!r} "
                    "does not name one), or signature='v2'"
                )
            options = self._client_options()
            with warnings.catch_warnings():
                # The SDK builds its TLS context with ssl.PROTOCOL_TLS, deprecated since 3.10;
                # that is its business, not the caller's.
                warnings.filterwarnings("ignore", "ssl.PROTOCOL_TLS", DeprecationWarning)
                self._client = _ObsClient(**options)
        if create_bucket:
            self._create_bucket()

    def _client_options(self) -> dict[str, Any]:
        key_id = resolve_secret(self._id_option, "OBS access_key_id")
        secret = resolve_secret(self._secret_option, "OBS secret_access_key")
        token = resolve_secret(self._token_option, "OBS security_token")
        options: dict[str, Any] = {
            "server": self._server,
            "signature": self._signature,
            "region": self._region or "region",  # the SDK's own placeholder; unused by v2/obs
            "path_style": self._path_style,
            # The signature is chosen here; negotiation costs a HEAD ?apiversion per bucket.
            "is_signature_negotiation": False,
            "max_retry_count": self._max_retries,
            "timeout": self._timeout,
            "ssl_verify": _default_ca_bundle() if self._ssl_verify is True else self._ssl_verify,
        }
        if key_id is None and secret is None:
            if token is not None:
                raise ConfigurationError(
                    "security_token needs access_key_id and secret_access_key (the temporary pair)"
                )
            missing = [var for var in _ENV_VARS if not os.environ.get(var)]
            if missing:
                raise ConfigurationError(
                    "no OBS credentials: pass access_key_id= and secret_access_key= as "
                    f'{{"$env": "VAR"}}, or export {" and ".join(missing)}'
                )
            from obs import loadtoken

            # The SDK reads these per request, so rotated temporary credentials are picked up.
            options["security_providers"] = [loadtoken.ENV]
            options["security_provider_policy"] = "ENV"
        elif key_id is None or secret is None:
            raise ConfigurationError(
                "pass both access_key_id= and secret_access_key= (or neither, to read "
                "OBS_ACCESS_KEY_ID and OBS_SECRET_ACCESS_KEY from the environment)"
            )
        else:
            options.update(access_key_id=key_id, secret_access_key=secret, security_token=token)
        return options

    def _create_bucket(self) -> None:
        with self._map_errors("create the bucket"):
            result = self._client.createBucket(self._bucket, location=self._region)
            if result.status >= 300 and result.errorCode != "BucketAlreadyOwnedByYou":
                raise _ErrorResult(result)

    def _name(self, key: str) -> str:
        return self._prefix + validate_key(key)

    # ------------------------------------------------------------------ error boundary

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run one SDK call; an error status becomes an exception for :meth:`_map_errors`."""
        result = fn()
        if result.status >= 300:
            raise _ErrorResult(result)
        return result

    @contextlib.contextmanager
    def _map_errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Translate OBS error results and transport exceptions, using :data:`ERROR_CODE_MAP`.

        The only place where OBS failures are turned into faasml errors. The error code wins
        over the HTTP status, which is the fallback for bodiless answers (HEAD).
        """
        import requests

        if self._closed:
            raise ServiceUnavailableError(
                f"{self!r} is closed; create a new store", provider=self.name
            )
        try:
            yield
        except FaaSMLError:
            raise
        except _ErrorResult as exc:
            result = exc.result
            raise self._translate(
                action,
                key,
                code=str(result.errorCode or ""),
                status=int(result.status),
                message=str(result.errorMessage or ""),
                request_id=str(result.requestId or "") or None,
                headers={str(k).lower(): str(v) for k, v in (result.header or [])},
            ) from exc
        except Exception as exc:
            transport = (OSError, http.client.HTTPException, requests.RequestException)
            # With use_http_conns=True the SDK re-raises requests' errors as bare Exception(e).
            wrapped = exc.args[0] if type(exc) is Exception and exc.args else None
            if not isinstance(exc, transport) and not isinstance(wrapped, transport):
                raise
            raise self._translate(
                action, key, code="ConnectionError", status=None, message=repr(wrapped or exc)
            ) from exc

    def _translate(
        self,
        action: str,
        key: str | None,
        *,
        code: str,
        status: int | None,
        message: str,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> ProviderError:
        where = f"OBS at {self._server}"
        bucket = self._bucket
        what = f"object {key!r} in bucket {bucket!r}" if key else f"bucket {bucket!r}"
        kw: dict[str, Any] = {
            "provider": self.name,
            "code": code or None,
            "status": status,
            "request_id": request_id,
        }
        cls = ERROR_CODE_MAP.get(code)
        if cls is None and status is not None:
            cls = STATUS_MAP.get(status) or (ServiceUnavailableError if status >= 500 else None)
        reason = f"{code or status}: {message}" if message else f"{code or status}"
        if cls is NotFoundError:
            if code == "NoSuchBucket":
                return NotFoundError(
                    f"OBS bucket {bucket!r} does not exist at {self._server}; create it or pass "
                    "create_bucket=True",
                    **kw,
                )
            suffix = "" if code == "NoSuchKey" else " (or the bucket does not exist)"
            return NotFoundError(f"{what} does not exist{suffix} ({where})", **kw)
        if cls is AlreadyExistsError:
            return AlreadyExistsError(
                f"{what} already exists ({where}; bucket names are global): {reason}", **kw
            )
        if cls is AuthenticationError:
            return AuthenticationError(
                f"{where} rejected the credentials while trying to {action} {what} ({reason}); "
                "check access_key_id/secret_access_key (and security_token for temporary keys)",
                **kw,
            )
        if cls is PermissionDeniedError:
            return PermissionDeniedError(
                f"{where}: the credentials may not {action} {what} ({reason})", **kw
            )
        if cls is ThrottledError:
            return ThrottledError(
                f"{where} throttled the request to {action} {what} ({reason}); retry later",
                retry_after=retry_after_seconds(headers or {}),
                **kw,
            )
        if cls is ServiceUnavailableError:
            return ServiceUnavailableError(
                f"{where} is unavailable (could not {action} {what}: {reason})", **kw
            )
        return ProviderError(f"{where} failed to {action} {what} ({reason})", **kw)

    # ------------------------------------------------------------------ primitives

    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        """Upload ``data`` under ``key`` (``PutObject``).

        :param key: the object key.
        :param data: the bytes (copied before the upload starts).
        :param if_absent: upload only if the key does not exist yet; checked with a HEAD request
            first, so **not atomic** (see :attr:`supports_conditional_put`).
        :raises AlreadyExistsError: ``if_absent`` and the key exists.
        """
        name = self._name(key)
        payload = byte_view(data).tobytes()
        with self._map_errors("write", key):
            if if_absent:
                found = self._client.getObjectMetadata(self._bucket, name)
                if found.status < 300:
                    raise AlreadyExistsError(
                        f"object {key!r} already exists in bucket {self._bucket!r}",
                        provider=self.name,
                        code="AlreadyExists",
                    )
                if found.status != 404:
                    raise _ErrorResult(found)
            self._call(lambda: self._client.putContent(self._bucket, name, content=payload))

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Return the object's bytes, or ``data[start:end]``.

        ``start == end`` (or ``end < start``) returns ``b""`` without a request.

        :raises NotFoundError: the key or the bucket does not exist.
        :raises ValueError: a negative bound.
        """
        from obs import GetObjectHeader

        self._check_range(start, end)
        name = self._name(key)
        if is_empty_range(start, end):
            return b""
        lo = start or 0
        ranged = not (lo == 0 and end is None)
        header = GetObjectHeader(range=range_spec(lo, end)) if ranged else None
        with self._map_errors("read", key):
            result = self._client.getObject(
                self._bucket, name, loadStreamInMemory=True, headers=header
            )
            if ranged and result.status == 416:  # start past the end: the slice is empty
                return b""
            if result.status >= 300:
                raise _ErrorResult(result)
        data = bytes(result.body.buffer or b"")
        # A 200 to a ranged request: the range was ignored and the whole object came back.
        return slice_answer(data, lo, end, whole=ranged and result.status == 200)

    def head(self, key: str) -> ObjectInfo:
        """Return the object's size, modification time and etag (``HeadObject``).

        :raises NotFoundError: the key does not exist.
        """
        name = self._name(key)
        with self._map_errors("read the metadata of", key):
            result = self._call(lambda: self._client.getObjectMetadata(self._bucket, name))
        body = result.body
        modified: float | None = None
        if body.lastModified:
            try:
                modified = parsedate_to_datetime(str(body.lastModified)).timestamp()
            except (TypeError, ValueError):
                modified = None
        return ObjectInfo(
            key=key,
            size=int(body.contentLength or 0),
            last_modified=modified,
            etag=str(body.etag).strip('"') if body.etag else None,
        )

    def delete(self, key: str) -> None:
        """Delete the object (a HEAD first: OBS answers 204 for missing keys too).

        :raises NotFoundError: the key does not exist.
        """
        name = self._name(key)
        with self._map_errors("delete", key):
            self._call(lambda: self._client.getObjectMetadata(self._bucket, name))
            self._call(lambda: self._client.deleteObject(self._bucket, name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, sorted by key (ListObjects).

        OBS lists in key order, so pages stream through. Names that are not valid faasml keys
        (``dir/`` folder markers, for instance) are skipped; ``last_modified`` is not reported
        (see the module docstring).
        """
        full = self._prefix + str(prefix)
        marker: str | None = None
        with self._map_errors("list"):
            while True:
                page = self._list_page(full, marker)
                contents = page.contents or []
                for item in contents:
                    key = listed_key(str(item.key), self._prefix)
                    if key is None:
                        continue
                    yield ObjectInfo(
                        key=key,
                        size=int(item.size or 0),
                        etag=str(item.etag).strip('"') if item.etag else None,
                    )
                if not page.is_truncated or not contents:
                    return
                marker = str(page.next_marker or contents[-1].key)

    def _list_page(self, prefix: str, marker: str | None) -> Any:
        return self._call(
            lambda: self._client.listObjects(
                self._bucket, prefix=prefix or None, marker=marker, max_keys=_LIST_PAGE
            )
        ).body

    # ------------------------------------------------------------------ lifecycle

    def to_config(self) -> dict[str, Any]:
        """Return constructor kwargs that rebuild this store in another process.

        :raises ConfigurationError: a credential was given as a literal string (pass
            ``{"$env": "VAR"}``), or the store wraps an injected client.
        """
        if self._injected:
            raise ConfigurationError(
                f"{self!r} wraps an injected ObsClient, which cannot be rebuilt in another "
                "process; build the store from bucket= and server="
            )
        config: dict[str, Any] = {"bucket": self._bucket, "server": self._server}
        secrets = {
            "access_key_id": self._id_option,
            "secret_access_key": self._secret_option,
            "security_token": self._token_option,
        }
        config.update(exportable_secrets(secrets, runner="store"))
        if self._prefix:
            config["prefix"] = self._prefix
        config.update(path_style=self._path_style, signature=self._signature)
        if self._region_option:
            config["region"] = self._region_option
        config.update(
            timeout=self._timeout, max_retries=self._max_retries, ssl_verify=self._ssl_verify
        )
        return config

    def close(self) -> None:
        """Close the client (unless it was injected). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._injected:
            self._client.close()

    def __repr__(self) -> str:
        prefix = f", prefix={self._prefix!r}" if self._prefix else ""
        return f"OBSObjectStore(bucket={self._bucket!r}, server={self._server!r}{prefix})"

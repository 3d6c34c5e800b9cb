"""An :class:`~faasml.interfaces.ObjectStore` on any Apache Libcloud storage driver.

``LibcloudObjectStore("S3", "bucket", key=..., secret=..., driver_options={...})`` stores objects
through ``libcloud.storage.providers.get_driver(Provider.<NAME>)``: S3, MINIO, GOOGLE_STORAGE,
AZURE_BLOBS, LOCAL and the other libcloud storage providers (not ALIYUN_OSS, see below).
``driver_options`` go to the driver's constructor (``host``, ``port``, ``secure``, ``region``;
``path`` for LOCAL).

What libcloud cannot promise, and what this backend does about it:

* **No conditional put.** ``put(..., if_absent=True)`` checks that the object is missing, then
  uploads: two requests, so two racing writers can both "win" and the later upload replaces the
  earlier one. :attr:`LibcloudObjectStore.supports_conditional_put` is ``False``; use a native
  backend (``s3``, ``oss``, ``file`` ...) for write-once objects that several writers race for.
* **Ranged reads on some drivers.** Where the driver does not implement
  ``download_object_range_as_stream`` (BACKBLAZE_B2, NIMBUS, NINEFOLD and DUMMY in libcloud 3.9)
  a ranged ``get`` downloads the whole object and slices it, warning once per store; such a
  store reports ``supports_range_get = False``.
* **ALIYUN_OSS is refused.** Besides lacking ranged downloads, libcloud's OSS driver (3.9.1, and
  upstream at the time of writing) never finishes a download: it reads the body through
  ``HttpLibResponseProxy.read``, which returns the whole text on every call, so
  ``read_in_chunks`` loops forever; and without ``host=`` it connects to 127.0.0.1. Use the
  native ``oss`` backend (:class:`faasml.storage.oss.OSSObjectStore`).
* **Metadata round trips.** Libcloud downloads and deletes need an ``Object``, which costs a HEAD
  request (two on S3-family drivers, which HEAD the bucket too); ``delete`` of a missing key
  raises :class:`~faasml.errors.NotFoundError` although S3 itself would answer 204. S3 answers a
  refused HEAD with a bare 403, which libcloud reports as bad credentials
  (:class:`~faasml.errors.AuthenticationError`) even when the key only lacks permission.
* **The LOCAL driver is for development.** It stores ``a/b`` as the file ``<path>/<container>/a/b``,
  so the keys ``a`` and ``a/b`` cannot both exist (the second put raises a
  :class:`~faasml.errors.ProviderError` with code ``KeyConflict``), and it rewrites files in
  place, so a reader racing an overwrite can see a partial object. Its locking leaves one lock
  file per written path in the temporary directory; do not turn it off with
  ``ex_use_locking=False``: libcloud 3.9's no-op lock then swallows write errors. The ``file``
  backend has none of these limitations.

Libcloud's connection objects keep per-request state, so each thread gets its own driver (a
driver passed in with ``driver=`` is shared, and calls on it are serialized by a lock).
"""

from __future__ import annotations

import builtins
import contextlib
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

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
    clamp_range,
    exportable_secret,
    exportable_secrets,
    is_env_reference,
    listed_key,
    normalize_prefix,
    slice_answer,
)

if TYPE_CHECKING:
    from libcloud.storage.base import Container, StorageDriver

__all__ = ["ERROR_CODE_MAP", "LibcloudObjectStore"]

T = TypeVar("T")

_INSTALL_HINT = 'pip install "faasml[libcloud]"'
#: driver_options that hold credentials: literal values of these cannot go into to_config().
SECRET_OPTIONS = frozenset({"key", "secret", "token", "password", "security_token", "ex_token"})
_STATUS_RE = re.compile(r"[Ss]tatus code:?\s*(\d{3})")
_XML_CODE_RE = re.compile(r"<Code>([^<]+)</Code>")

#: libcloud exception class name (or the service's XML error code carried in its message) ->
#: faasml error. The single translation table of this backend; see :meth:`_map_errors`.
ERROR_CODE_MAP: dict[str, type[FaaSMLError]] = {
    "ObjectDoesNotExistError": NotFoundError,
    "ContainerDoesNotExistError": NotFoundError,
    "ObjectError": NotFoundError,  # LOCAL: the name is a directory (a prefix), not an object
    "ContainerAlreadyExistsError": AlreadyExistsError,
    "InvalidContainerNameError": ConfigurationError,
    "InvalidCredsError": AuthenticationError,
    "AccessDenied": PermissionDeniedError,  # a 403 whose XML code says the key is valid
    "AllAccessDisabled": PermissionDeniedError,
    "RateLimitReachedError": ThrottledError,
    "ServiceUnavailableError": ServiceUnavailableError,
    "KeyConflict": ProviderError,  # LOCAL: a key and a prefix of it cannot both be objects
}
#: HTTP status (from errors that only carry one) -> faasml error.
STATUS_MAP: Mapping[int, type[FaaSMLError]] = HTTP_STATUS_MAP


def _timestamp(extra: Mapping[str, Any]) -> float | None:
    """POSIX time from a libcloud object's ``extra`` (LOCAL: floats; S3: HTTP or ISO dates)."""
    mtime = extra.get("modify_time")
    if isinstance(mtime, (int, float)):
        return float(mtime)
    text = extra.get("last_modified")
    if not isinstance(text, str) or not text:
        return None
    try:
        if text[:1].isdigit():
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None


def _resolve_provider(name: str) -> str:
    """Map ``"S3"``/``"s3"``/``"MINIO"`` ... to the libcloud ``Provider`` constant value."""
    from libcloud.storage.types import Provider

    constants = {k: v for k, v in vars(Provider).items() if k.isupper() and isinstance(v, str)}
    if name.upper() in constants:
        return constants[name.upper()]
    if name.lower() in constants.values():
        return name.lower()
    raise ConfigurationError(
        f"unknown libcloud storage driver {name!r}; choose one of {sorted(constants)}"
    )


class LibcloudObjectStore(ObjectStore):
    """Objects in a container of any libcloud storage provider.

    :param driver: the provider name (``"S3"``, ``"MINIO"``, ``"GOOGLE_STORAGE"``,
        ``"AZURE_BLOBS"``, ``"LOCAL"`` ..., any constant of ``libcloud.storage.types.Provider``
        in any case, except ``"ALIYUN_OSS"``: see the module docstring) or a ready driver
        instance (tests; such a store cannot be exported with :meth:`to_config`).
    :param container: the bucket/container name.
    :param key: the driver's key (access key id, account name ...): a string or
        ``{"$env": "VAR"}``. Not used by LOCAL.
    :param secret: the driver's secret: a string or ``{"$env": "VAR"}``.
    :param prefix: a key prefix inside the container under which this store keeps its objects.
    :param create_container: create the container now if it does not exist.
    :param driver_options: keyword arguments for the driver's constructor (``host``, ``port``,
        ``secure``, ``region`` ...; for LOCAL ``path``, the base directory). Values may be
        ``{"$env": "VAR"}`` references.
    :raises ConfigurationError: unknown or refused driver, bad options or prefix.
    :raises MissingDependencyError: apache-libcloud (or, for LOCAL, fasteners) is not installed.
    """

    name: ClassVar[str] = "libcloud"
    #: libcloud has no conditional upload: ``if_absent`` is check-then-put, not atomic.
    supports_conditional_put: bool = False

    def __init__(
        self,
        driver: str | StorageDriver,
        container: str,
        *,
        key: SecretValue = None,
        secret: SecretValue = None,
        prefix: str = "",
        create_container: bool = False,
        driver_options: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            from libcloud.storage.base import StorageDriver as _BaseDriver
        except ImportError as exc:
            raise MissingDependencyError(
                f"the libcloud object store needs apache-libcloud: {_INSTALL_HINT}"
            ) from exc
        if not isinstance(container, str) or not container:
            raise ConfigurationError(f"container must be a non-empty string, got {container!r}")
        self._container_name = container
        self._key_option = key
        self._secret_option = secret
        self._prefix = normalize_prefix(prefix)
        self._options = dict(driver_options or {})
        self._closed = False
        self._local = threading.local()
        self._drivers: builtins.list[StorageDriver] = []
        self._shared_lock: threading.Lock | None = None
        self._container_lock = threading.Lock()
        self._container_obj: Container | None = None
        self._range_warned = False
        if isinstance(driver, str):
            self._provider: str | None = _resolve_provider(driver)
            self._driver_label = driver.upper()
            if self._provider == "aliyun_oss":
                raise ConfigurationError(
                    "the libcloud ALIYUN_OSS driver cannot download objects (its download stream "
                    "never ends in libcloud 3.9) and has no ranged reads; use the native 'oss' "
                    'backend: faasml.storage.oss.OSSObjectStore (pip install "faasml[aliyun]")'
                )
            self._injected: StorageDriver | None = None
            driver_cls = self._driver_class(self._provider)
            self._resolved_key = resolve_secret(key, "libcloud key")
            self._resolved_secret = resolve_secret(secret, "libcloud secret")
            self._resolved_options = {
                name: resolve_secret(value, f"libcloud driver option {name!r}")
                if is_env_reference(value)
                else value
                for name, value in self._options.items()
            }
            if self._provider == "local" and key is not None:
                raise ConfigurationError(
                    "the LOCAL libcloud driver takes its base directory as "
                    'driver_options={"path": ...}, not key='
                )
            sample = self._build_driver(driver_cls)
        else:
            if not isinstance(driver, _BaseDriver):
                raise ConfigurationError(
                    f"driver must be a provider name or a libcloud StorageDriver, got {driver!r}"
                )
            self._provider = None
            self._driver_label = type(driver).__name__
            self._injected = driver
            self._shared_lock = threading.Lock()
            sample = driver
        self._driver_cls: type[StorageDriver] = type(sample)
        self._local.driver = sample
        self._drivers.append(sample)
        native = (
            type(sample).download_object_range_as_stream
            is not _BaseDriver.download_object_range_as_stream
        )
        if not native:
            # A per-instance capability: the ClassVar describes the usual driver, this one lacks
            # ranged downloads.
            self.supports_range_get = False
        if create_container:
            self._ensure_container()

    # ------------------------------------------------------------------ driver plumbing

    def _driver_class(self, provider: str) -> type[StorageDriver]:
        from libcloud.storage.providers import get_driver

        try:
            cls: type[StorageDriver] = get_driver(provider)
        except ImportError as exc:
            raise MissingDependencyError(
                f"the libcloud {self._driver_label} driver cannot be imported ({exc}): "
                f"{_INSTALL_HINT}"
            ) from exc
        except Exception as exc:  # libcloud raises bare Exception for retired constants
            raise ConfigurationError(
                f"libcloud storage driver {self._driver_label!r} is not usable: {exc}"
            ) from exc
        return cls

    def _build_driver(self, cls: type[StorageDriver]) -> StorageDriver:
        options = dict(self._resolved_options)
        try:
            if self._provider == "local":
                path = options.pop("path", None)
                if not isinstance(path, str) or not path:
                    raise ConfigurationError(
                        'the LOCAL libcloud driver needs driver_options={"path": "<directory>"}'
                    )
                return cls(path, **options)
            if self._resolved_secret is not None:
                options["secret"] = self._resolved_secret
            return cls(self._resolved_key, **options)
        except FaaSMLError:
            raise
        except Exception as exc:  # constructor validation: LibcloudError, TypeError, ValueError
            raise ConfigurationError(
                f"cannot create the libcloud {self._driver_label} driver with options "
                f"{sorted(self._options)}: {exc}"
            ) from exc

    def _driver(self) -> StorageDriver:
        if self._closed:
            raise ServiceUnavailableError(
                f"{self!r} is closed; create a new store", provider=self.name
            )
        if self._injected is not None:
            return self._injected
        driver: StorageDriver | None = getattr(self._local, "driver", None)
        if driver is None:
            driver = self._build_driver(self._driver_cls)
            self._local.driver = driver
            with self._container_lock:
                self._drivers.append(driver)
        return driver

    def _call(self, fn: Callable[[StorageDriver], T]) -> T:
        """Run ``fn(driver)``; calls on an injected (shared) driver are serialized."""
        driver = self._driver()
        if self._shared_lock is None:
            return fn(driver)
        with self._shared_lock:
            return fn(driver)

    def _ensure_container(self) -> None:
        from libcloud.storage.types import ContainerAlreadyExistsError, ContainerDoesNotExistError

        with self._map_errors("create the container"):
            try:
                self._container_obj = self._call(lambda d: d.get_container(self._container_name))
            except ContainerDoesNotExistError:
                try:
                    self._container_obj = self._call(
                        lambda d: d.create_container(self._container_name)
                    )
                except ContainerAlreadyExistsError:  # created concurrently: ours to use
                    self._container_obj = None

    def _container(self, driver: StorageDriver) -> Container:
        """The container object, looked up once (raising NotFoundError if it does not exist)."""
        with self._container_lock:
            if self._container_obj is None:
                self._container_obj = driver.get_container(self._container_name)
            container = self._container_obj
        if container.driver is not driver:
            from libcloud.storage.base import Container as _Container

            # Objects carry their driver; keep each thread on its own connection.
            return _Container(name=container.name, extra=container.extra, driver=driver)
        return container

    def _name(self, key: str) -> str:
        return self._prefix + validate_key(key)

    # ------------------------------------------------------------------ error boundary

    def _endpoint(self) -> str:
        if self._provider == "local":
            return f"LOCAL path {self._options.get('path')!r}"
        host = self._options.get("host")
        where = f" at {host}:{self._options['port']}" if host and "port" in self._options else ""
        if host and not where:
            where = f" at {host}"
        return f"libcloud {self._driver_label}{where}"

    @contextlib.contextmanager
    def _map_errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Translate what a libcloud call raises into faasml errors, using :data:`ERROR_CODE_MAP`.

        The only place where libcloud, requests and OS errors are caught. Libcloud's S3 drivers
        report most failures as a plain ``LibcloudError`` whose message carries the HTTP status,
        and every 401/403 as ``InvalidCredsError`` whose message carries the service's XML error
        body, so both are parsed here.
        """
        try:
            yield
        except FaaSMLError:
            raise
        except Exception as exc:
            mapped = self._translate(exc, action, key)
            if mapped is None:
                raise
            raise mapped from exc

    def _translate(self, exc: BaseException, action: str, key: str | None) -> FaaSMLError | None:
        import requests
        from libcloud.common.exceptions import BaseHTTPError
        from libcloud.common.types import LibcloudError

        where = self._endpoint()
        container = self._container_name
        # LibcloudError's str() is a repr of its fields; its ``value`` is the message proper.
        value = getattr(exc, "value", exc)
        text = str(exc if value is None else value)
        xml_code = _XML_CODE_RE.search(text)
        code = xml_code.group(1) if xml_code else type(exc).__name__
        status = getattr(exc, "http_code", None) or getattr(exc, "code", None)
        if not isinstance(status, int):
            found = _STATUS_RE.search(text)
            status = int(found.group(1)) if found else None
        kw: dict[str, Any] = {"provider": self.name, "code": code, "status": status}
        what = f"object {key!r} in container {container!r}" if key else f"container {container!r}"

        if isinstance(exc, (NotADirectoryError, IsADirectoryError)):
            kw["code"] = "KeyConflict"
            return ERROR_CODE_MAP["KeyConflict"](
                f"{where} cannot {action} {what}: the LOCAL driver stores keys as files, so a key "
                "and a key below it ('a' and 'a/b') cannot both exist. Use the 'file' backend for "
                "a local store without this limit",
                **kw,
            )
        if isinstance(exc, FileNotFoundError):  # LOCAL: removed between the stat and the open
            code = "ObjectDoesNotExistError"
        elif isinstance(exc, PermissionError):
            code = "AccessDenied"
        elif isinstance(exc, (requests.RequestException, OSError)):
            return ServiceUnavailableError(
                f"{where} is unreachable (could not {action} {what}): {exc}", **kw
            )
        elif not isinstance(exc, (LibcloudError, BaseHTTPError)):
            return None
        elif type(exc).__name__ == "InvalidContainerNameError" and "already exists" in text:
            # The S3 drivers' answer when another account owns the bucket name.
            code = "ContainerAlreadyExistsError"
        kw["code"] = code
        cls = ERROR_CODE_MAP.get(code) or ERROR_CODE_MAP.get(type(exc).__name__)
        if cls is None and status is not None:
            cls = STATUS_MAP.get(status) or (ServiceUnavailableError if status >= 500 else None)
        if cls is None:
            return ProviderError(f"{where} failed to {action} {what}: {text}", **kw)
        if cls is NotFoundError:
            if type(exc).__name__ == "ContainerDoesNotExistError" or code == "NoSuchBucket":
                return NotFoundError(
                    f"container {container!r} does not exist on {where}; create it or pass "
                    "create_container=True",
                    **kw,
                )
            return NotFoundError(f"{what} does not exist ({where})", **kw)
        if cls is AuthenticationError:
            # S3 answers a refused HEAD with a bare 403, which libcloud reports as bad credentials.
            detail = (
                text or "the service gave no error code: wrong credentials, or they lack permission"
            )
            return AuthenticationError(
                f"{where} rejected the credentials while trying to {action} {what} ({detail}). "
                'Check key= and secret= (pass them as {"$env": "VAR"})',
                **kw,
            )
        if cls is PermissionDeniedError:
            return PermissionDeniedError(
                f"{where}: the credentials may not {action} {what}: {text}", **kw
            )
        if cls is ThrottledError:
            retry_after = getattr(exc, "retry_after", None)
            return ThrottledError(
                f"{where} throttled the request to {action} {what}; retry later",
                retry_after=float(retry_after) if retry_after else None,
                **kw,
            )
        if cls is ServiceUnavailableError:
            return ServiceUnavailableError(
                f"{where} is unavailable (could not {action} {what}): {text}", **kw
            )
        if cls is AlreadyExistsError:
            return AlreadyExistsError(f"{where}: {what} already exists: {text}", **kw)
        if cls is ConfigurationError:
            return ConfigurationError(f"{where}: {what} is invalid: {text}")
        return cls(f"{where} failed to {action} {what}: {text}", **kw)

    # ------------------------------------------------------------------ primitives

    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        """Upload ``data`` under ``key`` with ``upload_object_via_stream``.

        :param key: the object key.
        :param data: the bytes (copied before the upload starts).
        :param if_absent: upload only if the key does not exist yet; checked with a HEAD request
            first, so **not atomic** (see :attr:`supports_conditional_put`).
        :raises AlreadyExistsError: ``if_absent`` and the key exists.
        :raises InvalidKeyError: the key is not a valid key.
        """
        from libcloud.storage.types import ObjectError

        name = self._name(key)
        payload = byte_view(data).tobytes()
        with self._map_errors("write", key):
            if if_absent and self._exists(name):
                raise AlreadyExistsError(
                    f"object {key!r} already exists in container {self._container_name!r}",
                    provider=self.name,
                    code="AlreadyExists",
                )

            def upload(driver: StorageDriver) -> None:
                driver.upload_object_via_stream(
                    iter((payload,)),
                    self._container(driver),
                    name,
                    extra={"content_type": "application/octet-stream"},
                )

            try:
                self._call(upload)
            except ObjectError as exc:
                # LOCAL, after writing: the name is a directory, i.e. other keys live below it.
                if type(exc) is not ObjectError:
                    raise
                raise IsADirectoryError(f"{name!r} is a directory") from exc

    def _exists(self, name: str) -> bool:
        from libcloud.storage.types import ObjectDoesNotExistError, ObjectError

        try:
            self._call(lambda d: d.get_object(self._container_name, name))
        except ObjectDoesNotExistError:
            return False
        except ObjectError:  # LOCAL: a directory, i.e. only a prefix
            return False
        return True

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Return the object's bytes, or ``data[start:end]``.

        :param key: the object key.
        :param start: first byte (default 0).
        :param end: one past the last byte (default: the end); clamped to the object size.
        :raises NotFoundError: the key or the container does not exist.
        :raises ValueError: a negative bound.
        """
        self._check_range(start, end)
        name = self._name(key)
        with self._map_errors("read", key):
            return self._call(lambda d: self._read(d, name, start, end))

    def _read(self, driver: StorageDriver, name: str, start: int | None, end: int | None) -> bytes:
        from libcloud.common.types import LibcloudError

        obj = driver.get_object(self._container_name, name)
        if not start and end is None:
            return b"".join(driver.download_object_as_stream(obj))
        size = obj.size if isinstance(obj.size, int) else None
        lo, hi = (start or 0, end) if size is None else clamp_range(start, end, size)
        if hi is not None and lo >= hi:
            return b""
        if not self.supports_range_get or size is None:
            self._warn_full_download()
            whole = b"".join(driver.download_object_as_stream(obj))
            return slice_answer(whole, lo, hi, whole=True)
        try:
            data = b"".join(driver.download_object_range_as_stream(obj, lo, hi))
        except LibcloudError as exc:
            # 416: the object shrank below ``start`` since the HEAD; its slice is empty.
            if "416" in str(getattr(exc, "value", exc)):
                return b""
            raise
        return slice_answer(data, lo, hi, whole=False)

    def _warn_full_download(self) -> None:
        if self._range_warned or self.supports_range_get:
            return
        self._range_warned = True
        warnings.warn(
            f"the libcloud {self._driver_label} driver has no ranged download: get() with a "
            "range downloads the whole object and slices it; a native faasml backend for this "
            "service reads ranges",
            RuntimeWarning,
            stacklevel=6,
        )

    def head(self, key: str) -> ObjectInfo:
        """Return the object's size, modification time and etag.

        :raises NotFoundError: the key or the container does not exist.
        """
        name = self._name(key)
        with self._map_errors("read the metadata of", key):
            obj = self._call(lambda d: d.get_object(self._container_name, name))
            return self._info(key, obj.size, obj.extra or {}, obj.hash)

    @staticmethod
    def _info(key: str, size: object, extra: Mapping[str, Any], etag: object) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=int(size) if isinstance(size, (int, str)) else 0,
            last_modified=_timestamp(extra),
            etag=etag.strip('"') if isinstance(etag, str) and etag else None,
        )

    def delete(self, key: str) -> None:
        """Delete the object (a HEAD first: S3-family services do not report missing keys).

        :raises NotFoundError: the key or the container does not exist.
        """
        name = self._name(key)
        with self._map_errors("delete", key):

            def remove(driver: StorageDriver) -> bool:
                obj = driver.get_object(self._container_name, name)
                return bool(driver.delete_object(obj))

            if not self._call(remove):
                if not self._exists(name):  # deleted by someone else in between
                    raise NotFoundError(
                        f"object {key!r} in container {self._container_name!r} does not exist "
                        f"({self._endpoint()})",
                        provider=self.name,
                        code="ObjectDoesNotExistError",
                    )
                raise ProviderError(
                    f"{self._endpoint()} did not delete object {key!r}",
                    provider=self.name,
                    code="DeleteFailed",
                )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, sorted by key.

        The listing is collected, then sorted, because not every libcloud driver returns names in
        order. Names that are not valid faasml keys (``dir/`` markers written by consoles, for
        instance) are skipped.
        """
        full = self._prefix + str(prefix)
        with self._map_errors("list"):

            def fetch(driver: StorageDriver) -> builtins.list[ObjectInfo]:
                container = self._container(driver)
                # LOCAL filters client-side anyway and warns when given a prefix.
                server_prefix = full if full and self._provider != "local" else None
                found: builtins.list[ObjectInfo] = []
                for obj in driver.list_container_objects(container, prefix=server_prefix):
                    name = str(obj.name)
                    if not name.startswith(full):
                        continue
                    key = listed_key(name, self._prefix)
                    if key is None:
                        continue
                    found.append(self._info(key, obj.size, obj.extra or {}, obj.hash))
                return found

            infos = self._call(fetch)
        infos.sort(key=lambda info: info.key)
        yield from infos

    # ------------------------------------------------------------------ lifecycle

    def to_config(self) -> dict[str, Any]:
        """Return constructor kwargs that rebuild this store in another process.

        :raises ConfigurationError: the store wraps a driver instance, or a credential (``key``,
            ``secret``, or a secret driver option) was given as a literal string; pass
            ``{"$env": "VAR"}`` so only the variable name travels.
        """
        if self._provider is None:
            raise ConfigurationError(
                f"{self!r} wraps a driver instance, which cannot be rebuilt in another process; "
                "pass the driver by name (driver='S3', driver_options={...})"
            )
        references = exportable_secrets(
            {"key": self._key_option, "secret": self._secret_option}, runner="store"
        )
        for option, value in self._options.items():
            if option in SECRET_OPTIONS:
                exportable_secret(value, f"driver_options[{option!r}]", runner="store")
        config: dict[str, Any] = {"driver": self._driver_label, "container": self._container_name}
        config.update(references)
        if self._prefix:
            config["prefix"] = self._prefix
        if self._options:
            config["driver_options"] = dict(self._options)
        return config

    def close(self) -> None:
        """Close the HTTP sessions of the drivers this store created. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._injected is not None:
            return  # the caller owns it
        with self._container_lock:
            drivers, self._drivers = self._drivers, []
        for driver in drivers:
            # driver.connection.connection is libcloud's requests-based LibcloudConnection; it
            # only exists once the driver has sent a request (LOCAL never does).
            connection = getattr(getattr(driver, "connection", None), "connection", None)
            session = getattr(connection, "session", None)
            if session is not None:
                session.close()

    def __repr__(self) -> str:
        shown = {
            k: ("***" if k in SECRET_OPTIONS and not is_env_reference(v) else v)
            for k, v in self._options.items()
        }
        extra = f", driver_options={shown!r}" if shown else ""
        prefix = f", prefix={self._prefix!r}" if self._prefix else ""
        return (
            f"LibcloudObjectStore(driver={self._driver_label!r}, "
            f"container={self._container_name!r}{prefix}{extra})"
        )

"""LibcloudObjectStore: the conformance suite on LOCAL (tmp dir), S3 and MINIO (moto_server),
plus the error table, the ranged-read fallback, configuration export and LOCAL's limits."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.common.types import ServiceUnavailableError as LibcloudUnavailable
from libcloud.storage.base import StorageDriver
from libcloud.storage.providers import get_driver
from libcloud.storage.types import (
    ContainerAlreadyExistsError,
    ContainerDoesNotExistError,
    InvalidContainerNameError,
    ObjectDoesNotExistError,
    ObjectError,
    Provider,
)

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
from faasml.interfaces import ObjectStore
from faasml.storage import libcloud as libcloud_module
from faasml.storage.libcloud import ERROR_CODE_MAP, STATUS_MAP, LibcloudObjectStore
from faasml.testing.conformance.object_store import ObjectStoreTests

KEY_VAR = "FAASML_TEST_LIBCLOUD_KEY"
SECRET_VAR = "FAASML_TEST_LIBCLOUD_SECRET"


def race(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- LOCAL


@pytest.fixture
def lock_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the LOCAL driver's per-path lock files (it puts them in the temp dir) out of /tmp.

    TMPDIR is what a spawned child process uses; ``tempfile.tempdir`` is what this one uses.
    """
    locks = tmp_path_factory.mktemp("libcloud-locks")
    monkeypatch.setenv("TMPDIR", str(locks))
    monkeypatch.setattr(tempfile, "tempdir", str(locks))
    return locks


class TestLibcloudLocal(ObjectStoreTests):
    """LOCAL stores keys as files: the tests that need 'a' and 'a/b' together are replaced."""

    @pytest.fixture
    def object_store(self, tmp_path: Path, lock_dir: Path) -> Iterator[LibcloudObjectStore]:
        store = LibcloudObjectStore(
            "LOCAL", "container", create_container=True, driver_options={"path": str(tmp_path)}
        )
        yield store
        store.close()

    def test_list_prefix_sorted(self, object_store: ObjectStore, key_prefix: str) -> None:
        keys = ["b", "a/2", "a-b", "a/1/deep/er", "a0"]
        for i, k in enumerate(keys):
            object_store.put(key_prefix + k, b"v" * i)
        listed = list(object_store.list(key_prefix))
        assert [i.key for i in listed] == sorted(key_prefix + k for k in keys)
        assert {i.key: i.size for i in listed} == {key_prefix + k: i for i, k in enumerate(keys)}

    def test_list_partial_segment_prefix(self, object_store: ObjectStore, key_prefix: str) -> None:
        for k in ["a/b/c", "a/bc", "a/c", "ab"]:
            object_store.put(key_prefix + k, b"1")
        assert [i.key for i in object_store.list(key_prefix + "a/b")] == [
            key_prefix + "a/b/c",
            key_prefix + "a/bc",
        ]

    def test_key_and_child_conflict_is_reported(
        self, object_store: ObjectStore, key_prefix: str
    ) -> None:
        object_store.put(key_prefix + "a", b"file")
        with pytest.raises(ProviderError, match="'file' backend") as excinfo:
            object_store.put(key_prefix + "a/b", b"below a file")
        assert excinfo.value.code == "KeyConflict"
        assert (key_prefix + "a/b") in str(excinfo.value)
        object_store.put(key_prefix + "d/e", b"in a directory")
        with pytest.raises(ProviderError, match="KeyConflict|'file' backend"):
            object_store.put(key_prefix + "d", b"over a directory")
        with pytest.raises(NotFoundError):  # a directory is a prefix, not an object
            object_store.get(key_prefix + "d")
        assert object_store.get(key_prefix + "a") == b"file"

    def test_concurrent_overwrites_are_atomic(
        self, object_store: ObjectStore, key_prefix: str
    ) -> None:
        # LOCAL rewrites files in place, so readers may see partial data (documented); what
        # remains true is that the final object is one writer's complete payload.
        key = key_prefix + "contended"
        payloads = [bytes([i]) * (256 * 1024) for i in range(8)]
        object_store.put(key, b"\xff" * 10)
        race(8, lambda i: object_store.put(key, payloads[i]))
        assert object_store.get(key) in payloads


def test_local_locking_leaves_a_lock_file_per_path(tmp_path: Path, lock_dir: Path) -> None:
    store = LibcloudObjectStore(
        "local", "c", create_container=True, driver_options={"path": str(tmp_path)}
    )
    object_path = os.path.join(str(tmp_path), "c", "k")
    store.put("k", b"locked write")
    assert store.get("k", 7) == b"write"
    digest = hashlib.sha256(object_path.encode()).hexdigest()
    assert [p.name for p in lock_dir.iterdir()] == [digest + ".lock"]  # the documented wart
    store.close()


def test_local_needs_a_path_and_no_key(tmp_path: Path, lock_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="path"):
        LibcloudObjectStore("LOCAL", "c")
    with pytest.raises(ConfigurationError, match="path"):
        LibcloudObjectStore("LOCAL", "c", key="x", driver_options={"path": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="not a directory"):
        LibcloudObjectStore("LOCAL", "c", driver_options={"path": str(tmp_path / "missing")})


def test_missing_container_is_named(tmp_path: Path, lock_dir: Path) -> None:
    store = LibcloudObjectStore("LOCAL", "nope", driver_options={"path": str(tmp_path)})
    with pytest.raises(NotFoundError, match="container 'nope'.*create_container=True"):
        store.put("k", b"v")
    with pytest.raises(NotFoundError, match="'nope'"):
        list(store.list())


def test_prefix_scopes_keys_and_listing(tmp_path: Path, lock_dir: Path) -> None:
    options = {"path": str(tmp_path)}
    scoped = LibcloudObjectStore("LOCAL", "c", prefix="/jobs/run1/", driver_options=options)
    whole = LibcloudObjectStore("LOCAL", "c", create_container=True, driver_options=options)
    scoped.put("x/y", b"1")
    whole.put("elsewhere", b"2")
    assert (tmp_path / "c" / "jobs" / "run1" / "x" / "y").read_bytes() == b"1"
    assert [i.key for i in scoped.list()] == ["x/y"]
    assert [i.key for i in whole.list()] == ["elsewhere", "jobs/run1/x/y"]
    assert scoped.to_config()["prefix"] == "jobs/run1/"
    with pytest.raises(ConfigurationError, match="prefix"):
        LibcloudObjectStore("LOCAL", "c", prefix="a/../b", driver_options=options)


def test_operations_after_close_fail_clearly(tmp_path: Path) -> None:
    store = LibcloudObjectStore(
        "LOCAL", "c", create_container=True, driver_options={"path": str(tmp_path)}
    )
    store.close()
    store.close()
    with pytest.raises(ServiceUnavailableError, match="closed"):
        store.get("k")


# --------------------------------------------------------------------------- S3 / MINIO on moto


@pytest.fixture
def moto_options(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv(KEY_VAR, "testing")
    monkeypatch.setenv(SECRET_VAR, "testing")
    parts = urlsplit(moto_url)
    return {"host": parts.hostname, "port": parts.port, "secure": False}


def _drop_container(driver_name: str, container: str, options: dict[str, Any]) -> None:
    driver = get_driver(getattr(Provider, driver_name.upper()))("testing", "testing", **options)
    try:
        bucket = driver.get_container(container)
        for obj in driver.list_container_objects(bucket):
            driver.delete_object(obj)
        driver.delete_container(bucket)
    except ContainerDoesNotExistError:
        pass


def _moto_store(driver: str, options: dict[str, Any]) -> Iterator[LibcloudObjectStore]:
    container = f"faasml-lc-{uuid.uuid4().hex[:16]}"
    store = LibcloudObjectStore(
        driver,
        container,
        key={"$env": KEY_VAR},
        secret={"$env": SECRET_VAR},
        create_container=True,
        driver_options=options,
    )
    try:
        yield store
    finally:
        store.close()
        _drop_container(driver, container, options)


@pytest.mark.service
class TestLibcloudS3(ObjectStoreTests):
    @pytest.fixture
    def object_store(self, moto_options: dict[str, Any]) -> Iterator[LibcloudObjectStore]:
        yield from _moto_store("S3", moto_options)


@pytest.mark.service
class TestLibcloudMinio(ObjectStoreTests):
    @pytest.fixture
    def object_store(self, moto_options: dict[str, Any]) -> Iterator[LibcloudObjectStore]:
        yield from _moto_store("MINIO", moto_options)


@pytest.mark.service
def test_s3_config_round_trip_and_missing_container(moto_options: dict[str, Any]) -> None:
    for store in _moto_store("s3", moto_options):
        config = store.to_config()
        assert config == {
            "driver": "S3",
            "container": config["container"],
            "key": {"$env": KEY_VAR},
            "secret": {"$env": SECRET_VAR},
            "driver_options": moto_options,
        }
        assert "testing" not in json.dumps(config)
        store.put("k", b"v")
        rebuilt = LibcloudObjectStore(**config)
        assert rebuilt.get("k") == b"v"
        rebuilt.close()
    gone = LibcloudObjectStore(
        "S3",
        "faasml-lc-never-created",
        key={"$env": KEY_VAR},
        secret={"$env": SECRET_VAR},
        driver_options=moto_options,
    )
    with pytest.raises(NotFoundError, match="faasml-lc-never-created"):
        gone.head("k")


@pytest.mark.service
def test_listing_skips_names_that_are_not_keys(moto_options: dict[str, Any]) -> None:
    for store in _moto_store("S3", moto_options):
        raw = get_driver(Provider.S3)("testing", "testing", **moto_options)
        bucket = raw.get_container(store.to_config()["container"])
        raw.upload_object_via_stream(iter([b""]), bucket, "folder/")  # a console "folder"
        store.put("folder/real", b"1")
        assert [i.key for i in store.list("folder")] == ["folder/real"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_endpoint_is_service_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    store = LibcloudObjectStore(
        "S3",
        "b",
        key="k",
        secret="s",
        driver_options={"host": "127.0.0.1", "port": port, "secure": False},
    )
    with pytest.raises(ServiceUnavailableError, match=f"127.0.0.1:{port}") as excinfo:
        store.get("k")
    assert excinfo.value.retriable


# --------------------------------------------------------------------------- HTTP error bodies


S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>m</Message></Error>'
)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (403, "InvalidAccessKeyId", AuthenticationError),
        (403, "SignatureDoesNotMatch", AuthenticationError),
        (403, "AccessDenied", PermissionDeniedError),
        (403, "AllAccessDisabled", PermissionDeniedError),
        (503, "SlowDown", ServiceUnavailableError),
        (500, "InternalError", ServiceUnavailableError),
        (429, "TooManyRequests", ThrottledError),
    ],
)
@responses.activate
def test_s3_driver_http_errors(status: int, code: str, expected: type[FaaSMLError]) -> None:
    base = "http://s3.example.test:9000/bucket"
    responses.add(responses.HEAD, base, status=200)
    # A GET: S3 answers HEAD errors without a body, so only GETs carry the XML error code.
    responses.add(responses.GET, base, status=status, body=S3_ERROR.format(code=code))
    store = LibcloudObjectStore(
        "S3",
        "bucket",
        key="k",
        secret="s",
        driver_options={"host": "s3.example.test", "port": 9000, "secure": False},
    )
    with pytest.raises(expected) as excinfo:
        list(store.list("x/"))
    assert excinfo.value.provider == "libcloud"  # type: ignore[attr-defined]
    assert "s3.example.test:9000" in str(excinfo.value)


@responses.activate
def test_s3_head_403_cannot_tell_permission_from_credentials() -> None:
    base = "http://s3.example.test:9000/bucket"
    responses.add(responses.HEAD, base, status=200)
    responses.add(responses.HEAD, f"{base}/key", status=403)
    store = LibcloudObjectStore(
        "S3",
        "bucket",
        key="k",
        secret="s",
        driver_options={"host": "s3.example.test", "port": 9000, "secure": False},
    )
    with pytest.raises(AuthenticationError, match="no error code.*lack permission"):
        store.head("key")


@responses.activate
def test_s3_ranged_get_sends_an_exclusive_end_as_an_inclusive_range() -> None:
    base = "http://s3.example.test:9000/bucket"
    data = bytes(range(100))
    responses.add(responses.HEAD, base, status=200)
    responses.add(
        responses.HEAD,
        f"{base}/key",
        status=200,
        headers={"Content-Length": "100", "ETag": '"e"', "Content-Type": "x/y"},
    )
    for first, last in ((10, 19), (95, 99)):
        responses.add(responses.GET, f"{base}/key", status=206, body=data[first : last + 1])
    store = LibcloudObjectStore(
        "S3",
        "bucket",
        key="k",
        secret="s",
        driver_options={"host": "s3.example.test", "port": 9000, "secure": False},
    )
    assert store.get("key", 10, 20) == data[10:20]
    assert store.get("key", 95, 1000) == data[95:]  # clamped to the size from the HEAD
    assert store.get("key", 100) == b""  # past the end: no download at all
    ranges = [c.request.headers.get("Range") for c in responses.calls if c.request.method == "GET"]
    assert ranges == ["bytes=10-19", "bytes=95-99"]


# --------------------------------------------------------------------------- the error table


class RaisingDriver(StorageDriver):
    """A driver whose every object lookup raises a chosen exception."""

    name = "raising"

    def __init__(self, exc: BaseException) -> None:
        super().__init__(key="k")
        self.exc = exc

    def get_object(self, container_name: str, object_name: str) -> Any:
        raise self.exc

    def get_container(self, container_name: str) -> Any:
        raise self.exc


TABLE_CASES: list[tuple[str, BaseException, type[FaaSMLError]]] = [
    ("ObjectDoesNotExistError", ObjectDoesNotExistError(None, None, "p/k"), NotFoundError),
    ("ContainerDoesNotExistError", ContainerDoesNotExistError(None, None, "c"), NotFoundError),
    ("ObjectError", ObjectError(None, None, "p/k"), NotFoundError),
    (
        "ContainerAlreadyExistsError",
        ContainerAlreadyExistsError("x", None, "c"),
        AlreadyExistsError,
    ),
    ("InvalidContainerNameError", InvalidContainerNameError("bad", None, "c"), ConfigurationError),
    (
        "InvalidCredsError",
        InvalidCredsError("<Code>InvalidAccessKeyId</Code>"),
        AuthenticationError,
    ),
    (
        "AccessDenied",
        InvalidCredsError("<Error><Code>AccessDenied</Code></Error>"),
        PermissionDeniedError,
    ),
    (
        "AllAccessDisabled",
        InvalidCredsError("<Code>AllAccessDisabled</Code>"),
        PermissionDeniedError,
    ),
    ("RateLimitReachedError", RateLimitReachedError(headers={"retry-after": "7"}), ThrottledError),
    ("ServiceUnavailableError", LibcloudUnavailable(), ServiceUnavailableError),
]


def test_every_table_row_has_a_case() -> None:
    covered = {name for name, _, _ in TABLE_CASES} | {"KeyConflict"}  # LOCAL test above
    assert covered == set(ERROR_CODE_MAP)


@pytest.mark.parametrize(("row", "exc", "expected"), TABLE_CASES, ids=[c[0] for c in TABLE_CASES])
def test_error_table_rows(row: str, exc: BaseException, expected: type[FaaSMLError]) -> None:
    assert ERROR_CODE_MAP[row] is expected
    store = LibcloudObjectStore(RaisingDriver(exc), "c")
    with pytest.raises(expected) as excinfo:
        store.head("k")
    assert isinstance(excinfo.value.__cause__, type(exc))
    if isinstance(excinfo.value, ProviderError):
        assert excinfo.value.provider == "libcloud"
    if expected is NotFoundError and row != "ContainerDoesNotExistError":
        assert "'k'" in str(excinfo.value)
    if row == "ContainerDoesNotExistError":
        assert "container 'c'" in str(excinfo.value)
    if isinstance(excinfo.value, ThrottledError):
        assert excinfo.value.retry_after == 7.0


def test_container_name_taken_by_another_account_is_already_exists() -> None:
    exc = InvalidContainerNameError("Container with this name already exists.", None, "c")
    with pytest.raises(AlreadyExistsError):
        LibcloudObjectStore(RaisingDriver(exc), "c").head("k")


@pytest.mark.parametrize("status", sorted(STATUS_MAP))
def test_status_rows(status: int) -> None:
    expected = STATUS_MAP[status]
    store = LibcloudObjectStore(
        RaisingDriver(LibcloudError(f"Unknown error. Status code: {status}")), "c"
    )
    with pytest.raises(expected) as excinfo:
        store.get("k")
    assert excinfo.value.status == status  # type: ignore[attr-defined]
    store = LibcloudObjectStore(RaisingDriver(BaseHTTPError(status, "boom")), "c")
    with pytest.raises(expected):
        store.get("k")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (PermissionError("denied"), PermissionDeniedError),
        (FileNotFoundError("gone"), NotFoundError),
        (ConnectionResetError("reset"), ServiceUnavailableError),
        (LibcloudError("Unexpected status code: 418"), ProviderError),
    ],
)
def test_os_and_unknown_errors(exc: BaseException, expected: type[FaaSMLError]) -> None:
    with pytest.raises(expected) as excinfo:
        LibcloudObjectStore(RaisingDriver(exc), "c").head("k")
    assert type(excinfo.value) is expected


def test_programming_errors_are_not_translated() -> None:
    with pytest.raises(KeyError):
        LibcloudObjectStore(RaisingDriver(KeyError("bug")), "c").head("k")


# --------------------------------------------------------------------------- ranged reads


class NoRangeLocalDriver(get_driver(Provider.LOCAL)):  # type: ignore[misc]
    """The LOCAL driver without ranged downloads, like BACKBLAZE_B2, NIMBUS or DUMMY."""

    download_object_range_as_stream = StorageDriver.download_object_range_as_stream


def test_driver_without_ranged_download_falls_back_with_one_warning(
    tmp_path: Path, lock_dir: Path
) -> None:
    data = bytes(range(100))
    driver = NoRangeLocalDriver(str(tmp_path))
    driver.create_container("c")
    store = LibcloudObjectStore(driver, "c")
    assert store.supports_range_get is False
    assert LibcloudObjectStore.supports_range_get is True
    store.put("obj", data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.get("obj", 10, 20) == data[10:20]
        assert store.get("obj", 95) == data[95:]
        assert store.get("obj", 200) == b""
        assert store.get("obj", end=5) == data[:5]
        assert store.get("obj") == data
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "NoRangeLocalDriver" in messages[0] and "whole object" in messages[0]
    assert caught[0].filename == __file__  # points at the caller, not at faasml


def test_aliyun_oss_driver_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'oss'.*OSSObjectStore"):
        LibcloudObjectStore("ALIYUN_OSS", "bkt", key="id", secret="s")


def test_native_ranged_download_is_detected(tmp_path: Path, lock_dir: Path) -> None:
    store = LibcloudObjectStore("LOCAL", "c", driver_options={"path": str(tmp_path)})
    assert store.supports_range_get is True


# --------------------------------------------------------------------------- configuration


def test_unknown_driver_lists_the_choices() -> None:
    with pytest.raises(ConfigurationError, match="'NOPE'.*S3"):
        LibcloudObjectStore("NOPE", "c")


def test_driver_constructor_errors_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="MINIO.*host"):
        LibcloudObjectStore("MINIO", "c", key="k", secret="s")


def test_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(provider: str) -> Any:
        raise ImportError("Missing fasteners dependency")

    monkeypatch.setattr("libcloud.storage.providers.get_driver", broken)
    with pytest.raises(MissingDependencyError, match=r"faasml\[libcloud\]"):
        LibcloudObjectStore("LOCAL", "c", driver_options={"path": "/tmp"})


def test_to_config_refuses_literal_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, "id")
    options = {"host": "h.example.test", "port": 1, "secure": False}
    literal = LibcloudObjectStore(
        "S3", "b", key={"$env": KEY_VAR}, secret="s3cr3t", driver_options=options
    )
    with pytest.raises(ConfigurationError, match=r'secret=\{"\$env": "VAR"\}'):
        literal.to_config()
    monkeypatch.setenv("FAASML_TEST_TOKEN", "tok")
    token = LibcloudObjectStore("S3", "b", driver_options={**options, "token": "literal-token"})
    with pytest.raises(ConfigurationError, match="token"):
        token.to_config()
    assert "literal-token" not in repr(token)
    referenced = LibcloudObjectStore(
        "S3", "b", driver_options={**options, "token": {"$env": "FAASML_TEST_TOKEN"}}
    )
    assert referenced.to_config()["driver_options"]["token"] == {"$env": "FAASML_TEST_TOKEN"}
    assert "s3cr3t" not in repr(literal)


def test_env_reference_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    with pytest.raises(ConfigurationError, match=KEY_VAR):
        LibcloudObjectStore("S3", "b", key={"$env": KEY_VAR}, driver_options={"host": "h"})


def test_injected_driver_cannot_be_exported() -> None:
    store = LibcloudObjectStore(RaisingDriver(KeyError()), "c")
    with pytest.raises(ConfigurationError, match="by name"):
        store.to_config()
    assert "RaisingDriver" in repr(store)
    with pytest.raises(ConfigurationError):
        LibcloudObjectStore(object(), "c")  # type: ignore[arg-type]


def test_registered_backend() -> None:
    from faasml.storage import faasml_object_store_backends

    records = {r.name: r for r in faasml_object_store_backends()}
    record = records["libcloud"]
    assert record.cls == "faasml.storage.libcloud:LibcloudObjectStore"
    assert record.extra == "libcloud"
    assert record.requires == ("libcloud", "fasteners")
    assert libcloud_module.LibcloudObjectStore.name == "libcloud"

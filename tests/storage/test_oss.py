"""OSSObjectStore: the conformance suite against a loopback OSS stub (tests/storage/_oss_stub.py),
CRUD and ranges against moto_server, and every row of the error table."""

from __future__ import annotations

import dataclasses
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import oss2
import pytest

from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ThrottledError,
)
from faasml.storage import oss as oss_module
from faasml.storage.oss import ERROR_CODE_MAP, STATUS_MAP, OSSObjectStore, region_from_endpoint
from faasml.testing.conformance.object_store import ObjectStoreTests

from ._oss_stub import OSSStub

ID_VAR = "FAASML_TEST_OSS_ID"
SECRET_VAR = "FAASML_TEST_OSS_SECRET"
TOKEN_VAR = "FAASML_TEST_OSS_TOKEN"


@pytest.fixture(scope="module")
def stub() -> Iterator[OSSStub]:
    with OSSStub(
        credentials={"test-id": "test-secret", "sts-id": "sts-secret"},
        sts_tokens={"sts-id": "the-token"},
    ) as server:
        yield server


@pytest.fixture
def env_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv(ID_VAR, "test-id")
    monkeypatch.setenv(SECRET_VAR, "test-secret")
    return {"access_key_id": {"$env": ID_VAR}, "access_key_secret": {"$env": SECRET_VAR}}


def make_store(stub: OSSStub, credentials: dict[str, Any], **kwargs: Any) -> OSSObjectStore:
    bucket = kwargs.pop("bucket", f"faasml-{uuid.uuid4().hex[:20]}")
    kwargs.setdefault("create_bucket", True)
    return OSSObjectStore(bucket, stub.endpoint, **credentials, **kwargs)


@pytest.fixture
def store(stub: OSSStub, env_credentials: dict[str, Any]) -> Iterator[OSSObjectStore]:
    s = make_store(stub, env_credentials)
    yield s
    s.close()


class TestOSSObjectStore(ObjectStoreTests):
    """The whole suite, through oss2, against the stub (V1 signatures, verified)."""

    @pytest.fixture
    def object_store(self, store: OSSObjectStore) -> OSSObjectStore:
        return store


class TestOSSObjectStoreV4(ObjectStoreTests):
    """The whole suite again with V4 signatures (region given) and a store prefix."""

    @pytest.fixture
    def object_store(
        self, stub: OSSStub, env_credentials: dict[str, Any]
    ) -> Iterator[OSSObjectStore]:
        s = make_store(stub, env_credentials, region="cn-hangzhou", prefix="faasml/run")
        yield s
        s.close()


# --------------------------------------------------------------------------- OSS specifics


def test_if_absent_sends_forbid_overwrite(stub: OSSStub, store: OSSObjectStore) -> None:
    store.put("k", b"1", if_absent=True)
    method, _, headers = stub.requests[-1]
    assert method == "PUT"
    assert headers.get("x-oss-forbid-overwrite") == "true"
    store.put("k", b"2")  # a plain put overwrites
    assert "x-oss-forbid-overwrite" not in stub.requests[-1][2]
    with pytest.raises(AlreadyExistsError, match="'k'") as excinfo:
        store.put("k", b"3", if_absent=True)
    assert excinfo.value.code == "FileAlreadyExists"
    assert excinfo.value.status == 409
    assert store.get("k") == b"2"


def test_ranges_are_inclusive_standard_and_never_suffix(
    stub: OSSStub, store: OSSObjectStore
) -> None:
    data = bytes(range(100))
    store.put("r", data)
    before = len(stub.requests)
    assert store.get("r", 10, 20) == data[10:20]
    assert store.get("r", 90) == data[90:]
    assert store.get("r", end=1) == data[:1]
    assert store.get("r", 95, 1000) == data[95:]
    assert store.get("r", 100) == b""
    ranged = [h for m, _, h in stub.requests[before:] if m == "GET"]
    assert [h["range"] for h in ranged] == [
        "bytes=10-19",
        "bytes=90-",
        "bytes=0-0",
        "bytes=95-999",
        "bytes=100-",
    ]
    assert all(h["x-oss-range-behavior"] == "standard" for h in ranged)
    count = len(stub.requests)
    assert store.get("r", 40, 40) == b""
    assert store.get("r", 60, 50) == b""
    assert len(stub.requests) == count, "an empty range must not cost a request"


def test_server_that_ignores_range_behavior_is_sliced(
    stub: OSSStub, store: OSSObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OSS's default (and OSS-compatible servers that ignore x-oss-range-behavior): an end past
    # the object makes the whole Range header void, and the answer is 200 with every byte.
    store.put("r", b"0123456789")
    real = oss2.Bucket.get_object

    def without_behavior(self: oss2.Bucket, key: str, **kw: Any) -> Any:
        kw["headers"] = {}
        return real(self, key, **kw)

    monkeypatch.setattr(oss2.Bucket, "get_object", without_behavior)
    assert store.get("r", 5, 50) == b"56789"
    assert store.get("r", 20) == b""
    assert store.get("r", 2, 4) == b"23"


def test_full_download_crc_is_checked(stub: OSSStub, store: OSSObjectStore) -> None:
    store.put("c", b"payload")
    bucket = stub.buckets[store.to_config()["bucket"]]
    bucket["c"] = dataclasses.replace(bucket["c"], crc=bucket["c"].crc ^ 1)
    with pytest.raises(ServiceUnavailableError, match="InconsistentError") as excinfo:
        store.get("c")
    assert excinfo.value.retriable
    assert store.get("c", 0, 3) == b"pay"  # ranged reads carry no whole-object CRC


def test_delete_of_missing_key_is_not_found_although_oss_says_204(store: OSSObjectStore) -> None:
    with pytest.raises(NotFoundError, match="'gone'"):
        store.delete("gone")


def test_listing_pages_and_decodes_keys(
    store: OSSObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oss_module, "_LIST_PAGE", 2)
    keys = ["a b/1", "a b/2", "a+b", "é/3", "x%2Fy", "z?q=1&r"]
    for key in keys:
        store.put(key, key.encode())
    assert [i.key for i in store.list()] == sorted(keys)
    assert [i.size for i in store.list("a b/")] == [5, 5]


def test_listing_skips_console_folder_markers(stub: OSSStub, store: OSSObjectStore) -> None:
    store.put("dir/real", b"1")
    store._bucket.put_object("dir/", b"")  # what the OSS console creates for a "folder"
    assert [i.key for i in store.list("dir")] == ["dir/real"]


def test_head_reports_size_mtime_and_etag(store: OSSObjectStore) -> None:
    store.put("h", b"abc")
    info = store.head("h")
    assert info.size == 3
    assert info.etag == "900150983CD24FB0D6963F7D28E17F72"  # OSS: upper-case MD5, no quotes
    assert info.last_modified is not None and info.last_modified > 1e9


def test_missing_bucket_is_named(stub: OSSStub, env_credentials: dict[str, Any]) -> None:
    store = make_store(stub, env_credentials, bucket="faasml-never-created", create_bucket=False)
    with pytest.raises(NotFoundError, match="'faasml-never-created'.*create_bucket=True"):
        store.get("k")
    with pytest.raises(NotFoundError, match="or the bucket does not exist"):
        store.head("k")  # HEAD answers carry no error code


def test_create_bucket_is_idempotent(stub: OSSStub, env_credentials: dict[str, Any]) -> None:
    first = make_store(stub, env_credentials)
    first.put("k", b"v")
    again = make_store(stub, env_credentials, bucket=first.to_config()["bucket"])
    assert again.get("k") == b"v"


# --------------------------------------------------------------------------- credentials


def test_sts_credentials(stub: OSSStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ID_VAR, "sts-id")
    monkeypatch.setenv(SECRET_VAR, "sts-secret")
    monkeypatch.setenv(TOKEN_VAR, "the-token")
    creds = {"access_key_id": {"$env": ID_VAR}, "access_key_secret": {"$env": SECRET_VAR}}
    store = make_store(stub, {**creds, "security_token": {"$env": TOKEN_VAR}})
    store.put("k", b"v")
    assert stub.requests[-1][2]["x-oss-security-token"] == "the-token"
    assert store.to_config()["security_token"] == {"$env": TOKEN_VAR}
    unsigned = make_store(stub, creds, bucket=store.to_config()["bucket"], create_bucket=False)
    with pytest.raises(AuthenticationError, match="InvalidSecurityToken.*security_token"):
        unsigned.get("k")


def test_wrong_secret_fails_the_signature_check(
    stub: OSSStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ID_VAR, "test-id")
    monkeypatch.setenv(SECRET_VAR, "not-the-secret")
    store = OSSObjectStore(
        "bkt-test",
        stub.endpoint,
        access_key_id={"$env": ID_VAR},
        access_key_secret={"$env": SECRET_VAR},
    )
    with pytest.raises(AuthenticationError, match="SignatureDoesNotMatch") as excinfo:
        store.get("k")
    assert excinfo.value.status == 403
    assert excinfo.value.request_id


def test_environment_credentials(stub: OSSStub, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigurationError, match="OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET"):
        OSSObjectStore("b", stub.endpoint)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "test-id")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "test-secret")
    store = OSSObjectStore(f"faasml-{uuid.uuid4().hex[:20]}", stub.endpoint, create_bucket=True)
    store.put("k", b"v")
    config = store.to_config()
    assert not {"access_key_id", "access_key_secret", "security_token"} & set(config)
    assert OSSObjectStore(**config).get("k") == b"v"
    # The provider reads the environment per request: a variable that disappears is reported.
    monkeypatch.delenv("OSS_ACCESS_KEY_SECRET")
    with pytest.raises(AuthenticationError, match="OSS_ACCESS_KEY_SECRET") as excinfo:
        store.get("k")
    assert excinfo.value.code == "MissingCredentials"


def test_incomplete_credentials_are_refused(stub: OSSStub, env_credentials: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="both"):
        OSSObjectStore("b", stub.endpoint, access_key_id=env_credentials["access_key_id"])
    with pytest.raises(ConfigurationError, match="STS"):
        OSSObjectStore("b", stub.endpoint, security_token={"$env": ID_VAR})
    with pytest.raises(ConfigurationError, match="endpoint"):
        OSSObjectStore("bkt-test", "oss-cn-hangzhou.aliyuncs.com", **env_credentials)
    with pytest.raises(ConfigurationError, match="invalid OSS bucket 'B_'"):
        OSSObjectStore("B_", stub.endpoint, **env_credentials)


def test_to_config_refuses_literal_credentials(
    stub: OSSStub, env_credentials: dict[str, Any]
) -> None:
    store = OSSObjectStore(
        "bkt-test", stub.endpoint, access_key_id={"$env": ID_VAR}, access_key_secret="test-secret"
    )
    with pytest.raises(ConfigurationError, match=r'access_key_secret=\{"\$env": "VAR"\}'):
        store.to_config()
    assert "test-secret" not in repr(store)
    exported = OSSObjectStore(
        "bkt-test", stub.endpoint, **env_credentials, prefix="p", region="cn-x"
    )
    config = exported.to_config()
    assert config == {
        "bucket": "bkt-test",
        "endpoint": stub.endpoint,
        "access_key_id": {"$env": ID_VAR},
        "access_key_secret": {"$env": SECRET_VAR},
        "prefix": "p/",
        "region": "cn-x",
        "connect_timeout": 30.0,
    }
    assert json.loads(json.dumps(config)) == config


def test_injected_bucket(stub: OSSStub, store: OSSObjectStore) -> None:
    bucket = oss2.Bucket(
        oss2.Auth("test-id", "test-secret"), stub.endpoint, store.to_config()["bucket"]
    )
    injected = OSSObjectStore("ignored", "http://unused.example", bucket_obj=bucket)
    injected.put("k", b"through the injected bucket")
    assert store.get("k") == b"through the injected bucket"
    with pytest.raises(ConfigurationError, match="injected"):
        injected.to_config()
    injected.close()
    assert bucket.get_object("k").read() == b"through the injected bucket"  # not closed


def test_close(store: OSSObjectStore) -> None:
    store.close()
    store.close()
    with pytest.raises(ServiceUnavailableError, match="closed"):
        store.get("k")


@pytest.mark.parametrize(
    ("endpoint", "region"),
    [
        ("https://oss-cn-hangzhou.aliyuncs.com", "cn-hangzhou"),
        ("http://oss-ap-southeast-1-internal.aliyuncs.com/", "ap-southeast-1"),
        ("https://OSS-US-WEST-1.aliyuncs.com:443", "us-west-1"),
        ("https://oss-accelerate.aliyuncs.com", None),
        ("https://files.example.com", None),
        ("http://127.0.0.1:9000", None),
    ],
)
def test_region_from_endpoint(endpoint: str, region: str | None) -> None:
    assert region_from_endpoint(endpoint) == region


def test_signature_version_follows_the_region(
    stub: OSSStub, env_credentials: dict[str, Any]
) -> None:
    v1 = make_store(stub, env_credentials)
    v1.put("k", b"v")
    assert stub.requests[-1][2]["authorization"].startswith("OSS test-id:")
    v4 = make_store(stub, env_credentials, region="cn-hangzhou")
    v4.put("k", b"v")
    assert stub.requests[-1][2]["authorization"].startswith("OSS4-HMAC-SHA256 Credential=test-id/")
    assert "/cn-hangzhou/oss/aliyun_v4_request" in stub.requests[-1][2]["authorization"]


# --------------------------------------------------------------------------- the error table


CODE_STATUS = {
    "NoSuchKey": 404,
    "NoSuchBucket": 404,
    "FileAlreadyExists": 409,
    "BucketAlreadyExists": 409,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "InvalidSecurityToken": 403,
    "SecurityTokenExpired": 403,
    "RequestTimeTooSkewed": 403,
    "AccessDenied": 403,
    "UserDisable": 403,
    "QpsLimitExceeded": 429,
    "TotalQpsLimitExceeded": 503,
    "MetaOperationQpsLimitExceeded": 503,
    "ActiveRequestLimitExceeded": 503,
    "DownloadTrafficRateLimitExceeded": 503,
    "UploadTrafficRateLimitExceeded": 503,
    "CpuLimitExceeded": 503,
    "ServiceUnavailable": 503,
    "InternalError": 500,
}
# Rows raised by oss2 itself rather than answered by the server, each with its own test here.
CLIENT_SIDE_ROWS = {
    "MissingCredentials": "test_environment_credentials",
    "RequestError": "test_unreachable_endpoint",
    "InconsistentError": "test_full_download_crc_is_checked",
}


def test_every_table_row_is_covered() -> None:
    assert set(CODE_STATUS) | set(CLIENT_SIDE_ROWS) == set(ERROR_CODE_MAP)
    for test_name in CLIENT_SIDE_ROWS.values():
        assert test_name in globals()


@pytest.mark.parametrize("code", sorted(CODE_STATUS))
def test_error_code_rows(stub: OSSStub, store: OSSObjectStore, code: str) -> None:
    expected = ERROR_CODE_MAP[code]
    # A status that maps elsewhere proves the code, not the status, chose the class.
    status = 400 if code not in ("NoSuchKey", "NoSuchBucket") else CODE_STATUS[code]
    stub.fail_next(status, code, method="GET", headers={"Retry-After": "3"})
    with pytest.raises(expected) as excinfo:
        store.get("row/key")
    error = excinfo.value
    assert type(error) is expected
    assert error.provider == "oss"
    assert error.code == code
    assert error.request_id
    assert isinstance(error.__cause__, oss2.exceptions.OssError)
    if expected is NotFoundError:
        assert ("row/key" if code == "NoSuchKey" else store.to_config()["bucket"]) in str(error)
    if isinstance(error, ThrottledError):
        assert error.retry_after == 3.0
        assert error.retriable


@pytest.mark.parametrize("status", sorted(STATUS_MAP))
def test_status_rows(stub: OSSStub, store: OSSObjectStore, status: int) -> None:
    stub.fail_next(status, "SomeNewCode", method="GET")
    with pytest.raises(STATUS_MAP[status]) as excinfo:
        store.get("k")
    assert excinfo.value.status == status


def test_head_errors_without_a_body_use_the_status(stub: OSSStub, store: OSSObjectStore) -> None:
    stub.fail_next(403, "AccessDenied", method="HEAD")
    with pytest.raises(PermissionDeniedError):
        store.head("k")
    stub.fail_next(503, "ServiceUnavailable", method="HEAD")
    with pytest.raises(ServiceUnavailableError):
        store.head("k")


def test_unknown_error_is_a_provider_error(stub: OSSStub, store: OSSObjectStore) -> None:
    stub.fail_next(400, "InvalidArgument", method="GET")
    with pytest.raises(ProviderError, match="InvalidArgument") as excinfo:
        store.get("k")
    assert type(excinfo.value) is ProviderError


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_endpoint(env_credentials: dict[str, Any]) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = OSSObjectStore("bkt-test", endpoint, **env_credentials, connect_timeout=2)
    with pytest.raises(ServiceUnavailableError, match=endpoint) as excinfo:
        store.get("k")
    assert excinfo.value.code == "RequestError"
    assert excinfo.value.retriable


# --------------------------------------------------------------------------- moto_server


@pytest.fixture
def moto_store(moto_url: str, env_credentials: dict[str, Any]) -> Iterator[OSSObjectStore]:
    bucket = f"faasml-oss-{uuid.uuid4().hex[:16]}"
    store = OSSObjectStore(bucket, moto_url, **env_credentials, create_bucket=True)
    try:
        yield store
    finally:
        store.close()
        s3 = boto3.client(
            "s3",
            endpoint_url=moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)


@pytest.mark.service
def test_crud_and_ranges_against_moto(moto_store: OSSObjectStore) -> None:
    data = bytes(range(256)) * 4
    moto_store.put("dir/obj", data)
    assert moto_store.get("dir/obj") == data
    assert moto_store.get("dir/obj", 10, 20) == data[10:20]
    assert moto_store.get("dir/obj", 1000, 5000) == data[1000:]
    assert moto_store.get("dir/obj", 5000) == b""  # moto: 416, like OSS's standard behaviour
    assert moto_store.head("dir/obj").size == len(data)
    moto_store.delete("dir/obj")
    for call in (moto_store.get, moto_store.head, moto_store.delete):
        with pytest.raises(NotFoundError, match="dir/obj"):
            call("dir/obj")

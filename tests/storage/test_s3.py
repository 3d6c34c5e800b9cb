"""S3ObjectStore: the conformance suite against moto_server, plus S3-specific behaviour.

Every test uses its own bucket on the shared loopback moto_server and deletes it afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from faasml import registry
from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from faasml.storage import s3 as s3_module
from faasml.storage.s3 import S3ObjectStore
from faasml.testing.conformance.object_store import ObjectStoreTests

pytestmark = pytest.mark.service


def _drop_bucket(moto_url: str, bucket: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        s3.delete_bucket(Bucket=bucket)
    except s3.exceptions.NoSuchBucket:
        pass
    finally:
        s3.close()


@pytest.fixture
def bucket(moto_url: str) -> Iterator[str]:
    name = f"faasml-test-{uuid.uuid4().hex[:16]}"
    yield name
    _drop_bucket(moto_url, name)


class TestS3ObjectStore(ObjectStoreTests):
    @pytest.fixture
    def object_store(
        self, moto_url: str, bucket: str, fake_aws_credentials: None
    ) -> Iterator[S3ObjectStore]:
        store = S3ObjectStore(bucket, endpoint_url=moto_url, create_bucket=True)
        yield store
        store.close()


class TestS3ObjectStoreWithPrefix(ObjectStoreTests):
    @pytest.fixture
    def object_store(
        self, moto_url: str, bucket: str, fake_aws_credentials: None
    ) -> Iterator[S3ObjectStore]:
        store = S3ObjectStore(
            bucket, prefix="nested/pre-", endpoint_url=moto_url, create_bucket=True
        )
        yield store
        store.close()


# ---------------------------------------------------------------- helpers for the tests below


@pytest.fixture
def store(moto_url: str, bucket: str, fake_aws_credentials: None) -> Iterator[S3ObjectStore]:
    s = S3ObjectStore(bucket, endpoint_url=moto_url, create_bucket=True)
    yield s
    s.close()


def _record(client: Any, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every ``operation`` call the client makes (still sent)."""
    calls: list[dict[str, Any]] = []

    def handler(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    client.meta.events.register(f"before-parameter-build.s3.{operation}", handler)
    return calls


def _uploads(store: S3ObjectStore) -> list[Any]:
    return list(store._client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


_MIB = 1024 * 1024


def _pattern(size: int) -> bytes:
    """Bytes whose every 4-byte window is unique, so misplaced ranges cannot compare equal."""
    count = size // 4 + 1
    return b"".join(i.to_bytes(4, "big") for i in range(count))[:size]


# ---------------------------------------------------------------- ranged reads


def test_ranged_reads_send_exact_ranges(store: S3ObjectStore) -> None:
    data = _pattern(1000)
    store.put("r", data)
    calls = _record(store._client, "GetObject")
    assert store.get("r", 10, 20) == data[10:20]
    assert store.get("r", 990) == data[990:]
    assert store.get("r", end=5) == data[:5]
    assert store.get("r", 995, 5000) == data[995:]
    assert store.get("r") == data
    assert store.get("r", 0) == data
    assert [c.get("Range") for c in calls] == [
        "bytes=10-19",
        "bytes=990-",
        "bytes=0-4",
        "bytes=995-4999",
        None,
        None,
    ]


def test_empty_and_past_the_end_ranges(store: S3ObjectStore) -> None:
    store.put("r", b"0123456789")
    store.put("empty", b"")
    calls = _record(store._client, "GetObject")
    assert store.get("r", 4, 4) == b""
    assert store.get("r", 7, 3) == b""
    assert calls == [], "an empty range must not send an (invalid) ranged GET"
    assert store.get("r", 10) == b""  # S3 answers 416 InvalidRange: mapped to b""
    assert store.get("r", 50, 60) == b""
    assert store.get("empty", 0, 10) == b""
    assert store.get("empty", 3) == b""
    assert store.get("empty") == b""


def test_empty_range_of_a_missing_key_raises(store: S3ObjectStore) -> None:
    with pytest.raises(NotFoundError, match="nothing-here"):
        store.get("nothing-here", 5, 5)


def test_invalid_range_from_the_service_means_empty() -> None:
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    store = S3ObjectStore("bucket", client=client)
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "get_object",
            service_error_code="InvalidRange",
            http_status_code=416,
            expected_params={"Bucket": "bucket", "Key": "k", "Range": "bytes=100-"},
        )
        assert store.get("k", 100) == b""
        stubber.assert_no_pending_responses()
    client.close()


# ---------------------------------------------------------------- large objects and multipart


def test_multipart_upload_in_parts(moto_url: str, bucket: str, fake_aws_credentials: None) -> None:
    store = S3ObjectStore(
        bucket,
        endpoint_url=moto_url,
        create_bucket=True,
        multipart_threshold=6 * _MIB,
        multipart_chunk=5 * _MIB,
    )
    data = _pattern(13 * _MIB)
    created = _record(store._client, "CreateMultipartUpload")
    parts = _record(store._client, "UploadPart")
    completed = _record(store._client, "CompleteMultipartUpload")
    store.put("big", bytearray(data))
    assert len(created) == 1 and len(completed) == 1
    assert sorted((p["PartNumber"], len(p["Body"])) for p in parts) == [
        (1, 5 * _MIB),
        (2, 5 * _MIB),
        (3, 3 * _MIB),
    ]
    assert "IfNoneMatch" not in completed[0]
    assert store.head("big").size == len(data)
    assert store.get("big") == data
    # ranges across the part boundaries
    boundary = 5 * _MIB
    assert store.get("big", boundary - 7, boundary + 9) == data[boundary - 7 : boundary + 9]
    assert store.get("big", 10 * _MIB - 1, 10 * _MIB + 1) == data[10 * _MIB - 1 : 10 * _MIB + 1]
    assert _uploads(store) == []
    # below the threshold: one PutObject
    store.put("small", data[: 6 * _MIB])
    assert len(created) == 1
    store.close()


def test_failed_multipart_upload_is_aborted(
    moto_url: str, bucket: str, fake_aws_credentials: None
) -> None:
    store = S3ObjectStore(
        bucket,
        endpoint_url=moto_url,
        create_bucket=True,
        multipart_threshold=6 * _MIB,
        multipart_chunk=5 * _MIB,
    )

    def fail_part_two(params: dict[str, Any], **_: Any) -> None:
        if params["PartNumber"] == 2:
            raise RuntimeError("network fell over during part 2")

    store._client.meta.events.register("before-parameter-build.s3.UploadPart", fail_part_two)
    with pytest.raises(RuntimeError, match="part 2"):
        store.put("big", _pattern(12 * _MIB))
    assert _uploads(store) == [], "the failed upload was not aborted"
    assert not store.exists("big")
    store.close()


def test_32_mib_round_trip(store: S3ObjectStore) -> None:
    data = _pattern(32 * _MIB)
    store.put("k32", memoryview(data))
    assert store.head("k32").size == 32 * _MIB
    assert store.get("k32") == data
    assert store.get("k32", 31 * _MIB, 33 * _MIB) == data[31 * _MIB :]


def test_32_mib_round_trip_in_parts(moto_url: str, bucket: str, fake_aws_credentials: None) -> None:
    store = S3ObjectStore(
        bucket,
        endpoint_url=moto_url,
        create_bucket=True,
        multipart_threshold=8 * _MIB,
        multipart_chunk=8 * _MIB,
    )
    parts = _record(store._client, "UploadPart")
    data = _pattern(32 * _MIB)
    store.put("k32", data)
    assert len(parts) == 4
    assert store.get("k32") == data
    store.close()


# ---------------------------------------------------------------- conditional writes


def test_conditional_create(store: S3ObjectStore) -> None:
    calls = _record(store._client, "PutObject")
    store.put("once", b"first", if_absent=True)
    with pytest.raises(AlreadyExistsError) as caught:
        store.put("once", b"second", if_absent=True)
    assert [c.get("IfNoneMatch") for c in calls] == ["*", "*"]
    assert caught.value.code == "PreconditionFailed" and caught.value.status == 412
    assert "'once'" in str(caught.value) and caught.value.provider == "s3"
    assert store.get("once") == b"first"
    store.put("once", b"unconditional")  # a plain put still overwrites
    assert store.get("once") == b"unconditional"
    assert "IfNoneMatch" not in calls[-1]


def test_conditional_create_in_parts(
    moto_url: str, bucket: str, fake_aws_credentials: None
) -> None:
    store = S3ObjectStore(
        bucket,
        endpoint_url=moto_url,
        create_bucket=True,
        multipart_threshold=6 * _MIB,
        multipart_chunk=5 * _MIB,
    )
    completed = _record(store._client, "CompleteMultipartUpload")
    store.put("big-once", _pattern(7 * _MIB), if_absent=True)
    with pytest.raises(AlreadyExistsError):
        store.put("big-once", b"x" * (7 * _MIB), if_absent=True)
    assert [c.get("IfNoneMatch") for c in completed] == ["*", "*"]
    assert store.get("big-once") == _pattern(7 * _MIB)
    assert _uploads(store) == [], "the refused upload was not aborted"
    store.close()


def _stubbed_store(**kwargs: Any) -> tuple[S3ObjectStore, Any]:
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return S3ObjectStore("bucket", client=client, **kwargs), client


def test_conditional_write_conflicts_are_retried() -> None:
    store, client = _stubbed_store()
    with Stubber(client) as stubber:
        for _ in range(2):
            stubber.add_client_error(
                "put_object", service_error_code="ConditionalRequestConflict", http_status_code=409
            )
        stubber.add_response("put_object", {"ETag": '"abc"'})
        store.put("k", b"v", if_absent=True)
        stubber.assert_no_pending_responses()
        for _ in range(5):
            stubber.add_client_error(
                "put_object", service_error_code="ConditionalRequestConflict", http_status_code=409
            )
        with pytest.raises(ServiceUnavailableError) as caught:
            store.put("k", b"v", if_absent=True)
        assert caught.value.retriable and caught.value.code == "ConditionalRequestConflict"
    client.close()


# ---------------------------------------------------------------- errors from the service


def test_wrong_credentials_raise_authentication_error() -> None:
    # moto does not check signatures: the service's answer is stubbed.
    store, client = _stubbed_store()
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "put_object",
            service_error_code="InvalidAccessKeyId",
            service_message="The AWS Access Key Id you provided does not exist in our records.",
            http_status_code=403,
            response_meta={"RequestId": "R123"},
        )
        with pytest.raises(AuthenticationError) as caught:
            store.put("k", b"v")
    assert caught.value.status == 403 and caught.value.request_id == "R123"
    assert "'k'" in str(caught.value) and "does not exist in our records" in str(caught.value)
    client.close()


def test_batch_delete_failures_are_raised() -> None:
    store, client = _stubbed_store(prefix="p/")
    with Stubber(client) as stubber:
        stubber.add_response(
            "list_objects_v2",
            {"Contents": [{"Key": "p/a", "Size": 1}, {"Key": "p/b", "Size": 1}]},
            {"Bucket": "bucket", "Prefix": "p/"},
        )
        stubber.add_response(
            "delete_objects",
            {"Errors": [{"Key": "p/b", "Code": "AccessDenied", "Message": "Access Denied"}]},
        )
        with pytest.raises(PermissionDeniedError, match=r"'b'.*1 of 2"):
            store.delete_prefix("")
    client.close()


def test_delete_prefix_batches(store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "_DELETE_BATCH", 3)
    for i in range(7):
        store.put(f"d/{i}", b"x")
    store.put("keep", b"x")
    calls = _record(store._client, "DeleteObjects")
    assert store.delete_prefix("d/") == 7
    assert [len(c["Delete"]["Objects"]) for c in calls] == [3, 3, 1]
    assert [i.key for i in store.list()] == ["keep"]
    assert store.delete_prefix("d/") == 0


def test_list_pages(store: S3ObjectStore) -> None:
    keys = [f"page/{i:03d}" for i in range(25)]
    for key in keys:
        store.put(key, b"x")
    calls = _record(store._client, "ListObjectsV2")
    # botocore does not let MaxKeys through our API, so page by injecting it.
    store._client.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2",
        lambda params, **_: params.__setitem__("MaxKeys", 10),
    )
    assert [i.key for i in store.list("page/")] == keys
    assert len(calls) == 3
    assert "ContinuationToken" not in calls[0] and calls[1]["ContinuationToken"]


def test_missing_bucket_is_named_with_a_hint(moto_url: str, fake_aws_credentials: None) -> None:
    name = f"faasml-missing-{uuid.uuid4().hex[:12]}"
    store = S3ObjectStore(name, endpoint_url=moto_url)
    for call in (
        lambda: store.put("k", b"v"),
        lambda: store.get("k"),
        lambda: store.head("k"),
        lambda: store.delete("k"),
        lambda: list(store.list()),
        lambda: store.exists("k"),
    ):
        with pytest.raises(NotFoundError) as caught:
            call()
        assert name in str(caught.value)
        assert "create_bucket=True" in str(caught.value)
    store.close()


def test_server_down_raises_service_unavailable_naming_it(fake_aws_credentials: None) -> None:
    store = S3ObjectStore("bucket", endpoint_url="http://127.0.0.1:1", max_attempts=1)
    start = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as caught:
        store.put("k", b"v")
    assert time.monotonic() - start < 10
    assert "http://127.0.0.1:1" in str(caught.value)
    assert caught.value.retriable and caught.value.provider == "s3"
    store.close()


def test_no_credentials_names_the_variables(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3ObjectStore("bucket", endpoint_url=moto_url, region="us-east-1", max_attempts=1)
    with pytest.raises(AuthenticationError, match="AWS_ACCESS_KEY_ID"):
        store.put("k", b"v")
    store.close()


# ---------------------------------------------------------------- configuration


def test_to_config_has_no_secrets_and_rebuilds(
    moto_url: str, bucket: str, fake_aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_TEST_S3_KEY", "testing")
    monkeypatch.setenv("FAASML_TEST_S3_SECRET", "testing")
    store = S3ObjectStore(
        bucket,
        prefix="jobs/",
        endpoint_url=moto_url,
        access_key_id={"$env": "FAASML_TEST_S3_KEY"},
        secret_access_key={"$env": "FAASML_TEST_S3_SECRET"},
        create_bucket=True,
    )
    config = store.to_config()
    assert config == {
        "bucket": bucket,
        "prefix": "jobs/",
        "region": "us-east-1",
        "endpoint_url": moto_url,
        "multipart_threshold": 64 * _MIB,
        "multipart_chunk": 16 * _MIB,
        "max_attempts": 5,
        "access_key_id": {"$env": "FAASML_TEST_S3_KEY"},
        "secret_access_key": {"$env": "FAASML_TEST_S3_SECRET"},
    }
    assert json.loads(json.dumps(config)) == config
    store.put("a", b"1")
    rebuilt = S3ObjectStore(**config)
    assert rebuilt.get("a") == b"1"
    assert [i.key for i in rebuilt.list()] == ["a"]
    assert store._client.list_objects_v2(Bucket=bucket)["Contents"][0]["Key"] == "jobs/a"
    rebuilt.close()
    store.close()


def test_literal_secrets_cannot_be_serialized(moto_url: str, bucket: str) -> None:
    store = S3ObjectStore(
        bucket,
        endpoint_url=moto_url,
        access_key_id="AKIDLITERAL",
        secret_access_key="literal-secret",
        region="us-east-1",
    )
    with pytest.raises(ConfigurationError) as caught:
        store.to_config()
    assert "$env" in str(caught.value)
    assert "literal-secret" not in str(caught.value) and "AKIDLITERAL" not in str(caught.value)
    store.close()


def test_region_is_pinned_and_client_is_not_serialized(
    moto_url: str, fake_aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    store = S3ObjectStore("bucket", endpoint_url=moto_url)
    assert store.to_config()["region"] == "eu-central-1"
    store.close()
    client = boto3.client("s3", endpoint_url=moto_url, region_name="ap-south-1")
    injected = S3ObjectStore("bucket", client=client)
    config = injected.to_config()
    assert "client" not in config and config["region"] == "ap-south-1"
    injected.close()
    client.list_buckets()  # closing the store left the injected client usable
    client.close()


def test_create_bucket_is_idempotent(
    moto_url: str, bucket: str, fake_aws_credentials: None
) -> None:
    first = S3ObjectStore(bucket, endpoint_url=moto_url, create_bucket=True)
    second = S3ObjectStore(bucket, endpoint_url=moto_url, create_bucket=True)
    first.put("k", b"v")
    assert second.get("k") == b"v"
    assert "create_bucket" not in first.to_config()
    first.close()
    second.close()


def test_create_bucket_outside_us_east_1(
    moto_url: str, bucket: str, fake_aws_credentials: None
) -> None:
    store = S3ObjectStore(bucket, endpoint_url=moto_url, region="eu-west-1", create_bucket=True)
    again = S3ObjectStore(bucket, endpoint_url=moto_url, region="eu-west-1", create_bucket=True)
    location = store._client.get_bucket_location(Bucket=bucket)["LocationConstraint"]
    assert location == "eu-west-1"
    again.close()
    store.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bucket": ""}, "bucket"),
        ({"prefix": "/abs/"}, "prefix"),
        ({"prefix": "a//"}, "prefix"),
        ({"multipart_chunk": 5 * _MIB - 1}, "multipart_chunk"),
        ({"multipart_threshold": 0}, "multipart_threshold"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"access_key_id": "AKID"}, "both"),
    ],
)
def test_invalid_options_are_rejected(
    kwargs: dict[str, Any], match: str, fake_aws_credentials: None
) -> None:
    options: dict[str, Any] = {"bucket": "b", "endpoint_url": "http://127.0.0.1:1"}
    options.update(kwargs)
    with pytest.raises(ConfigurationError, match=match):
        S3ObjectStore(**options)


def test_registered_as_s3() -> None:
    assert registry.backend_class("storage", "s3") is S3ObjectStore
    record = registry.backend_record("storage", "s3")
    assert record.extra == "aws" and record.requires == ("boto3",)

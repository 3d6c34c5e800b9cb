"""OBSObjectStore: the conformance suite against moto_server (V2 and V4 signatures, path style),
every row of the error table through the SDK's own HTTP path under ``responses``, and config."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import responses
from obs import ObsClient

from faasml.errors import (
    AlreadyExistsError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ThrottledError,
)
from faasml.storage import obs as obs_module
from faasml.storage.obs import ERROR_CODE_MAP, STATUS_MAP, OBSObjectStore, region_from_server
from faasml.testing.conformance.object_store import ObjectStoreTests

ID_VAR = "FAASML_TEST_OBS_ID"
SECRET_VAR = "FAASML_TEST_OBS_SECRET"
TOKEN_VAR = "FAASML_TEST_OBS_TOKEN"
SERVER = "https://obs.cn-north-4.myhuaweicloud.com"

# ObsClients built here for https servers make the SDK warn about ssl.PROTOCOL_TLS.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS:DeprecationWarning")


@pytest.fixture
def env_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv(ID_VAR, "testing")
    monkeypatch.setenv(SECRET_VAR, "testing")
    return {"access_key_id": {"$env": ID_VAR}, "secret_access_key": {"$env": SECRET_VAR}}


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


# --------------------------------------------------------------------------- moto_server


def _moto_client(moto_url: str) -> ObsClient:
    return ObsClient(
        access_key_id="testing",
        secret_access_key="testing",
        server=moto_url,
        path_style=True,
        signature="v2",
        is_signature_negotiation=False,
    )


def _drop_bucket(moto_url: str, bucket: str) -> None:
    client = _moto_client(moto_url)
    try:
        listing = client.listObjects(bucket, max_keys=1000)
        while listing.status < 300:
            for item in listing.body.contents or []:
                client.deleteObject(bucket, item.key)
            if not listing.body.is_truncated:
                break
            listing = client.listObjects(bucket, max_keys=1000)
        client.deleteBucket(bucket)
    finally:
        client.close()


@pytest.fixture
def moto_bucket(moto_url: str) -> Iterator[str]:
    bucket = f"faasml-obs-{uuid.uuid4().hex[:16]}"
    yield bucket
    _drop_bucket(moto_url, bucket)


@pytest.mark.service
class TestOBSObjectStoreV2(ObjectStoreTests):
    @pytest.fixture
    def object_store(
        self, moto_url: str, moto_bucket: str, env_credentials: dict[str, Any]
    ) -> Iterator[OBSObjectStore]:
        store = OBSObjectStore(
            moto_bucket,
            moto_url,
            **env_credentials,
            path_style=True,
            signature="v2",
            create_bucket=True,
        )
        yield store
        store.close()


@pytest.mark.service
class TestOBSObjectStoreV4(ObjectStoreTests):
    """V4 signatures and a store prefix (the bucket is made with a V2 client: moto refuses
    ``us-east-1`` as an explicit location, which is what a V4 store would send)."""

    @pytest.fixture
    def object_store(
        self, moto_url: str, moto_bucket: str, env_credentials: dict[str, Any]
    ) -> Iterator[OBSObjectStore]:
        client = _moto_client(moto_url)
        assert client.createBucket(moto_bucket).status == 200
        client.close()
        store = OBSObjectStore(
            moto_bucket,
            moto_url,
            **env_credentials,
            path_style=True,
            region="us-east-1",
            prefix="faasml/run/",
        )
        yield store
        store.close()


@pytest.mark.service
def test_bucket_creation_and_missing_bucket(
    moto_url: str, moto_bucket: str, env_credentials: dict[str, Any]
) -> None:
    options: dict[str, Any] = {**env_credentials, "path_style": True, "signature": "v2"}
    first = OBSObjectStore(moto_bucket, moto_url, create_bucket=True, **options)
    first.put("k", b"v")
    again = OBSObjectStore(moto_bucket, moto_url, create_bucket=True, **options)
    assert again.get("k") == b"v"
    missing = OBSObjectStore("faasml-obs-never-created", moto_url, **options)
    with pytest.raises(NotFoundError, match="'faasml-obs-never-created'.*create_bucket=True"):
        missing.get("k")
    with pytest.raises(NotFoundError, match="or the bucket does not exist"):
        missing.head("k")  # HEAD answers carry no error code


@pytest.mark.service
def test_ranges_and_head_against_moto(
    moto_url: str, moto_bucket: str, env_credentials: dict[str, Any]
) -> None:
    store = OBSObjectStore(
        moto_bucket,
        moto_url,
        **env_credentials,
        path_style=True,
        signature="v2",
        create_bucket=True,
    )
    data = bytes(range(100))
    store.put("r", data)
    assert store.get("r", 10, 20) == data[10:20]
    assert store.get("r", 99) == data[99:]
    assert store.get("r", 100) == b""  # OBS/S3 answer 416
    assert store.get("r", 50, 500) == data[50:]
    info = store.head("r")
    assert info.size == 100
    assert info.etag is not None and len(info.etag) == 32
    assert info.last_modified is not None and info.last_modified > 1e9
    assert [i.last_modified for i in store.list()] == [None]  # see the module docstring
    store.close()


@pytest.mark.service
def test_listing_pages_with_markers(
    moto_url: str,
    moto_bucket: str,
    env_credentials: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(obs_module, "_LIST_PAGE", 2)
    store = OBSObjectStore(
        moto_bucket,
        moto_url,
        **env_credentials,
        path_style=True,
        signature="v2",
        create_bucket=True,
    )
    keys = ["a/1", "a/2", "a/3", "b", "c d/é", "dir/"]
    for key in keys[:-1]:
        store.put(key, b"x")
    _moto_client(moto_url).putContent(moto_bucket, "dir/", content=b"")  # a console folder
    assert [i.key for i in store.list()] == keys[:-1]
    assert [i.key for i in store.list("a/")] == ["a/1", "a/2", "a/3"]


@pytest.mark.service
def test_environment_credentials(
    moto_url: str, moto_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OBS_ACCESS_KEY_ID", "OBS_SECRET_ACCESS_KEY", "OBS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigurationError, match="OBS_ACCESS_KEY_ID and OBS_SECRET_ACCESS_KEY"):
        OBSObjectStore(moto_bucket, moto_url, path_style=True, signature="v2")
    monkeypatch.setenv("OBS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("OBS_SECRET_ACCESS_KEY", "testing")
    store = OBSObjectStore(
        moto_bucket, moto_url, path_style=True, signature="v2", create_bucket=True
    )
    store.put("k", b"v")
    config = store.to_config()
    assert not {"access_key_id", "secret_access_key", "security_token"} & set(config)
    rebuilt = OBSObjectStore(**config)
    assert rebuilt.get("k") == b"v"


# --------------------------------------------------------------------------- error table


def _error_body(code: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Error>'
        f"<Code>{code}</Code><Message>injected {code}</Message>"
        "<RequestId>00000190ABCDEF</RequestId><HostId>h</HostId></Error>"
    )


@pytest.fixture
def http_store() -> Iterator[OBSObjectStore]:
    """A store on the SDK's requests path (``use_http_conns=True``), for ``responses``."""
    client = ObsClient(
        access_key_id="ak",
        secret_access_key="sk",
        server=SERVER,
        signature="v4",
        region="cn-north-4",
        is_signature_negotiation=False,
        max_retry_count=0,
        use_http_conns=True,
    )
    store = OBSObjectStore("bkt", SERVER, client=client)
    yield store
    store.close()
    client.close()


OBJECT_URL = "https://bkt.obs.cn-north-4.myhuaweicloud.com:443/row/key"

CODE_STATUS = {
    "NoSuchKey": 404,
    "NoSuchBucket": 404,
    "BucketAlreadyExists": 409,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
    "InvalidToken": 400,
    "ExpiredToken": 400,
    "AccessDenied": 403,
    "AccessForbidden": 403,
    "AllAccessDisabled": 403,
    "AccountProblem": 403,
    "FrozenUserId": 403,
    "InArrearOrInsufficientBalance": 403,
    "SlowDown": 503,
    "TooManyRequests": 429,
    "ServiceUnavailable": 503,
    "InternalError": 500,
}


def test_every_table_row_is_covered() -> None:
    # ConnectionError is raised by the SDK, not answered: see the two unreachable tests.
    assert set(CODE_STATUS) | {"ConnectionError"} == set(ERROR_CODE_MAP)


@pytest.mark.parametrize("code", sorted(CODE_STATUS))
@responses.activate
def test_error_code_rows(http_store: OBSObjectStore, code: str) -> None:
    expected = ERROR_CODE_MAP[code]
    # A status that maps elsewhere proves the code, not the status, chose the class.
    status = 400 if code not in ("NoSuchKey", "NoSuchBucket") else CODE_STATUS[code]
    responses.add(responses.GET, OBJECT_URL, status=status, body=_error_body(code))
    with pytest.raises(expected) as excinfo:
        http_store.get("row/key")
    error = excinfo.value
    assert type(error) is expected
    assert error.provider == "obs"
    assert error.code == code
    assert error.status == status
    assert error.request_id == "00000190ABCDEF"
    if code == "NoSuchKey":
        assert "'row/key'" in str(error)
    if code == "NoSuchBucket":
        assert "'bkt'" in str(error)
    if isinstance(error, ThrottledError):
        assert error.retry_after is None  # the SDK drops Retry-After from its header list
        assert error.retriable


@pytest.mark.parametrize("status", sorted(STATUS_MAP))
@responses.activate
def test_status_rows(http_store: OBSObjectStore, status: int) -> None:
    responses.add(responses.HEAD, OBJECT_URL, status=status)  # HEAD: no body, no code
    with pytest.raises(STATUS_MAP[status]) as excinfo:
        http_store.head("row/key")
    assert excinfo.value.status == status
    assert excinfo.value.code is None


@responses.activate
def test_unknown_code_is_a_provider_error(http_store: OBSObjectStore) -> None:
    responses.add(responses.GET, OBJECT_URL, status=400, body=_error_body("InvalidArgument"))
    with pytest.raises(ProviderError, match="InvalidArgument") as excinfo:
        http_store.get("row/key")
    assert type(excinfo.value) is ProviderError


@responses.activate
def test_unreachable_on_the_requests_path(http_store: OBSObjectStore) -> None:
    # Nothing registered: responses refuses the connection; the SDK re-raises it as Exception.
    with pytest.raises(ServiceUnavailableError, match="obs.cn-north-4") as excinfo:
        http_store.get("row/key")
    assert excinfo.value.code == "ConnectionError"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_on_the_default_path(env_credentials: dict[str, Any]) -> None:
    server = f"http://127.0.0.1:{_closed_port()}"
    store = OBSObjectStore(
        "bkt", server, **env_credentials, path_style=True, signature="v2", max_retries=0
    )
    with pytest.raises(ServiceUnavailableError, match=server) as excinfo:
        store.put("k", b"v")
    assert excinfo.value.retriable
    assert isinstance(excinfo.value.__cause__, ConnectionRefusedError)


@responses.activate
def test_bucket_taken_by_another_account(env_credentials: dict[str, Any]) -> None:
    responses.add(
        responses.PUT,
        "https://taken.obs.cn-north-4.myhuaweicloud.com:443/",
        status=409,
        body=_error_body("BucketAlreadyExists"),
    )
    client = ObsClient(
        access_key_id="ak",
        secret_access_key="sk",
        server=SERVER,
        region="cn-north-4",
        is_signature_negotiation=False,
        max_retry_count=0,
        use_http_conns=True,
    )
    with pytest.raises(AlreadyExistsError, match="'taken'"):
        OBSObjectStore("taken", SERVER, client=client, create_bucket=True)
    client.close()


@responses.activate
def test_if_absent_checks_then_writes(http_store: OBSObjectStore) -> None:
    responses.add(responses.HEAD, OBJECT_URL, status=200, headers={"Content-Length": "1"})
    with pytest.raises(AlreadyExistsError, match="'row/key'"):
        http_store.put("row/key", b"v", if_absent=True)
    assert [c.request.method for c in responses.calls] == ["HEAD"]
    responses.replace(responses.HEAD, OBJECT_URL, status=403)
    with pytest.raises(PermissionDeniedError):
        http_store.put("row/key", b"v", if_absent=True)


@responses.activate
def test_range_header_is_inclusive_and_never_a_suffix(http_store: OBSObjectStore) -> None:
    data = bytes(range(100))
    for first, last in ((10, 19), (90, 99), (0, 0)):
        responses.add(
            responses.GET,
            OBJECT_URL,
            status=206,
            body=data[first : last + 1],
            headers={"Content-Range": f"bytes {first}-{last}/100"},
        )
    responses.add(responses.GET, OBJECT_URL, status=416, body=_error_body("InvalidRange"))
    assert http_store.get("row/key", 10, 20) == data[10:20]
    assert http_store.get("row/key", 90) == data[90:]
    assert http_store.get("row/key", end=1) == data[:1]
    assert http_store.get("row/key", 100) == b""
    assert http_store.get("row/key", 7, 7) == b""  # no request at all
    sent = [c.request.headers["Range"] for c in responses.calls]
    assert sent == ["bytes=10-19", "bytes=90-", "bytes=0-0", "bytes=100-"]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("server", "region"),
    [
        ("https://obs.cn-north-4.myhuaweicloud.com", "cn-north-4"),
        ("https://obs.ap-southeast-1.myhuaweicloud.com:443/", "ap-southeast-1"),
        ("https://obs.eu-west-101.myhuaweicloud.eu", "eu-west-101"),
        ("http://127.0.0.1:9000", None),
        ("https://files.example.com", None),
    ],
)
def test_region_from_server(server: str, region: str | None) -> None:
    assert region_from_server(server) == region


def test_v4_needs_a_region(env_credentials: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="region="):
        OBSObjectStore("bkt", "https://files.example.com", **env_credentials)
    OBSObjectStore("bkt", "https://files.example.com", **env_credentials, signature="v2")
    OBSObjectStore("bkt", SERVER, **env_credentials)  # the region comes from the server
    with pytest.raises(ConfigurationError, match="signature"):
        OBSObjectStore("bkt", SERVER, **env_credentials, signature="v3")  # type: ignore[arg-type]


def test_tls_is_verified_by_default(env_credentials: dict[str, Any]) -> None:
    import certifi

    store = OBSObjectStore("bkt", SERVER, **env_credentials)
    assert store._client.ssl_verify == certifi.where()
    assert store._client.context.verify_mode.name == "CERT_REQUIRED"
    relaxed = OBSObjectStore("bkt", SERVER, **env_credentials, ssl_verify=False)
    assert relaxed._client.context.verify_mode.name == "CERT_NONE"


def test_credentials_must_be_complete(env_credentials: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="both"):
        OBSObjectStore("bkt", SERVER, access_key_id=env_credentials["access_key_id"])
    with pytest.raises(ConfigurationError, match="temporary"):
        OBSObjectStore("bkt", SERVER, security_token={"$env": ID_VAR})


def test_to_config(env_credentials: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VAR, "tok")
    store = OBSObjectStore(
        "bkt", SERVER, **env_credentials, security_token={"$env": TOKEN_VAR}, prefix="/p/q/"
    )
    config = store.to_config()
    assert config == {
        "bucket": "bkt",
        "server": SERVER,
        "access_key_id": {"$env": ID_VAR},
        "secret_access_key": {"$env": SECRET_VAR},
        "security_token": {"$env": TOKEN_VAR},
        "prefix": "p/q/",
        "path_style": False,
        "signature": "v4",
        "timeout": 60.0,
        "max_retries": 3,
        "ssl_verify": True,
    }
    assert json.loads(json.dumps(config)) == config
    assert "testing" not in json.dumps(config)
    literal = OBSObjectStore(
        "bkt", SERVER, access_key_id={"$env": ID_VAR}, secret_access_key="s3cr3t"
    )
    with pytest.raises(ConfigurationError, match=r'secret_access_key=\{"\$env": "VAR"\}'):
        literal.to_config()
    assert "s3cr3t" not in repr(literal)


def test_injected_client_is_not_exported_or_closed(http_store: OBSObjectStore) -> None:
    with pytest.raises(ConfigurationError, match="injected"):
        http_store.to_config()


def test_close_closes_the_client(
    env_credentials: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[ObsClient] = []
    monkeypatch.setattr(ObsClient, "close", lambda self: closed.append(self))
    store = OBSObjectStore("bkt", SERVER, **env_credentials)
    store.close()
    store.close()
    assert closed == [store._client]
    with pytest.raises(ServiceUnavailableError, match="closed"):
        store.get("k")
    injected = OBSObjectStore("bkt", SERVER, client=ObsClient(server=SERVER))
    injected.close()
    assert len(closed) == 1  # the caller owns an injected client


def test_quoted_keys_reach_the_right_url(http_store: OBSObjectStore) -> None:
    key = "dir with spaces/é"
    with responses.RequestsMock() as mock:
        url = f"https://bkt.obs.cn-north-4.myhuaweicloud.com:443/{quote(key)}"
        mock.add(responses.GET, url, body=b"payload", status=200)
        assert http_store.get(key) == b"payload"

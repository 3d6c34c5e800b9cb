"""RedisObjectStore: the conformance suite (plain and chunked) plus layout, secrets and faults.

Runs against the loopback Redis server (database 15 by default); every test uses its own key
prefix and removes what it wrote.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from faasml import registry
from faasml.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
)
from faasml.storage import redis as redis_module
from faasml.storage.redis import RedisObjectStore
from faasml.testing.conformance.object_store import ObjectStoreTests

pytestmark = pytest.mark.service


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix


@pytest.fixture
def raw(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisObjectStore]:
    s = RedisObjectStore(redis_url, prefix=prefix, chunk_size=1000)
    yield s
    s.close()


class TestRedisObjectStore(ObjectStoreTests):
    @pytest.fixture
    def object_store(self, redis_url: str, prefix: str) -> Iterator[RedisObjectStore]:
        store = RedisObjectStore(redis_url, prefix=prefix)
        yield store
        store.close()


class TestRedisObjectStoreChunked(ObjectStoreTests):
    """The whole suite again with small chunks, so every multi-chunk path is exercised."""

    @pytest.fixture
    def object_store(self, redis_url: str, prefix: str) -> Iterator[RedisObjectStore]:
        store = RedisObjectStore(redis_url, prefix=prefix, chunk_size=100_000)
        yield store
        store.close()


def _keys(raw: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(raw.scan_iter(match=prefix + "*", count=1000))


# --------------------------------------------------------------------------- layout


def test_small_object_layout(store: RedisObjectStore, raw: redis.Redis, prefix: str) -> None:
    store.put("a/b", b"small")
    p = prefix.encode()
    assert _keys(raw, prefix) == [p + b"index", p + b"meta:a/b", p + b"obj:a/b"]
    assert raw.get(p + b"obj:a/b") == b"small"
    assert raw.zrange(p + b"index", 0, -1) == [b"a/b"]


def test_chunked_object_layout_and_cleanup(
    store: RedisObjectStore, raw: redis.Redis, prefix: str
) -> None:
    data = bytes(range(256)) * 10  # 2560 bytes in chunks of 1000
    store.put("big", data)
    meta: dict[bytes, bytes] = raw.hgetall(prefix + "meta:big")  # type: ignore[assignment]
    assert meta[b"chunks"] == b"3" and meta[b"csize"] == b"1000" and meta[b"size"] == b"2560"
    gen = meta[b"gen"].decode()
    chunk_keys = [f"{prefix}chunk:big:{gen}:{i}".encode() for i in range(3)]
    assert all(raw.ttl(k) == -1 for k in chunk_keys), "committed chunks must not expire"
    assert not raw.exists(prefix + "obj:big")
    assert store.get("big") == data
    assert store.head("big").etag == gen

    store.put("big", data[::-1])  # a new generation replaces the old chunks
    assert store.get("big") == data[::-1]
    assert not any(raw.exists(k) for k in chunk_keys)
    store.put("big", b"now small")
    assert [k for k in _keys(raw, prefix) if b":chunk:" in k] == []
    assert store.get("big") == b"now small"
    store.put("big", data)
    store.delete("big")
    assert _keys(raw, prefix) == []


def test_ranged_get_reads_only_the_needed_chunks(
    store: RedisObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes, 11 chunks of 1000
    store.put("r", data)
    calls: list[tuple[Any, ...]] = []
    original = redis.client.Pipeline.getrange

    def spy(self: redis.client.Pipeline, key: Any, start: int, end: int) -> Any:
        calls.append((key, start, end))
        return original(self, key, start, end)

    monkeypatch.setattr(redis.client.Pipeline, "getrange", spy)
    assert store.get("r", 2500, 3500) == data[2500:3500]
    assert [(c[1], c[2]) for c in calls if b":chunk:" in c[0]] == [(500, 999), (0, 499)]
    for start, end in [(0, 1), (999, 1001), (1000, 2000), (9999, 20000), (10239, None)]:
        assert store.get("r", start, end) == data[start:end]


def test_list_pages_through_the_index(
    store: RedisObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_module, "LIST_BATCH", 3)
    keys = [f"k/{i:02d}" for i in range(10)]
    for key in reversed(keys):
        store.put(key, key.encode())
    listed = list(store.list("k/"))
    assert [i.key for i in listed] == keys
    assert all(i.size == 4 and i.last_modified and i.etag for i in listed)
    assert [i.key for i in store.list("k/0")] == keys[:10]
    assert [i.key for i in store.list("k/1")] == []


def test_expired_chunks_abort_the_write(
    store: RedisObjectStore, raw: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_module, "CHUNK_TTL_SECONDS", 1)
    commit = store._commit_chunks

    def slow_commit(*, keys: list[bytes], args: list[Any]) -> Any:
        time.sleep(1.3)  # longer than the chunks' expiry: the upload "took too long"
        return commit(keys=keys, args=args)

    monkeypatch.setattr(store, "_commit_chunks", slow_commit)
    with pytest.raises(ProviderError, match="expired"):
        store.put("slow", b"x" * 2500)
    assert not store.exists("slow")
    assert _keys(raw, prefix) == []


def test_if_absent_on_chunked_objects(
    store: RedisObjectStore, raw: redis.Redis, prefix: str
) -> None:
    from faasml.errors import AlreadyExistsError

    store.put("once", b"a" * 2500, if_absent=True)
    with pytest.raises(AlreadyExistsError):
        store.put("once", b"b" * 2500, if_absent=True)
    with pytest.raises(AlreadyExistsError):
        store.put("once", b"small", if_absent=True)
    assert store.get("once") == b"a" * 2500
    assert len([k for k in _keys(raw, prefix) if b":chunk:" in k]) == 3, "loser chunks removed"


def test_registered_in_the_registry() -> None:
    assert registry.backend_class("storage", "redis") is RedisObjectStore
    assert registry.backend_record("storage", "redis").install_hint == 'pip install "faasml[redis]"'


# --------------------------------------------------------------------------- secrets


def test_env_password_authenticates_and_stays_a_reference(
    redis_url: str, acl_user: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_TEST_REDIS_PW", "right-password")
    ref = {"$env": "FAASML_TEST_REDIS_PW"}
    store = RedisObjectStore(_user_url(redis_url, acl_user), prefix=prefix, password=ref)
    try:
        store.put("k", b"v")
        config = store.to_config()
        rebuilt = RedisObjectStore(**config)
        try:
            assert rebuilt.get("k") == b"v"
        finally:
            rebuilt.close()
    finally:
        store.close()
    assert config["password"] == ref
    assert "right-password" not in repr(config)
    assert config["prefix"] == prefix


def test_literal_password_never_goes_into_a_config(redis_url: str) -> None:
    store = RedisObjectStore(redis_url, password="hunter2")
    try:
        with pytest.raises(ConfigurationError, match=r'\{"\$env": "VAR"\}') as caught:
            store.to_config()
        assert "hunter2" not in str(caught.value)
    finally:
        store.close()


def test_password_in_url_is_redacted_and_not_exported() -> None:
    store = RedisObjectStore("redis://:hunter2@127.0.0.1:1/0")
    try:
        assert "hunter2" not in repr(store) and "***" in repr(store)
        with pytest.raises(ConfigurationError) as caught:
            store.to_config()
        assert "hunter2" not in str(caught.value)
        with pytest.raises(ServiceUnavailableError) as down:
            store.get("k")
        assert "hunter2" not in str(down.value)
    finally:
        store.close()


def test_missing_env_password_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAASML_TEST_UNSET_PW", raising=False)
    with pytest.raises(ConfigurationError, match="FAASML_TEST_UNSET_PW"):
        RedisObjectStore(password={"$env": "FAASML_TEST_UNSET_PW"})


# --------------------------------------------------------------------------- faults


def test_server_down_fails_fast_naming_the_endpoint() -> None:
    delays: list[float] = []
    store = RedisObjectStore("redis://127.0.0.1:1/0")
    store._conn.sleep = delays.append
    try:
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as caught:
            store.get("k")
        assert time.monotonic() - start < 5.0
    finally:
        store.close()
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "redis-server" in message and "redis-cli" in message
    assert caught.value.retriable and caught.value.provider == "redis"
    # Three bounded retries with jittered exponential backoff.
    assert len(delays) == 3
    for delay, base in zip(delays, (0.1, 0.2, 0.4), strict=True):
        assert base <= delay <= base * 1.5


def test_server_down_real_backoff_is_bounded() -> None:
    store = RedisObjectStore("redis://127.0.0.1:1/0")
    try:
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError):
            store.put("k", b"v")
        elapsed = time.monotonic() - start
    finally:
        store.close()
    assert 0.7 <= elapsed < 3.0


def _make_user(raw: redis.Redis, commands: list[str]) -> str:
    name = f"faasml-test-{uuid.uuid4().hex[:8]}"
    raw.acl_setuser(
        name, enabled=True, passwords=["+right-password"], keys=["*"], commands=commands
    )
    return name


@pytest.fixture
def acl_user(raw: redis.Redis) -> Iterator[str]:
    """A throw-away ACL user with every permission, password ``right-password``."""
    name = _make_user(raw, ["+@all"])
    yield name
    raw.acl_deluser(name)


@pytest.fixture
def limited_user(raw: redis.Redis) -> Iterator[str]:
    """A throw-away ACL user that may not run HSET (so no put), password ``right-password``."""
    name = _make_user(raw, ["+@all", "-hset"])
    yield name
    raw.acl_deluser(name)


def _user_url(redis_url: str, user: str) -> str:
    return redis_url.replace("redis://", f"redis://{user}@", 1)


def test_wrong_password_is_an_authentication_error(
    redis_url: str, acl_user: str, prefix: str
) -> None:
    store = RedisObjectStore(_user_url(redis_url, acl_user), prefix=prefix, password="wrong")
    try:
        start = time.monotonic()
        with pytest.raises(AuthenticationError) as caught:
            store.get("k")
        assert time.monotonic() - start < 1.0, "authentication failures must not be retried"
    finally:
        store.close()
    assert "wrong" not in str(caught.value)
    assert "127.0.0.1:6379" in str(caught.value)


def test_forbidden_command_is_permission_denied(
    redis_url: str, limited_user: str, prefix: str
) -> None:
    url = _user_url(redis_url, limited_user)
    store = RedisObjectStore(url, prefix=prefix, password="right-password")
    try:
        with pytest.raises(NotFoundError):
            store.get("k")  # allowed commands work
        with pytest.raises(PermissionDeniedError, match="ACL SETUSER"):
            store.put("k", b"v")  # HSET is denied for this user
    finally:
        store.close()


def test_killed_connections_reconnect_and_lose_nothing(
    redis_url: str, acl_user: str, prefix: str, raw: redis.Redis
) -> None:
    url = _user_url(redis_url, acl_user)
    store = RedisObjectStore(url, prefix=prefix, password="right-password", chunk_size=1000)
    try:
        store.put("small", b"before the kill")
        store.put("big", b"x" * 5000)
        # Kill only this test's connections: TYPE normal would hit everyone on a shared server.
        assert raw.client_kill_filter(user=acl_user) >= 1
        assert store.get("small") == b"before the kill"
        assert raw.client_kill_filter(user=acl_user) >= 1
        store.put("after", b"written after the kill")
        assert raw.client_kill_filter(user=acl_user) >= 1
        assert store.get("big", 4990) == b"x" * 10
        assert [i.key for i in store.list()] == ["after", "big", "small"]
    finally:
        store.close()


def test_invalid_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="redis://"):
        RedisObjectStore("http://127.0.0.1:6379")
    with pytest.raises(ConfigurationError, match="both|also"):
        RedisObjectStore("redis://:pw@127.0.0.1:6379/0", password="pw")

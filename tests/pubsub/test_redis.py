"""RedisPubSub: the conformance suite plus Streams layout, trimming, secrets and faults.

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
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from faasml.pubsub import redis as pubsub_module
from faasml.pubsub.redis import RedisPubSub
from faasml.testing.conformance.pubsub import PubSubTests

pytestmark = pytest.mark.service


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix


@pytest.fixture
def raw(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


@pytest.fixture
def ps(redis_url: str, prefix: str) -> Iterator[RedisPubSub]:
    backend = RedisPubSub(redis_url, prefix=prefix)
    yield backend
    backend.close()


class TestRedisPubSub(PubSubTests):
    @pytest.fixture
    def pubsub(self, redis_url: str, prefix: str) -> Iterator[RedisPubSub]:
        backend = RedisPubSub(redis_url, prefix=prefix)
        yield backend
        backend.close()


def _stream(prefix: str, topic: str) -> bytes:
    return f"{prefix}topic:{topic}".encode()


def _groups(raw: redis.Redis, prefix: str, topic: str) -> list[str]:
    return sorted(g["name"].decode() for g in raw.xinfo_groups(_stream(prefix, topic)))


# --------------------------------------------------------------------------- layout and trimming


def test_layout_one_stream_per_topic_one_group_per_group(
    ps: RedisPubSub, raw: redis.Redis, prefix: str
) -> None:
    ps.ensure_group("jobs", "workers")
    sub = ps.subscribe("jobs", "workers")
    anon = ps.subscribe("jobs")
    try:
        groups = _groups(raw, prefix, "jobs")
        assert groups[0] == "workers" and groups[1].startswith("~anon:") and len(groups) == 2
        consumers = raw.xinfo_consumers(_stream(prefix, "jobs"), "workers")
        assert len(consumers) == 1
        ps.publish("jobs", b"payload")
        entries: Any = raw.xrange(_stream(prefix, "jobs"))
        entry = entries[-1]
        assert entry[1] == {b"d": b"payload"}
    finally:
        anon.close()
        sub.close()
    assert _groups(raw, prefix, "jobs") == ["workers"], "the private group is destroyed on close"
    assert raw.xinfo_consumers(_stream(prefix, "jobs"), "workers") == [], "idle consumer retired"


def test_consumer_holding_messages_is_kept_on_close(
    ps: RedisPubSub, raw: redis.Redis, prefix: str
) -> None:
    sub = ps.subscribe("jobs", "workers", visibility_timeout=0.3)
    ps.publish("jobs", b"held")
    assert sub.get(timeout=5) is not None
    sub.close()
    # Deleting the consumer would make its pending entry unclaimable: it must stay.
    assert len(raw.xinfo_consumers(_stream(prefix, "jobs"), "workers")) == 1
    other = ps.subscribe("jobs", "workers", visibility_timeout=0.3)
    try:
        again = other.get(timeout=5)
        assert again is not None and again.data == b"held" and again.deliveries == 2
        again.ack()
    finally:
        other.close()


def test_acked_entries_are_trimmed(ps: RedisPubSub, raw: redis.Redis, prefix: str) -> None:
    a = ps.subscribe("t", "a")
    b = ps.subscribe("t", "b")
    try:
        ps.publish_many("t", [b"1", b"2", b"3"])
        for m in a.get_many(10, timeout=5):
            m.ack()
        ps.trim("t")
        assert raw.xlen(_stream(prefix, "t")) == 3, "group b has not read them yet"
        got = b.get_many(10, timeout=5)
        got[0].ack()
        ps.trim("t")
        assert raw.xlen(_stream(prefix, "t")) == 2, "b still holds 2 and 3"
        for m in got[1:]:
            m.ack()
        assert ps.trim("t") == 2
        assert raw.xlen(_stream(prefix, "t")) == 0
    finally:
        a.close()
        b.close()


def test_messages_without_any_group_do_not_accumulate(
    ps: RedisPubSub, raw: redis.Redis, prefix: str
) -> None:
    ps.publish_many("lonely", [b"x"] * 5)
    ps.trim("lonely")
    assert raw.xlen(_stream(prefix, "lonely")) == 0


def test_maxlen_caps_the_stream(redis_url: str, prefix: str, raw: redis.Redis) -> None:
    backend = RedisPubSub(redis_url, prefix=prefix, maxlen=10)
    try:
        backend.ensure_group("capped", "slow")
        backend.publish_many("capped", [b"%d" % i for i in range(2000)])
        # MAXLEN ~ trims whole radix-tree nodes (100 entries by default), never below 10.
        assert 10 <= raw.xlen(_stream(prefix, "capped")) <= 250
        assert backend.to_config()["maxlen"] == 10
    finally:
        backend.close()


def test_abandoned_private_group_is_destroyed(
    ps: RedisPubSub, raw: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = ps.subscribe("t")  # never closed: like a process that crashed
    live = ps.subscribe("t", "g")
    try:
        assert len(_groups(raw, prefix, "t")) == 2
        monkeypatch.setattr(pubsub_module, "STALE_MS", 200)
        time.sleep(0.4)
        live.get(timeout=0)  # keeps the named group's consumer fresh
        ps.trim("t")
        assert _groups(raw, prefix, "t") == ["g"]
        with pytest.raises(NotFoundError, match="NOGROUP"):
            dead.get(timeout=0)
    finally:
        live.close()


def test_destroyed_group_is_not_found(ps: RedisPubSub, raw: redis.Redis, prefix: str) -> None:
    sub = ps.subscribe("t", "g")
    raw.xgroup_destroy(_stream(prefix, "t"), "g")
    with pytest.raises(NotFoundError) as caught:
        sub.get(timeout=0.2)
    assert caught.value.provider == "redis"
    sub.close()


def test_limit_is_64_mib(ps: RedisPubSub) -> None:
    assert RedisPubSub.max_message_bytes == 64 * 1024 * 1024
    with pytest.raises(PayloadTooLargeError, match=str(64 * 1024 * 1024)):
        ps.publish("t", b"\0" * (64 * 1024 * 1024 + 1))


def test_registered_in_the_registry() -> None:
    assert registry.backend_class("pubsub", "redis") is RedisPubSub
    assert registry.backend_record("pubsub", "redis").install_hint == 'pip install "faasml[redis]"'


# --------------------------------------------------------------------------- secrets


def test_literal_password_never_goes_into_a_config(redis_url: str) -> None:
    backend = RedisPubSub(redis_url, password="hunter2")
    try:
        with pytest.raises(ConfigurationError, match=r'\{"\$env": "VAR"\}') as caught:
            backend.to_config()
        assert "hunter2" not in str(caught.value)
    finally:
        backend.close()
    leaky = RedisPubSub("redis://:hunter2@127.0.0.1:1/0")
    try:
        assert "hunter2" not in repr(leaky)
        with pytest.raises(ConfigurationError):
            leaky.to_config()
    finally:
        leaky.close()


def test_env_password_is_kept_as_a_reference(
    redis_url: str, raw: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = f"faasml-test-{uuid.uuid4().hex[:8]}"
    raw.acl_setuser(user, enabled=True, passwords=["+pw-1"], keys=["*"], commands=["+@all"])
    try:
        monkeypatch.setenv("FAASML_TEST_REDIS_PS_PW", "pw-1")
        url = redis_url.replace("redis://", f"redis://{user}@", 1)
        backend = RedisPubSub(url, prefix=prefix, password={"$env": "FAASML_TEST_REDIS_PS_PW"})
        try:
            sub = backend.subscribe("t", "g")
            backend.publish("t", b"authenticated")
            message = sub.get(timeout=5)
            assert message is not None and message.data == b"authenticated"
            message.ack()
            assert backend.to_config()["password"] == {"$env": "FAASML_TEST_REDIS_PS_PW"}
        finally:
            backend.close()
        wrong = RedisPubSub(url, prefix=prefix, password="nope")
        try:
            with pytest.raises(AuthenticationError):
                wrong.publish("t", b"x")
        finally:
            wrong.close()
    finally:
        raw.acl_deluser(user)


# --------------------------------------------------------------------------- faults


def test_server_down_fails_fast_naming_the_endpoint() -> None:
    delays: list[float] = []
    backend = RedisPubSub("redis://127.0.0.1:1/0")
    backend._conn.sleep = delays.append
    try:
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match=r"127\.0\.0\.1:1.*redis-server"):
            backend.publish("t", b"x")
        assert delays == [], "a publish is not idempotent: it must not be retried blindly"
        with pytest.raises(ServiceUnavailableError, match=r"127\.0\.0\.1:1"):
            backend.ensure_group("t", "g")
        assert len(delays) == 3, "idempotent calls get three retries"
        assert time.monotonic() - start < 5.0
    finally:
        backend.close()


def test_killed_connections_lose_nothing(redis_url: str, raw: redis.Redis, prefix: str) -> None:
    user = f"faasml-test-{uuid.uuid4().hex[:8]}"
    raw.acl_setuser(user, enabled=True, passwords=["+pw-2"], keys=["*"], commands=["+@all"])
    url = redis_url.replace("redis://", f"redis://{user}@", 1)
    backend = RedisPubSub(url, prefix=prefix, password="pw-2")
    try:
        sub = backend.subscribe("t", "g", visibility_timeout=0.5)
        backend.publish_many("t", [b"taken", b"waiting"])
        taken = sub.get(timeout=5)
        assert taken is not None and taken.data == b"taken"  # delivered, never acked
        # Kill only this test's connections: TYPE normal would hit everyone on a shared server.
        assert raw.client_kill_filter(user=user) >= 1
        backend.publish("t", b"after-kill")  # reconnects
        got: dict[bytes, int] = {}
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            for m in sub.get_many(10, timeout=1):
                got[m.data] = m.deliveries
                m.ack()
            if len(got) == 1:
                raw.client_kill_filter(user=user)  # and again between reads
        assert got == {b"waiting": 1, b"after-kill": 1, b"taken": 2}
        sub.close()
    finally:
        backend.close()
        raw.acl_deluser(user)


def test_invalid_options() -> None:
    with pytest.raises(ConfigurationError):
        RedisPubSub(visibility_timeout=0)
    with pytest.raises(ConfigurationError):
        RedisPubSub(maxlen=0)
    backend = RedisPubSub()
    try:
        with pytest.raises(ConfigurationError):
            backend.subscribe("t", "g", visibility_timeout=-1)
    finally:
        backend.close()


def test_delete_topic_removes_the_stream_and_publishing_does_not_recreate_it(
    ps: RedisPubSub, raw: redis.Redis, prefix: str
) -> None:
    ps.ensure_group("t", "g")
    ps.publish_many("t", [b"1", b"2"])
    assert raw.xlen(_stream(prefix, "t")) == 2
    ps.delete_topic("t")
    assert not raw.exists(_stream(prefix, "t"))
    ps.publish("t", b"to-nobody")
    ps.publish_many("t", [b"to-nobody-either"])
    assert not raw.exists(_stream(prefix, "t")), "a publish without a group writes no key"
    assert raw.keys(prefix + "*") == []

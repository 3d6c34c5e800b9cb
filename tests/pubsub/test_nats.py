"""NATSPubSub: the conformance suite plus JetStream layout, secrets and faults.

The suite runs against the loopback NATS server; tests that need to stop a server, require
credentials or change ``max_payload`` start their own private ``nats-server`` on a free loopback
port with a temporary store directory.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faasml import registry
from faasml.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from faasml.pubsub.nats import HEADER_RESERVE, NATSPubSub
from faasml.testing.conformance.pubsub import PubSubTests

pytestmark = pytest.mark.service

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


async def _delete_streams(backend: NATSPubSub) -> None:
    names = [info.config.name for info in await backend._js.streams_info()]
    for name in names:
        if name and name.startswith(backend.stream_prefix + "_"):
            await backend._js.delete_stream(name)


def _cleanup(backend: NATSPubSub) -> None:
    """Delete the streams this test created, then close the backend."""
    try:
        backend._call("delete test streams", lambda: _delete_streams(backend))
    finally:
        backend.close()


def _unique_prefix() -> str:
    return "T" + uuid.uuid4().hex[:12]


@pytest.fixture
def ps(nats_url: str) -> Iterator[NATSPubSub]:
    backend = NATSPubSub(nats_url, stream_prefix=_unique_prefix())
    yield backend
    _cleanup(backend)


class TestNATSPubSub(PubSubTests):
    @pytest.fixture
    def pubsub(self, nats_url: str) -> Iterator[NATSPubSub]:
        backend = NATSPubSub(nats_url, stream_prefix=_unique_prefix())
        yield backend
        _cleanup(backend)


# --------------------------------------------------------------------------- private servers


def _nats_server_binary() -> str:
    found = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
    )
    if found is None:
        message = "nats-server is not installed; it is needed to start private test servers"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateNats:
    """A nats-server with JetStream on a free loopback port, owned by one test."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.binary = _nats_server_binary()
        self.port = _free_port()
        self.store = workdir / "store"
        self.log = workdir / "nats.log"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*args, *self.extra], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    server = PrivateNats(tmp_path)
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- layout


def test_layout_stream_per_topic_and_consumers(ps: NATSPubSub) -> None:
    from nats.js.api import AckPolicy, DeliverPolicy, RetentionPolicy, StorageType

    sub = ps.subscribe("jobs", "workers", visibility_timeout=7)
    anon = ps.subscribe("jobs")
    stream = f"{ps.stream_prefix}_jobs"
    info = ps._call("info", lambda: ps._js.stream_info(stream))
    assert info.config.subjects == [f"faasml.{ps.stream_prefix}.jobs"]
    assert info.config.retention == RetentionPolicy.INTEREST
    assert info.config.storage == StorageType.FILE
    consumer = ps._call("info", lambda: ps._js.consumer_info(stream, "workers"))
    assert consumer.config.ack_wait == 7
    assert consumer.config.deliver_policy == DeliverPolicy.NEW
    assert consumer.config.ack_policy == AckPolicy.EXPLICIT
    names = {c.name for c in ps._call("list", lambda: ps._js.consumers_info(stream))}
    assert len(names) == 2 and "workers" in names
    anon.close()
    names = {c.name for c in ps._call("list", lambda: ps._js.consumers_info(stream))}
    assert names == {"workers"}, "the anonymous consumer is deleted on close"
    sub.close()


def test_subscribe_updates_the_group_ack_wait(ps: NATSPubSub) -> None:
    ps.ensure_group("t", "g")
    stream = f"{ps.stream_prefix}_t"
    assert ps._call("i", lambda: ps._js.consumer_info(stream, "g")).config.ack_wait == 30
    sub = ps.subscribe("t", "g", visibility_timeout=2.5)
    assert ps._call("i", lambda: ps._js.consumer_info(stream, "g")).config.ack_wait == 2.5
    assert sub.visibility_timeout == 2.5
    sub.close()


def test_deleted_consumer_is_not_found(ps: NATSPubSub) -> None:
    sub = ps.subscribe("t", "g")
    ps._call("delete", lambda: ps._js.delete_consumer(f"{ps.stream_prefix}_t", "g"))
    with pytest.raises(NotFoundError) as caught:
        sub.get(timeout=1)
    assert caught.value.provider == "nats"
    sub.close()


def test_stale_settlements_are_ignored(ps: NATSPubSub) -> None:
    sub = ps.subscribe("t", "g", visibility_timeout=0.5)
    ps.publish("t", b"slow")
    message = sub.get(timeout=5)
    assert message is not None
    time.sleep(0.6)
    message.touch()  # the lease is gone: renewing it would steal the redelivered copy
    message.ack()
    again = sub.get(timeout=5)
    assert again is not None and again.data == b"slow" and again.deliveries == 2
    again.ack()
    assert sub.get(timeout=1) is None
    sub.close()


def test_publish_many_beyond_the_outbound_buffer(ps: NATSPubSub) -> None:
    # 18 MB is far over nats-py's 2 MiB pending buffer: the publishing coroutine suspends on a
    # forced flush and a task finishes the batch; every message is stored, in order.
    sub = ps.subscribe("t", "g")
    items = [bytes([i]) * 900_000 for i in range(20)]
    ps.publish_many("t", items)
    got: list[bytes] = []
    while len(got) < len(items):
        batch = sub.get_many(10, timeout=5)
        assert batch, f"only {len(got)} of {len(items)} messages arrived"
        for message in batch:
            got.append(message.data)
            message.ack()
    assert got == items
    assert ps._acks == {}  # no PubAck left waiting
    sub.close()


def test_concurrent_publishers_share_one_instance(ps: NATSPubSub) -> None:
    import threading

    sub = ps.subscribe("t", "g")

    def produce(worker: int) -> None:
        for i in range(100):
            ps.publish("t", b"%d:%d" % (worker, i))

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    seen: set[bytes] = set()
    while len(seen) < 400:
        batch = sub.get_many(10, timeout=5)
        assert batch, f"only {len(seen)} of 400 messages arrived"
        for message in batch:
            seen.add(message.data)
            message.ack()
    assert seen == {b"%d:%d" % (w, i) for w in range(4) for i in range(100)}
    assert ps._acks == {}
    sub.close()


def test_publish_recovers_from_a_stream_deleted_behind_its_back(ps: NATSPubSub) -> None:
    ps.ensure_group("t", "g")
    ps.publish("t", b"first")  # the stream is now cached as existing
    ps._call("delete", lambda: ps._js.delete_stream(f"{ps.stream_prefix}_t"))
    ps.publish("t", b"second")  # no stream answers: retried, which creates the stream again
    sub = ps.subscribe("t", "g")
    ps.publish("t", b"third")
    message = sub.get(timeout=5)
    assert message is not None and message.data == b"third"
    message.ack()
    sub.close()


def test_pub_ack_errors_are_reported(ps: NATSPubSub) -> None:
    from nats.aio.msg import Msg

    from faasml.errors import ProviderError
    from faasml.pubsub.nats import _check_pub_ack

    ok = Msg(ps._nc, subject="x", data=b'{"stream":"S","seq":1}')
    _check_pub_ack(ok)
    _check_pub_ack(Msg(ps._nc, subject="x", data=b'{"stream":"S","seq":2,"duplicate":true}'))
    bad = Msg(
        ps._nc,
        subject="x",
        data=b'{"error":{"code":400,"err_code":10060,"description":"expected stream does '
        b'not match"}}',
    )
    with pytest.raises(Exception) as caught:
        _check_pub_ack(bad)
    mapped = ps._map_error(caught.value, "publish")
    assert isinstance(mapped, ProviderError) and "expected stream" in str(mapped)
    none = Msg(ps._nc, subject="x", data=b"", headers={"Status": "503"})
    with pytest.raises(Exception) as caught:
        _check_pub_ack(none)
    assert isinstance(ps._map_error(caught.value, "publish"), ServiceUnavailableError)


def test_delete_topic_deletes_the_stream_with_its_consumers(ps: NATSPubSub) -> None:
    ps.ensure_group("t", "g")
    ps.ensure_group("kept", "g")
    ps.delete_topic("t")
    names = {i.config.name for i in ps._call("list", lambda: ps._js.streams_info())}
    assert f"{ps.stream_prefix}_t" not in names
    assert f"{ps.stream_prefix}_kept" in names


def test_close_stops_the_loop_thread(nats_url: str) -> None:
    backend = NATSPubSub(nats_url, stream_prefix=_unique_prefix())
    thread = backend._loop.thread
    assert thread.is_alive()
    backend.close()
    backend.close()  # idempotent
    assert not thread.is_alive()
    with pytest.raises(ServiceUnavailableError, match="closed"):
        backend.publish("t", b"x")


def test_forgotten_instance_stops_its_thread(nats_url: str) -> None:
    backend = NATSPubSub(nats_url, stream_prefix=_unique_prefix())
    thread = backend._loop.thread
    del backend
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_registered_in_the_registry() -> None:
    assert registry.backend_class("pubsub", "nats") is NATSPubSub
    assert registry.backend_record("pubsub", "nats").install_hint == 'pip install "faasml[nats]"'


def test_invalid_options(nats_url: str) -> None:
    with pytest.raises(ConfigurationError, match="stream_prefix"):
        NATSPubSub(nats_url, stream_prefix="has.dot")
    with pytest.raises(ConfigurationError, match="nats://"):
        NATSPubSub("http://127.0.0.1:4222")
    with pytest.raises(ConfigurationError):
        NATSPubSub(nats_url, visibility_timeout=0)


# --------------------------------------------------------------------------- limits


def test_max_message_bytes_follows_the_server(tmp_path: Path) -> None:
    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 65536\n")
    server = PrivateNats(tmp_path, "-c", str(conf))
    server.start()
    try:
        backend = NATSPubSub(server.url, stream_prefix=_unique_prefix())
        try:
            limit = 65536 - HEADER_RESERVE
            assert backend.max_message_bytes == limit
            sub = backend.subscribe("t", "g")
            with pytest.raises(PayloadTooLargeError, match=str(limit)):
                backend.publish("t", b"x" * (limit + 1))
            backend.publish("t", b"y" * limit)
            message = sub.get(timeout=5)
            assert message is not None and message.data == b"y" * limit
            message.ack()
        finally:
            backend.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------- secrets and faults


def test_server_down_fails_fast_naming_the_url() -> None:
    start = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as caught:
        NATSPubSub("nats://127.0.0.1:1", stream_prefix=_unique_prefix())
    assert time.monotonic() - start < 3.0
    assert "nats://127.0.0.1:1" in str(caught.value) and "nats-server -js" in str(caught.value)
    assert caught.value.retriable


def test_jetstream_disabled_is_explained(tmp_path: Path) -> None:
    binary = _nats_server_binary()
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        backend = NATSPubSub(f"nats://127.0.0.1:{port}", stream_prefix=_unique_prefix())
        try:
            with pytest.raises(ServiceUnavailableError, match="-js"):
                backend.publish("t", b"x")
        finally:
            backend.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_user_password_authentication(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = PrivateNats(tmp_path, "--user", "alice", "--pass", "s3cret")
    server.start()
    try:
        start = time.monotonic()
        with pytest.raises(AuthenticationError) as caught:
            NATSPubSub(server.url, user="alice", password="wrong", stream_prefix="A")
        assert time.monotonic() - start < 3.0
        assert "wrong" not in str(caught.value)

        monkeypatch.setenv("FAASML_TEST_NATS_PW", "s3cret")
        ref = {"$env": "FAASML_TEST_NATS_PW"}
        backend = NATSPubSub(server.url, user="alice", password=ref, stream_prefix="A")
        try:
            sub = backend.subscribe("t", "g")
            backend.publish("t", b"authenticated")
            message = sub.get(timeout=5)
            assert message is not None and message.data == b"authenticated"
            message.ack()
            config = backend.to_config()
            assert config["password"] == ref and config["user"] == "alice"
            assert "s3cret" not in repr(config)
        finally:
            backend.close()

        literal = NATSPubSub(server.url, user="alice", password="s3cret", stream_prefix="A")
        try:
            with pytest.raises(ConfigurationError, match=r'password=\{"\$env": "VAR"\}'):
                literal.to_config()
        finally:
            literal.close()

        in_url = NATSPubSub(f"nats://alice:s3cret@127.0.0.1:{server.port}", stream_prefix="A")
        try:
            assert "s3cret" not in repr(in_url) and "alice" not in repr(in_url)
            with pytest.raises(ConfigurationError) as leak:
                in_url.to_config()
            assert "s3cret" not in str(leak.value)
        finally:
            in_url.close()
    finally:
        server.stop()


def test_token_authentication(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path, "--auth", "tok-123")
    server.start()
    try:
        with pytest.raises(AuthenticationError):
            NATSPubSub(server.url, token="bad", stream_prefix="A")
        backend = NATSPubSub(server.url, token="tok-123", stream_prefix="A")
        try:
            backend.ensure_group("t", "g")
            with pytest.raises(ConfigurationError, match="token"):
                backend.to_config()
        finally:
            backend.close()
    finally:
        server.stop()


def test_server_restart_loses_nothing(private_nats: PrivateNats) -> None:
    backend = NATSPubSub(private_nats.url, stream_prefix="R", visibility_timeout=2)
    try:
        sub = backend.subscribe("t", "g", visibility_timeout=2)
        backend.publish_many("t", [b"taken", b"waiting"])
        taken = sub.get(timeout=5)
        assert taken is not None and taken.data == b"taken"  # delivered, never acked

        private_nats.stop()
        private_nats.start()  # same port and store directory: the stream is on disk

        got: dict[bytes, int] = {}
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            try:
                batch = sub.get_many(10, timeout=1)
            except ServiceUnavailableError:
                continue  # still reconnecting: a consumer loop just tries again
            for message in batch:
                got[message.data] = message.deliveries
                message.ack()
        assert got == {b"waiting": 1, b"taken": 2}
        backend.publish("t", b"after-restart")
        last = sub.get(timeout=10)
        assert last is not None and last.data == b"after-restart"
        last.ack()
        sub.close()
    finally:
        backend.close()


def test_operations_during_an_outage_fail_cleanly(private_nats: PrivateNats) -> None:
    backend = NATSPubSub(private_nats.url, stream_prefix="O")
    try:
        sub = backend.subscribe("t", "g")
        private_nats.stop()
        for call in (
            lambda: sub.get_many(5, timeout=10),
            lambda: backend.ensure_group("t", "other"),
            lambda: backend.publish("t", b"x"),
        ):
            start = time.monotonic()
            with pytest.raises(ServiceUnavailableError, match=private_nats.url):
                call()
            assert time.monotonic() - start < 8.0
    finally:
        backend.close()


def _config_of(backend: NATSPubSub) -> dict[str, Any]:
    return backend.to_config()


def test_to_config_round_trip(ps: NATSPubSub) -> None:
    config = _config_of(ps)
    assert config == {
        "url": ps.url,
        "stream_prefix": ps.stream_prefix,
        "visibility_timeout": 30.0,
        "connect_timeout": 5.0,
    }

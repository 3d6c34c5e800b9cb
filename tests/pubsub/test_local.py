"""The ``local`` PubSub backend: the shared conformance suite plus what only a local queue has."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faasml import registry
from faasml.errors import ConfigurationError, PayloadTooLargeError
from faasml.pubsub.local import LocalPubSub
from faasml.testing.conformance.pubsub import PubSubTests


class TestLocalPubSub(PubSubTests):
    @pytest.fixture
    def pubsub(self) -> Iterator[LocalPubSub]:
        backend = LocalPubSub()
        yield backend
        backend.close()


@pytest.fixture
def pubsub() -> Iterator[LocalPubSub]:
    backend = LocalPubSub()
    yield backend
    backend.close()


def _groups(pubsub: LocalPubSub, topic: str) -> list[tuple[str, int]]:
    with sqlite3.connect(os.path.join(pubsub.path, "queue.sqlite3")) as db:
        return db.execute(
            "SELECT grp, ephemeral FROM groups WHERE topic = ? ORDER BY grp", (topic,)
        ).fetchall()


def _message_rows(pubsub: LocalPubSub, topic: str) -> int:
    with sqlite3.connect(os.path.join(pubsub.path, "queue.sqlite3")) as db:
        row = db.execute("SELECT COUNT(*) FROM messages WHERE topic = ?", (topic,)).fetchone()
    return int(row[0])


def _wake_files(pubsub: LocalPubSub, topic: str) -> list[str]:
    return [n for n in os.listdir(os.path.join(pubsub.path, "wake")) if n.startswith(topic + ".")]


def _subscribe_and_die(config: dict[str, object], topic: str) -> None:
    """Child process: open a private subscription and die without closing it."""
    pubsub = LocalPubSub(**config)  # type: ignore[arg-type]
    subscription = pubsub.subscribe(topic)  # kept referenced: its finalizer must not run
    assert subscription.group is None
    os._exit(0)


def _publish_from_fork(pubsub: LocalPubSub, topic: str) -> None:
    """Forked child: use the inherited instance (its connections were opened by the parent)."""
    pubsub.publish(topic, b"from-fork")
    os._exit(0)


def _run_child(
    target: Callable[..., None], args: tuple[object, ...], method: str = "spawn"
) -> None:
    if method == "fork":
        child: multiprocessing.process.BaseProcess = multiprocessing.get_context("fork").Process(
            target=target, args=args
        )
    else:
        child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    child.join(60)
    assert child.exitcode == 0


# ---------------------------------------------------------------------- directory ownership


def test_private_dir_is_removed_by_its_owner_only() -> None:
    owner = LocalPubSub()
    path = owner.to_config()["path"]
    if os.access("/dev/shm", os.W_OK):
        assert path.startswith("/dev/shm/")
    rebuilt = LocalPubSub(**owner.to_config())
    rebuilt.close()
    assert os.path.isdir(path), "a rebuilt instance deleted the owner's queues"
    unpickled = pickle.loads(pickle.dumps(owner))
    unpickled.close()
    assert os.path.isdir(path), "an unpickled instance deleted the owner's queues"
    owner.close()
    owner.close()
    assert not os.path.exists(path)


def test_given_path_is_kept_and_named_groups_persist(tmp_path: Path) -> None:
    first = LocalPubSub(tmp_path / "q")
    first.ensure_group("jobs", "workers")
    first.publish("jobs", b"survives")
    first.close()
    assert (tmp_path / "q" / "queue.sqlite3").exists()

    second = LocalPubSub(str(tmp_path / "q"))
    try:
        with second.subscribe("jobs", "workers") as sub:
            message = sub.get(timeout=5)
            assert message is not None and message.data == b"survives"
            message.ack()
    finally:
        second.close()


def test_database_is_in_wal_mode(pubsub: LocalPubSub) -> None:
    with sqlite3.connect(os.path.join(pubsub.path, "queue.sqlite3")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_registered_as_local() -> None:
    assert registry.backend_class("pubsub", "local") is LocalPubSub


def test_bad_visibility_timeouts_are_rejected(pubsub: LocalPubSub) -> None:
    with pytest.raises(ConfigurationError, match="visibility_timeout"):
        LocalPubSub(visibility_timeout=0)
    with pytest.raises(ValueError, match="visibility_timeout"):
        pubsub.subscribe("t", "g", visibility_timeout=-1)
    with pytest.raises(ValueError, match="max_messages"):
        pubsub.subscribe("t", "g").get_many(0)


def test_constructor_visibility_timeout_is_the_default_lease() -> None:
    with LocalPubSub(visibility_timeout=0.3) as pubsub:
        assert isinstance(pubsub, LocalPubSub)
        sub = pubsub.subscribe("t", "g")
        pubsub.publish("t", b"x")
        assert sub.get(timeout=5) is not None
        start = time.monotonic()
        again = sub.get(timeout=5)
        assert again is not None and again.deliveries == 2
        assert 0.2 <= time.monotonic() - start < 2.0


def test_non_bytes_data_is_a_type_error(pubsub: LocalPubSub) -> None:
    with pytest.raises(TypeError, match="bytes"):
        pubsub.publish("t", "text")  # type: ignore[arg-type]
    sub = pubsub.subscribe("t", "g")
    pubsub.publish("t", bytearray(b"ba"))
    pubsub.publish("t", memoryview(b"mv"))
    got = sub.get_many(2, timeout=5)
    assert [m.data for m in got] == [b"ba", b"mv"]
    assert all(type(m.data) is bytes for m in got)


def test_publish_many_is_all_or_nothing(pubsub: LocalPubSub) -> None:
    sub = pubsub.subscribe("t", "g")
    with pytest.raises(PayloadTooLargeError, match="1048576"):
        pubsub.publish_many("t", [b"a", b"x" * (LocalPubSub.max_message_bytes + 1)])
    assert sub.get(timeout=0.2) is None


# ---------------------------------------------------------------------- crashes and cleanup


def test_stale_wake_socket_does_not_break_publishing(pubsub: LocalPubSub) -> None:
    sub = pubsub.subscribe("t", "g")
    # A socket file nobody is bound to any more: what a killed subscriber leaves behind.
    stale = os.path.join(pubsub.path, "wake", "t.deadbeef0000")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(stale)
    dead.close()
    assert os.path.exists(stale)
    time.sleep(0.3)  # let the publisher's cached listing expire so it sees the new file
    pubsub.publish("t", b"still-works")
    message = sub.get(timeout=5)
    assert message is not None and message.data == b"still-works"
    assert not os.path.exists(stale), "the dead socket file was not removed"


def test_private_groups_of_dead_processes_are_collected(pubsub: LocalPubSub) -> None:
    _run_child(_subscribe_and_die, (pubsub.to_config(), "t"))
    orphans = [g for g, ephemeral in _groups(pubsub, "t") if ephemeral]
    assert len(orphans) == 1 and orphans[0].startswith("~")
    assert len(_wake_files(pubsub, "t")) == 1

    live = pubsub.subscribe("t")
    time.sleep(0.3)  # let the publisher's cached listing expire
    # The publish finds the dead wake socket, removes it and collects the dead group at once.
    pubsub.publish("t", b"after-crash")
    remaining = [g for g, ephemeral in _groups(pubsub, "t") if ephemeral]
    assert len(remaining) == 1 and remaining[0] not in orphans
    assert _message_rows(pubsub, "t") == 1  # only the live subscriber's copy
    assert len(_wake_files(pubsub, "t")) == 1
    message = live.get(timeout=5)
    assert message is not None and message.data == b"after-crash"
    message.ack()

    # An explicit pass collects a dead group without waiting for a publish to notice it.
    _run_child(_subscribe_and_die, (pubsub.to_config(), "u"))
    assert pubsub.collect_garbage() == 1
    assert _groups(pubsub, "u") == []
    assert _wake_files(pubsub, "u") == []
    live.close()
    assert _groups(pubsub, "t") == []
    assert _message_rows(pubsub, "t") == 0


def test_closing_a_private_subscription_deletes_its_group_and_messages(
    pubsub: LocalPubSub,
) -> None:
    sub = pubsub.subscribe("t")
    pubsub.publish_many("t", [b"1", b"2"])
    assert _message_rows(pubsub, "t") == 2
    sub.close()
    assert _groups(pubsub, "t") == []
    assert _message_rows(pubsub, "t") == 0
    assert _wake_files(pubsub, "t") == []
    with pytest.raises(ValueError, match="closed"):
        sub.get(timeout=0)


def test_closing_the_backend_closes_its_subscriptions(pubsub: LocalPubSub) -> None:
    other = LocalPubSub(**pubsub.to_config())
    private = other.subscribe("t")
    named = other.subscribe("t", "g")
    assert len(_groups(pubsub, "t")) == 2
    other.close()
    assert _groups(pubsub, "t") == [("g", 0)], "named groups stay, private ones go"
    for sub in (private, named):
        with pytest.raises(ValueError, match="closed"):
            sub.get(timeout=0)
    with pytest.raises(ValueError, match="closed"):
        other.publish("t", b"x")


def test_close_unblocks_a_waiting_thread(pubsub: LocalPubSub) -> None:
    sub = pubsub.subscribe("t", "g")
    outcome: list[BaseException] = []

    def wait_forever() -> None:
        try:
            sub.get(timeout=None)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_forever)
    waiter.start()
    time.sleep(0.1)
    sub.close()
    waiter.join(2)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError)


def test_forked_child_reopens_its_connections(pubsub: LocalPubSub) -> None:
    sub = pubsub.subscribe("t", "g")
    pubsub.publish("t", b"from-parent")  # the parent's connection exists before the fork
    _run_child(_publish_from_fork, (pubsub, "t"), method="fork")
    got = sub.get_many(2, timeout=5)
    while len(got) < 2:
        more = sub.get(timeout=5)
        assert more is not None
        got.append(more)
    assert sorted(m.data for m in got) == [b"from-fork", b"from-parent"]
    pubsub.publish("t", b"parent-again")  # the parent's own connection still works
    message = sub.get(timeout=5)
    assert message is not None and message.data == b"parent-again"


# ---------------------------------------------------------------------- waiting


def _publish_later(pubsub: LocalPubSub, topic: str, started: list[float]) -> None:
    time.sleep(0.02)  # the consumer is asleep in poll() by now
    started.append(time.perf_counter())
    pubsub.publish(topic, b"ping")


def _wake_latencies(pubsub: LocalPubSub, topic: str, rounds: int = 15) -> list[float]:
    sub = pubsub.subscribe(topic, "g")
    latencies: list[float] = []
    for _ in range(rounds):
        started: list[float] = []
        publisher = threading.Thread(target=_publish_later, args=(pubsub, topic, started))
        publisher.start()
        message = sub.get(timeout=5)
        received = time.perf_counter()
        publisher.join()
        assert message is not None
        message.ack()
        latencies.append(received - started[0])
    sub.close()
    return latencies


def test_a_waiting_consumer_is_woken_without_polling_delay(pubsub: LocalPubSub) -> None:
    # The fallback look happens every 50 ms; a median far below it proves the wake-up path.
    assert statistics.median(_wake_latencies(pubsub, "t")) < 0.02


def test_long_socket_paths_still_wake_consumers(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    topic = "T" * 64
    with LocalPubSub(deep) as pubsub:
        assert isinstance(pubsub, LocalPubSub)
        assert statistics.median(_wake_latencies(pubsub, topic, rounds=5)) < 0.02


def test_idle_waiting_does_not_burn_cpu(pubsub: LocalPubSub) -> None:
    sub = pubsub.subscribe("t", "g")
    cpu = time.process_time()
    assert sub.get(timeout=1.0) is None
    assert time.process_time() - cpu < 0.1


def test_touch_after_the_lease_was_lost_does_not_steal_it_back(pubsub: LocalPubSub) -> None:
    slow = pubsub.subscribe("t", "g", visibility_timeout=0.2)
    fast = pubsub.subscribe("t", "g", visibility_timeout=30)
    pubsub.publish("t", b"x")
    stale = slow.get(timeout=5)
    assert stale is not None
    fresh = fast.get(timeout=5)
    assert fresh is not None and fresh.deliveries == 2
    with sqlite3.connect(os.path.join(pubsub.path, "queue.sqlite3")) as db:
        before = db.execute("SELECT visible_at, claim FROM messages").fetchall()
        stale.touch()
        stale.nack()
        assert db.execute("SELECT visible_at, claim FROM messages").fetchall() == before
    assert slow.get(timeout=0.3) is None


def test_delete_topic_removes_every_group_and_row_of_that_topic_only(pubsub: LocalPubSub) -> None:
    private = pubsub.subscribe("t")
    pubsub.ensure_group("t", "g")
    pubsub.ensure_group("other", "g")
    pubsub.publish_many("t", [b"1", b"2"])
    pubsub.publish("other", b"kept")
    assert _message_rows(pubsub, "t") == 4
    pubsub.delete_topic("t")
    assert _groups(pubsub, "t") == [] and _message_rows(pubsub, "t") == 0
    assert _groups(pubsub, "other") == [("g", 0)] and _message_rows(pubsub, "other") == 1
    assert private.get(timeout=0) is None
    private.close()
    assert _wake_files(pubsub, "t") == []

"""Conformance suite for :class:`~faasml.interfaces.PubSub` backends.

Every PubSub backend, built-in or third-party, subclasses :class:`PubSubTests` and provides a
``pubsub`` fixture; the suite then checks the whole contract (groups, fan-out, deleting topics,
leases, limits, names, threads and, when the backend supports it, processes)::

    import pytest
    from faasml.testing.conformance.pubsub import PubSubTests

    class TestMyPubSub(PubSubTests):
        @pytest.fixture
        def pubsub(self):
            backend = MyPubSub(url="...")
            yield backend
            backend.close()

Capability fixtures a subclass may override:

* ``visibility_timeout`` (default ``1.0``): the lease, in seconds, that redelivery tests pass to
  ``subscribe``. Raise it for a backend whose leases are coarser (SQS counts whole seconds).
* ``supports_cross_process`` (default ``True``): whether an instance rebuilt in another process
  from ``to_config()`` shares the queues. In-process backends set it to ``False``.

Each test uses a fresh topic (the ``topic`` fixture), so the suite can run against a shared,
long-lived service.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Protocol

import pytest

from faasml.errors import FaaSMLError, InvalidTopicError, PayloadTooLargeError
from faasml.interfaces import Message, PubSub, Subscription

__all__ = ["PubSubTests", "SubscribeFn"]

#: how long a test waits for messages that should arrive; generous for slow CI machines.
_PATIENCE = 15.0


class SubscribeFn(Protocol):
    """Type of the ``open_subscription`` fixture: ``subscribe`` that closes at teardown."""

    def __call__(
        self, topic: str, group: str | None = None, *, visibility_timeout: float | None = None
    ) -> Subscription:
        """Subscribe like :meth:`PubSub.subscribe`; the subscription is closed after the test."""


def _receive(
    sub: Subscription, count: int, *, timeout: float = _PATIENCE, ack: bool = True
) -> list[Message]:
    """Receive until ``count`` messages arrived or ``timeout`` passed; return what came."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        batch = sub.get_many(min(10, count - len(got)), timeout=min(remaining, 1.0))
        for message in batch:
            if ack:
                message.ack()
        got.extend(batch)
    return got


def _take_and_die(
    cls: type[PubSub],
    config: dict[str, Any],
    topic: str,
    group: str,
    visibility_timeout: float,
    expected: bytes,
) -> None:
    """Child process: rebuild the backend, take one message, and die without acking it.

    The exit code tells the parent what happened: 0 took the expected first delivery, 3 got
    something else, 4 got nothing.
    """
    pubsub = cls(**config)
    sub = pubsub.subscribe(topic, group, visibility_timeout=visibility_timeout)
    message = sub.get(timeout=_PATIENCE)
    if message is None:
        os._exit(4)
    # os._exit skips every cleanup, like a crash or an OOM kill would.
    os._exit(0 if message.data == expected and message.deliveries == 1 else 3)


class PubSubTests:
    """The PubSub contract as tests. Subclass it and provide the ``pubsub`` fixture."""

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def pubsub(self) -> PubSub:
        """The backend under test; subclasses override this (and close it at teardown)."""
        raise NotImplementedError("subclass PubSubTests and provide a pubsub fixture")

    @pytest.fixture
    def topic(self) -> str:
        """A topic name no other test uses."""
        return "t-" + uuid.uuid4().hex[:16]

    @pytest.fixture
    def visibility_timeout(self) -> float:
        """The lease (seconds) that redelivery tests ask for; keep it short."""
        return 1.0

    @pytest.fixture
    def supports_cross_process(self) -> bool:
        """Whether an instance rebuilt from ``to_config()`` in another process shares queues."""
        return True

    @pytest.fixture
    def open_subscription(self, pubsub: PubSub) -> Iterator[SubscribeFn]:
        """``pubsub.subscribe`` whose subscriptions are all closed at teardown."""
        opened: list[Subscription] = []

        def subscribe(
            topic: str, group: str | None = None, *, visibility_timeout: float | None = None
        ) -> Subscription:
            if visibility_timeout is None:
                sub = pubsub.subscribe(topic, group)
            else:
                sub = pubsub.subscribe(topic, group, visibility_timeout=visibility_timeout)
            opened.append(sub)
            return sub

        yield subscribe
        for sub in opened:
            sub.close()

    # ------------------------------------------------------------------ basics

    def test_publish_get_ack_round_trip(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """A published message arrives once with its data, topic, id and ``deliveries == 1``."""
        sub = open_subscription(topic, "g")
        pubsub.publish(topic, b"hello")
        message = sub.get(timeout=_PATIENCE)
        assert message is not None
        assert message.data == b"hello"
        assert message.topic == topic
        assert isinstance(message.id, str) and message.id
        assert message.deliveries == 1
        message.ack()
        message.ack()  # idempotent
        assert message.acked

        for i in range(5):
            pubsub.publish(topic, b"%d" % i)
        batch = sub.get_many(3, timeout=_PATIENCE)
        assert 1 <= len(batch) <= 3
        rest = _receive(sub, 5 - len(batch))
        for m in batch:
            m.ack()
        assert sorted(m.data for m in batch + rest) == [b"0", b"1", b"2", b"3", b"4"]

    def test_iterating_a_subscription_yields_messages(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """Iterating a subscription yields the messages as they arrive."""
        sub = open_subscription(topic, "g")
        pubsub.publish_many(topic, [b"a", b"b", b"c"])
        stream = iter(sub)
        got = [next(stream) for _ in range(3)]
        for m in got:
            m.ack()
        assert sorted(m.data for m in got) == [b"a", b"b", b"c"]

    def test_get_returns_none_after_the_timeout(
        self, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """With nothing to read, ``get`` waits about ``timeout`` seconds, then returns ``None``."""
        sub = open_subscription(topic, "g")
        start = time.monotonic()
        assert sub.get(timeout=0.5) is None
        elapsed = time.monotonic() - start
        assert 0.45 <= elapsed < 2.0, f"get(timeout=0.5) returned after {elapsed:.3f}s"
        start = time.monotonic()
        assert sub.get_many(5, timeout=0.2) == []
        assert time.monotonic() - start < 1.7

    def test_timeout_zero_does_not_block(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """``timeout=0`` only looks: it returns at once, with or without a message."""
        sub = open_subscription(topic, "g")
        start = time.monotonic()
        assert sub.get(timeout=0) is None
        assert time.monotonic() - start < 0.5
        pubsub.publish(topic, b"polled")
        deadline = time.monotonic() + _PATIENCE
        message = None
        while message is None and time.monotonic() < deadline:
            start = time.monotonic()
            message = sub.get(timeout=0)
            assert time.monotonic() - start < 0.5, "get(timeout=0) blocked"
            if message is None:
                time.sleep(0.01)
        assert message is not None and message.data == b"polled"
        message.ack()

    def test_publish_many(self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn) -> None:
        """``publish_many`` delivers every item, in order; an empty list is a no-op."""
        sub = open_subscription(topic, "g")
        pubsub.publish_many(topic, [])
        pubsub.publish_many(topic, [b"one", b"two", b"three"])
        got = _receive(sub, 3)
        assert [m.data for m in got] == [b"one", b"two", b"three"]
        assert sub.get(timeout=0.2) is None

    # ------------------------------------------------------------------ groups

    def test_messages_wait_only_for_groups_that_exist(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """A message waits only for the groups that exist when it is published."""
        pubsub.publish(topic, b"nobody-listens")  # no group yet: dropped, not an error
        late = open_subscription(topic, "late")
        assert late.get(timeout=0.3) is None

        pubsub.ensure_group(topic, "ready")
        pubsub.ensure_group(topic, "ready")  # idempotent
        pubsub.publish(topic, b"kept")
        ready = open_subscription(topic, "ready")
        got = _receive(ready, 1)
        assert [m.data for m in got] == [b"kept"]
        assert [m.data for m in _receive(late, 1)] == [b"kept"]
        assert ready.get(timeout=0.2) is None

    def test_members_of_a_group_split_the_messages(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """Members of one group share the work: each message goes to exactly one of them."""
        first = open_subscription(topic, "workers")
        second = open_subscription(topic, "workers")
        expected = [b"m%02d" % i for i in range(50)]
        for data in expected:
            pubsub.publish(topic, data)
        taken: dict[str, list[bytes]] = {"first": [], "second": []}
        deadline = time.monotonic() + _PATIENCE
        while len(taken["first"]) + len(taken["second"]) < 50 and time.monotonic() < deadline:
            for label, sub in (("first", first), ("second", second)):
                message = sub.get(timeout=0.2)
                if message is not None:
                    message.ack()
                    taken[label].append(message.data)
        everything = taken["first"] + taken["second"]
        assert len(everything) == 50, "a message was lost or delivered twice"
        assert sorted(everything) == expected
        assert taken["first"] and taken["second"], "one member got every message"
        assert first.get(timeout=0.2) is None and second.get(timeout=0) is None

    def test_each_group_gets_every_message(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """Distinct groups each receive every message (fan-out)."""
        blue = open_subscription(topic, "blue")
        green = open_subscription(topic, "green")
        expected = [b"fan-%d" % i for i in range(20)]
        pubsub.publish_many(topic, expected)
        assert sorted(m.data for m in _receive(blue, 20)) == sorted(expected)
        assert sorted(m.data for m in _receive(green, 20)) == sorted(expected)
        assert blue.get(timeout=0.2) is None and green.get(timeout=0) is None

    def test_anonymous_subscriptions_fan_out(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """Each anonymous subscription has a private group: all of them get every message."""
        one = open_subscription(topic)
        two = open_subscription(topic)
        assert one.group is None
        expected = [b"anon-%d" % i for i in range(10)]
        for data in expected:
            pubsub.publish(topic, data)
        assert sorted(m.data for m in _receive(one, 10)) == expected
        assert sorted(m.data for m in _receive(two, 10)) == expected

        one.close()
        pubsub.publish(topic, b"after-close")
        assert [m.data for m in _receive(two, 1)] == [b"after-close"]

    # ------------------------------------------------------------------ deleting topics

    def test_delete_topic_drops_groups_and_pending_messages(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """After ``delete_topic`` a group of the same name starts empty: nothing old survives."""
        pubsub.ensure_group(topic, "g")
        holder = open_subscription(topic, "g")
        pubsub.publish_many(topic, [b"old-1", b"old-2", b"old-3"])
        held = holder.get(timeout=_PATIENCE)
        assert held is not None  # one message in flight, the others waiting
        holder.close()
        pubsub.delete_topic(topic)

        sub = open_subscription(topic, "g")
        assert sub.get(timeout=0.5) is None, "a message published before delete_topic survived"
        pubsub.publish(topic, b"new")
        got = _receive(sub, 1)
        late = sub.get(timeout=0.3)
        assert [m.data for m in got] == [b"new"] and late is None

    def test_delete_topic_is_idempotent(self, pubsub: PubSub, topic: str) -> None:
        """Deleting a topic that never existed, or twice, is not an error; names are checked."""
        pubsub.delete_topic(topic)
        pubsub.ensure_group(topic, "g")
        pubsub.delete_topic(topic)
        pubsub.delete_topic(topic)
        with pytest.raises(InvalidTopicError):
            pubsub.delete_topic("not portable")

    def test_after_delete_topic_publishing_reaches_only_new_groups(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """A deleted topic has no group: a publish reaches nobody until one is created again."""
        pubsub.ensure_group(topic, "g")
        pubsub.delete_topic(topic)
        pubsub.publish(topic, b"to-nobody")
        pubsub.ensure_group(topic, "g")
        pubsub.publish_many(topic, [b"kept-1", b"kept-2"])
        sub = open_subscription(topic, "g")
        got = _receive(sub, 2)
        late = sub.get(timeout=0.3)
        assert sorted(m.data for m in got) == [b"kept-1", b"kept-2"] and late is None

    def test_subscriptions_open_across_delete_topic_still_close(
        self, pubsub: PubSub, topic: str
    ) -> None:
        """Closing a subscription whose topic was deleted meanwhile raises nothing."""
        named = pubsub.subscribe(topic, "g")
        private = pubsub.subscribe(topic)
        pubsub.publish(topic, b"x")
        pubsub.delete_topic(topic)
        named.close()
        private.close()
        private.close()

    # ------------------------------------------------------------------ leases

    def test_unacked_message_is_redelivered(
        self,
        pubsub: PubSub,
        topic: str,
        open_subscription: SubscribeFn,
        visibility_timeout: float,
    ) -> None:
        """An un-acked message comes back after the visibility timeout, never before."""
        sub = open_subscription(topic, "g", visibility_timeout=visibility_timeout)
        pubsub.publish(topic, b"again")
        first = sub.get(timeout=_PATIENCE)
        assert first is not None and first.deliveries == 1
        leased_at = time.monotonic()
        assert sub.get(timeout=visibility_timeout * 0.3) is None, "redelivered before the lease"
        second = sub.get(timeout=visibility_timeout * 5)
        assert second is not None, "an un-acked message was not redelivered"
        assert second.data == b"again"
        assert second.deliveries == 2
        assert time.monotonic() - leased_at >= visibility_timeout * 0.7
        second.ack()
        assert sub.get(timeout=visibility_timeout * 1.3) is None, "an acked message came back"

    def test_ack_many_settles_a_batch(
        self,
        pubsub: PubSub,
        topic: str,
        open_subscription: SubscribeFn,
        visibility_timeout: float,
    ) -> None:
        """``ack_many`` acks every message it is given, and only those."""
        sub = open_subscription(topic, "g", visibility_timeout=visibility_timeout)
        pubsub.publish_many(topic, [b"m%d" % i for i in range(5)])
        got: list[Message] = []
        deadline = time.monotonic() + _PATIENCE
        while len(got) < 5 and time.monotonic() < deadline:
            got.extend(sub.get_many(5 - len(got), timeout=0.5))
        assert sorted(m.data for m in got) == [b"m%d" % i for i in range(5)]
        kept = next(m for m in got if m.data == b"m2")
        sub.ack_many([m for m in got if m is not kept])
        sub.ack_many([])  # nothing to do
        assert all(m.acked for m in got if m is not kept) and not kept.acked
        again = sub.get(timeout=visibility_timeout * 5)
        assert again is not None and again.data == b"m2", "an acked message came back"
        sub.ack_many([again, again])  # the same message twice: still one ack
        assert sub.get(timeout=visibility_timeout * 1.3) is None, "an acked message came back"

    def test_nack_redelivers_promptly(
        self,
        pubsub: PubSub,
        topic: str,
        open_subscription: SubscribeFn,
        visibility_timeout: float,
    ) -> None:
        """``nack`` makes the message visible again at once, long before its lease ends."""
        sub = open_subscription(topic, "g", visibility_timeout=visibility_timeout * 10)
        pubsub.publish(topic, b"retry-me")
        first = sub.get(timeout=_PATIENCE)
        assert first is not None
        first.nack()
        second = sub.get(timeout=visibility_timeout)
        assert second is not None, "nack did not make the message visible again"
        assert second.data == b"retry-me" and second.deliveries == 2
        second.ack()

    def test_touch_extends_the_lease(
        self,
        pubsub: PubSub,
        topic: str,
        open_subscription: SubscribeFn,
        visibility_timeout: float,
    ) -> None:
        """``touch`` renews the lease; once renewals stop, the message is redelivered."""
        holder = open_subscription(topic, "g", visibility_timeout=visibility_timeout)
        other = open_subscription(topic, "g", visibility_timeout=visibility_timeout)
        pubsub.publish(topic, b"long-job")
        message = holder.get(timeout=_PATIENCE)
        assert message is not None
        until = time.monotonic() + visibility_timeout * 2
        while time.monotonic() < until:
            message.touch()
            stolen = other.get(timeout=visibility_timeout / 5)
            assert stolen is None, "a message was redelivered while its lease was renewed"
        # Renewal stops: the lease runs out and another member gets it.
        again = other.get(timeout=visibility_timeout * 5)
        assert again is not None and again.data == b"long-job"
        assert again.deliveries == 2
        again.ack()

    def test_touched_message_can_still_be_acked(
        self,
        pubsub: PubSub,
        topic: str,
        open_subscription: SubscribeFn,
        visibility_timeout: float,
    ) -> None:
        """An ack after ``touch`` removes the message (backends whose receipt changes on touch)."""
        holder = open_subscription(topic, "g", visibility_timeout=visibility_timeout)
        pubsub.publish(topic, b"renewed")
        message = holder.get(timeout=_PATIENCE)
        assert message is not None
        message.touch()
        message.touch()
        message.ack()
        assert holder.get(timeout=visibility_timeout * 2.5) is None, "acked message came back"

    def test_ack_after_the_lease_was_lost_keeps_the_redelivered_copy(
        self,
        pubsub: PubSub,
        topic: str,
        open_subscription: SubscribeFn,
        visibility_timeout: float,
    ) -> None:
        """An ack that arrives after the lease expired does not delete the redelivered copy."""
        slow = open_subscription(topic, "g", visibility_timeout=visibility_timeout)
        fast = open_subscription(topic, "g", visibility_timeout=visibility_timeout)
        pubsub.publish(topic, b"contested")
        stale = slow.get(timeout=_PATIENCE)
        assert stale is not None
        fresh = fast.get(timeout=visibility_timeout * 5)
        assert fresh is not None and fresh.deliveries == 2
        stale.ack()  # too late: must neither raise nor delete the copy `fast` holds now
        fresh.nack()
        third = fast.get(timeout=visibility_timeout)
        assert third is not None, "a stale ack deleted the redelivered message"
        assert third.data == b"contested" and third.deliveries == 3
        third.ack()

    def test_message_of_a_crashed_consumer_is_redelivered(
        self,
        pubsub: PubSub,
        topic: str,
        open_subscription: SubscribeFn,
        visibility_timeout: float,
        supports_cross_process: bool,
    ) -> None:
        """A consumer process that dies holding a message does not lose it."""
        if not supports_cross_process:
            pytest.skip("the backend does not share queues across processes")
        pubsub.ensure_group(topic, "workers")
        pubsub.publish(topic, b"job")
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(
            target=_take_and_die,
            args=(type(pubsub), pubsub.to_config(), topic, "workers", visibility_timeout, b"job"),
        )
        child.start()
        child.join(60)
        if child.is_alive():
            child.kill()
            child.join()
            pytest.fail("the child consumer did not finish within 60s")
        assert child.exitcode == 0, f"child consumer failed (exit code {child.exitcode})"
        survivor = open_subscription(topic, "workers", visibility_timeout=visibility_timeout)
        message = survivor.get(timeout=visibility_timeout * 5 + 5)
        assert message is not None, "the crashed consumer's message was never redelivered"
        assert message.data == b"job" and message.deliveries == 2
        message.ack()

    def test_closed_subscription_stops_receiving(
        self,
        pubsub: PubSub,
        topic: str,
        open_subscription: SubscribeFn,
        visibility_timeout: float,
    ) -> None:
        """A closed subscription takes no more messages; what it held is redelivered."""
        leaving = open_subscription(topic, "g", visibility_timeout=visibility_timeout)
        staying = open_subscription(topic, "g", visibility_timeout=visibility_timeout)
        pubsub.publish(topic, b"held")
        held = leaving.get(timeout=_PATIENCE)
        assert held is not None
        leaving.close()
        leaving.close()  # idempotent
        pubsub.publish_many(topic, [b"after-1", b"after-2"])
        got = _receive(staying, 3, timeout=visibility_timeout * 5 + 5)
        assert sorted(m.data for m in got) == [b"after-1", b"after-2", b"held"]
        assert [m.deliveries for m in got if m.data == b"held"] == [2]
        try:
            late = leaving.get(timeout=0)
        except (ValueError, RuntimeError, FaaSMLError):
            late = None  # refusing to read from a closed subscription is fine too
        assert late is None

    # ------------------------------------------------------------------ limits and names

    def test_oversized_message_is_rejected(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """Over ``max_message_bytes`` raises PayloadTooLargeError naming the limit; at it works."""
        limit = pubsub.max_message_bytes
        sub = open_subscription(topic, "g")
        with pytest.raises(PayloadTooLargeError) as caught:
            pubsub.publish(topic, b"x" * (limit + 1))
        assert str(limit) in str(caught.value), "the error must name the limit in bytes"
        with pytest.raises(PayloadTooLargeError):
            pubsub.publish_many(topic, [b"small", b"x" * (limit + 1)])

        biggest = os.urandom(limit)
        pubsub.publish(topic, biggest)
        message = sub.get(timeout=_PATIENCE)
        while message is not None and message.data == b"small":
            message.ack()  # publish_many may have sent the item before the oversized one
            message = sub.get(timeout=_PATIENCE)
        assert message is not None and message.data == biggest
        message.ack()

    @pytest.mark.parametrize("bad", ["", "has space", "dot.ted", "x" * 65, "ünï", "a/b", "a*"])
    def test_invalid_names_are_rejected(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn, bad: str
    ) -> None:
        """Non-portable topic and group names raise InvalidTopicError everywhere."""
        with pytest.raises(InvalidTopicError):
            pubsub.publish(bad, b"x")
        with pytest.raises(InvalidTopicError):
            pubsub.publish_many(bad, [b"x"])
        with pytest.raises(InvalidTopicError):
            open_subscription(bad)
        with pytest.raises(InvalidTopicError):
            open_subscription(topic, bad)
        with pytest.raises(InvalidTopicError):
            pubsub.ensure_group(bad, "g")
        with pytest.raises(InvalidTopicError):
            pubsub.ensure_group(topic, bad)
        with pytest.raises(InvalidTopicError):
            pubsub.delete_topic(bad)

    def test_longest_portable_names_are_accepted(
        self, pubsub: PubSub, open_subscription: SubscribeFn
    ) -> None:
        """64-character names using every allowed character class work."""
        topic = "T_" + uuid.uuid4().hex + "-" * 30  # 64 characters, all kinds allowed
        longest = "g" * 64
        pubsub.ensure_group(topic, longest)
        sub = open_subscription(topic, longest)
        pubsub.publish(topic, b"ok")
        assert [m.data for m in _receive(sub, 1)] == [b"ok"]

    # ------------------------------------------------------------------ payloads and order

    def test_single_consumer_gets_messages_in_order(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """A single consumer receives a group's messages in publish order."""
        if not pubsub.preserves_order:
            pytest.skip(f"{type(pubsub).__name__} declares preserves_order = False")
        sub = open_subscription(topic, "g")
        expected = [b"%03d" % i for i in range(100)]
        for data in expected:
            pubsub.publish(topic, data)
        assert [m.data for m in _receive(sub, 100)] == expected

    def test_binary_payloads_round_trip(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """Payloads are opaque bytes: every byte value, and the empty payload, survive."""
        sub = open_subscription(topic, "g")
        every_byte = bytes(range(256))
        payloads = [every_byte, every_byte[::-1] * 4, b"\x00", b"", b"\xff\xfe\x00\x80", b"\r\n"]
        for data in payloads:
            pubsub.publish(topic, data)
        assert [m.data for m in _receive(sub, len(payloads))] == payloads

    # ------------------------------------------------------------------ concurrency

    def test_threads_publish_and_consume_concurrently(
        self, pubsub: PubSub, topic: str, open_subscription: SubscribeFn
    ) -> None:
        """Threads publishing while others consume: every message exactly once."""
        consumers = [open_subscription(topic, "workers") for _ in range(2)]
        received: list[bytes] = []
        received_lock = threading.Lock()
        errors: list[BaseException] = []
        done = threading.Event()

        def guarded(work: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    work()
                except BaseException as exc:  # re-raised by the test thread below
                    errors.append(exc)
                    done.set()

            return run

        def produce(worker: int) -> None:
            for i in range(250):
                pubsub.publish(topic, b"%d-%d" % (worker, i))

        def consume(sub: Subscription) -> None:
            while not done.is_set():
                for message in sub.get_many(10, timeout=0.2):
                    message.ack()
                    with received_lock:
                        received.append(message.data)
                        if len(received) >= 1000:
                            done.set()

        threads = [threading.Thread(target=guarded(partial(consume, s))) for s in consumers]
        threads += [threading.Thread(target=guarded(partial(produce, w))) for w in range(4)]
        for thread in threads:
            thread.start()
        done.wait(_PATIENCE * 2)
        done.set()
        for thread in threads:
            thread.join(_PATIENCE)
        if errors:
            raise errors[0]
        assert len(received) == 1000, f"received {len(received)} messages, expected 1000"
        assert len(set(received)) == 1000, "a message was delivered twice"

    # ------------------------------------------------------------------ configuration

    def test_to_config_is_json_and_rebuilds_a_sharing_backend(
        self,
        pubsub: PubSub,
        topic: str,
        open_subscription: SubscribeFn,
        supports_cross_process: bool,
    ) -> None:
        """``to_config`` is JSON; a rebuilt instance shares the queues and closes harmlessly."""
        config = pubsub.to_config()
        assert isinstance(config, dict)
        assert json.loads(json.dumps(config)) == config
        if not supports_cross_process:
            return  # an in-process backend cannot share its queues with a rebuilt instance
        sub = open_subscription(topic, "g")
        rebuilt = type(pubsub)(**config)
        try:
            rebuilt.publish(topic, b"from-rebuilt")
        finally:
            rebuilt.close()
        assert [m.data for m in _receive(sub, 1)] == [b"from-rebuilt"]
        # Closing the rebuilt instance must leave the original working.
        pubsub.publish(topic, b"from-original")
        assert [m.data for m in _receive(sub, 1)] == [b"from-original"]

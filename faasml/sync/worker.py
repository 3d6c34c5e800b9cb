"""The worker side of the sync protocol: claim, join, announce deltas, follow decisions, leave.

A worker invocation is identified by ``(slot, gen)``. Its life:

1. :meth:`SyncWorker.claim` writes ``claims/<slot>-<gen>`` with ``if_absent``: a duplicate
   invocation (platforms re-invoke; executors retry) finds it taken and must exit at once. One
   that starts after the run ended (the claims are deleted with the run) then finds the run's
   ``active`` marker gone: it withdraws its claim and exits (:meth:`SyncWorker.run_active`).
2. :meth:`SyncWorker.join` subscribes to the decision topic *first* (its own private group), then
   loads the newest checkpoint and replays the stored decisions after it. Every decision published
   after the subscription arrives on the topic; every earlier one is in the stored log, because
   the driver completes the log before it launches a worker and, until that worker's first
   announcement, stores each decision before publishing it: no decision can fall in between.
3. Per step: :meth:`SyncWorker.announce` stores the delta and tells the driver;
   :meth:`SyncWorker.poll` / :meth:`SyncWorker.wait_until` apply decisions in order.
4. :meth:`SyncWorker.leave` tells the driver it stops and why.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from faasml.errors import AlreadyExistsError, DataFormatError, NotFoundError
from faasml.interfaces import ObjectStore, PubSub, Subscription
from faasml.sync.codec import decode_arrays, encode_arrays, encode_delta
from faasml.sync.coordinator import SYNC_MODES
from faasml.sync.messages import Announcement, Decision, Leave, RunKeys, decode_message
from faasml.sync.replica import Replica

__all__ = ["SyncWorker"]


class SyncWorker:
    """One worker invocation's view of the sync protocol.

    :param storage: the run's object store.
    :param pubsub: the run's PubSub.
    :param keys: key layout and topics of the run.
    :param slot: worker slot (fixed data partition).
    :param gen: generation of the slot.
    :param shape: weight shape ``(n_rows, n_outputs)``.
    :param mode: ``"bsp"``, ``"ssp"`` or ``"asp"``.
    :param staleness: SSP bound: step ``t`` may be computed once decision ``t - 1 - staleness``
        is applied (BSP is ``staleness = 0``; ASP never waits).
    :param update_dtype: ``"float32"`` or ``"float64"`` values in stored deltas.
    :param aggregation: ``"sum"`` or ``"mean"``, see :class:`~faasml.sync.replica.Replica`;
        every replica of a run must use the same.
    """

    def __init__(
        self,
        storage: ObjectStore,
        pubsub: PubSub,
        keys: RunKeys,
        slot: int,
        gen: int,
        shape: tuple[int, int],
        *,
        mode: str = "bsp",
        staleness: int = 0,
        update_dtype: str = "float32",
        aggregation: str = "sum",
    ) -> None:
        if mode not in SYNC_MODES:
            raise ValueError(f"unknown sync mode {mode!r}")
        self.storage = storage
        self.pubsub = pubsub
        self.keys = keys
        self.slot = slot
        self.gen = gen
        self.mode = mode
        self.staleness = 0 if mode == "bsp" else staleness
        self.update_dtype = update_dtype
        self.replica = Replica(storage, keys, shape, member=(slot, gen), aggregation=aggregation)
        self.stopped = False
        self.evicted = False
        self.wait_seconds = 0.0
        self.io_seconds = 0.0
        self.bytes_sent = 0
        self._buffer: dict[int, Decision] = {}
        self._sub: Subscription | None = None

    @property
    def applied(self) -> int:
        """The last decision applied to :attr:`replica`."""
        return self.replica.applied

    @property
    def W(self) -> npt.NDArray[np.float64]:  # noqa: N802 - the weight matrix is W everywhere
        """The replica's weights."""
        return self.replica.W

    def claim(self) -> bool:
        """Take ownership of ``(slot, gen)``; ``False`` means this is a duplicate invocation."""
        try:
            self.storage.put(self.keys.claim(self.slot, self.gen), b"", if_absent=True)
        except AlreadyExistsError:
            return False
        return True

    def run_active(self) -> bool:
        """Whether the run is still going on (the driver deletes its marker when it ends)."""
        try:
            self.storage.head(self.keys.active)
        except NotFoundError:
            return False
        return True

    def withdraw(self) -> None:
        """Delete this invocation's claim: it started after the run ended and must leave no
        object behind (the run's clean-up may already have listed the prefix)."""
        try:
            self.storage.delete(self.keys.claim(self.slot, self.gen))
        except NotFoundError:
            pass

    def join(self) -> None:
        """Subscribe to decisions, then load the newest checkpoint and replay the log after it."""
        self._sub = self.pubsub.subscribe(self.keys.down_topic, visibility_timeout=60.0)
        last = self.replica.catch_up()
        if last is not None:
            self._note(last)

    def _note(self, decision: Decision) -> None:
        if decision.stop:
            self.stopped = True
        if (self.slot, self.gen) in decision.evicted:
            self.evicted = True

    def _apply(self, decision: Decision) -> None:
        if decision.d <= self.replica.applied:
            return
        try:
            self.replica.apply(decision)
        except NotFoundError:
            # a delta was garbage-collected: we fell behind a checkpoint; start from the newest
            self.replica.catch_up()
        self._note(decision)

    def poll(self, timeout: float = 0.0) -> int:
        """Receive decisions for up to ``timeout`` seconds and apply every one now in order.

        :returns: how many decisions were applied.
        """
        assert self._sub is not None, "join() first"
        start = time.monotonic()
        messages = self._sub.get_many(64, timeout)
        for message in messages:
            try:
                msg = decode_message(message.data)
            except DataFormatError:
                continue  # garbage on the topic is acked below: never redelivered forever
            if isinstance(msg, Decision) and msg.d > self.replica.applied:
                self._buffer[msg.d] = msg
        if messages:
            self._sub.ack_many(messages)
        before = self.replica.applied
        self._drain()
        self.wait_seconds += time.monotonic() - start
        return self.replica.applied - before

    def _drain(self) -> None:
        while not (self.stopped or self.evicted):
            nxt = self.replica.applied + 1
            decision = self._buffer.pop(nxt, None)
            if decision is None:
                if not self._buffer or min(self._buffer) <= nxt:
                    break
                # a gap (a redelivery or a lost message): the stored log has the missing decision
                try:
                    msg = decode_message(self.storage.get(self.keys.decision(nxt)))
                except NotFoundError:
                    break
                if not isinstance(msg, Decision):
                    break
                decision = msg
            self._apply(decision)
        for d in [d for d in self._buffer if d <= self.replica.applied]:
            del self._buffer[d]

    def wait_until(self, d: int, deadline: float) -> bool:
        """Block until decision ``d`` is applied, training stops, or ``deadline`` (monotonic)."""
        while self.replica.applied < d and not (self.stopped or self.evicted):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(min(left, 1.0))
        return self.replica.applied >= d

    def ready_for(self, t: int) -> int:
        """The decision that must be applied before step ``t`` may be computed (-1: none)."""
        if self.mode == "asp":
            return -1
        return t - 1 - self.staleness

    def announce(
        self,
        t: int,
        rows: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        *,
        n: int,
        loss: float,
    ) -> None:
        """Store the delta of step ``t`` (if any rows) and announce it to the driver."""
        start = time.monotonic()
        key: str | None = None
        if rows.size:
            key = self.keys.delta(t, self.slot, self.gen)
            blob = encode_delta(rows, values, dtype=self.update_dtype)
            self.storage.put(key, blob)
            self.bytes_sent += len(blob)
            # apply exactly what the others will decode, so every replica stays bit-identical
            exact = values.astype(self.update_dtype).astype(np.float64)
            self.replica.own[t] = (rows, exact.reshape(rows.size, -1))
        ann = Announcement(
            self.slot,
            self.gen,
            t,
            key,
            n=int(n),
            base=self.replica.applied,
            loss=float(loss),
            rows=int(rows.size),
        )
        self.pubsub.publish(self.keys.up_topic, ann.encode())
        self.io_seconds += time.monotonic() - start

    def discard_undecided(self) -> None:
        """Delete this invocation's deltas that no decision included, once training is over.

        A worker may still store a delta after the driver's stop, and then after the run's
        clean-up listed its objects: a duplicate invocation the driver never knew of, for one.
        Nothing can decide such a delta any more, so its writer removes it. Call only when the
        run is over (:attr:`stopped`, or :meth:`run_active` false): while it goes on, the driver
        may still decide an announced delta.
        """
        for t in list(self.replica.own):
            try:
                self.storage.delete(self.keys.delta(t, self.slot, self.gen))
            except NotFoundError:
                pass
            del self.replica.own[t]

    def discard_state(self) -> None:
        """Delete the state :meth:`save_state` stored (the run ended meanwhile: nobody resumes)."""
        try:
            self.storage.delete(self.keys.state(self.slot))
        except NotFoundError:
            pass

    def leave(self, next_t: int, reason: str) -> None:
        """Tell the driver this invocation stops; ``next_t`` is the step it would compute next."""
        self.pubsub.publish(self.keys.up_topic, Leave(self.slot, self.gen, next_t, reason).encode())

    def save_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        """Store state the next generation of this slot resumes from (optimizer, residuals)."""
        self.storage.put(
            self.keys.state(self.slot), encode_arrays({**meta, "gen": self.gen}, arrays)
        )

    def load_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]] | None:
        """The state an earlier generation of this slot saved, or ``None``."""
        key = self.keys.state(self.slot)
        try:
            blob = self.storage.get(key)
        except NotFoundError:
            return None
        return decode_arrays(blob, key=key)

    def close(self) -> None:
        """Drop the subscription (its private group goes with it) and the fetch threads."""
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        self.replica.close()

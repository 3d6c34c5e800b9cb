"""The driver side of the sync protocol: the step coordinator's I/O loop and the driver replica.

:class:`SyncDriver` runs in the user's process (like MLLess' supervisor, but not a function and
not a server VM). Its loop, in the calling thread:

* receives announcements and leave notices on the run's *up* topic;
* watches the worker futures: a crashed invocation is evicted and its slot relaunched as the next
  generation, which joins at the current step from the newest checkpoint plus the decision log;
  a slot whose time budget ran out is relaunched the same way;
* evicts required members that stay silent too long;
* makes step decisions (:class:`~faasml.sync.coordinator.StepCoordinator`) and publishes them
  on the fan-out *down* topic; the replay log of decisions in the store is written only for
  workers that join (before each launch, and until the new worker's first announcement);
* asks ``stop_when`` whether to stop, and then publishes a final ``stop`` decision.

A background thread keeps the driver's own replica: it applies every decision, calls
``evaluate`` every ``eval_every`` decisions, writes a checkpoint every ``checkpoint_every``
decisions and then deletes the deltas and decisions older than the *previous* checkpoint (a
worker that is still replaying from it has a whole checkpoint interval to finish).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from faasml._rows import take_rows
from faasml.errors import DataFormatError, DivergenceError, FaaSMLError, NotFoundError
from faasml.interfaces import ObjectStore, PubSub, Subscription
from faasml.sync.coordinator import StepCoordinator
from faasml.sync.messages import Announcement, Decision, Leave, RunKeys, decode_message
from faasml.sync.replica import Replica, RunningAverage

__all__ = ["SyncDriver", "WorkerRecord"]

log = logging.getLogger("faasml.sync")

#: launches worker (slot, gen) starting at step start_t; returns its future.
LaunchFn = Callable[[int, int, int], "cf.Future[Any]"]
#: reads rows of the model (``None``: every row) as a new array.
WeightsFn = Callable[["npt.NDArray[np.int64] | None"], "npt.NDArray[np.float64]"]
#: evaluate(weights, info) -> a history entry (info: d, samples, train_loss, time, workers).
EvaluateFn = Callable[[WeightsFn, dict[str, Any]], dict[str, Any]]


@dataclass
class WorkerRecord:
    """What happened to one worker invocation (for reports and tests).

    :param outcome: ``"running"``, the worker's own status (``"budget"``, ``"stopped"``,
        ``"evicted"``, ``"duplicate"``, ``"gone"``), or ``"died"`` / ``"error"`` with :attr:`error`.
    """

    slot: int
    gen: int
    start_t: int
    future: cf.Future[Any]
    launched_at: float
    outcome: str = "running"
    result: dict[str, Any] | None = None
    error: BaseException | None = field(default=None, repr=False)


class SyncDriver:
    """Coordinate ``n_slots`` workers training a replicated model of shape ``shape``.

    :param storage: the run's object store.
    :param pubsub: the run's PubSub.
    :param keys: the run's key layout.
    :param shape: weight shape ``(n_rows, n_outputs)``.
    :param coordinator: the decision rules (mode, staleness, timeouts).
    :param n_slots: number of worker slots.
    :param launch: starts worker ``(slot, gen)`` at step ``start_t`` and returns its future.
    :param evaluate: builds a history entry given :meth:`weights` (``None``: no evaluations).
    :param eval_every: decisions between two evaluations.
    :param eval_budget: when set, a scheduled evaluation (other than the final one) is skipped
        while the evaluations so far took more than this fraction of the elapsed time: on a
        fast local run they would otherwise compete with the workers for the CPU, while on a
        cloud, whose steps take far longer, the budget never binds.
    :param checkpoint_every: decisions between two checkpoints (0: never).
    :param max_failures: consecutive failed generations of one slot, without a single
        announcement in between, after which training is aborted with the last error.
    :param poll_timeout: longest wait for a message before the loop checks workers and timeouts.
    :param average_window: when set, the driver also keeps a running average of its replica
        over about this many decisions (:class:`~faasml.sync.replica.RunningAverage`); the
        evaluations and :meth:`weights` then use the average.
    :param aggregation: ``"sum"`` or ``"mean"``; must match the workers'.
    :param initial: weights to start from instead of zeros (a factorization must not start at
        the zero saddle point); stored as the checkpoint of decision -1 that workers load.
    """

    def __init__(
        self,
        storage: ObjectStore,
        pubsub: PubSub,
        keys: RunKeys,
        shape: tuple[int, int],
        coordinator: StepCoordinator,
        *,
        n_slots: int,
        launch: LaunchFn,
        evaluate: EvaluateFn | None = None,
        eval_every: int = 10,
        eval_budget: float | None = None,
        checkpoint_every: int = 50,
        max_failures: int = 3,
        poll_timeout: float = 0.02,
        average_window: float | None = None,
        aggregation: str = "sum",
        initial: npt.NDArray[np.float64] | None = None,
    ) -> None:
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        self.storage = storage
        self.pubsub = pubsub
        self.keys = keys
        self.coordinator = coordinator
        self.n_slots = n_slots
        self.replica = Replica(storage, keys, shape, aggregation=aggregation)
        self._initial = initial is not None
        if initial is not None:
            if initial.shape != self.replica.shape:
                raise ValueError(f"initial weights {initial.shape} do not match {shape}")
            self.replica.W = np.array(initial, dtype=np.float64)
        self.average = (
            RunningAverage(self.replica, average_window) if average_window is not None else None
        )
        self.history: list[dict[str, Any]] = []
        self.workers: list[WorkerRecord] = []
        self._running: list[WorkerRecord] = []
        self.stop_reason: str | None = None
        self.started = time.monotonic()
        self._launch_fn = launch
        self._evaluate = evaluate
        self._eval_every = max(1, int(eval_every))
        self._eval_budget = eval_budget
        self._eval_seconds = 0.0
        self._checkpoint_every = int(checkpoint_every)
        self._max_failures = max_failures
        self._poll_timeout = poll_timeout
        self._gen = [-1] * n_slots
        self._failures = [0] * n_slots
        self._losses: dict[tuple[int, int, int], tuple[float, int]] = {}
        self._queue: queue.Queue[Decision] = queue.Queue()
        self._updater: threading.Thread | None = None
        self._updater_error: BaseException | None = None
        self._fatal: BaseException | None = None
        self._sub: Subscription | None = None
        self._checkpoints: list[int] = []
        self._log: deque[Decision] = deque()
        self._interval_loss = 0.0
        self._interval_n = 0
        self._unstored: deque[tuple[int, bytes]] = deque()
        self._stored: set[int] = set()  # decisions written to the replay log, until deleted

    # ------------------------------------------------------------------ public

    def elapsed(self) -> float:
        """Seconds since the driver was created."""
        return time.monotonic() - self.started

    @property
    def samples(self) -> int:
        """Samples behind every decided delta."""
        return self.coordinator.samples

    def weights(self, rows: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.float64]:
        """The model (or its ``rows``): the running average when enabled, else the replica.

        Returns a new array. Evaluations only need the rows a test set uses, which for hashed
        features is a fraction of the model.
        """
        if self.average is not None:
            return self.average.value(rows)
        return self.replica.W.copy() if rows is None else take_rows(self.replica.W, rows)

    def live_workers(self) -> int:
        """Members currently launched or active."""
        return len(self.coordinator.live_members())

    def run(self, stop_when: Callable[[SyncDriver], str | None]) -> None:
        """Launch the workers and coordinate until ``stop_when`` returns a reason.

        On return the driver replica holds every decision; :meth:`weights` is the model.

        :raises FaaSMLError: a slot kept failing (``max_failures``) or a checkpoint write failed.
        :raises Exception: a worker raised an error that is not an infrastructure failure (it is
            re-raised as is, with the remote traceback attached by the executor).
        """
        self._sub = self.pubsub.subscribe(self.keys.up_topic, visibility_timeout=60.0)
        self.storage.put(self.keys.active, b"")
        if self._initial:
            self.replica.save_checkpoint()  # decision -1: every worker starts from these weights
        self._updater = threading.Thread(target=self._update_loop, name="faasml-sync-replica")
        self._updater.daemon = True
        self._updater.start()
        try:
            for slot in range(self.n_slots):
                self._launch(slot, 0, 0, expected=True)
            while True:
                self._receive()
                self._check_workers()
                for slot, gen in self.coordinator.overdue():
                    log.warning("evicting silent worker slot %d generation %d", slot, gen)
                    if self.coordinator.evict(slot, gen):
                        self._relaunch(slot, gen, self.coordinator.last_t(slot) + 1)
                # One decision at a time, each followed by the stop check: a worker running
                # ahead (ssp, asp) can have several rounds ready at once, and deciding them all
                # before looking would overshoot the target by a timing-dependent amount.
                reason = stop_when(self)
                while reason is None:
                    made = self.coordinator.decide(limit=1)
                    if not made:
                        break
                    self._publish(made[0])
                    reason = stop_when(self)
                if self._fatal is not None:
                    raise self._fatal
                if self._updater_error is not None:
                    raise self._updater_error
                if reason is not None:
                    self.stop_reason = reason
                    break
        finally:
            if not self.coordinator.stopped:
                final = self.coordinator.stop()
                try:
                    self._publish(final)
                except Exception:  # never mask the error that got us here
                    log.warning("publishing the stop decision failed", exc_info=True)
                    self._queue.put(final)  # the replica thread must still see the end
            self._finish()
        if self._updater_error is not None:
            raise self._updater_error

    # ------------------------------------------------------------------ loop steps

    def _launch(self, slot: int, gen: int, start_t: int, *, expected: bool = False) -> None:
        self._store_decisions()  # the new worker replays the log: it must be complete
        if expected:
            self.coordinator.expect(slot, gen)
        else:
            self.coordinator.launched(slot, gen)
        self._gen[slot] = gen
        try:
            future = self._launch_fn(slot, gen, start_t)
        except Exception as exc:
            future = cf.Future()
            future.set_exception(exc)
        record = WorkerRecord(slot, gen, start_t, future, self.elapsed())
        self.workers.append(record)
        self._running.append(record)

    def _relaunch(self, slot: int, ended_gen: int, start_t: int) -> None:
        """Start the next generation of ``slot`` unless one already replaced ``ended_gen``."""
        if self.coordinator.stopped or self._gen[slot] != ended_gen:
            return
        self._launch(slot, ended_gen + 1, max(start_t, 0))

    def _receive(self) -> None:
        assert self._sub is not None
        messages = self._sub.get_many(256, self._poll_timeout)
        for message in messages:
            try:
                msg = decode_message(message.data)
            except DataFormatError as exc:
                log.warning("dropping an invalid sync message: %s", exc)
                continue
            if isinstance(msg, Announcement):
                if not math.isfinite(msg.loss) and self._fatal is None:
                    # nothing after this can recover: stop now rather than train on NaN weights
                    self._fatal = DivergenceError(
                        f"training diverged: worker slot {msg.slot} reported a {msg.loss} "
                        f"training loss in round {msg.t}"
                    )
                if self.coordinator.on_announcement(msg):
                    self._losses[(msg.slot, msg.gen, msg.t)] = (msg.loss, msg.n)
                    self._failures[msg.slot] = 0
            elif isinstance(msg, Leave):
                self.coordinator.on_leave(msg)
                if msg.reason == "budget":
                    start = max(msg.next_t, self.coordinator.last_t(msg.slot) + 1)
                    self._relaunch(msg.slot, msg.gen, start)
        self._sub.ack_many(messages)  # one round trip for the batch, after handling it

    def _check_workers(self) -> None:
        done = [rec for rec in self._running if rec.future.done()]
        if not done:
            return
        finished = {id(rec) for rec in done}
        self._running = [rec for rec in self._running if id(rec) not in finished]
        for rec in done:
            error = rec.future.exception()
            if error is None:
                rec.result = rec.future.result()
                status = str((rec.result or {}).get("status", "unknown"))
                rec.outcome = status
                if status == "duplicate":
                    if int((rec.result or {}).get("attempt", 0)) == 0:
                        continue  # a platform duplicate: the original invocation still runs
                    # the executor retried because the first attempt died or timed out
                    rec.outcome = "died"
                    self._failed(rec, FaaSMLError("the worker invocation died and was retried"))
                    continue
                if self.coordinator.on_gone(rec.slot, rec.gen):
                    # it ended without a leave notice we saw: treat it like a budget stop
                    self._relaunch(rec.slot, rec.gen, self.coordinator.last_t(rec.slot) + 1)
                continue
            rec.error = error
            if isinstance(error, FaaSMLError) and error.retriable:
                rec.outcome = "died"
                self._failed(rec, error)
            else:
                rec.outcome = "error"
                if not self.coordinator.stopped and self._fatal is None:
                    self._fatal = error

    def _failed(self, rec: WorkerRecord, error: BaseException) -> None:
        state = self.coordinator.members.get((rec.slot, rec.gen))
        made_progress = state is not None and state.announced > 0
        was_live = self.coordinator.evict(rec.slot, rec.gen)
        if self.coordinator.stopped:
            return
        self._failures[rec.slot] = 0 if made_progress else self._failures[rec.slot] + 1
        if self._failures[rec.slot] >= self._max_failures:
            self._fatal = FaaSMLError(
                f"worker slot {rec.slot} failed {self._failures[rec.slot]} times in a row "
                f"without completing a step; last error: {type(error).__name__}: {error}"
            )
            return
        if was_live or self._gen[rec.slot] == rec.gen:
            log.info(
                "worker slot %d generation %d died (%s); relaunching", rec.slot, rec.gen, error
            )
            self._relaunch(rec.slot, rec.gen, self.coordinator.last_t(rec.slot) + 1)

    def _publish(self, decision: Decision) -> None:
        body = decision.encode()
        self._unstored.append((decision.d, body))
        newest = self._checkpoints[-1] if self._checkpoints else -1
        while self._unstored and self._unstored[0][0] <= newest:
            self._unstored.popleft()  # nobody replays what a checkpoint already holds
        if not self._checkpoint_every or self._someone_joining():
            # stored before it is published: a worker that subscribed after this publish
            # finds it in the replay log
            self._store_decisions()
        self.pubsub.publish(self.keys.down_topic, body)
        self._queue.put(decision)

    def _someone_joining(self) -> bool:
        """Whether a launched member has not announced yet (it may be replaying the log)."""
        return any(s.status == "launched" for s in self.coordinator.members.values())

    def _store_decisions(self) -> None:
        """Write the decisions after the newest checkpoint not stored yet, in order.

        The stored log only serves workers that join: they load the newest checkpoint and
        replay the decisions after it, subscribing first. So it is written just before every
        launch, and decision by decision (before each publish) while a launched worker has not
        announced yet; in between, decisions reach the running workers on the topic alone and a
        step costs no store write.
        """
        while self._unstored:
            d, body = self._unstored[0]
            self.storage.put(self.keys.decision(d), body)
            self._stored.add(d)
            self._unstored.popleft()

    # ------------------------------------------------------------------ the driver replica

    # a diverging run reaches inf and NaN here before the main loop stops it with a
    # DivergenceError; numpy's warnings on the way would only be noise
    @np.errstate(over="ignore", invalid="ignore")
    def _update_loop(self) -> None:
        try:
            while True:
                decision = self._queue.get()
                if self.average is not None:
                    self.replica.apply(decision, on_change=self.average.record)
                    self.average.advance()
                else:
                    self.replica.apply(decision)
                self._log.append(decision)
                for inc in decision.deltas:
                    loss_n = self._losses.pop((inc.slot, inc.gen, inc.t), None)
                    if loss_n is not None:
                        self._interval_loss += loss_n[0] * loss_n[1]
                        self._interval_n += loss_n[1]
                if self._evaluate is not None and (
                    decision.stop or (decision.d % self._eval_every == 0 and self._eval_allowed())
                ):
                    self._record(decision)
                if decision.stop:
                    return
                if self._checkpoint_every and decision.d > 0:
                    if decision.d % self._checkpoint_every == 0:
                        self._checkpoint()
        except BaseException as exc:  # surfaced by run() in the main thread
            self._updater_error = exc

    def _eval_allowed(self) -> bool:
        if self._eval_budget is None:
            return True
        return self._eval_seconds <= self._eval_budget * self.elapsed()

    def _record(self, decision: Decision) -> None:
        assert self._evaluate is not None
        started = time.monotonic()
        info = {
            "d": decision.d,
            "samples": self.replica.samples,
            "time": self.elapsed(),
            "train_loss": (self._interval_loss / self._interval_n) if self._interval_n else None,
            "workers": self.live_workers(),
        }
        self._interval_loss = 0.0
        self._interval_n = 0
        self.history.append(self._evaluate(self.weights, info))
        self._eval_seconds += time.monotonic() - started

    def _checkpoint(self) -> None:
        self.replica.save_checkpoint()
        self._checkpoints.append(self.replica.applied)
        if len(self._checkpoints) < 2:
            return
        boundary = self._checkpoints[-2]
        doomed: list[str] = []
        while self._log and self._log[0].d <= boundary:
            old = self._log.popleft()
            doomed.extend(inc.key for inc in old.deltas if inc.key is not None)
            if old.d in self._stored:
                self._stored.discard(old.d)
                doomed.append(self.keys.decision(old.d))
        while len(self._checkpoints) > 2:
            doomed.append(self.keys.checkpoint(self._checkpoints.pop(0)))
        for key in doomed:
            try:
                self.storage.delete(key)
            except NotFoundError:
                pass

    def _finish(self) -> None:
        # from now on a late (duplicate, retried) invocation exits instead of joining
        try:
            self.storage.delete(self.keys.active)
        except NotFoundError:
            pass
        except FaaSMLError:
            log.warning("could not delete the run marker %s", self.keys.active, exc_info=True)
        if self._updater is not None:
            self._updater.join()
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        self.replica.close()

    def wait_workers(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every worker invocation to end and record how."""
        cf.wait([rec.future for rec in self.workers], timeout=timeout)
        for rec in self.workers:
            if rec.outcome == "running" and rec.future.done():
                error = rec.future.exception()
                if error is None:
                    rec.result = rec.future.result()
                    rec.outcome = str((rec.result or {}).get("status", "unknown"))
                else:
                    rec.error = error
                    rec.outcome = "died" if getattr(error, "retriable", False) else "error"

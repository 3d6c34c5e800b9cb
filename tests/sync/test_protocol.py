"""The sync protocol end to end, in one process: driver + toy workers in threads.

The workers propose deterministic deltas instead of training a model, so the assertions are
about the protocol alone: every replica ends bit-identical, evicted workers are replaced and
fenced, a late worker joins from a checkpoint plus the decision log, old deltas are collected,
and a duplicate claim is refused.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from faasml.errors import NotFoundError
from faasml.interfaces import ObjectStore, PubSub
from faasml.pubsub.local import LocalPubSub
from faasml.storage.memory import MemoryObjectStore
from faasml.sync import (
    Decision,
    Included,
    Replica,
    RunKeys,
    RunningAverage,
    StepCoordinator,
    SyncDriver,
    SyncWorker,
    encode_delta,
)

SHAPE = (50, 2)


@pytest.fixture
def backends() -> Iterator[tuple[ObjectStore, PubSub]]:
    store, pubsub = MemoryObjectStore(), LocalPubSub()
    yield store, pubsub
    pubsub.close()
    store.close()


def proposal(slot: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.unique(np.array([(7 * t + slot) % 49, (3 * t + 5 * slot) % 49, 49]))
    values = np.outer(np.arange(1, rows.size + 1), [1.0, -0.5]) * (0.01 * (slot + 1) + 1e-3 * t)
    return rows.astype(np.int64), values


class ToyFleet:
    """Launches toy workers in threads; records every worker's final replica."""

    def __init__(
        self,
        store: ObjectStore,
        pubsub: PubSub,
        keys: RunKeys,
        mode: str,
        staleness: int = 0,
        stall: Callable[[int, int, int], float] | None = None,
        aggregation: str = "sum",
    ) -> None:
        self.store, self.pubsub, self.keys = store, pubsub, keys
        self.mode, self.staleness, self.aggregation = mode, staleness, aggregation
        self.stall = stall or (lambda slot, gen, t: 0.0)
        self.pool = cf.ThreadPoolExecutor(8)
        self.final: dict[tuple[int, int], tuple[int, np.ndarray, str]] = {}

    def launch(self, slot: int, gen: int, start_t: int) -> cf.Future[Any]:
        return self.pool.submit(self.run, slot, gen, start_t)

    def run(self, slot: int, gen: int, start_t: int) -> dict[str, Any]:
        sw = SyncWorker(
            self.store,
            self.pubsub,
            self.keys,
            slot,
            gen,
            SHAPE,
            mode=self.mode,
            staleness=self.staleness,
            update_dtype="float64",
            aggregation=self.aggregation,
        )
        if not sw.claim():
            return {"status": "duplicate", "attempt": 0}
        sw.join()
        t, deadline = start_t, time.monotonic() + 30
        while True:
            sw.poll(0.0)
            if sw.stopped or sw.evicted or time.monotonic() > deadline:
                break
            if self.mode != "asp" and sw.applied >= t:
                t = sw.applied + 1
            need = sw.ready_for(t)
            if sw.applied < need and not sw.wait_until(need, deadline):
                continue
            pause = self.stall(slot, gen, t)
            if pause:
                time.sleep(pause)
                continue
            rows, values = proposal(slot, t)
            sw.announce(t, rows, values, n=10, loss=float(t))
            t += 1
        status = "evicted" if sw.evicted else "stopped"
        self.final[(slot, gen)] = (sw.applied, sw.W.copy(), status)
        sw.leave(t, status)
        sw.close()
        return {"status": status, "attempt": 0}


def drive(
    store: ObjectStore,
    pubsub: PubSub,
    mode: str,
    *,
    samples: int = 300,
    staleness: int = 0,
    stall: Callable[[int, int, int], float] | None = None,
    step_timeout: float = 30.0,
    checkpoint_every: int = 5,
    aggregation: str = "sum",
    average_window: float | None = None,
    evaluate: Callable[..., dict[str, Any]] | None = None,
    eval_budget: float | None = None,
) -> tuple[SyncDriver, ToyFleet]:
    keys = RunKeys("train/toy", "toy")
    fleet = ToyFleet(store, pubsub, keys, mode, staleness, stall, aggregation)
    coordinator = StepCoordinator(mode=mode, staleness=staleness, step_timeout=step_timeout)
    driver = SyncDriver(
        store,
        pubsub,
        keys,
        SHAPE,
        coordinator,
        n_slots=2,
        launch=fleet.launch,
        evaluate=evaluate
        or (lambda w, info: {"d": info["d"], "norm": float(np.abs(w(None)).sum())}),
        eval_every=3,
        eval_budget=eval_budget,
        checkpoint_every=checkpoint_every,
        aggregation=aggregation,
        average_window=average_window,
    )
    driver.run(lambda drv: "done" if drv.samples >= samples else None)
    driver.wait_workers(10.0)
    fleet.pool.shutdown(wait=True)
    return driver, fleet


def assert_replicas_identical(driver: SyncDriver, fleet: ToyFleet) -> None:
    finished = [(d, W) for d, W, status in fleet.final.values() if status == "stopped"]
    assert finished
    for d, W in finished:
        assert d == driver.replica.applied
        assert np.array_equal(W, driver.replica.W)  # bit-identical, not just close


def expected_weights(decisions: list[Decision], aggregation: str = "sum") -> np.ndarray:
    """Replay the decisions on the toy proposals, independently of Replica."""
    W = np.zeros(SHAPE)
    for dec in decisions:
        parts = [proposal(inc.slot, inc.t) for inc in dec.deltas]
        counts = np.zeros(SHAPE[0])
        for rows, _ in parts:
            counts[rows] += 1
        for rows, values in parts:
            divide = counts[rows][:, None] if aggregation == "mean" and len(parts) > 1 else 1.0
            W[rows] += values / divide
    return W


@pytest.mark.parametrize("mode", ["bsp", "ssp", "asp"])
def test_replicas_stay_bit_identical(backends: tuple[ObjectStore, PubSub], mode: str) -> None:
    store, pubsub = backends
    driver, fleet = drive(store, pubsub, mode, staleness=2 if mode == "ssp" else 0)
    assert driver.stop_reason == "done"
    assert driver.samples >= 300
    assert_replicas_identical(driver, fleet)
    decisions = driver.coordinator.decisions
    np.testing.assert_allclose(driver.replica.W, expected_weights(decisions), rtol=1e-12)
    if mode == "bsp":
        for dec in decisions[:-1]:
            assert sorted(i.slot for i in dec.deltas) == [0, 1]
            assert all(i.t == dec.d and i.base == dec.d - 1 for i in dec.deltas)
    if mode == "ssp":
        lags = [i.t - 1 - i.base for i in driver.coordinator.included()]
        assert max(lags) <= 2
    assert driver.history and driver.history[-1]["d"] == decisions[-1].d


def test_mean_aggregation_and_running_average(backends: tuple[ObjectStore, PubSub]) -> None:
    store, pubsub = backends
    driver, fleet = drive(store, pubsub, "bsp", aggregation="mean", average_window=4)
    assert_replicas_identical(driver, fleet)
    decisions = driver.coordinator.decisions
    np.testing.assert_allclose(driver.replica.W, expected_weights(decisions, "mean"), rtol=1e-12)
    # the running average against a dense recomputation over every decision
    a, avg, W = 0.25, np.zeros(SHAPE), np.zeros(SHAPE)
    for k in range(1, len(decisions) + 1):
        W = expected_weights(decisions[:k], "mean")
        avg = (1 - a) * avg + a * W
    np.testing.assert_allclose(driver.weights(), avg / (1 - (1 - a) ** len(decisions)), rtol=1e-10)
    rows = np.array([0, 7, 49])
    np.testing.assert_array_equal(driver.weights(rows), driver.weights()[rows])


def test_silent_worker_is_evicted_replaced_and_fenced(
    backends: tuple[ObjectStore, PubSub],
) -> None:
    store, pubsub = backends

    def stall(slot: int, gen: int, t: int) -> float:
        return 0.2 if (slot, gen) == (1, 0) and t >= 6 else 0.0  # slot 1 goes silent at step 6

    driver, fleet = drive(store, pubsub, "bsp", samples=400, stall=stall, step_timeout=1.0)
    outcomes = {(r.slot, r.gen): r.outcome for r in driver.workers}
    assert outcomes[(1, 0)] == "evicted"
    assert outcomes[(1, 1)] == "stopped"  # the replacement joined mid-run and finished
    evicting = [d for d in driver.coordinator.decisions if d.evicted]
    assert [d.evicted for d in evicting] == [((1, 0),)]
    assert fleet.final[(1, 0)][2] == "evicted"
    # nothing of the fenced generation was decided after its eviction
    after = [i for d in driver.coordinator.decisions if d.d >= evicting[0].d for i in d.deltas]
    assert all((i.slot, i.gen) != (1, 0) for i in after)
    assert_replicas_identical(driver, fleet)


def test_late_joiner_starts_from_checkpoint_and_old_deltas_are_collected(
    backends: tuple[ObjectStore, PubSub],
) -> None:
    store, pubsub = backends

    def stall(slot: int, gen: int, t: int) -> float:
        return 0.2 if (slot, gen) == (1, 0) and t >= 3 else 0.0

    driver, fleet = drive(
        store, pubsub, "bsp", samples=600, stall=stall, step_timeout=1.0, checkpoint_every=4
    )
    joined = [r for r in driver.workers if (r.slot, r.gen) == (1, 1)]
    assert joined and joined[0].start_t > 0
    assert_replicas_identical(driver, fleet)
    remaining = sorted(info.key for info in store.list("train/toy/deltas/"))
    assert remaining, "recent deltas are kept"
    oldest = int(remaining[0].split("/")[3].split("-")[0])
    assert oldest > 4  # the first checkpoints' deltas were deleted
    assert store.exists("train/toy/ckpt/latest")


def test_duplicate_claim_is_refused(backends: tuple[ObjectStore, PubSub]) -> None:
    store, pubsub = backends
    keys = RunKeys("train/dup", "dup")
    first = SyncWorker(store, pubsub, keys, 0, 3, SHAPE)
    second = SyncWorker(store, pubsub, keys, 0, 3, SHAPE)
    assert first.claim()
    assert not second.claim()
    assert SyncWorker(store, pubsub, keys, 0, 4, SHAPE).claim()  # the next generation is new


def test_lagging_replica_reloads_when_its_deltas_were_collected(
    backends: tuple[ObjectStore, PubSub],
) -> None:
    store, _ = backends
    keys = RunKeys("train/gc", "gc")
    writer = Replica(store, keys, SHAPE)
    for d in range(4):
        rows, values = proposal(0, d)
        key = keys.delta(d, 0, 0)
        store.put(key, encode_delta(rows, values, dtype="float64"))
        decision = Decision(d, (Included(0, 0, d, key, 10, d - 1),))
        store.put(keys.decision(d), decision.encode())
        writer.apply(decision)
    writer.save_checkpoint()
    lagging = Replica(store, keys, SHAPE)
    for d in range(4):
        store.delete(keys.delta(d, 0, 0))
    with pytest.raises(NotFoundError):
        lagging.apply(Decision(0, (Included(0, 0, 0, keys.delta(0, 0, 0), 10, -1),)))
    assert lagging.applied == -1 and not lagging.W.any()  # untouched by the failed apply
    assert lagging.catch_up() is None  # checkpoint 3 and nothing after it
    assert lagging.applied == 3 and np.array_equal(lagging.W, writer.W)


@pytest.mark.parametrize("window", [1.0, 1.5, 40.0])
def test_running_average_matches_a_dense_ema_through_rescaling(window: float) -> None:
    # window 1.5 drives q^k below the rescale threshold within the run; window 1 is "no average"
    store = MemoryObjectStore()
    replica = Replica(store, RunKeys("train/ema", "ema"), SHAPE)
    replica.W[3] = 2.0  # a replica that does not start at zero
    average = RunningAverage(replica, window)
    rng = np.random.default_rng(5)
    q = 1.0 - 1.0 / window
    dense = np.zeros(SHAPE)
    for _ in range(400):
        for _ in range(2):  # two deltas per decision
            rows = np.unique(rng.integers(0, SHAPE[0], 7))
            change = rng.standard_normal((rows.size, SHAPE[1]))
            replica.W[rows] += change
            average.record(rows, change)
        average.advance()
        dense = q * dense + (1 - q) * replica.W
    expected = dense / (1 - q**400)
    np.testing.assert_allclose(average.value(), expected, rtol=1e-9, atol=1e-12)
    rows = np.array([0, 3, 49])
    np.testing.assert_allclose(average.value(rows), expected[rows], rtol=1e-9, atol=1e-12)
    store.close()


def test_running_average_rejects_a_zero_window(backends: tuple[ObjectStore, PubSub]) -> None:
    store, _ = backends
    with pytest.raises(ValueError, match="window"):
        RunningAverage(Replica(store, RunKeys("train/x", "x"), SHAPE), 0.5)


def test_checkpoint_of_another_shape_is_refused(backends: tuple[ObjectStore, PubSub]) -> None:
    from faasml.errors import DataFormatError

    store, _ = backends
    keys = RunKeys("train/shape", "shape")
    writer = Replica(store, keys, (10, 3))
    writer.W[4] = 1.0
    writer.save_checkpoint()
    reader = Replica(store, keys, (10, 3))
    assert reader.load_latest() == -1 and np.array_equal(reader.W, writer.W)
    with pytest.raises(DataFormatError, match="checkpoint"):
        Replica(store, keys, (10, 2)).load_latest()


def test_deltas_are_fetched_in_parallel_from_a_slow_store() -> None:
    class SlowStore(MemoryObjectStore):
        def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
            time.sleep(0.004)  # a cloud store's latency
            return super().get(key, start, end)

    store = SlowStore()
    keys = RunKeys("train/slow", "slow")
    replica = Replica(store, keys, SHAPE)
    expected = np.zeros(SHAPE)
    for d in range(3):
        incs = []
        for slot in range(3):
            rows, values = proposal(slot, d)
            key = keys.delta(d, slot, 0)
            store.put(key, encode_delta(rows, values, dtype="float64"))
            incs.append(Included(slot, 0, d, key, 10, d - 1))
            expected[rows] += values
        replica.apply(Decision(d, tuple(incs)))
    assert replica._pool is not None  # the latency estimate switched to threads
    np.testing.assert_allclose(replica.W, expected, rtol=1e-12)
    replica.close()
    store.close()


def test_eval_budget_thins_out_evaluations_and_keeps_the_final_one(
    backends: tuple[ObjectStore, PubSub],
) -> None:
    store, pubsub = backends

    def slow(weights: Any, info: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.05)
        return {"d": info["d"]}

    driver, _ = drive(store, pubsub, "bsp", samples=600, evaluate=slow, eval_budget=0.05)
    decisions = driver.coordinator.decisions
    scheduled = [d.d for d in decisions if d.d % 3 == 0 or d.stop]
    recorded = [entry["d"] for entry in driver.history]
    assert recorded[-1] == decisions[-1].d  # the final model is always evaluated
    assert len(recorded) < len(scheduled)
    assert set(recorded) <= set(scheduled)
    # every scheduled evaluation starts only within budget, so the time spent evaluating
    # exceeds it by at most one evaluation, plus the final one
    assert 0.05 * len(recorded) <= 0.05 * driver.elapsed() + 2 * 0.05


def test_a_late_writer_discards_its_undecided_deltas(backends: tuple[ObjectStore, PubSub]) -> None:
    store, pubsub = backends
    keys = RunKeys("runs/late", "late")
    worker = SyncWorker(store, pubsub, keys, 0, 0, SHAPE)
    assert worker.claim()
    worker.join()
    for t in (0, 1):
        rows, values = proposal(0, t)
        worker.announce(t, rows, values, n=10, loss=0.5)
    # decision 0 includes step 0; step 1 was stored after the last decision (the stop)
    included = Included(0, 0, 0, keys.delta(0, 0, 0), 10, -1)
    worker.replica.apply(Decision(0, (included,)))
    worker.discard_undecided()
    assert store.exists(keys.delta(0, 0, 0))  # decided: the driver's clean-up owns it
    assert not store.exists(keys.delta(1, 0, 0))
    assert worker.replica.own == {}
    worker.discard_undecided()  # nothing left to delete: no error
    worker.save_state({"m": np.zeros(3)}, {"next_t": 2})
    worker.discard_state()
    assert worker.load_state() is None
    worker.close()


def test_initial_weights_of_another_shape_are_refused(backends: tuple[ObjectStore, PubSub]) -> None:
    store, pubsub = backends
    with pytest.raises(ValueError, match=r"initial weights \(3, 2\) do not match"):
        SyncDriver(
            store,
            pubsub,
            RunKeys("runs/init", "init"),
            SHAPE,
            StepCoordinator(),
            n_slots=1,
            launch=lambda slot, gen, t: cf.Future(),
            initial=np.zeros((3, 2)),
        )


@pytest.mark.parametrize("mode", ["ssp", "asp"])
def test_the_run_stops_at_the_first_decision_that_reaches_the_target(
    backends: tuple[ObjectStore, PubSub], mode: str
) -> None:
    # Workers that run ahead leave several rounds ready at once; deciding all of them before
    # the stop check made the number of decisions, and so the model, depend on timing.
    driver, _ = drive(*backends, mode, samples=300, staleness=3)
    decided = [dec.samples for dec in driver.coordinator.decisions if dec.samples]
    assert sum(decided) >= 300
    assert sum(decided[:-1]) < 300, f"{len(decided)} decisions of {decided[-1]} samples each"

"""Training runs on ``local`` that exercise the sync protocol: faults, duplicates, SSP, backends."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import faasml
from faasml.algorithms._worker import FAULT_EXIT_CODE, run_worker
from faasml.algorithms.sparse_lr import SparseLogisticRegression
from faasml.data import upload_dataset
from faasml.datasets import digits
from faasml.sync import Decision, RunKeys


@pytest.fixture(scope="module")
def cloud() -> Iterator[faasml.Cloud]:
    with faasml.connect("local", workers=2, retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def odd_even() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X_tr, y_tr, X_te, y_te = digits()
    return X_tr / 16.0, y_tr % 2, X_te / 16.0, y_te % 2


def test_fault_injection_loses_at_most_in_flight_updates(
    cloud: faasml.Cloud, odd_even: Any
) -> None:
    X_tr, y_tr, X_te, y_te = odd_even
    params: dict[str, Any] = dict(
        workers=2,
        sync="bsp",
        batch_size=64,
        # a strongly convex problem trained to convergence: both runs end at the same optimum,
        # so what remains is the difference the faults make, not how many steps each run got
        # (while a killed slot is relaunched its peer steps alone, with smaller steps)
        epochs=60,
        learning_rate=0.2,
        l2=0.01,
        averaging=2,
        # short generations: many invocations, so that 20% of them is several kills
        generation_seconds=0.4,
        checkpoint_every=5,
        seed=18,  # with this seed slot 0's first invocation is among the killed ones
        progress=False,
    )
    clean = SparseLogisticRegression(**params).fit(
        X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te
    )
    faulty = SparseLogisticRegression(fault_rate=0.2, **params).fit(
        X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te
    )
    died = [w for w in faulty.run_info_["workers"] if w["outcome"] == "died"]
    assert died, faulty.run_info_["outcomes"]
    assert any(str(FAULT_EXIT_CODE) in (w["error"] or "") for w in died)
    assert faulty.run_info_["invocations"] > len(died) + 2  # the slots were relaunched
    assert faulty.run_info_["epochs"] >= 60
    loss_clean = clean.history_[-1]["test_loss"]
    loss_faulty = faulty.history_[-1]["test_loss"]
    assert abs(loss_faulty - loss_clean) <= 0.01 * loss_clean


class DuplicatingLR(SparseLogisticRegression):
    """Invokes every worker twice with the same (slot, generation), like a platform retry."""

    duplicates: list[cf.Future[Any]]

    def _launch_worker(self, cloud: faasml.Cloud, spec: Any) -> cf.Future[Any]:
        first = cloud.submit(run_worker, spec)
        self.duplicates.append(cloud.submit(run_worker, spec))
        return first


def test_duplicate_invocations_are_dropped(cloud: faasml.Cloud, odd_even: Any) -> None:
    X_tr, y_tr, _, _ = odd_even
    params: dict[str, Any] = dict(
        workers=1,
        sync="bsp",
        batch_size=64,
        epochs=6,
        learning_rate=0.05,
        update_dtype="float64",
        generation_seconds=0.02,  # several generations, each of them duplicated
        progress=False,
    )
    plain = SparseLogisticRegression(**params).fit(X_tr, y_tr, cloud=cloud)
    dup = DuplicatingLR(**params)
    dup.duplicates = []
    dup.fit(X_tr, y_tr, cloud=cloud)
    firsts = [w["result"] for w in dup.run_info_["workers"] if w["result"] is not None]
    seconds = [f.result(timeout=30) for f in dup.duplicates]
    assert len(seconds) == len(dup.run_info_["workers"]) >= 2
    # of each pair at most one invocation trained; the other exited at once: as a duplicate,
    # or, if it only started after the run ended, as "gone", withdrawing its claim (both do that
    # when the generation was launched just as training finished)
    pairs: dict[int, list[dict[str, Any]]] = {}
    for r in firsts + seconds:
        pairs.setdefault(r["gen"], []).append(r)
    idle = ("duplicate", "gone")
    for gen, pair in pairs.items():
        assert len(pair) == 2, (gen, pair)
        assert sum(r["status"] not in idle for r in pair) <= 1, pair
        assert all(r["steps"] == 0 for r in pair if r["status"] in idle), pair
    assert sum(r["status"] == "duplicate" for r in firsts + seconds) >= len(pairs) - 1
    np.testing.assert_array_equal(dup.coef_, plain.coef_)  # the same model, bit for bit
    assert list(cloud.storage.list(f"train/{dup.run_info_['run']}/")) == []  # nothing left


class RecordingLR(SparseLogisticRegression):
    """Keeps the spec of every worker it launches."""

    specs: list[Any]

    def _launch_worker(self, cloud: faasml.Cloud, spec: Any) -> cf.Future[Any]:
        self.specs.append(spec)
        return super()._launch_worker(cloud, spec)


def test_an_invocation_starting_after_the_run_leaves_nothing(
    cloud: faasml.Cloud, odd_even: Any
) -> None:
    X_tr, y_tr, _, _ = odd_even
    model = RecordingLR(workers=1, batch_size=128, epochs=1, progress=False)
    model.specs = []
    model.fit(X_tr, y_tr, cloud=cloud)
    prefix = f"train/{model.run_info_['run']}/"
    assert list(cloud.storage.list(prefix)) == []
    # a platform redelivers the last invocation long after training ended
    late = cloud.submit(run_worker, model.specs[-1]).result(timeout=30)
    assert late["status"] == "gone" and late["steps"] == 0
    assert list(cloud.storage.list(prefix)) == []  # its claim was withdrawn


def test_a_worker_storing_a_delta_as_the_run_ends_deletes_it(
    cloud: faasml.Cloud, odd_even: Any
) -> None:
    # the driver's clean-up can list the run's objects before a worker it does not wait for
    # (a platform duplicate) stores its last delta: that worker must remove the delta itself
    X_tr, y_tr, _, _ = odd_even
    stored = upload_dataset(cloud.storage, X_tr, y_tr, name="late-writer", batch_size=128)
    model = RecordingLR(workers=1, epochs=1, l2=0.0, progress=False)
    model.specs = []
    model.fit(stored, cloud=cloud)
    spec = dataclasses.replace(model.specs[-1], gen=99, start_t=0, generation_seconds=60.0)
    keys = RunKeys(spec.prefix, spec.run)
    try:
        cloud.storage.put(keys.active, b"")  # as far as the invocation can tell, the run goes on
        future = cloud.submit(run_worker, spec)
        deadline = time.monotonic() + 30
        while not cloud.storage.exists(keys.delta(0, 0, 99)):
            assert time.monotonic() < deadline and not future.done()
            time.sleep(0.01)
        # the run ends: its marker goes, then the final decision stops the worker
        cloud.storage.delete(keys.active)
        cloud.pubsub.publish(keys.down_topic, Decision(0, (), stop=True).encode())
        assert future.result(timeout=30)["status"] == "stopped"
        assert list(cloud.storage.list(f"{keys.prefix}/deltas/")) == []
    finally:
        cloud.storage.delete_prefix(keys.prefix + "/")
        cloud.storage.delete_prefix("datasets/late-writer/")


def test_ssp_respects_the_staleness_bound(cloud: faasml.Cloud, odd_even: Any) -> None:
    X_tr, y_tr, X_te, y_te = odd_even
    model = SparseLogisticRegression(
        workers=2,
        sync="ssp",
        staleness=2,
        batch_size=32,
        epochs=4,
        learning_rate=0.05,
        progress=False,
    ).fit(X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te)
    included = [inc for dec in model.decisions_ for inc in dec.deltas]
    lags = [inc.t - 1 - inc.base for inc in included]
    assert max(lags) <= 2  # computed on a replica at most `staleness` decisions behind
    assert max(lags) >= 1  # and the workers did run ahead of the decisions
    assert min(lags) >= 0
    assert model.score(X_te, y_te) > 0.8


def test_asp_trains(cloud: faasml.Cloud, odd_even: Any) -> None:
    X_tr, y_tr, X_te, y_te = odd_even
    model = SparseLogisticRegression(
        workers=2, sync="asp", batch_size=64, epochs=6, learning_rate=0.05, progress=False
    ).fit(X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te)
    info = {k: v for k, v in model.run_info_.items() if k != "workers"}
    assert model.run_info_["epochs"] >= 6, info
    assert model.score(X_te, y_te) > 0.85, (model.score(X_te, y_te), info, model.history_[-3:])


def test_stops_on_target_loss_and_on_max_time(cloud: faasml.Cloud, odd_even: Any) -> None:
    X_tr, y_tr, X_te, y_te = odd_even
    target = SparseLogisticRegression(
        workers=2, batch_size=64, epochs=50, learning_rate=0.05, target_loss=0.4, progress=False
    ).fit(X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te)
    assert target.run_info_["stop_reason"] == "target_loss"
    assert target.run_info_["epochs"] < 50
    assert min(h["test_loss"] for h in target.history_) <= 0.4
    timed = SparseLogisticRegression(
        workers=2, batch_size=16, epochs=1000, max_time=1.5, progress=False
    ).fit(X_tr, y_tr, cloud=cloud)
    assert timed.run_info_["stop_reason"] == "max_time"
    assert timed.run_info_["fit_seconds"] < 10


def test_stored_dataset_input(cloud: faasml.Cloud, odd_even: Any) -> None:
    from faasml.data import upload_dataset

    X_tr, y_tr, X_te, y_te = odd_even
    name = f"test-odd-even-{uuid.uuid4().hex[:8]}"
    ds = upload_dataset(
        cloud.storage,
        np.vstack([X_tr, X_te]),
        np.where(np.concatenate([y_tr, y_te]) == 1, 1, -1),
        name=name,
        batch_size=64,
        test=None,
        test_fraction=len(y_te) / (len(y_tr) + len(y_te)),
    )
    try:
        model = SparseLogisticRegression(workers=2, epochs=5, learning_rate=0.05, progress=False)
        model.fit(ds, cloud=cloud)
        assert model.classes_.tolist() == [-1, 1]
        assert model.history_[-1]["test_loss"] is not None  # the dataset's own test split
        assert model.score(X_te, np.where(y_te == 1, 1, -1)) > 0.85
        assert cloud.storage.exists(ds.manifest_key)  # the user's dataset is left in place
    finally:
        cloud.storage.delete_prefix(ds.manifest_key.rsplit("/", 1)[0] + "/")


def test_runs_on_redis_storage_and_nats_pubsub(
    redis_url: str, nats_url: str, odd_even: Any
) -> None:
    from faasml.pubsub.nats import NATSPubSub
    from faasml.storage.redis import RedisObjectStore

    X_tr, y_tr, X_te, y_te = odd_even
    store = RedisObjectStore(redis_url, prefix=f"faasml-test-{uuid.uuid4().hex[:8]}:")
    pubsub = NATSPubSub(nats_url)
    try:
        with faasml.connect(
            "local", storage=store, pubsub=pubsub, workers=2, retries=0
        ) as remote_cloud:
            model = SparseLogisticRegression(
                workers=2, sync="ssp", batch_size=64, epochs=4, learning_rate=0.05, progress=False
            ).fit(X_tr, y_tr, cloud=remote_cloud, X_test=X_te, y_test=y_te)
        assert model.score(X_te, y_te) > 0.85
        assert model.run_info_["outcomes"] == {"stopped": 2}
        assert list(store.list("train/")) == []  # the run cleaned up after itself
        assert list(store.list("datasets/")) == []
    finally:
        pubsub.close()
        store.close()

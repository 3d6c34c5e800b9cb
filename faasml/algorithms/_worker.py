"""The training worker: what one function invocation of a linear-model fit runs.

:func:`run_worker` is submitted by the driver (:class:`~faasml.algorithms.base.LinearEstimator`)
once per (slot, generation). It claims its id (a duplicate invocation exits at once), joins the
run from the newest checkpoint plus the decision log, restores the optimizer state its slot's
previous generation saved, and then loops: read the next minibatch (prefetched in the
background), compute the sparse gradient on its replica, turn it into a delta with its optimizer,
filter it for significance, store and announce it, and apply the decided deltas. It stops at a
step boundary when its time budget is used up (saving the optimizer state for the next
generation), when the driver stops training, or when the driver evicted it.

Rounds: a worker announces one delta per *round* ``t``, the sum of its updates over
``local_steps = k`` consecutive minibatch steps ``s = t * k ... t * k + k - 1``, each computed on
its replica plus its own updates so far (local SGD: with ``k > 1`` the workers synchronize ``k``
times less often; one worker with any ``k`` is still plain sequential SGD).

Data order: slot ``r`` of ``n`` computes its minibatch step ``s`` on the minibatch at *position*
``s * n + r`` of a stream in which every epoch is a permutation of the training batches, drawn
from a generator seeded with ``(seed, epoch)`` (:func:`batch_at`). Each epoch thus deals the
batches to the slots afresh. (Fixed per-slot partitions would let each worker decode only its
share, but measured on flights they cost two workers about 1% of held-out loss.) The batch
depends only on ``(s, r)``, so a replacement generation of a slot continues exactly where its
predecessor was.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from faasml._rows import add_rows, take_rows
from faasml.algorithms.base import Objective, Workspace, renumber_columns
from faasml.algorithms.optim import make_optimizer
from faasml.data import BatchIterator, StoredDataset
from faasml.errors import NotFoundError
from faasml.runtime import context
from faasml.sync import RunKeys, SyncWorker, decode_arrays

__all__ = ["SignificanceFilter", "WorkerSpec", "batch_at", "run_worker"]

#: exit status of a worker killed by fault injection.
FAULT_EXIT_CODE = 70
#: fault injection kills an invocation within this many of its own steps.
FAULT_HORIZON = 30
#: minibatch positions read ahead per iterator (re-created when exhausted or on a jump).
_CHUNK = 64


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker invocation needs; built by the driver for each (slot, gen)."""

    run: str
    prefix: str
    slot: int
    gen: int
    n_slots: int
    start_t: int
    dataset: str
    train_ids: tuple[int, int]
    objective: Objective
    shape: tuple[int, int]
    optimizer: str
    learning_rate: float
    schedule: str
    decay_steps: float
    momentum: float
    l2: float
    l2_scale_key: str | None
    significance: float
    aggregation: str
    update_dtype: str
    mode: str
    staleness: int
    seed: int
    local_steps: int
    generation_seconds: float
    safety_seconds: float
    positive_label: float | None
    fault_rate: float = 0.0
    #: store key of the column map (:func:`~faasml.algorithms.base.compact_columns`): the model
    #: has a row only for the columns the training data uses; ``None``: one per column.
    columns_key: str | None = None
    prefetch: int = 2
    cache_bytes: int = 256 * 2**20


@functools.lru_cache(maxsize=8)
def _epoch_order(seed: int, epoch: int, n_batches: int) -> npt.NDArray[np.int64]:
    return np.random.default_rng([seed, epoch]).permutation(n_batches).astype(np.int64)


def batch_at(seed: int, n_batches: int, step: int, slot: int = 0, n_slots: int = 1) -> int:
    """Index (0-based, within the training batches) of slot ``slot``'s minibatch step ``step``.

    It is the batch at position ``step * n_slots + slot`` of the shared stream.
    """
    epoch, offset = divmod(step * n_slots + slot, n_batches)
    return int(_epoch_order(seed, epoch, n_batches)[offset])


class SignificanceFilter:
    """MLLess' significance filter with error feedback.

    Deltas accumulate per coordinate; row ``j`` is sent when some output of its accumulated
    update ``a_j`` satisfies ``|a_j| > v / sqrt(t + 1) * |w_j|`` (always for a zero weight), and
    is then reset. What is not sent stays in the accumulator and is added to later deltas, so
    nothing is lost, only delayed. With ``v = 0`` every non-zero row is sent at once.

    :param shape: weight shape.
    :param threshold: ``v`` (>= 0).
    """

    def __init__(self, shape: tuple[int, int], threshold: float) -> None:
        self.threshold = threshold
        self.acc = np.zeros(shape, dtype=np.float64)
        self.pending = np.zeros(shape[0], dtype=bool)
        self._any_pending = False

    def filter(
        self,
        rows: npt.NDArray[np.int64],
        delta: npt.NDArray[np.float64],
        W: npt.NDArray[np.float64],
        t: int,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Add ``delta`` for ``rows`` and return the ``(rows, values)`` to send now."""
        if self.threshold == 0 and not self._any_pending:
            return rows, delta  # nothing is ever held back: skip the bookkeeping
        self._any_pending = True
        self.acc[rows] += delta
        self.pending[rows] = True
        candidates = np.flatnonzero(self.pending)
        acc = self.acc[candidates]
        limit = self.threshold / np.sqrt(t + 1.0) * np.abs(W[candidates])
        send = (np.abs(acc) > limit).any(axis=1)
        out_rows = candidates[send]
        out_values = acc[send]
        self.acc[out_rows] = 0.0
        self.pending[out_rows] = False
        return out_rows.astype(np.int64), out_values

    def state(self) -> dict[str, npt.NDArray[Any]]:
        """The unsent residual, sparse."""
        rows = np.flatnonzero(self.pending)
        return {"acc_rows": rows.astype(np.int64), "acc_values": self.acc[rows]}

    def restore(self, arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Restore :meth:`state` output."""
        rows = np.asarray(arrays.get("acc_rows", np.zeros(0)), dtype=np.int64)
        if rows.size:
            self.acc[rows] = arrays["acc_values"]
            self.pending[rows] = True
            self._any_pending = True


class _RoundDelta:
    """The sum of a worker's updates over the local steps of one round, kept dense.

    The next local step computes on the replica plus these updates; at the end of the round the
    touched rows and their sums become the round's delta and the buffer is zeroed again.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.values = np.zeros(shape, dtype=np.float64)
        self.touched = np.zeros(shape[0], dtype=bool)

    def add(self, rows: npt.NDArray[np.int64], delta: npt.NDArray[np.float64]) -> None:
        """Add one local step's update of ``rows``."""
        add_rows(self.values, rows, delta)
        self.touched[rows] = True

    def take(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Return ``(rows, summed updates)`` of the round and reset to zero."""
        rows = np.flatnonzero(self.touched).astype(np.int64)
        delta = take_rows(self.values, rows)
        self.values[rows] = 0.0
        self.touched[rows] = False
        return rows, delta


class _Batches:
    """Minibatches for consecutive steps of one slot: prefetched in the background, and kept
    decoded in memory (up to ``cache_bytes``) because every epoch visits the same objects again.

    Decoding a batch object costs about as much CPU as the gradient step itself, so from the
    second epoch on the cache saves a large share of a worker's work.
    """

    def __init__(
        self,
        ds: StoredDataset,
        spec: WorkerSpec,
        position: npt.NDArray[np.integer[Any]] | None = None,
    ) -> None:
        self.ds = ds
        self.spec = spec
        self.position = position  # the column map: a batch column's model row, or -1
        self.n_columns = spec.shape[0] - 1  # the model's rows, the intercept's aside
        self.first = spec.train_ids[0]
        self.n_batches = spec.train_ids[1] - spec.train_ids[0]
        self.cache: dict[int, tuple[Any, npt.NDArray[Any]]] = {}
        self.cached_bytes = 0
        self.hits = 0
        self._it: BatchIterator | None = None
        self._pending: list[int] = []  # ids the iterator will yield next, in order
        self._next_t = -1
        self._end_t = -1

    def _batch_id(self, t: int) -> int:
        spec = self.spec
        return self.first + batch_at(spec.seed, self.n_batches, t, spec.slot, spec.n_slots)

    def get(self, t: int) -> tuple[Any, npt.NDArray[Any]]:
        """The minibatch of this slot's minibatch step ``t``."""
        if self._it is None or t != self._next_t or t >= self._end_t:
            self.close()
            ids: list[int] = []
            for step in range(t, t + _CHUNK):
                i = self._batch_id(step)
                if i not in self.cache and i not in ids:
                    ids.append(i)
            self._pending = ids
            self._it = self.ds.iter_batches(ids, prefetch=self.spec.prefetch)
            self._end_t = t + _CHUNK
        self._next_t = t + 1
        i = self._batch_id(t)
        cached = self.cache.get(i)
        if cached is not None:
            self.hits += 1
            return cached
        # not cached when the chunk started, so it is the iterator's next batch
        assert self._pending and self._pending[0] == i
        self._pending.pop(0)
        batch: tuple[Any, npt.NDArray[Any]] = next(self._it)
        X, y = batch
        X = X if sp.issparse(X) else sp.csr_matrix(X)
        if self.position is not None:
            X = renumber_columns(X, self.position, self.n_columns)
        size = y.nbytes + (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)
        if self.cached_bytes + size <= self.spec.cache_bytes:
            self.cache[i] = (X, y)
            self.cached_bytes += size
        return X, y

    def close(self) -> None:
        """Stop the prefetch thread."""
        if self._it is not None:
            self._it.close()
            self._it = None


# a diverging run overflows on the way to NaN: the driver stops it with a DivergenceError at
# the first non-finite loss, so numpy's warnings would only print noise from every worker
@np.errstate(over="ignore", invalid="ignore", divide="ignore")
def run_worker(spec: WorkerSpec) -> dict[str, Any]:
    """Train as worker ``(spec.slot, spec.gen)`` until the budget, a stop, or an eviction.

    Runs inside a faasml task (it uses :func:`faasml.runtime.context`).

    :returns: a summary: ``status`` (``"budget"``, ``"stopped"``, ``"evicted"``,
        ``"duplicate"`` or ``"gone"``: started after the run ended), ``attempt``, ``steps``,
        ``next_t`` and time spent computing, waiting for decisions and doing I/O.
    """
    ctx = context()
    started = time.monotonic()
    summary: dict[str, Any] = {
        "slot": spec.slot,
        "gen": spec.gen,
        "attempt": ctx.attempt,
        "pid": os.getpid(),
    }
    keys = RunKeys(spec.prefix, spec.run)
    sw = SyncWorker(
        ctx.storage,
        ctx.pubsub,
        keys,
        spec.slot,
        spec.gen,
        spec.shape,
        mode=spec.mode,
        staleness=spec.staleness,
        update_dtype=spec.update_dtype,
        aggregation=spec.aggregation,
    )
    if not sw.claim():
        return {**summary, "status": "duplicate", "steps": 0}
    # checked after claiming: the driver deletes the marker before the run's objects, so either
    # the clean-up sees (and deletes) our claim or we see the marker gone and delete it ourselves
    if not sw.run_active():
        sw.withdraw()
        return {**summary, "status": "gone", "steps": 0}
    budget = spec.generation_seconds
    left = ctx.time_left()
    if left is not None:
        budget = min(budget, left - spec.safety_seconds)
    deadline = started + max(budget, 0.0)

    fault_step: int | None = None
    if spec.fault_rate > 0:
        rng = np.random.default_rng([spec.seed, spec.slot, spec.gen, 0xFA17])
        if rng.random() < spec.fault_rate:
            fault_step = int(rng.integers(1, FAULT_HORIZON + 1))

    batches: _Batches | None = None
    try:
        sw.join()
        join_seconds = time.monotonic() - started
        optimizer = make_optimizer(
            spec.optimizer,
            spec.learning_rate,
            schedule=spec.schedule,
            decay_steps=spec.decay_steps,
            momentum=spec.momentum,
        )
        optimizer.init(spec.shape)
        filt = SignificanceFilter(spec.shape, spec.significance)
        t = spec.start_t
        saved = sw.load_state()
        if saved is not None:
            meta, arrays = saved
            optimizer.set_state(arrays)
            filt.restore(arrays)
            t = max(t, int(meta.get("next_t", 0)))
        scale = None
        if spec.l2_scale_key is not None:
            _, arrays_ = decode_arrays(ctx.storage.get(spec.l2_scale_key), key=spec.l2_scale_key)
            scale = arrays_["scale"]
        position = None
        if spec.columns_key is not None:
            _, arrays_ = decode_arrays(ctx.storage.get(spec.columns_key), key=spec.columns_key)
            position = arrays_["position"]
        ds = StoredDataset.open(ctx.storage, spec.dataset)
        batches = _Batches(ds, spec, position)
        ws = Workspace(spec.shape[0] - 1)
        k = spec.local_steps
        local = _RoundDelta(spec.shape)
        steps = 0
        compute = read = 0.0
        status = "budget"
        while True:
            sw.poll(0.0)
            if sw.stopped or sw.evicted:
                status = "stopped" if sw.stopped else "evicted"
                break
            if spec.mode != "asp" and sw.applied >= t:
                t = sw.applied + 1  # the driver decided our step without us: skip ahead
            if time.monotonic() >= deadline:
                break
            need = sw.ready_for(t)
            if sw.applied < need and not sw.wait_until(need, deadline):
                continue  # stopped, evicted or out of time: the checks above decide
            # the replica lacks this worker's own undecided deltas (SSP runs ahead of the
            # decisions): compute on replica + own pending deltas, never on stale own weights
            pending = list(sw.replica.own.values())
            round_loss = 0.0
            round_n = 0
            for j in range(k):
                s = t * k + j  # this slot's minibatch step: data order and the rate schedule
                tic = time.monotonic()
                X, y = batches.get(s)
                toc = time.monotonic()
                read += toc - tic
                if spec.positive_label is not None:
                    y_enc: npt.NDArray[Any] = (np.asarray(y) == spec.positive_label).astype(
                        np.float64
                    )
                elif spec.objective.regression:
                    y_enc = np.asarray(y, dtype=np.float64)
                else:
                    y_enc = np.asarray(y).astype(np.int64)
                loss, rows, grad = spec.objective.gradient(
                    sw.W,
                    X,
                    y_enc,
                    spec.l2,
                    ws,
                    scale,
                    pending,
                    offset=local.values if k > 1 else None,
                )
                delta = optimizer.step(rows, grad, s)
                if k > 1:
                    local.add(rows, delta)
                round_loss += loss * X.shape[0]
                round_n += X.shape[0]
                compute += time.monotonic() - toc
            tic = time.monotonic()
            if k > 1:
                rows, delta = local.take()
            send_rows, send_values = filt.filter(rows, delta, sw.W, t)
            compute += time.monotonic() - tic
            steps += 1
            if fault_step is not None and steps >= fault_step:
                os._exit(FAULT_EXIT_CODE)  # fault injection: die with this update in flight
            sw.announce(t, send_rows, send_values, n=round_n, loss=round_loss / round_n)
            t += 1
        if status == "budget":
            # hand the optimizer state (and unsent residuals) to the next generation of the slot
            arrays = {**optimizer.get_state(), **filt.state()}
            sw.save_state(arrays, {"next_t": t, "optimizer": spec.optimizer})
        # checked after the last write, like the claim: either the driver's clean-up saw (and
        # deleted) what we wrote, or we see the run over here and delete it ourselves
        if sw.stopped or not sw.run_active():
            sw.discard_undecided()
            if status == "budget":  # the run ended meanwhile: no next generation resumes
                sw.discard_state()
        sw.leave(t, status)
        summary.update(
            status=status,
            steps=steps,
            next_t=t,
            applied=sw.applied,
            join_s=join_seconds,
            compute_s=compute,
            read_s=read,
            wait_s=sw.wait_seconds,
            io_s=sw.io_seconds,
            bytes_sent=sw.bytes_sent,
            cache_hits=batches.hits,
            seconds=time.monotonic() - started,
        )
        return summary
    except NotFoundError:
        if sw.run_active():
            raise
        # the run ended and its objects were deleted while this invocation was joining it
        sw.withdraw()
        return {**summary, "status": "gone", "steps": 0}
    finally:
        if batches is not None:
            batches.close()
        sw.close()

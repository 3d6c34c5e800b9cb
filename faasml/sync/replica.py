"""A model replica kept in step with the decision log: checkpoints, replay and delta application.

Both the driver and every worker hold a :class:`Replica`. Its weights are always "the checkpoint
plus decisions ``0..applied`` in order", so two replicas at the same :attr:`Replica.applied` are
bit-identical: the deltas of a decision are added in the decision's (sorted) order and the float32
deltas are widened to float64 the same way everywhere.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from faasml._rows import add_rows, take_rows
from faasml.errors import DataFormatError, NotFoundError
from faasml.interfaces import ObjectStore
from faasml.sync.codec import decode_arrays, decode_delta, encode_arrays
from faasml.sync.messages import Decision, Included, RunKeys, decode_message

__all__ = ["AGGREGATIONS", "Replica", "RunningAverage"]

#: mean seconds per get above which the deltas of a decision are fetched by several threads.
_PARALLEL_LATENCY = 0.002

#: accepted ``aggregation=`` values.
AGGREGATIONS = ("sum", "mean")

Delta = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]


class Replica:
    """Weights of shape ``shape`` plus the number of the last decision applied to them.

    :param storage: where deltas, decisions and checkpoints live.
    :param keys: the run's key layout.
    :param shape: ``(n_rows, n_outputs)`` of the weight matrix.
    :param member: ``(slot, gen)`` of the worker owning this replica (its own deltas are taken
        from memory, not re-read from the store); ``None`` for the driver.
    :param fetch_threads: deltas of one decision are fetched concurrently by up to this many
        threads when the store is slow (object-store latency, not bandwidth, dominates small
        objects); on a fast local store they are fetched in a loop.
    :param aggregation: how the deltas of one decision combine: ``"sum"`` adds them all
        (MLLess); ``"mean"`` gives each row the mean of the deltas that touch it, so a row that
        several workers moved in the same step moves like one larger-batch step instead of
        ``n`` steps, while a row only one worker touched still gets its full delta.
    """

    def __init__(
        self,
        storage: ObjectStore,
        keys: RunKeys,
        shape: tuple[int, int],
        *,
        member: tuple[int, int] | None = None,
        fetch_threads: int = 4,
        aggregation: str = "sum",
    ) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.storage = storage
        self.keys = keys
        self.shape = (int(shape[0]), int(shape[1]))
        self.member = member
        self.aggregation = aggregation
        self._touches: npt.NDArray[np.float64] | None = None
        self.W: npt.NDArray[np.float64] = np.zeros(self.shape, dtype=np.float64)
        self.applied = -1
        self.samples = 0
        self.own: dict[int, Delta] = {}
        self._fetch_threads = fetch_threads
        self._get_latency = 0.0
        self._pool: cf.ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the fetch threads. Idempotent."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ applying decisions

    def _fetch(self, incs: list[Included]) -> list[Delta | None]:
        keys = [inc.key for inc in incs]

        def get(key: str | None) -> Delta | None:
            if key is None:
                return None
            start = time.perf_counter()
            blob = self.storage.get(key)
            # a running estimate of the store's latency decides between threads and a loop
            self._get_latency += 0.2 * (time.perf_counter() - start - self._get_latency)
            return decode_delta(blob, key=key)

        wanted = len([k for k in keys if k is not None])
        # threads only pay off when the store is slow (a cloud store: tens of ms per get); on a
        # local store handing work to threads costs more than the gets themselves
        if wanted <= 1 or self._fetch_threads <= 1 or self._get_latency < _PARALLEL_LATENCY:
            return [get(k) for k in keys]
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self._fetch_threads, thread_name_prefix="fml-fetch")
        return list(self._pool.map(get, keys))

    def apply(
        self,
        decision: Decision,
        on_change: Callable[[npt.NDArray[np.int64], npt.NDArray[np.float64]], None] | None = None,
    ) -> None:
        """Add decision ``decision.d``'s deltas; it must be the next one (``applied + 1``).

        :param on_change: called with ``(rows, change)`` for each delta, the change being what
            was added to ``W[rows]`` (the driver's running average records it).
        :raises NotFoundError: a delta was already garbage-collected (reload from a checkpoint).
        :raises ValueError: the decision is not the next one.
        """
        if decision.d != self.applied + 1:
            raise ValueError(f"decision {decision.d} applied after {self.applied}")
        deltas: list[Delta | None] = [None] * len(decision.deltas)
        to_fetch: list[int] = []
        for i, inc in enumerate(decision.deltas):
            if self.member is not None and inc.member == self.member and inc.t in self.own:
                deltas[i] = self.own.pop(inc.t)
            elif inc.key is not None:
                to_fetch.append(i)
        # fetch everything before adding anything, so a missing delta leaves the weights intact
        fetched = self._fetch([decision.deltas[i] for i in to_fetch])
        for i, delta in zip(to_fetch, fetched, strict=True):
            deltas[i] = delta
        present: list[Delta] = []
        for inc, delta in zip(decision.deltas, deltas, strict=True):
            if delta is None:
                continue
            rows, values = delta
            if values.shape[1] != self.shape[1] or (rows.size and rows[-1] >= self.shape[0]):
                raise DataFormatError(f"delta {inc.key} does not fit weights of shape {self.shape}")
            present.append(delta)
        touches = None
        if self.aggregation == "mean" and len(present) > 1:
            if self._touches is None:
                self._touches = np.zeros(self.shape[0], dtype=np.float64)
            touches = self._touches
            for rows, _ in present:
                touches[rows] += 1.0
        for rows, values in present:
            change = values if touches is None else values / touches[rows][:, None]
            add_rows(self.W, rows, change)
            if on_change is not None:
                on_change(rows, change)
        if touches is not None:
            for rows, _ in present:
                touches[rows] = 0.0
        self.applied = decision.d
        self.samples += decision.samples

    # ------------------------------------------------------------------ checkpoints and replay

    def save_checkpoint(self, meta: dict[str, Any] | None = None) -> str:
        """Write the weights as the checkpoint of decision :attr:`applied`; return its key.

        Only the non-zero rows are stored: a hashed-feature model touches a fraction of its
        rows, so this is several times smaller and faster than the dense matrix.
        """
        key = self.keys.checkpoint(self.applied)
        rows = np.flatnonzero(self.W.any(axis=1))
        body = encode_arrays(
            {"d": self.applied, "samples": self.samples, "shape": list(self.shape), **(meta or {})},
            {"rows": rows.astype(np.int64), "values": self.W[rows]},
        )
        self.storage.put(key, body)
        self.storage.put(self.keys.latest_checkpoint, str(self.applied).encode())
        return key

    def load_latest(self) -> int:
        """Load the newest checkpoint (none: zero weights, ``applied = -1``); return ``applied``.

        :raises DataFormatError: the checkpoint is corrupt or has another shape.
        """
        try:
            d = int(self.storage.get(self.keys.latest_checkpoint).decode())
        except NotFoundError:
            self.W = np.zeros(self.shape, dtype=np.float64)
            self.applied = -1
            self.samples = 0
            self.own.clear()
            return self.applied
        except ValueError:
            raise DataFormatError(f"{self.keys.latest_checkpoint}: not a decision number") from None
        key = self.keys.checkpoint(d)
        meta, arrays = decode_arrays(self.storage.get(key), key=key)
        rows, values = arrays.get("rows"), arrays.get("values")
        if (
            rows is None
            or values is None
            or meta.get("shape") != list(self.shape)
            or values.dtype != np.float64
            or values.shape != (rows.size, self.shape[1])
            or (rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]))
        ):
            raise DataFormatError(f"{key}: checkpoint does not hold float64 weights {self.shape}")
        W = np.zeros(self.shape, dtype=np.float64)
        W[rows] = values
        self.W = W
        self.applied = int(meta["d"])
        self.samples = int(meta.get("samples", 0))
        return self.applied

    def stored_decisions(self) -> Iterator[Decision]:
        """Yield the stored decisions after :attr:`applied`, in order, until one is missing."""
        d = self.applied + 1
        while True:
            try:
                raw = self.storage.get(self.keys.decision(d))
            except NotFoundError:
                return
            msg = decode_message(raw)
            if not isinstance(msg, Decision) or msg.d != d:
                raise DataFormatError(f"{self.keys.decision(d)}: not decision {d}")
            yield msg
            d += 1

    def catch_up(self, *, attempts: int = 5) -> Decision | None:
        """Load the newest checkpoint, then replay every stored decision after it.

        Retried from a newer checkpoint when a delta disappears meanwhile (garbage-collected
        because the driver checkpointed past it).

        :returns: the last decision replayed (``None`` if none), so callers see ``stop`` flags.
        :raises NotFoundError: deltas kept disappearing for ``attempts`` tries.
        """
        error: NotFoundError | None = None
        for _ in range(attempts):
            self.load_latest()
            last: Decision | None = None
            try:
                for decision in self.stored_decisions():
                    self.apply(decision)
                    last = decision
                return last
            except NotFoundError as exc:
                error = exc
        assert error is not None
        raise error


class RunningAverage:
    """Exponential moving average of a replica's weights over decisions, updated sparsely.

    After decision ``k`` the average is ``A_k = (1 - a) A_{k-1} + a W_k`` with ``A_0 = 0``, and
    :meth:`value` divides by ``1 - (1 - a)^k`` (the weights of the iterates sum to that), so it
    is the properly normalized average of the iterates with a window of about ``1 / a``
    decisions. Averaging the iterates of SGD removes most of its gradient noise from the final
    model (Polyak-Ruppert; scikit-learn's ``SGDClassifier(average=...)``).

    With ``q = 1 - a``, the gap ``E_k = A_k - W_k`` obeys ``E_k = q (E_{k-1} - D_k)`` where
    ``D_k`` is what decision ``k`` added to the weights. Kept as ``E_k = q^k F_k``, only the rows
    a decision changes move: ``F -= D_k / q^(k-1)``, one scaled sparse subtraction per delta, and
    only :meth:`value` is O(all weights). ``F`` is rescaled (a dense pass) whenever ``q^k`` gets
    small enough to threaten the float range, i.e. every few hundred windows.

    :param replica: the replica to average: its :meth:`Replica.apply` must be called with
        ``on_change=`` :meth:`record`, then :meth:`advance`.
    :param window: averaging window in decisions (``a = 1 / window``; >= 1).
    """

    #: ``F`` is folded back into ``E`` once the scale drops below this.
    _MIN_SCALE = 1e-150

    def __init__(self, replica: Replica, window: float) -> None:
        if not window >= 1:
            raise ValueError(f"window must be >= 1 decision, got {window}")
        self.replica = replica
        self.keep = 1.0 - 1.0 / window
        self.k = 0
        self._scale = 1.0  # q^k relative to the last rescale: E = scale * F
        self._decay = 1.0  # q^k itself, for the normalization
        self._gap = -replica.W.copy()  # F; E_0 = A_0 - W_0 = -W_0

    def record(self, rows: npt.NDArray[np.int64], change: npt.NDArray[np.float64]) -> None:
        """Account for ``change`` just added to the weights of ``rows`` by the current decision."""
        if self.keep == 0.0:
            return  # a window of one decision: the average is the current weights
        add_rows(self._gap, rows, change * (-1.0 / self._scale))

    def advance(self) -> None:
        """Count one more decision (call after applying it)."""
        self.k += 1
        self._scale *= self.keep
        self._decay *= self.keep
        if 0.0 < self._scale < self._MIN_SCALE:
            self._gap *= self._scale
            self._scale = 1.0

    def value(self, rows: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.float64]:
        """The normalized average after the decisions counted so far (a new array).

        :param rows: only these rows (e.g. the features a test set uses); ``None``: all.
        """
        W = self.replica.W if rows is None else take_rows(self.replica.W, rows)
        if self.k == 0:
            return W.copy()
        if self.keep == 0.0:
            return W.copy()
        gap = self._gap if rows is None else take_rows(self._gap, rows)
        current = W + self._scale * gap
        current /= 1.0 - self._decay
        return current

"""Blocked GEMM on stateless workers, numpywren-style, tolerant of lost and replayed tasks.

``C = A @ B`` runs as a DAG of tasks over :class:`~faasml.algorithms.blockmatrix.BlockMatrix`
blocks (see :mod:`faasml.algorithms._dag`): leaves ``T[i, j, 0, p] = sum over k in group p of
A[i, k] @ B[k, j]`` (``fuse`` consecutive k's per leaf, to cut writes), a 4-ary reduction tree
over the leaves, and a root per output block that writes ``C[i, j]``.

Execution (all through :class:`~faasml.interfaces.ObjectStore` and
:class:`~faasml.interfaces.PubSub`, so it runs on any provider):

* The driver creates one consumer group on a job topic (``ensure_group`` before the first
  publish, so no message is lost), publishes every leaf, and launches about
  ``cloud.function.concurrency`` copies of :func:`_worker_main` with ``cloud.submit``.
* A worker takes one message at a time from the shared group. A background thread renews the
  lease of every message the worker holds (``Message.touch`` every ``lease / 3`` s), so a long
  product keeps its task while a dead worker's task becomes visible again after ``lease`` s and
  another worker takes it over.
* Inputs are read by ``read_threads`` background threads ``prefetch`` blocks ahead, and once the
  current task has issued all its reads the worker takes the next message and starts reading its
  inputs too, so reads overlap compute. A small per-worker cache (``cache_bytes``) serves input
  blocks that consecutive tasks share (an ``A`` row, a ``B`` column). Outputs are written, and
  the message acked, by another background thread while the next product runs. Products are
  accumulated in place (BLAS ``gemm`` with ``beta = 1``), single-threaded per worker (the
  provider sets the BLAS thread count).
* Outputs are write-once (``put(if_absent=True)``; the first write wins). A task whose output,
  or an ancestor's output, already exists is acked without computing, so replays are harmless.
* Dependencies are counted once without counters: after writing its output a node checks that
  every sibling's output exists and, if so, publishes the parent. Because each sibling writes
  *before* it checks, the last of two siblings finishing together always sees both outputs;
  both may publish, and the duplicate is acked as a no-op. A replayed task whose output exists
  re-runs this check, so a worker dying between its write and its publish loses nothing. A
  reduction deletes its children's partial sums after writing its own output.
* The driver watches the output blocks appear (``list`` of ``C``'s block prefix; tqdm bar on a
  terminal), relaunches workers that died while work remains, stops the workers with a stop
  marker plus one stop message each, deletes the job's temporaries, and gives up after
  ``timeout`` seconds with an error naming the missing output blocks.

Dtypes: :func:`gemm` computes in ``numpy.result_type`` of the inputs (float32 @ float64 ->
float64, as numpy does); integer and bool inputs are computed in float64, float16 in float32;
complex and other dtypes are refused with :class:`TypeError`.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from faasml._progress import interactive
from faasml.algorithms._dag import Node, Plan, auto_fuse
from faasml.algorithms.blockmatrix import (
    BLOCK_HEADER_BYTES,
    BlockMatrix,
    block_buffer,
    decode_block,
    normalize_block,
)
from faasml.errors import AlreadyExistsError, FaaSMLError, NotFoundError
from faasml.interfaces import Message, ObjectStore, PubSub, Subscription

if TYPE_CHECKING:
    from faasml.executor import Cloud

__all__ = ["FaultPlan", "GemmReport", "WorkerStats", "gemm", "matmul"]

log = logging.getLogger("faasml.algorithms.gemm")

Array = npt.NDArray[Any]

#: key prefix of each job's partial sums and markers.
TMP_PREFIX = "faasml-gemm"
_GROUP = "workers"
# Seconds between the driver's looks at the output blocks and the workers.
_DRIVER_POLL = 0.1
# Longest wait of an idle worker for a message before it looks for the stop marker.
_WORKER_POLL = 0.5
# A retriable error (throttling, a store briefly down) is retried this many times in a row.
_MAX_RETRIABLE_FAILURES = 8
# Seconds the driver waits for stopped workers to return their statistics.
_STOP_GRACE = 10.0


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class FaultPlan:
    """Deliberate worker crashes, to test recovery. Never use it in production.

    The *first* attempt (across all workers, recorded by a write-once marker in the store) of
    each listed node kills its worker process with :func:`os._exit` at ``stage``; later
    attempts run normally. A killed worker's message is taken over when its lease expires, and
    the executor (or the driver) starts a new worker.

    :param crash_nodes: DAG nodes ``(i, j, level, index)``; leaves are level 0, the root of
        ``C[i, j]`` is the top level (see :class:`~faasml.algorithms._dag.Plan`).
    :param stage: ``"taken"`` right after the message is taken; ``"computed"`` after the inputs
        were read and summed, before the output is written (mid-task); ``"written"`` after the
        output is written, before the parent is published and the message acked.
    :param exit_code: exit status of the killed process.
    """

    crash_nodes: frozenset[Node] = frozenset()
    stage: Literal["taken", "computed", "written"] = "computed"
    exit_code: int = 70


@dataclass
class WorkerStats:
    """What one worker did and where its time went (seconds, summed over tasks).

    :param slot: the worker's launch slot.
    :param pid: its process id.
    :param tasks: tasks computed.
    :param skipped: messages acked without computing (replays, duplicates, obsolete nodes).
    :param read_s: time the read thread spent fetching and decoding blocks (overlaps compute).
    :param wait_s: time computation stood still waiting for a read or the previous write.
    :param compute_s: time in block products and sums.
    :param write_s: time the write thread spent writing outputs and resolving dependencies.
    :param idle_s: time waiting for messages.
    :param wall_s: the worker's lifetime.
    :param bytes_read: block bytes read.
    :param bytes_written: block bytes written.
    :param cache_hits: input blocks served from the worker's block cache instead of the store.
    """

    slot: int = 0
    pid: int = 0
    tasks: int = 0
    skipped: int = 0
    read_s: float = 0.0
    wait_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    idle_s: float = 0.0
    wall_s: float = 0.0
    bytes_read: int = 0
    bytes_written: int = 0
    cache_hits: int = 0


@dataclass
class GemmReport:
    """Timings of one GEMM; pass an instance as ``report=`` to have it filled in.

    :param shape: ``(m, k, n)``.
    :param dtype: the computation dtype.
    :param block_shape: ``C``'s block shape.
    :param fuse: k blocks per leaf task.
    :param tasks: DAG nodes.
    :param workers: workers launched, relaunches included.
    :param relaunches: workers the driver started again after failures.
    :param ingest_s: :func:`gemm` only: storing ``A`` and ``B`` as blocks.
    :param dag_s: running the DAG, from first publish to the last output block.
    :param egest_s: :func:`gemm` only: reading ``C`` back into numpy.
    :param total_s: the whole call.
    :param worker_stats: one record per worker that returned.
    """

    shape: tuple[int, int, int] = (0, 0, 0)
    dtype: str = ""
    block_shape: tuple[int, int] = (0, 0)
    fuse: int = 0
    tasks: int = 0
    workers: int = 0
    relaunches: int = 0
    ingest_s: float = 0.0
    dag_s: float = 0.0
    egest_s: float = 0.0
    total_s: float = 0.0
    worker_stats: list[WorkerStats] = field(default_factory=list)

    @property
    def flops(self) -> int:
        """Floating-point operations of the product: ``2 m k n``."""
        m, k, n = self.shape
        return 2 * m * k * n

    def totals(self) -> dict[str, float]:
        """Worker timings and counts summed over all workers."""
        keys = ("read_s", "wait_s", "compute_s", "write_s", "idle_s", "wall_s")
        out = {key: sum(getattr(s, key) for s in self.worker_stats) for key in keys}
        for key in ("tasks", "skipped", "bytes_read", "bytes_written", "cache_hits"):
            out[key] = float(sum(getattr(s, key) for s in self.worker_stats))
        return out


# --------------------------------------------------------------------------- job description


@dataclass(frozen=True)
class _JobSpec:
    """Everything a worker needs; pickled into each worker (matrices travel without store)."""

    job: str
    topic: str
    a: BlockMatrix
    b: BlockMatrix
    c: BlockMatrix
    plan: Plan
    tmp: str
    lease: float
    idle_timeout: float
    copies: int
    prefetch: int
    read_threads: int
    cache_bytes: int
    fault: FaultPlan | None

    @property
    def stop_key(self) -> str:
        return f"{self.tmp}/stop"

    def out_key(self, node: Node) -> str:
        """Where ``node`` writes its output (a ``C`` block for a root)."""
        i, j, level, index = node
        if self.plan.is_root(node):
            return self.c.block_key(i, j)
        return f"{self.tmp}/t/{i}_{j}/{level}_{index}"

    def message(self, node: Node) -> bytes:
        return json.dumps({"job": self.job, "node": list(node)}).encode()

    def stop_message(self) -> bytes:
        return json.dumps({"job": self.job, "stop": True}).encode()


class _Stop(Exception):
    """A stop message was received."""


class _Obsolete(Exception):
    """The task's result exists already (another attempt finished it)."""


# --------------------------------------------------------------------------- worker


class _LeaseKeeper:
    """Renews the lease of every held message from a background thread."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._held: set[Message] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gemm-lease", daemon=True)
        self._thread.start()

    def add(self, message: Message) -> None:
        with self._lock:
            self._held.add(message)

    def discard(self, message: Message) -> None:
        with self._lock:
            self._held.discard(message)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                held = list(self._held)
            for message in held:
                try:
                    message.touch()
                except Exception:  # a failed renewal only risks a harmless replay
                    log.warning("renewing the lease of %r failed", message, exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _BlockCache:
    """Reads of recent input blocks (done or in flight), least recently used first out.

    Consecutive tasks of one worker often share an ``A`` row or a ``B`` column of blocks (tasks
    are queued output block by output block), and input blocks never change, so keeping the last
    few saves their reads; holding futures also merges a read with one still in flight. Only
    the worker's compute thread uses it.

    :param capacity: bytes of blocks to keep.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._size = 0
        self._reads: OrderedDict[str, tuple[cf.Future[Array], int]] = OrderedDict()

    def lookup(self, key: str) -> cf.Future[Array] | None:
        entry = self._reads.get(key)
        if entry is None:
            return None
        future = entry[0]
        if future.cancelled() or (future.done() and future.exception() is not None):
            self._drop(key)
            return None
        self._reads.move_to_end(key)
        return future

    def add(self, key: str, future: cf.Future[Array], nbytes: int) -> None:
        if nbytes > self._capacity or key in self._reads:
            return
        self._reads[key] = (future, nbytes)
        self._size += nbytes
        while self._size > self._capacity:
            self._drop(next(iter(self._reads)))

    def _drop(self, key: str) -> None:
        _, nbytes = self._reads.pop(key)
        self._size -= nbytes


@dataclass(frozen=True)
class _Load:
    """One input of a task: its key, how to read it, and whether the block cache may keep it."""

    key: str
    read: Callable[[], Array]
    nbytes: int = 0
    cacheable: bool = False


@dataclass(eq=False)
class _Run:
    """One task being executed: its node, message and input reads."""

    node: Node
    message: Message
    loads: deque[_Load]
    pending: deque[cf.Future[Array]] = field(default_factory=deque)


class _Worker:
    """The body of one stateless worker; see the module docstring for the protocol."""

    def __init__(
        self,
        spec: _JobSpec,
        slot: int,
        store: ObjectStore,
        pubsub: PubSub,
        deadline: float | None,
    ) -> None:
        self.spec = spec
        self.plan = spec.plan
        self.store = store
        self.pubsub = pubsub
        self.deadline = deadline
        self.a = spec.a.attach(store)
        self.b = spec.b.attach(store)
        self.c = spec.c.attach(store)
        self.stats = WorkerStats(slot=slot, pid=os.getpid())
        self._stats_lock = threading.Lock()
        self._upcoming: _Run | None = None
        self._stopping = False
        self._write: cf.Future[None] | None = None
        self._sub: Subscription | None = None
        self._cache = _BlockCache(spec.cache_bytes)

    # ---- main loop

    def run(self) -> WorkerStats:
        started = time.monotonic()
        self._reader = cf.ThreadPoolExecutor(self.spec.read_threads, thread_name_prefix="gemm-read")
        self._writer = cf.ThreadPoolExecutor(1, thread_name_prefix="gemm-write")
        self._leases = _LeaseKeeper(self.spec.lease / 3)
        self._sub = self.pubsub.subscribe(
            self.spec.topic, _GROUP, visibility_timeout=self.spec.lease
        )
        try:
            self._loop(self._sub)
            self._finish_write()
        finally:
            upcoming, self._upcoming = self._upcoming, None
            if upcoming is not None:
                upcoming.message.nack()  # give it straight back instead of after its lease
            self._reader.shutdown(wait=True, cancel_futures=True)
            self._writer.shutdown(wait=True)
            self._leases.close()
            self._sub.close()
            self.stats.wall_s = time.monotonic() - started
        return self.stats

    def _loop(self, sub: Subscription) -> None:
        idle_since: float | None = None
        failures = 0
        poll = min(_WORKER_POLL, self.spec.idle_timeout)
        while not self._stopping:
            run, self._upcoming = self._upcoming, None
            if run is None:
                if self._out_of_time():
                    return
                t0 = time.monotonic()
                got = sub.get_many(1, timeout=poll)
                self.stats.idle_s += time.monotonic() - t0
                if not got:
                    if self.store.exists(self.spec.stop_key):
                        return
                    idle_since = t0 if idle_since is None else idle_since
                    if time.monotonic() - idle_since > self.spec.idle_timeout:
                        return
                    continue
                idle_since = None
                try:
                    run = self._begin(got[0])
                except _Stop:
                    return
                if run is None:
                    continue
            try:
                self._execute(run)
                failures = 0
            except _Obsolete:
                self._leases.discard(run.message)
                run.message.ack()
                self.stats.skipped += 1
            except FaaSMLError as exc:
                if not exc.retriable:
                    raise
                failures += 1
                if failures > _MAX_RETRIABLE_FAILURES:
                    raise
                log.warning("task %s failed (%s); handing it back", run.node, exc)
                self._leases.discard(run.message)
                run.message.nack()
                time.sleep(min(5.0, 0.1 * 2**failures))

    def _out_of_time(self) -> bool:
        if self.deadline is None:
            return False
        margin = max(2 * self.spec.lease, 5.0)
        return self.deadline - time.monotonic() < margin

    # ---- taking a message

    def _begin(self, message: Message) -> _Run | None:
        """Decode a message and decide whether it needs computing; ``None`` if it is handled.

        :raises _Stop: it was a stop message.
        """
        try:
            body = json.loads(message.data)
            if body.get("job") != self.spec.job:
                raise ValueError(f"message of another job {body.get('job')!r}")
            if body.get("stop"):
                message.ack()
                raise _Stop()
            node: Node = tuple(int(x) for x in body["node"])  # type: ignore[assignment]
            if len(node) != 4 or not self.plan.contains(node):
                raise ValueError(f"{node} is not a node of this DAG")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropping an invalid GEMM task message: %s", exc)
            message.ack()
            return None
        self._leases.add(message)
        try:
            self._fault(node, "taken")
            done = self._done_already(node)
        except BaseException:
            self._leases.discard(message)
            message.nack()
            raise
        if done:
            self._leases.discard(message)
            message.ack()
            self.stats.skipped += 1
            return None
        loads: deque[_Load] = deque()
        i, j, level, _ = node
        if level == 0:
            for k in self.plan.leaf_ks(node):
                loads.append(self._input_load(self.a, i, k))
                loads.append(self._input_load(self.b, k, j))
        else:
            shape = self.c.block_extent(i, j)
            for child in self.plan.children(node):
                key = self.spec.out_key(child)
                loads.append(_Load(key, _bind(self._read_partial, key, shape)))
        return _Run(node, message, loads)

    def _done_already(self, node: Node) -> bool:
        """Whether ``node`` needs no computing; resolves its dependency if its output exists."""
        spec = self.spec
        if self.store.exists(spec.out_key(node)):
            # A previous attempt wrote it but may have died before publishing the parent.
            self._publish_parent_if_ready(node)
            return True
        # An existing ancestor output means this subtree is finished (its partial sums may even
        # be deleted already); the ancestor's own message takes care of what follows it.
        ancestor = self.plan.parent(node)
        ancestors: list[Node] = []
        while ancestor is not None:
            ancestors.append(ancestor)
            ancestor = self.plan.parent(ancestor)
        return any(self.store.exists(spec.out_key(a)) for a in reversed(ancestors))

    def _input_load(self, matrix: BlockMatrix, i: int, j: int) -> _Load:
        rows, cols = matrix.block_extent(i, j)
        nbytes = rows * cols * matrix.dtype.itemsize
        return _Load(matrix.block_key(i, j), _bind(matrix.get_block, i, j), nbytes, True)

    def _read_partial(self, key: str, shape: tuple[int, int]) -> Array:
        return decode_block(self.store.get(key), key=key, dtype=self.c.dtype, shape=shape)

    # ---- reading with prefetch

    def _timed_load(self, load: Callable[[], Array]) -> Array:
        t0 = time.monotonic()
        arr = load()
        with self._stats_lock:
            self.stats.read_s += time.monotonic() - t0
            self.stats.bytes_read += arr.nbytes
        return arr

    def _prime(self, run: _Run, depth: int) -> None:
        while len(run.pending) < depth and run.loads:
            load = run.loads.popleft()
            future = self._cache.lookup(load.key) if load.cacheable else None
            if future is not None:
                self.stats.cache_hits += 1
            else:
                future = self._reader.submit(self._timed_load, load.read)
                if load.cacheable:
                    self._cache.add(load.key, future, load.nbytes)
            run.pending.append(future)

    def _next_input(self, run: _Run) -> Array:
        self._prime(run, max(1, self.spec.prefetch))
        future = run.pending.popleft()
        self._prime(run, self.spec.prefetch)
        if not run.loads:
            self._read_ahead(len(run.pending))
        t0 = time.monotonic()
        try:
            return future.result()
        finally:
            self.stats.wait_s += time.monotonic() - t0

    def _read_ahead(self, busy: int) -> None:
        """Take the next message early and start its reads behind the current task's."""
        if self._upcoming is not None or self._stopping or self._sub is None:
            return
        if self._out_of_time():
            return
        got = self._sub.get_many(1, timeout=0)
        if not got:
            return
        try:
            upcoming = self._begin(got[0])
        except _Stop:
            self._stopping = True
            return
        if upcoming is not None:
            self._upcoming = upcoming
            self._prime(upcoming, max(2, self.spec.prefetch - busy))

    # ---- computing

    def _execute(self, run: _Run) -> None:
        node = run.node
        try:
            buf = self._compute_leaf(run) if node[2] == 0 else self._compute_reduction(run)
        finally:
            # After a failure, reads still in flight just finish: they may be shared with the
            # next task through the block cache, so they are not cancelled.
            run.pending.clear()
        self._fault(node, "computed")
        self._finish_write()  # one output in flight at a time bounds the worker's memory
        self._write = self._writer.submit(self._store_output, run, buf)
        self.stats.tasks += 1

    def _compute_leaf(self, run: _Run) -> memoryview:
        i, j = run.node[0], run.node[1]
        dtype = self.c.dtype
        buf, acc = block_buffer(*self.c.block_extent(i, j), dtype)
        for n, _k in enumerate(self.plan.leaf_ks(run.node)):
            a = self._next_input(run)
            b = self._next_input(run)
            t0 = time.monotonic()
            if a.dtype != dtype:
                a = a.astype(dtype)
            if b.dtype != dtype:
                b = b.astype(dtype)
            if n == 0:
                np.matmul(a, b, out=acc)
            else:
                _accumulate_product(acc, a, b)
            self.stats.compute_s += time.monotonic() - t0
        return buf

    def _compute_reduction(self, run: _Run) -> memoryview:
        i, j = run.node[0], run.node[1]
        buf, acc = block_buffer(*self.c.block_extent(i, j), self.c.dtype)
        for n in range(len(self.plan.children(run.node))):
            try:
                part = self._next_input(run)
            except NotFoundError:
                # Children are deleted only after this node's output was written, so another
                # attempt of this very task finished it while we were reading; by now even its
                # parent may have consumed (and deleted) that output: an ancestor's output
                # then exists instead.
                if self._done_already(run.node):
                    raise _Obsolete() from None
                raise
            t0 = time.monotonic()
            if n == 0:
                np.copyto(acc, part)
            else:
                acc += part
            self.stats.compute_s += time.monotonic() - t0
        return buf

    # ---- writing, dependencies and acknowledgement (on the write thread)

    def _finish_write(self) -> None:
        write, self._write = self._write, None
        if write is not None:
            t0 = time.monotonic()
            try:
                write.result()
            finally:
                self.stats.wait_s += time.monotonic() - t0

    def _store_output(self, run: _Run, buf: memoryview) -> None:
        t0 = time.monotonic()
        try:
            self._write_and_resolve(run.node, buf)
        except BaseException:
            # The compute thread learns of the failure later; hand the task back right away.
            self._leases.discard(run.message)
            run.message.nack()
            raise
        self._leases.discard(run.message)
        run.message.ack()
        with self._stats_lock:
            self.stats.write_s += time.monotonic() - t0

    def _write_and_resolve(self, node: Node, buf: memoryview) -> None:
        try:
            self.store.put(self.spec.out_key(node), buf, if_absent=True)
        except AlreadyExistsError:
            pass  # a concurrent attempt of this task wrote it first; the first write wins
        with self._stats_lock:
            self.stats.bytes_written += len(buf) - BLOCK_HEADER_BYTES
        self._fault(node, "written")
        for child in self.plan.children(node):
            try:
                self.store.delete(self.spec.out_key(child))
            except NotFoundError:
                pass  # deleted by a concurrent attempt of this task
        self._publish_parent_if_ready(node)

    def _publish_parent_if_ready(self, node: Node) -> None:
        """Publish ``node``'s parent when every sibling's output exists (count-once, see top)."""
        parent = self.plan.parent(node)
        if parent is None or self.store.exists(self.spec.out_key(parent)):
            return
        for sibling in self.plan.children(parent):
            if sibling != node and not self.store.exists(self.spec.out_key(sibling)):
                return  # that sibling publishes the parent when it finishes
        self.pubsub.publish_many(self.spec.topic, [self.spec.message(parent)] * self.spec.copies)

    # ---- fault injection

    def _fault(self, node: Node, stage: str) -> None:
        fault = self.spec.fault
        if fault is None or fault.stage != stage or node not in fault.crash_nodes:
            return
        marker = f"{self.spec.tmp}/fault/{'_'.join(map(str, node))}"
        try:
            self.store.put(marker, b"", if_absent=True)
        except AlreadyExistsError:
            return  # not the first attempt
        log.warning("fault injection: killing worker %d at %s of %s", os.getpid(), stage, node)
        os._exit(fault.exit_code)


def _as_fortran_operand(x: Array) -> tuple[Array, int]:
    """``(y, trans)`` with ``y`` Fortran-ordered and ``op(y) == x.T``, copying only if needed."""
    if x.flags.c_contiguous:
        return x.T, 0
    if x.flags.f_contiguous:
        return x, 1
    return np.ascontiguousarray(x).T, 0


def _accumulate_product(acc: Array, a: Array, b: Array) -> None:
    """``acc += a @ b`` in one BLAS call (``beta = 1``).

    ``matmul`` into a scratch block then ``+=`` would cost a scratch block of memory and one more
    pass over it per product (a few % of a fused task). BLAS is column-major, so the C-ordered
    ``acc`` is updated as ``acc.T += b.T @ a.T``.
    """
    from scipy.linalg.blas import get_blas_funcs

    gemm_kernel = get_blas_funcs("gemm", dtype=acc.dtype)
    bt, trans_b = _as_fortran_operand(b)
    at, trans_a = _as_fortran_operand(a)
    out = gemm_kernel(
        1.0, bt, at, beta=1.0, c=acc.T, trans_a=trans_b, trans_b=trans_a, overwrite_c=1
    )
    if out.ctypes.data != acc.ctypes.data:  # the wrapper had to copy: bring the result home
        acc[...] = out.T


def _bind(fn: Callable[..., Array], *args: Any) -> Callable[[], Array]:
    return lambda: fn(*args)


def _worker_main(spec: _JobSpec, slot: int) -> WorkerStats:
    """Entry point of one GEMM worker, run as a faasml task (``cloud.submit``)."""
    from faasml.runtime import context

    ctx = context()
    return _Worker(spec, slot, ctx.storage, ctx.pubsub, ctx.deadline).run()


# --------------------------------------------------------------------------- driver


def _same_store(x: ObjectStore, y: ObjectStore) -> bool:
    return x is y or (x.name == y.name and x.to_config() == y.to_config())


def _show_progress(cloud: Cloud, progress: bool | None) -> bool:
    if progress is not None:
        return progress
    configured = getattr(cloud.config, "progress", None)
    if configured is not None:
        return bool(configured)
    return interactive()


def _run_dag(
    cloud: Cloud,
    spec: _JobSpec,
    *,
    workers: int,
    timeout: float,
    progress: bool,
    report: GemmReport,
) -> None:
    """Run the DAG of ``spec`` on ``cloud`` until every block of ``C`` exists."""
    store, pubsub, plan = cloud.storage, cloud.pubsub, spec.plan
    total = plan.grid_m * plan.grid_n
    started = time.monotonic()
    deadline = started + timeout
    pubsub.ensure_group(spec.topic, _GROUP)
    messages = [spec.message(node) for node in plan.leaves() for _ in range(spec.copies)]
    pubsub.publish_many(spec.topic, messages)

    futures: dict[cf.Future[WorkerStats], int] = {}
    next_slot = 0

    def launch(count: int) -> None:
        nonlocal next_slot
        for _ in range(count):
            futures[cloud.submit(_worker_main, spec, next_slot)] = next_slot
            next_slot += 1

    budget = 3 * workers + 2  # relaunches allowed before the driver gives up
    launch(workers)
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="gemm", unit="block", leave=False)
    last_error: BaseException | None = None
    try:
        while True:
            done = sum(1 for _ in store.list(spec.c.block_prefix))
            if bar is not None:
                bar.update(done - bar.n)
            if done >= total:
                break
            for future in [f for f in futures if f.done()]:
                del futures[future]
                error = future.exception()
                if error is None:
                    report.worker_stats.append(future.result())
                elif isinstance(error, FaaSMLError) and error.retriable:
                    last_error = error
                    log.warning("a GEMM worker was lost (%s); relaunching", error)
                    if budget > 0:
                        budget -= 1
                        report.relaunches += 1
                        launch(1)
                else:
                    raise error
            if not futures:
                if budget <= 0:
                    raise FaaSMLError(
                        f"GEMM workers kept failing; {total - done} of {total} output blocks are "
                        f"missing ({_missing(store, spec)}); last worker error: {last_error!r}"
                    ) from last_error
                # Every worker went idle and quit although work remains (e.g. their messages'
                # leases had not expired yet): start a fresh set.
                budget -= 1
                report.relaunches += workers
                launch(workers)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"GEMM did not finish within {timeout:g} s: {total - done} of {total} output "
                    f"blocks of {spec.c.name!r} are missing ({_missing(store, spec)})"
                )
            cf.wait(list(futures), timeout=_DRIVER_POLL, return_when=cf.FIRST_COMPLETED)
        report.dag_s = time.monotonic() - started
    finally:
        if bar is not None:
            bar.close()
        _stop_workers(store, pubsub, spec, futures, report)
        report.workers = next_slot


def _missing(store: ObjectStore, spec: _JobSpec) -> str:
    present = {info.key for info in store.list(spec.c.block_prefix)}
    missing = [
        f"C[{i},{j}]"
        for i in range(spec.plan.grid_m)
        for j in range(spec.plan.grid_n)
        if spec.c.block_key(i, j) not in present
    ]
    shown = ", ".join(missing[:10])
    return shown + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")


def _stop_workers(
    store: ObjectStore,
    pubsub: PubSub,
    spec: _JobSpec,
    futures: dict[cf.Future[WorkerStats], int],
    report: GemmReport,
) -> None:
    """Stop the workers, collect their statistics and delete the job's temporaries."""
    try:
        store.put(spec.stop_key, b"", if_absent=True)
    except AlreadyExistsError:
        pass
    try:
        if futures:
            pubsub.publish_many(spec.topic, [spec.stop_message()] * len(futures))
        # Idle workers see the stop at once; wait a little so their slots are free again and
        # their statistics arrive, but never hang on a stuck one.
        done, _ = cf.wait(list(futures), timeout=_STOP_GRACE)
        for future in done:
            if future.exception() is None:
                report.worker_stats.append(future.result())
    finally:
        try:
            store.delete_prefix(spec.tmp + "/")
        except Exception:
            log.warning("deleting GEMM temporaries under %s failed", spec.tmp, exc_info=True)


def _check_operands(a: BlockMatrix, b: BlockMatrix) -> None:
    if not isinstance(a, BlockMatrix) or not isinstance(b, BlockMatrix):
        raise TypeError(
            f"matmul multiplies two BlockMatrix objects, got {type(a).__name__} and "
            f"{type(b).__name__}"
        )
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} are not aligned: A has {a.shape[1]} columns "
            f"but B has {b.shape[0]} rows"
        )
    if a.block_shape[1] != b.block_shape[0]:
        raise ValueError(
            f"matmul: A's column blocks ({a.block_shape[1]}) and B's row blocks "
            f"({b.block_shape[0]}) differ; store them with the same block size along k"
        )
    if not _same_store(a.store, b.store):
        raise ValueError("matmul: A and B must live in the same object store")


def matmul(
    a: BlockMatrix,
    b: BlockMatrix,
    *,
    cloud: Cloud | None = None,
    name: str | None = None,
    fuse: int | None = None,
    workers: int | None = None,
    lease: float = 30.0,
    idle_timeout: float | None = None,
    timeout: float = 3600.0,
    progress: bool | None = None,
    prefetch: int = 4,
    read_threads: int = 2,
    cache_bytes: int = 512 * 2**20,
    task_copies: int = 1,
    fault: FaultPlan | None = None,
    report: GemmReport | None = None,
) -> BlockMatrix:
    """``a @ b`` for block matrices: the result is a new write-once matrix in the same store.

    :param a: left operand (``m x k``).
    :param b: right operand (``k x n``), stored with the same block size along k as ``a``.
    :param cloud: where the workers run; its storage must hold ``a`` and ``b``. ``None``:
        ``faasml.connect("local", storage=a.store)``, shut down before returning.
    :param name: name of the result (default: a unique name).
    :param fuse: k blocks summed per leaf task; ``None`` chooses with
        :func:`~faasml.algorithms._dag.auto_fuse` (all of k when there are enough output blocks).
    :param workers: workers to launch; ``None``: ``cloud.function.concurrency`` (never more than
        there are leaf tasks).
    :param lease: seconds a taken task stays invisible to other workers without renewal; a dead
        worker's task is taken over after this long. Workers renew every ``lease / 3`` s.
    :param idle_timeout: seconds a worker waits without any task before it quits; ``None``:
        ``max(60, 2 * lease)``.
    :param timeout: overall limit in seconds; past it a :class:`TimeoutError` names the missing
        output blocks.
    :param progress: show a progress bar of finished output blocks (``None``: the cloud's
        ``progress`` setting, else on a terminal or in Jupyter).
    :param prefetch: input blocks each worker reads ahead of its computation.
    :param read_threads: concurrent block reads per worker (hides per-request latency).
    :param cache_bytes: memory each worker may keep recently read input blocks in, for
        following tasks that need them again (0 disables the cache).
    :param task_copies: publish every task message this many times (a replay-safety test aid;
        the result is the same).
    :param fault: crash workers on purpose (testing aid), see :class:`FaultPlan`.
    :param report: a :class:`GemmReport` to fill with timings.
    :raises ValueError: shapes not aligned (both shapes named), mismatched k blocks, different
        stores, or a bad option.
    :raises TypeError: an operand is not a BlockMatrix.
    :raises NotFoundError: an input block is missing (names the key).
    :raises TimeoutError: not finished within ``timeout``.
    """
    _check_operands(a, b)
    if fuse is not None and (isinstance(fuse, bool) or not isinstance(fuse, int) or fuse < 1):
        raise ValueError(f"fuse must be an integer >= 1, got {fuse!r}")
    if not lease > 0 or not timeout > 0:
        raise ValueError(f"lease and timeout must be > 0, got {lease!r} and {timeout!r}")
    if min(task_copies, prefetch, read_threads) < 1 or cache_bytes < 0:
        raise ValueError(
            "task_copies, prefetch and read_threads must be >= 1 and cache_bytes >= 0, got "
            f"{task_copies}, {prefetch}, {read_threads}, {cache_bytes}"
        )
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    report = report if report is not None else GemmReport()
    owned = cloud is None
    if cloud is None:
        import faasml

        cloud = faasml.connect("local", storage=a.store)
    try:
        store = cloud.storage
        if not _same_store(a.store, store):
            raise ValueError(
                f"matmul: the matrices are in a {a.store.name!r} store that is not the cloud's "
                f"{store.name!r} storage, so its workers could not read them"
            )
        dtype = np.result_type(a.dtype, b.dtype)
        c = BlockMatrix._create(
            store,
            (a.shape[0], b.shape[1]),
            (a.block_shape[0], b.block_shape[1]),
            dtype,
            name,
            prefix=a.prefix,
        )
        grid_m, grid_k = a.grid
        grid_n = b.grid[1]
        concurrency = workers if workers is not None else max(1, cloud.function.concurrency)
        plan = Plan(grid_m, grid_n, grid_k, fuse or auto_fuse(grid_m, grid_n, grid_k, concurrency))
        leaves = grid_m * grid_n * plan.levels[0]
        job = uuid.uuid4().hex[:16]
        spec = _JobSpec(
            job=job,
            topic=f"faasml-gemm-{job}",
            a=a,
            b=b,
            c=c,
            plan=plan,
            tmp=f"{TMP_PREFIX}/{job}",
            lease=float(lease),
            idle_timeout=float(idle_timeout if idle_timeout is not None else max(60.0, 2 * lease)),
            copies=task_copies,
            prefetch=prefetch,
            read_threads=read_threads,
            cache_bytes=cache_bytes,
            fault=fault,
        )
        report.shape = (a.shape[0], a.shape[1], b.shape[1])
        report.dtype = dtype.name
        report.block_shape = c.block_shape
        report.fuse = plan.fuse
        report.tasks = plan.task_count
        _run_dag(
            cloud,
            spec,
            workers=max(1, min(concurrency, leaves)),
            timeout=timeout,
            progress=_show_progress(cloud, progress),
            report=report,
        )
        c._commit()
        return c
    finally:
        if owned:
            cloud.shutdown()


def _compute_dtype(x: np.dtype[Any], y: np.dtype[Any]) -> np.dtype[Any]:
    dt = np.result_type(x, y)
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt.kind == "f" and dt.itemsize <= 4:
        return np.dtype(np.float32)
    if dt == np.float64:
        return np.dtype(np.float64)
    raise TypeError(
        f"gemm computes in float32 or float64 and cannot multiply {x} by {y}; convert the "
        "inputs first (complex, longdouble and object arrays are not supported)"
    )


def gemm(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    cloud: Cloud | None = None,
    block: int = 2048,
    **options: Any,
) -> Array:
    """``a @ b`` for numpy arrays, computed by stateless workers on ``cloud``.

    The operands are stored as block matrices (``block x block`` blocks; a block larger than a
    dimension is clamped to it), multiplied with :func:`matmul`, read back and deleted.

    :param a: ``m x k`` matrix.
    :param b: ``k x n`` matrix.
    :param cloud: where to run; ``None``: ``faasml.connect("local")``, shut down before
        returning.
    :param block: block size (int >= 1).
    :param options: passed to :func:`matmul` (``fuse``, ``workers``, ``lease``, ``timeout``,
        ``progress``, ``report`` ...).
    :returns: the ``m x n`` product in the computation dtype (see the module docstring).
    :raises ValueError: not 2-D, shapes not aligned (the message shows both shapes), or a block
        size that is not an integer >= 1.
    :raises TypeError: a dtype gemm cannot compute in (complex, object ...).
    :raises TimeoutError: not finished within ``options["timeout"]``.
    """
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"gemm multiplies 2-D matrices, got shapes {x.shape} and {y.shape}")
    if x.shape[1] != y.shape[0]:
        raise ValueError(
            f"gemm: shapes {x.shape} and {y.shape} are not aligned: A has {x.shape[1]} columns "
            f"but B has {y.shape[0]} rows"
        )
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    dtype = _compute_dtype(x.dtype, y.dtype)
    report: GemmReport = options.get("report") or GemmReport()
    options["report"] = report
    started = time.monotonic()
    if x.size == 0 or y.size == 0:
        # Nothing to distribute: an empty product, or a sum over k = 0 which is all zeros.
        report.shape = (x.shape[0], x.shape[1], y.shape[1])
        return np.zeros((x.shape[0], y.shape[1]), dtype=dtype)
    owned = cloud is None
    if cloud is None:
        import faasml

        cloud = faasml.connect("local")
    matrices: list[BlockMatrix] = []
    try:
        store = cloud.storage
        a_bm = BlockMatrix.from_numpy(
            store, x.astype(dtype, copy=False), block=normalize_block(int(block), x.shape)
        )
        matrices.append(a_bm)
        b_bm = BlockMatrix.from_numpy(
            store, y.astype(dtype, copy=False), block=normalize_block(int(block), y.shape)
        )
        matrices.append(b_bm)
        report.ingest_s = time.monotonic() - started
        c_bm = matmul(a_bm, b_bm, cloud=cloud, **options)
        matrices.append(c_bm)
        t0 = time.monotonic()
        out = c_bm.to_numpy()
        report.egest_s = time.monotonic() - t0
        report.total_s = time.monotonic() - started
        return out
    finally:
        for matrix in matrices:
            try:
                matrix.delete()
            except Exception:
                log.warning("deleting %r failed", matrix, exc_info=True)
        if owned:
            cloud.shutdown()

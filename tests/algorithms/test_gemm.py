"""Blocked GEMM: the DAG, the count-once protocol, numerics against numpy, faults and replays."""

from __future__ import annotations

import concurrent.futures as cf
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import faasml
from faasml.algorithms import BlockMatrix, gemm
from faasml.algorithms._dag import Plan, auto_fuse
from faasml.algorithms.gemm import (
    FaultPlan,
    GemmReport,
    _JobSpec,
    _LeaseKeeper,
    _Obsolete,
    _Worker,
)
from faasml.errors import NotFoundError
from faasml.executor import Cloud
from faasml.pubsub.local import LocalPubSub
from faasml.storage.memory import MemoryObjectStore


def _rand(shape: tuple[int, int], dtype: Any = np.float64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _ints(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Small integers as float64: every partial sum is exact, so any summation order agrees."""
    return np.random.default_rng(seed).integers(-8, 9, size=shape).astype(np.float64)


def _check(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    ref = np.matmul(a, b)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    if ref.dtype == np.float32:
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    with faasml.connect("local", workers=2, storage="memory", progress=False) as c:
        yield c


# --------------------------------------------------------------------------- the DAG (pure)


@pytest.mark.parametrize(
    ("k", "fuse", "levels"),
    [
        (1, 1, (1,)),
        (2, 1, (2, 1)),
        (4, 1, (4, 1)),
        (5, 1, (5, 2, 1)),
        (17, 1, (17, 5, 2, 1)),
        (17, 4, (5, 2, 1)),
        (17, 17, (1,)),
        (17, 100, (1,)),
    ],
)
def test_plan_levels_and_structure(k: int, fuse: int, levels: tuple[int, ...]) -> None:
    plan = Plan(2, 3, k, fuse)
    assert plan.levels == levels
    assert plan.task_count == 6 * sum(levels)
    nodes = list(plan.nodes())
    assert len(nodes) == len(set(nodes)) == plan.task_count
    covered: list[int] = []
    for node in nodes:
        assert plan.contains(node)
        parent = plan.parent(node)
        if parent is None:
            assert plan.is_root(node) and node == plan.root(node[0], node[1])
        else:
            assert node in plan.children(parent)  # every partial sum is consumed exactly once
        if node[2] == 0:
            if node[:2] == (0, 0):
                covered.extend(plan.leaf_ks(node))
        else:
            kids = plan.children(node)
            assert 1 <= len(kids) <= 4 and all(plan.parent(c) == node for c in kids)
    assert covered == list(range(k))  # the leaves of one output block sum every k once
    assert not plan.contains((2, 0, 0, 0)) and not plan.contains((0, 0, len(levels), 0))


def test_auto_fuse() -> None:
    assert auto_fuse(4, 4, 4, workers=2) == 4  # enough output blocks: no partial sums at all
    assert auto_fuse(1, 1, 17, workers=2) == 5  # 4 groups of k for 2 workers
    assert auto_fuse(1, 1, 1, workers=8) == 1
    assert auto_fuse(2, 1, 8, workers=2) == 4


# --------------------------------------------------------------------------- count-once protocol


@pytest.fixture
def worker() -> Iterator[_Worker]:
    """A worker wired to in-process backends, to drive the protocol step by step."""
    store = MemoryObjectStore()
    pubsub = LocalPubSub()
    a = BlockMatrix.from_numpy(store, np.ones((2, 10)), block=2)
    b = BlockMatrix.from_numpy(store, np.ones((10, 2)), block=2)
    c = BlockMatrix._create(store, (2, 2), (2, 2), np.float64)
    job = uuid.uuid4().hex[:8]
    spec = _JobSpec(
        job, f"t-{job}", a, b, c, Plan(1, 1, 5, 1), f"tmp/{job}", 5.0, 5.0, 1, 2, 1, 0, None
    )
    pubsub.ensure_group(spec.topic, "workers")
    yield _Worker(spec, 0, store, pubsub, None)
    pubsub.close()
    store.close()


def _published(w: _Worker) -> list[tuple[int, ...]]:
    sub = w.pubsub.subscribe(w.spec.topic, "workers")
    got = sub.get_many(100, timeout=0.2)
    for m in got:
        m.ack()
    sub.close()
    import json

    return sorted(tuple(json.loads(m.data)["node"]) for m in got)


def test_last_sibling_publishes_the_parent_once(worker: _Worker) -> None:
    # level 0 has 5 leaves: parent (0,0,1,0) has leaves 0-3, parent (0,0,1,1) has leaf 4 only
    for p in range(3):
        worker.store.put(worker.spec.out_key((0, 0, 0, p)), b"x")
        worker._publish_parent_if_ready((0, 0, 0, p))
    assert _published(worker) == []  # leaf 3 is still missing
    worker.store.put(worker.spec.out_key((0, 0, 0, 3)), b"x")
    worker._publish_parent_if_ready((0, 0, 0, 3))
    worker.store.put(worker.spec.out_key((0, 0, 0, 4)), b"x")
    worker._publish_parent_if_ready((0, 0, 0, 4))
    assert _published(worker) == [(0, 0, 1, 0), (0, 0, 1, 1)]


def test_siblings_finishing_together_both_publish_never_none(worker: _Worker) -> None:
    # Both siblings write before either checks: both see each other, the duplicate is harmless.
    worker.store.put(worker.spec.out_key((0, 0, 1, 0)), b"x")
    worker.store.put(worker.spec.out_key((0, 0, 1, 1)), b"x")
    worker._publish_parent_if_ready((0, 0, 1, 0))
    worker._publish_parent_if_ready((0, 0, 1, 1))
    assert _published(worker) == [(0, 0, 2, 0), (0, 0, 2, 0)]


def test_late_attempt_whose_output_was_already_consumed_is_obsolete(worker: _Worker) -> None:
    # Attempt B of reduction (0,0,1,0) takes its task; meanwhile attempt A finishes it (deleting
    # the leaves) and the root consumes A's output (deleting it): B's reads find nothing, and
    # only the root's output tells B it is late, not broken.
    worker._reader = cf.ThreadPoolExecutor(1)
    worker._leases = _LeaseKeeper(60.0)
    worker.pubsub.publish(worker.spec.topic, worker.spec.message((0, 0, 1, 0)))
    sub = worker.pubsub.subscribe(worker.spec.topic, "workers")
    worker._sub = sub
    (message,) = sub.get_many(1, timeout=1.0)
    run = worker._begin(message)
    assert run is not None and len(run.loads) == 4
    worker.store.put(worker.spec.out_key((0, 0, 2, 0)), b"x")
    with pytest.raises(_Obsolete):
        worker._compute_reduction(run)
    # with no finished ancestor, a missing input is an error
    sub2 = worker.pubsub.subscribe(worker.spec.topic, "workers")
    worker.pubsub.publish(worker.spec.topic, worker.spec.message((0, 0, 1, 1)))
    (message2,) = sub2.get_many(1, timeout=1.0)
    worker.store.delete(worker.spec.out_key((0, 0, 2, 0)))
    run2 = worker._begin(message2)
    assert run2 is not None
    with pytest.raises(NotFoundError):
        worker._compute_reduction(run2)
    sub.close()
    sub2.close()
    worker._leases.close()
    worker._reader.shutdown()


def test_replay_of_a_finished_task_resolves_its_dependency(worker: _Worker) -> None:
    # The worker that wrote leaf 4 died before publishing its parent; the replay does it.
    worker.store.put(worker.spec.out_key((0, 0, 0, 4)), b"x")
    assert worker._done_already((0, 0, 0, 4))
    assert _published(worker) == [(0, 0, 1, 1)]
    # Once the parent exists, a late replay of a child publishes nothing.
    worker.store.put(worker.spec.out_key((0, 0, 1, 1)), b"x")
    assert worker._done_already((0, 0, 0, 4))
    assert _published(worker) == []
    # A subtree under an existing root is obsolete even if its partial sums were deleted.
    worker.store.put(worker.spec.out_key((0, 0, 2, 0)), b"x")
    assert worker._done_already((0, 0, 0, 1))
    assert not worker.store.exists(worker.spec.out_key((0, 0, 0, 1)))


def test_lease_keeper_holds_a_task_until_released() -> None:
    pubsub = LocalPubSub()
    keeper = _LeaseKeeper(interval=0.1)
    try:
        pubsub.ensure_group("lease-test", "workers")
        pubsub.publish("lease-test", b"task")
        mine = pubsub.subscribe("lease-test", "workers", visibility_timeout=0.4)
        other = pubsub.subscribe("lease-test", "workers", visibility_timeout=0.4)
        message = mine.get(timeout=1)
        assert message is not None
        keeper.add(message)
        assert other.get(timeout=1.2) is None  # three lease periods: renewed, never redelivered
        keeper.discard(message)
        taken_over = other.get(timeout=2)  # a "dead" holder: the lease expires, another takes it
        assert taken_over is not None and taken_over.data == b"task"
        taken_over.ack()
    finally:
        keeper.close()
        pubsub.close()


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("m", "k", "n", "block"),
    [
        (1, 1, 1, 1),
        (1, 1, 1, 2048),  # larger than the matrix: clamped
        (7, 13, 5, 3),  # smaller than and not dividing any dimension
        (7, 13, 5, 13),  # equal to k
        (7, 13, 5, 7),  # equal to m
        (300, 257, 129, 64),
        (300, 257, 129, 129),
    ],
)
def test_gemm_matches_numpy(cloud: Cloud, m: int, k: int, n: int, block: int, dtype: Any) -> None:
    a, b = _rand((m, k), dtype), _rand((k, n), dtype, seed=1)
    _check(gemm(a, b, cloud=cloud, block=block), a, b)


@pytest.mark.parametrize(("k_blocks", "levels"), [(1, 1), (2, 2), (4, 2), (5, 3), (17, 4)])
def test_reduction_tree_depths(cloud: Cloud, k_blocks: int, levels: int) -> None:
    a, b = _rand((6, 4 * k_blocks - 1)), _rand((4 * k_blocks - 1, 5), seed=1)
    report = GemmReport()
    out = gemm(a, b, cloud=cloud, block=4, fuse=1, report=report)
    _check(out, a, b)
    assert len(Plan(2, 2, k_blocks, 1).levels) == levels
    assert report.tasks == Plan(2, 2, k_blocks, 1).task_count


def test_fused_leaves_with_a_reduction(cloud: Cloud) -> None:
    a, b = _rand((4, 70)), _rand((70, 3), seed=1)
    report = GemmReport()
    _check(gemm(a, b, cloud=cloud, block=4, fuse=3, report=report), a, b)
    assert (report.fuse, report.tasks) == (3, 6 + 2 + 1)  # 18 k blocks -> 6 leaves -> 2 -> 1


def test_default_fusion_writes_no_partial_sums(cloud: Cloud) -> None:
    a, b = _rand((40, 40)), _rand((40, 40), seed=1)
    report = GemmReport()
    _check(gemm(a, b, cloud=cloud, block=10, report=report), a, b)
    assert (report.fuse, report.tasks) == (4, 16)
    written = sum(s.bytes_written for s in report.worker_stats)
    assert written == 40 * 40 * 8  # exactly C, nothing else


def test_block_cache_saves_reads_of_shared_blocks(cloud: Cloud) -> None:
    a, b = _rand((40, 40)), _rand((40, 40), seed=1)
    cached, uncached = GemmReport(), GemmReport()
    _check(gemm(a, b, cloud=cloud, block=10, report=cached), a, b)
    _check(gemm(a, b, cloud=cloud, block=10, cache_bytes=0, report=uncached), a, b)
    # 16 tasks each read a row of A and a column of B (8 blocks of 800 bytes); a worker that
    # runs two tasks of the same row reuses that row.
    assert sum(s.bytes_read for s in uncached.worker_stats) == 16 * 8 * 800
    assert sum(s.cache_hits for s in uncached.worker_stats) == 0
    hits = sum(s.cache_hits for s in cached.worker_stats)
    assert hits >= 4
    assert sum(s.bytes_read for s in cached.worker_stats) == (16 * 8 - hits) * 800


def test_mixed_dtypes_are_promoted_like_numpy(cloud: Cloud) -> None:
    a32, b64 = _rand((9, 6), np.float32), _rand((6, 4), np.float64, seed=1)
    out = gemm(a32, b64, cloud=cloud, block=4)
    assert out.dtype == np.float64
    _check(out, a32, b64)
    ints = np.arange(12).reshape(3, 4)
    out = gemm(ints, ints.T, cloud=cloud, block=2)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ints @ ints.T)


def test_empty_operands_give_zeros(cloud: Cloud) -> None:
    np.testing.assert_array_equal(
        gemm(np.ones((3, 0)), np.ones((0, 4)), cloud=cloud), np.zeros((3, 4))
    )
    assert gemm(np.ones((0, 2)), np.ones((2, 4)), cloud=cloud).shape == (0, 4)


def test_gemm_without_a_cloud_uses_a_local_one() -> None:
    a, b = _rand((20, 30)), _rand((30, 10), seed=1)
    _check(gemm(a, b, block=8, progress=False), a, b)


def test_progress_bar_counts_output_blocks(
    cloud: Cloud, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _rand((20, 20)), _rand((20, 20), seed=1)
    gemm(a, b, cloud=cloud, block=10, progress=True)
    assert "gemm" in capsys.readouterr().err


# --------------------------------------------------------------------------- BlockMatrix in/out


def test_block_matrix_product_stays_in_the_store(cloud: Cloud) -> None:
    x, y = _rand((23, 17), np.float32), _rand((23, 11), np.float64, seed=1)
    a = BlockMatrix.from_numpy(cloud.storage, x, block=5)
    b = BlockMatrix.from_numpy(cloud.storage, y, block=5)
    c = a.T.matmul(b, cloud=cloud, name="prod")  # a transposed view as an operand
    reopened = BlockMatrix.open(cloud.storage, "prod")
    assert (reopened.shape, reopened.block_shape) == ((17, 11), (5, 5))
    assert reopened.dtype == np.dtype(np.float64)
    _check(c.to_numpy(), x.T, y)
    assert list(cloud.storage.list("faasml-gemm/")) == []  # temporaries are gone
    for matrix in (a, b, c):
        matrix.delete()


def test_matmul_operator_without_a_cloud() -> None:
    store = MemoryObjectStore()
    try:
        x, y = _rand((8, 9)), _rand((9, 4), seed=1)
        a = BlockMatrix.from_numpy(store, x, block=3)
        b = BlockMatrix.from_numpy(store, y, block=3)
        _check((a @ b).to_numpy(), x, y)
    finally:
        store.close()


def test_file_store(tmp_path: Any) -> None:
    with faasml.connect(
        "local", workers=2, storage="file", root=str(tmp_path), progress=False
    ) as cloud:
        a, b = _rand((50, 45)), _rand((45, 30), seed=1)
        _check(gemm(a, b, cloud=cloud, block=16, fuse=1), a, b)


def test_redis_store(redis_url: str) -> None:
    from faasml.storage.redis import RedisObjectStore

    store = RedisObjectStore(redis_url, prefix=f"faasml-test-gemm-{uuid.uuid4().hex[:8]}:")
    try:
        with faasml.connect("local", workers=2, storage=store, progress=False) as cloud:
            a, b = _rand((50, 45), np.float32), _rand((45, 30), np.float32, seed=1)
            _check(gemm(a, b, cloud=cloud, block=16, fuse=1), a, b)
            assert list(store.list("")) == []  # inputs, output and temporaries deleted
    finally:
        store.delete_prefix("")
        store.close()


# --------------------------------------------------------------------------- faults and replays


def test_every_task_published_twice(cloud: Cloud) -> None:
    a, b = _ints((30, 50)), _ints((50, 20), seed=1)
    report = GemmReport()
    out = gemm(a, b, cloud=cloud, block=10, fuse=1, task_copies=2, report=report)
    np.testing.assert_array_equal(out, a @ b)
    handled = sum(s.tasks + s.skipped for s in report.worker_stats)
    assert handled > report.tasks  # duplicates were really taken


@pytest.mark.parametrize(
    ("stage", "nodes"),
    [
        ("taken", {(0, 0, 0, 1), (1, 1, 1, 0)}),
        ("written", {(0, 1, 0, 4), (2, 0, 1, 1)}),
    ],
)
def test_killed_workers_are_taken_over(cloud: Cloud, stage: Any, nodes: set[Any]) -> None:
    # K = 5 blocks with fuse=1: leaves (level 0), reductions (level 1), roots (level 2).
    a, b = _ints((30, 50)), _ints((50, 20), seed=1)
    before = set(cloud.function.worker_pids())  # type: ignore[attr-defined]
    out = gemm(
        a,
        b,
        cloud=cloud,
        block=10,
        fuse=1,
        lease=1.0,
        fault=FaultPlan(frozenset(nodes), stage),
        timeout=60,
    )
    np.testing.assert_array_equal(out, a @ b)
    assert set(cloud.function.worker_pids()) - before  # type: ignore[attr-defined]


def test_driver_relaunches_dead_workers_mid_task() -> None:
    # retries=0: the executor gives up on a dead worker at once, so the driver must relaunch.
    with faasml.connect("local", workers=2, storage="memory", retries=0, progress=False) as cloud:
        a, b = _ints((30, 50)), _ints((50, 20), seed=1)
        crash = frozenset({(0, 0, 0, 0), (1, 0, 0, 3), (2, 1, 1, 0), (0, 1, 2, 0)})
        report = GemmReport()
        out = gemm(
            a,
            b,
            cloud=cloud,
            block=10,
            fuse=1,
            lease=1.0,
            report=report,
            fault=FaultPlan(crash, "computed"),
            timeout=60,
        )
        np.testing.assert_array_equal(out, a @ b)
        assert report.relaunches >= 1


# --------------------------------------------------------------------------- bad input


def test_shape_mismatch_names_both_shapes(cloud: Cloud) -> None:
    with pytest.raises(ValueError, match=r"\(7, 13\) and \(12, 5\)"):
        gemm(np.ones((7, 13)), np.ones((12, 5)), cloud=cloud)
    a = BlockMatrix.from_numpy(cloud.storage, np.ones((4, 3)), block=2)
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 3\)"):
        a @ a
    with pytest.raises(ValueError, match="2-D"):
        gemm(np.ones(3), np.ones((3, 2)), cloud=cloud)


def test_mismatched_inner_blocks_are_refused(cloud: Cloud) -> None:
    a = BlockMatrix.from_numpy(cloud.storage, np.ones((4, 6)), block=2)
    b = BlockMatrix.from_numpy(cloud.storage, np.ones((6, 4)), block=3)
    with pytest.raises(ValueError, match=r"column blocks \(2\) and B's row blocks \(3\)"):
        a.matmul(b, cloud=cloud)


@pytest.mark.parametrize("block", [0, -5, True, 2.0])
def test_bad_block_size(cloud: Cloud, block: Any) -> None:
    with pytest.raises(ValueError, match="block must be an integer >= 1"):
        gemm(np.ones((2, 2)), np.ones((2, 2)), cloud=cloud, block=block)


def test_block_larger_than_the_matrix_is_clamped(cloud: Cloud) -> None:
    a, b = _rand((6, 9)), _rand((9, 4), seed=1)
    report = GemmReport()
    _check(gemm(a, b, cloud=cloud, block=1000, report=report), a, b)
    assert (report.block_shape, report.tasks) == ((6, 4), 1)


def test_unsupported_dtype(cloud: Cloud) -> None:
    with pytest.raises(TypeError, match="complex"):
        gemm(np.ones((2, 2), dtype=complex), np.ones((2, 2)), cloud=cloud)


def test_missing_input_block_names_the_key(cloud: Cloud) -> None:
    a = BlockMatrix.from_numpy(cloud.storage, _rand((6, 6)), block=3, name="lhs")
    b = BlockMatrix.from_numpy(cloud.storage, _rand((6, 6)), block=3, name="rhs")
    cloud.storage.delete("blockmatrix/rhs/b/1_0")
    with pytest.raises(NotFoundError, match="'blockmatrix/rhs/b/1_0'"):
        a.matmul(b, cloud=cloud, timeout=60)
    a.delete(), b.delete()


def test_timeout_names_the_missing_blocks(cloud: Cloud) -> None:
    a, b = _rand((20, 20)), _rand((20, 20), seed=1)
    # Every leaf's first attempt kills its worker and its message stays leased for 30 s, so
    # nothing can finish within the 1 s timeout.
    stall = FaultPlan(frozenset((i, j, 0, 0) for i in range(2) for j in range(2)), "taken")
    with pytest.raises(TimeoutError, match=r"within 1 s: 4 of 4 output blocks .*C\[0,0\]"):
        gemm(a, b, cloud=cloud, block=10, timeout=1.0, lease=30.0, fault=stall)
    # The aborted job left no temporaries and the workers are free for the next job.
    assert list(cloud.storage.list("faasml-gemm/")) == []
    _check(gemm(a, b, cloud=cloud, block=10), a, b)

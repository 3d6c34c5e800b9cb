"""End-to-end tests of the executor on the local provider (real worker processes)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import faasml
from faasml import serialization
from faasml.errors import (
    ConfigurationError,
    FunctionError,
    InvocationTimeoutError,
    SerializationError,
    ServiceUnavailableError,
    SignatureError,
    UnknownBackendError,
    WorkerDiedError,
)
from faasml.interfaces import Function, Invocation
from faasml.pubsub.local import LocalPubSub
from faasml.storage.file import FileObjectStore

#: (storage, pubsub) pairs the executor's tests run on; the services ones use loopback servers.
COMBINATIONS = ["file+local", "memory+local", "redis+redis", "redis+nats", "file+nats", "s3+redis"]


@pytest.fixture(scope="module", params=COMBINATIONS)
def cloud(request: pytest.FixtureRequest) -> Any:
    storage, pubsub = request.param.split("+")
    run = uuid.uuid4().hex[:10]
    options: dict[str, dict[str, Any]] = {"storage": {}, "pubsub": {}}
    if storage == "redis":
        options["storage"] = {"url": request.getfixturevalue("redis_url"), "prefix": f"ex{run}:"}
    if pubsub == "redis":
        options["pubsub"] = {"url": request.getfixturevalue("redis_url"), "prefix": f"ex{run}:"}
    if pubsub == "nats":
        options["pubsub"] = {
            "url": request.getfixturevalue("nats_url"),
            "stream_prefix": f"EX{run}",
        }
    patch = pytest.MonkeyPatch()
    if storage == "s3":
        # Fake credentials for moto; the workers inherit them from this environment.
        for var, value in (
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ):
            patch.setenv(var, value)
        options["storage"] = {
            "bucket": f"faasml-ex-{run}",
            "endpoint_url": request.getfixturevalue("moto_url"),
            "create_bucket": True,
        }
    request.addfinalizer(patch.undo)
    with faasml.connect(
        "local",
        storage=storage,
        pubsub=pubsub,
        storage_options=options["storage"],
        pubsub_options=options["pubsub"],
        workers=2,
        progress=False,
    ) as c:
        yield c


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def fail_with_value_error(x: int) -> int:
    raise ValueError(f"bad item {x}")


def crash_once(marker: str) -> str:
    """Kill the worker process the first time, succeed on the retry."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed")
        os._exit(7)
    return "survived"


def always_crash() -> None:
    os._exit(9)


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def count_runs(marker: str) -> int:
    with open(marker, "a") as fh:
        fh.write("x")
    return 42


class Unrebuildable(Exception):
    """An exception that pickles but cannot be rebuilt: its __init__ needs two arguments."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(a)


def raise_unrebuildable() -> None:
    raise Unrebuildable("one", "two")


def read_chunk(chunk: faasml.ObjectChunk) -> bytes:
    return chunk.read()


def total(values: list[int]) -> int:
    return sum(values)


# ---------------------------------------------------------------- stdlib semantics


def test_submit_and_map_like_process_pool(cloud: faasml.Cloud) -> None:
    assert isinstance(cloud, cf.Executor)
    assert cloud.submit(pow, 2, 10).result(timeout=30) == 1024
    assert list(cloud.map(add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
    assert list(cloud.map(square, range(50))) == [i * i for i in range(50)]
    assert list(cloud.map(square, [])) == []


def test_lambda_and_closure_travel_by_value(cloud: faasml.Cloud) -> None:
    offset = 5
    assert cloud.submit(lambda v: v + offset, 1).result(timeout=30) == 6


def test_map_raises_first_error_at_its_position(cloud: faasml.Cloud) -> None:
    it = cloud.map(fail_with_value_error, [1, 2])
    with pytest.raises(ValueError, match="bad item 1"):
        next(it)


def test_remote_exception_keeps_type_and_traceback(cloud: faasml.Cloud) -> None:
    fut = cloud.submit(fail_with_value_error, 3)
    with pytest.raises(ValueError, match="bad item 3") as info:
        fut.result(timeout=30)
    remote = getattr(info.value, "remote_traceback", "")
    assert "fail_with_value_error" in remote
    assert any("Remote traceback" in note for note in getattr(info.value, "__notes__", []))


def test_unrebuildable_remote_exception_becomes_function_error(cloud: faasml.Cloud) -> None:
    with pytest.raises(FunctionError) as info:
        cloud.submit(raise_unrebuildable).result(timeout=30)
    assert "Unrebuildable" in info.value.remote_type
    assert "raise_unrebuildable" in info.value.remote_traceback


def test_map_timeout(cloud: faasml.Cloud) -> None:
    it = cloud.map(sleep_for, [2.0], timeout=0.2)
    with pytest.raises(cf.TimeoutError):
        next(it)


def test_wait_and_gather(cloud: faasml.Cloud) -> None:
    futures = cloud.map_futures(square, range(10))
    done, pending = faasml.wait(futures, timeout=30)
    assert len(done) == 10 and not pending
    assert faasml.gather(futures) == [i * i for i in range(10)]
    bad = cloud.map_futures(fail_with_value_error, [7])
    with pytest.raises(ValueError):
        faasml.gather(futures + bad)


def test_map_reduce(cloud: faasml.Cloud) -> None:
    assert cloud.map_reduce(square, range(6), total).result(timeout=30) == 55
    failing = cloud.map_reduce(fail_with_value_error, [1], total)
    with pytest.raises(ValueError):
        failing.result(timeout=30)


def test_map_objects_whole_and_line_chunks(cloud: faasml.Cloud) -> None:
    lines = b"".join(f"line {i:03d} {'x' * (i % 7)}\n".encode() for i in range(200))
    cloud.storage.put("inputs/a.txt", lines)
    cloud.storage.put("inputs/b.txt", b"no newline at end")
    whole = faasml.gather(cloud.map_objects(read_chunk, "inputs/"))
    assert whole == [lines, b"no newline at end"]
    parts = faasml.gather(
        cloud.map_objects(read_chunk, ["inputs/a.txt"], chunk_size=97, lines=True)
    )
    assert b"".join(parts) == lines
    assert all(p == b"" or p.endswith(b"\n") for p in parts)
    ranges = faasml.gather(cloud.map_objects(read_chunk, ["inputs/a.txt"], chunk_size=1000))
    assert b"".join(ranges) == lines and len(ranges) == -(-len(lines) // 1000)


def test_round_trip_is_fast(cloud: faasml.Cloud) -> None:
    cloud.submit(square, 1).result(timeout=30)  # warm
    t0 = time.perf_counter()
    for i in range(20):
        assert cloud.submit(square, i).result(timeout=30) == i * i
    per_call = (time.perf_counter() - t0) / 20
    assert per_call < 0.5  # correctness guard only; the benchmark measures the real figure


def test_back_to_back_maps_never_hang(cloud: faasml.Cloud) -> None:
    for i in range(200):
        assert list(cloud.map(square, [i, i + 1], timeout=30)) == [i * i, (i + 1) ** 2]


# ---------------------------------------------------------------- faults


def test_worker_death_is_retried_and_healed(tmp_path: Path) -> None:
    with faasml.connect("local", workers=1, retries=1, retry_backoff=0.01, progress=False) as c:
        assert c.submit(crash_once, str(tmp_path / "m")).result(timeout=60) == "survived"
        assert c.submit(square, 4).result(timeout=30) == 16


def test_worker_death_without_retries_raises(tmp_path: Path) -> None:
    with faasml.connect("local", workers=1, retries=0, progress=False) as c:
        with pytest.raises(WorkerDiedError):
            c.submit(always_crash).result(timeout=60)
        assert c.submit(square, 5).result(timeout=30) == 25


def test_task_over_timeout_is_killed() -> None:
    with faasml.connect("local", workers=1, timeout=0.5, retries=0, progress=False) as c:
        t0 = time.monotonic()
        with pytest.raises(InvocationTimeoutError):
            c.submit(sleep_for, 30).result(timeout=30)
        assert time.monotonic() - t0 < 10
        assert c.submit(square, 3).result(timeout=30) == 9


def test_unpicklable_function_fails_before_invoking(cloud: faasml.Cloud) -> None:
    import threading

    lock = threading.Lock()

    def uses_lock() -> bool:
        return lock.locked()

    with pytest.raises(SerializationError, match="uses_lock"):
        cloud.submit(uses_lock)
    with pytest.raises(SerializationError, match="arguments"):
        cloud.map_futures(square, [1, lock])


class _TamperingStore(FileObjectStore):
    """Flips one byte of every stored task input, as an attacker with store access would."""

    def put(self, key: str, data: Any, *, if_absent: bool = False) -> None:
        if key.endswith("/input"):
            blob = bytearray(data)
            blob[-1] ^= 0x01
            data = bytes(blob)
        super().put(key, data, if_absent=if_absent)


def test_tampered_payload_in_store_is_refused(tmp_path: Path) -> None:
    store = _TamperingStore(root=str(tmp_path / "store"))
    with faasml.connect(
        "local", storage=store, workers=1, inline_bytes=0, retries=0, progress=False
    ) as c:
        with pytest.raises(SignatureError, match="verification"):
            c.submit(square, 2).result(timeout=30)
    store.close()


def test_runtime_refuses_unsigned_and_foreign_payloads(monkeypatch: pytest.MonkeyPatch) -> None:
    from faasml import runtime

    monkeypatch.setenv("FAASML_SECRET", "right-secret")
    with pytest.raises(SignatureError, match="not a signed"):
        runtime.handle(b"garbage")
    forged = serialization.seal(b"anything", b"wrong-secret")
    with pytest.raises(SignatureError, match="verification"):
        runtime.handle(forged)


class _DoubleInvoker(Function):
    """Wraps a Function and invokes every payload twice, as platforms sometimes do."""

    name = "local"

    def __init__(self, inner: Function) -> None:
        self.inner = inner
        self.timeout = inner.timeout
        self.max_payload_bytes = inner.max_payload_bytes

    def invoke(self, payload: bytes) -> bytes:
        return self.inner.invoke(payload)

    def invoke_async(self, payload: bytes) -> Invocation:
        self.inner.invoke_async(payload)
        return self.inner.invoke_async(payload)

    def close(self) -> None:
        self.inner.close()


def test_duplicate_invocation_yields_one_result(tmp_path: Path) -> None:
    from faasml.providers.local.function import LocalFunction

    secret = "dup-secret"
    inner = LocalFunction(workers=2, environment={"FAASML_SECRET": secret})
    marker = tmp_path / "runs"
    with faasml.connect(_DoubleInvoker(inner), secret=secret, progress=False) as c:
        futures = c.map_futures(count_runs, [str(marker)] * 5)
        assert faasml.gather(futures, timeout=60) == [42] * 5
        deadline = time.monotonic() + 10
        while len(marker.read_text()) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(marker.read_text()) == 10  # every task really ran twice
    inner.close()


def test_job_objects_are_removed_after_collection(tmp_path: Path) -> None:
    store_root = tmp_path / "store"
    with faasml.connect(
        "local", storage="file", root=str(store_root), workers=2, inline_bytes=0, progress=False
    ) as c:
        assert list(c.map(square, range(5))) == [0, 1, 4, 9, 16]
        deadline = time.monotonic() + 5
        while list(c.storage.list("jobs/")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(c.storage.list("jobs/")) == []


def test_cleanup_can_be_disabled(tmp_path: Path) -> None:
    with faasml.connect(
        "local",
        storage="file",
        root=str(tmp_path / "s"),
        workers=1,
        inline_bytes=0,
        cleanup=False,
        progress=False,
    ) as c:
        assert c.submit(square, 3).result(timeout=30) == 9
        assert any(i.key.endswith("/input") for i in c.storage.list("jobs/"))


def test_large_results_travel_through_the_store(cloud: faasml.Cloud) -> None:
    import numpy as np

    arrays = list(cloud.map(np.ones, [300_000, 10]))
    assert arrays[0].shape == (300_000,) and float(arrays[0].sum()) == 300_000.0


def test_progress_bar_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    with faasml.connect("local", workers=1, progress=True) as c:
        assert list(c.map(square, range(3))) == [0, 1, 4]
    assert "square" in capsys.readouterr().err


def _completion_topic_exists(kind: str, options: dict[str, Any], topic: str) -> bool:
    """Whether the broker still holds ``topic``, asked with a fresh client after shutdown."""
    if kind == "redis":
        import redis

        raw = redis.Redis.from_url(options["url"])
        try:
            return bool(raw.exists(f"{options['prefix']}topic:{topic}"))
        finally:
            raw.close()
    if kind == "nats":
        from faasml.pubsub.nats import NATSPubSub

        checker = NATSPubSub(options["url"], stream_prefix=options["stream_prefix"])
        try:
            infos = checker._call("list streams", lambda: checker._js.streams_info())
            return f"{options['stream_prefix']}_{topic}" in {i.config.name for i in infos}
        finally:
            checker.close()
    import sqlite3

    with contextlib.closing(sqlite3.connect(Path(options["path"]) / "queue.sqlite3")) as db:
        (groups,) = db.execute("SELECT COUNT(*) FROM groups WHERE topic = ?", (topic,)).fetchone()
        (rows,) = db.execute("SELECT COUNT(*) FROM messages WHERE topic = ?", (topic,)).fetchone()
    return bool(groups or rows)


@pytest.mark.parametrize("kind", ["redis", "nats", "local"])
def test_shutdown_deletes_the_completion_topic(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Each Cloud has a completion topic of its own; leaving the ``with`` block deletes it."""
    run = uuid.uuid4().hex[:10]
    options: dict[str, Any] = {
        "redis": lambda: {"url": request.getfixturevalue("redis_url"), "prefix": f"done{run}:"},
        "nats": lambda: {"url": request.getfixturevalue("nats_url"), "stream_prefix": f"D{run}"},
        "local": lambda: {"path": str(tmp_path / "queues")},
    }[kind]()
    with faasml.connect(
        "local", pubsub=kind, pubsub_options=options, workers=1, progress=False
    ) as cloud:
        topic = f"faasml-done-{cloud.id}"
        assert cloud.submit(square, 7).result(timeout=60) == 49
        assert _completion_topic_exists(kind, options, topic), "the topic exists while it runs"
    assert not _completion_topic_exists(kind, options, topic), f"{kind} kept {topic}"


def test_a_failing_topic_deletion_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(self: LocalPubSub, topic: str) -> None:
        raise ServiceUnavailableError("pubsub down (test)", provider="local")

    monkeypatch.setattr(LocalPubSub, "delete_topic", refuse)
    with caplog.at_level(logging.WARNING, logger="faasml.executor"):
        with faasml.connect("local", workers=1, progress=False) as cloud:
            assert cloud.submit(square, 3).result(timeout=60) == 9
    assert f"deleting the completion topic faasml-done-{cloud.id} failed" in caplog.text


def test_submit_after_shutdown_is_refused() -> None:
    c = faasml.connect("local", workers=1, progress=False)
    c.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        c.submit(square, 1)


# ---------------------------------------------------------------- configuration errors


def test_unknown_provider_lists_choices() -> None:
    with pytest.raises(UnknownBackendError, match="local"):
        faasml.connect("no-such-cloud")


def test_unknown_option_is_rejected_with_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="workers"):
        faasml.connect("local", wrokers=2)


def test_bad_option_value_is_rejected() -> None:
    with pytest.raises(ConfigurationError):
        faasml.connect("local", retries=-1)

"""Storage and messaging throughput: faasml's ObjectStores and PubSubs beside their raw clients.

Run::

    python benchmarks/storage_throughput.py                    # everything reachable, 1-2 min
    python benchmarks/storage_throughput.py --no-services      # memory, file and local only
    python benchmarks/storage_throughput.py --backends redis,nats --sizes 1MiB --repeat 3

Services (loopback, override with the ``--*-url`` flags): Redis on 127.0.0.1:6379 (database 15),
NATS with JetStream on 127.0.0.1:4222, ``moto_server`` on 127.0.0.1:5000 for S3 and SNS/SQS (fake
credentials). A service that is down is reported as "skipped" in the tables. Everything the run
creates (keys under a unique prefix, streams, a bucket, topics, queues, temporary directories)
is deleted at the end, also after Ctrl-C.

What it measures, always next to the raw client doing the same thing in the same run (the
machines are shared and noisy: absolute figures are indicative, the ours/raw ratios are the
result; ours and raw are interleaved round by round so that noise hits both alike):

1. ObjectStore ``put`` / ``get`` of 1 KiB, 1 MiB and 32 MiB objects (``--sizes``): median and
   p90 latency, throughput in MB/s (10^6 bytes/s) and ops/s (operations over the time they
   took). One key per size is overwritten. Backends and their raw reference:

   * ``memory`` owner, in this process: a ``dict``;
   * ``memory`` client in another (spawned) process, rebuilt from ``to_config()`` as workers do:
     a ``multiprocessing.connection`` socket pair to a dict-serving thread in this process (the
     same transport without faasml's protocol; a dict in another process cannot be read
     directly);
   * ``file`` (default root: ``/dev/shm`` when available): ``open().write()`` / ``read()`` in a
     sibling directory of the same file system;
   * ``redis``: redis-py ``SET`` / ``GET``;
   * ``s3`` on moto: boto3 ``put_object`` / ``get_object``.

2. PubSub with 100-byte messages, for ``local``, ``redis``, ``nats`` and ``sqs`` (moto):

   * publish->receive latency (p50, p90, p99): the publisher runs in a separate (spawned)
     process, the subscriber in this one, already waiting. One message at a time (ping-pong,
     so no queue builds up); latency = the subscriber's clock when ``get`` returns minus the
     publisher's clock just before ``publish``. Both are ``CLOCK_MONOTONIC``, which is shared
     by all processes of a Linux host.
   * sustained rate: the producer process publishes N messages one call at a time (each
     waiting for the service's answer), this process consumes them in batches of up to 10 and
     acks each message individually; rate = N / (last ack - first publish). The producer's own
     rate is shown too.

   Raw references: redis-py ``XADD`` + ``XREADGROUP`` + ``XACK`` on a stream; nats-py JetStream
   ``publish`` + pull-subscription ``fetch`` + ``ack`` in its own asyncio loop (stream
   configured like faasml's: file storage, interest retention); boto3 SQS ``send_message`` +
   ``receive_message`` + ``delete_message`` on a FIFO queue (faasml's ``sqs`` publishes through
   an SNS FIFO topic into that kind of queue, so the raw path has one hop less). ``local`` has
   no raw client: absolute figures only.

Targets reported at the end: redis store >= 70% of raw SET/GET throughput at 1 MiB; file store
>= 1 GB/s at 32 MiB; each PubSub >= 70% of its raw client's message rate; p50 publish->receive
under 2 ms for redis and nats. The run exits 0 whatever the figures (it is a benchmark, not a
test), and 1 if a backend failed with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import importlib.metadata
import multiprocessing
import os
import platform
import re
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from faasml.registry import backend_class

KiB = 1024
MiB = 1024 * KiB
DEFAULT_SIZES = (KiB, MiB, 32 * MiB)
STORE_BACKENDS = ("memory", "file", "redis", "s3")
PUBSUB_BACKENDS = ("local", "redis", "nats", "sqs")
ALL_BACKENDS = ("memory", "file", "redis", "s3", "local", "nats", "sqs")
SERVICE_FREE = ("memory", "file", "local")
#: body size of every PubSub message.
PAYLOAD_SIZE = 100
#: operations per round are chosen so that one round moves about this many bytes (1..40 ops).
ROUND_BYTES = 16 * MiB
MAX_OPS_PER_ROUND = 40
#: consumers receive at most this many messages per call (SQS's limit, used for all).
BATCH = 10
#: seconds one receive call may wait before the harness checks the publisher for errors.
RECEIVE_TIMEOUT = 5.0
TARGET_RATIO = 0.70
TARGET_FILE_BYTES_PER_S = 1e9
TARGET_P50_MS = 2.0
AWS_REGION = "us-east-1"

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b?)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------- small helpers


def parse_size(text: str) -> int:
    """Parse ``1024``, ``1k``, ``1KiB``, ``32MiB``, ``1g`` (binary units) into bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}; use e.g. 1024, 1KiB, 32MiB")
    unit = {"": 1, "k": KiB, "m": MiB, "g": 1024 * MiB}[m.group(2).lower()]
    size = int(m.group(1)) * unit
    if size < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte, got {text!r}")
    return size


def human_size(size: int) -> str:
    for unit, factor in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def percentile(values: Sequence[int], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, like numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def num(value: float | None) -> str:
    """A compact number: 3 significant digits, scientific notation when huge."""
    if value is None or value != value:  # None or NaN
        return "-"
    if value >= 1e6:
        return f"{value:.2e}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    if value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.4f}"


def ratio(ours: float | None, raw: float | None) -> float | None:
    if ours is None or raw is None or raw <= 0:
        return None
    return ours / raw


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class BackendFailed(Exception):
    """A backend could not be measured; the message goes into the table."""


# --------------------------------------------------------------------------- header


def machine_header() -> list[str]:
    """Machine facts and the environment notes benchmarks.md asks for."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM"
    except ImportError:
        mem = "RAM ?"
    load = "/".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    packages = ", ".join(
        f"{name} {version_of(dist)}"
        for name, dist in (
            ("faasml", "faasml"),
            ("redis-py", "redis"),
            ("nats-py", "nats-py"),
            ("boto3", "boto3"),
            ("botocore", "botocore"),
            ("moto", "moto"),
        )
    )
    env = {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("OPENBLAS_", "OMP_"))}
    blas = "threadpoolctl not installed"
    try:
        import numpy  # noqa: F401 - loads the BLAS so that threadpoolctl can see it
        from threadpoolctl import threadpool_info

        blas = (
            "; ".join(
                f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')} "
                f"{i.get('num_threads')} threads".replace("  ", " ")
                for i in threadpool_info()
            )
            or "none loaded"
        )
    except ImportError:
        pass
    return [
        f"machine: {os.cpu_count()} cores ({usable} usable), {cpu}, {mem}, "
        f"load {load} (1/5/15 min)",
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.platform()}",
        f"packages: {packages}",
        f"env: {env or 'no OPENBLAS_*/OMP_* variables'}; BLAS (not used here): {blas}",
    ]


# --------------------------------------------------------------------------- options


@dataclasses.dataclass
class Options:
    sizes: list[int]
    repeat: int
    messages: int
    round_trips: int
    sqs_messages: int
    sqs_round_trips: int
    backends: list[str]
    redis_url: str
    nats_url: str
    moto_url: str
    run_id: str

    @property
    def redis_prefix(self) -> str:
        return f"faasml-bench-{self.run_id}:"

    @property
    def nats_prefix(self) -> str:
        return f"BENCH{self.run_id}"

    @property
    def aws_prefix(self) -> str:
        return f"fbench{self.run_id}-"

    @property
    def bucket(self) -> str:
        return f"faasml-bench-{self.run_id}"


def service_of(backend: str, opts: Options) -> tuple[str, str, int] | None:
    """``(service name, host, port)`` a backend needs, or None."""
    if backend == "redis":
        return ("redis", *host_port(opts.redis_url, 6379))
    if backend == "nats":
        return ("nats", *host_port(opts.nats_url, 4222))
    if backend in ("s3", "sqs"):
        return ("moto_server", *host_port(opts.moto_url, 5000))
    return None


def skip_reason(backend: str, opts: Options) -> str | None:
    service = service_of(backend, opts)
    if service is None:
        return None
    name, host, port = service
    if reachable(host, port):
        return None
    return f"skipped: {name} not reachable on {host}:{port}"


def aws_credentials() -> None:
    """Fake credentials for moto, in this process (and the children it spawns) only."""
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = AWS_REGION
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(var, None)


def boto3_client(service: str, endpoint: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=AWS_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


AWS_SECRETS: dict[str, Any] = {
    "access_key_id": {"$env": "AWS_ACCESS_KEY_ID"},
    "secret_access_key": {"$env": "AWS_SECRET_ACCESS_KEY"},
}


class Cleanup:
    """Undo actions run in reverse order, each guarded, with a line of report per action."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], str | None]]] = []
        self.report: list[str] = []

    def add(self, what: str, action: Callable[[], str | None]) -> None:
        self._actions.append((what, action))

    def add_once(self, what: str, action: Callable[[], str | None]) -> None:
        """Like :meth:`add`, unless an action with the same name is registered already."""
        if all(name != what for name, _ in self._actions):
            self.add(what, action)

    def run(self) -> None:
        while self._actions:
            what, action = self._actions.pop()
            try:
                done = action()
                if done:
                    self.report.append(done)
            except BaseException as exc:  # keep cleaning up whatever happens
                self.report.append(f"FAILED to clean up {what}: {exc!r}")


# --------------------------------------------------------------------------- ObjectStore


@dataclasses.dataclass
class StoreOps:
    """put/get of one fixed key, on faasml's store or on the raw client."""

    put: Callable[[bytes], object]
    get: Callable[[], bytes]


Timings = dict[str, list[int]]  # "ours put" -> latencies in ns


def ops_per_round(size: int) -> int:
    return max(1, min(MAX_OPS_PER_ROUND, ROUND_BYTES // size))


def time_store(ours: StoreOps, raw: StoreOps, size: int, rounds: int) -> Timings:
    """Rounds of puts then gets; within a round ours and raw alternate operation by operation
    (and swap who goes first every round), so that load from other processes hits both alike.
    """
    data = os.urandom(size)
    impls = {"ours": ours, "raw": raw}
    for impl in impls.values():  # warm-up: connections, buckets, first allocation
        impl.put(data)
        if len(impl.get()) != size:
            raise BackendFailed(f"read back a wrong size after a {size}-byte put")
    out: Timings = {f"{name} {op}": [] for name in impls for op in ("put", "get")}
    per_round = ops_per_round(size)
    clock = time.perf_counter_ns
    for r in range(rounds):
        order = ["ours", "raw"] if r % 2 == 0 else ["raw", "ours"]
        for _ in range(per_round):
            for name in order:
                put, record = impls[name].put, out[f"{name} put"]
                t0 = clock()
                put(data)
                record.append(clock() - t0)
        for _ in range(per_round):
            for name in order:
                get, record = impls[name].get, out[f"{name} get"]
                t0 = clock()
                got = get()
                record.append(clock() - t0)
                if len(got) != size:
                    raise BackendFailed(f"{name} get returned {len(got)} bytes, not {size}")
    return out


def store_ops(store: Any, key: str) -> StoreOps:
    return StoreOps(put=lambda data: store.put(key, data), get=lambda: store.get(key))


def _serve_dict(conn: Connection) -> None:
    """Raw reference for the memory client: a dict served over a multiprocessing connection."""
    objects: dict[str, bytes] = {}
    with contextlib.suppress(EOFError, OSError):
        while True:
            op, key = conn.recv()
            if op == "put":
                objects[key] = conn.recv_bytes()
                conn.send(None)
            elif op == "get":
                conn.send_bytes(objects[key])
            else:
                return


def _memory_client_child(
    config: dict[str, Any], raw: Connection, sizes: list[int], rounds: int, result: Connection
) -> None:
    """Runs in a spawned process: time faasml's memory client against the raw socket pair."""
    try:
        store = backend_class("storage", "memory")(**config)
        try:

            def raw_put(key: str, data: bytes) -> None:
                raw.send(("put", key))
                raw.send_bytes(data)
                raw.recv()

            def raw_get(key: str) -> bytes:
                raw.send(("get", key))
                return raw.recv_bytes()

            timings: dict[int, Timings] = {}
            for size in sizes:
                key = f"bench/client/{size}"
                raw_ops = StoreOps(
                    put=functools.partial(raw_put, f"raw/{size}"),
                    get=functools.partial(raw_get, f"raw/{size}"),
                )
                timings[size] = time_store(store_ops(store, key), raw_ops, size, rounds)
            result.send(("ok", timings))
        finally:
            store.close()
            with contextlib.suppress(OSError):
                raw.send(("stop", ""))
    except KeyboardInterrupt:
        pass
    except BaseException:
        result.send(("error", traceback.format_exc(limit=4)))


@dataclasses.dataclass
class StoreRow:
    backend: str
    raw_label: str
    size: int = 0
    timings: Timings | None = None
    note: str | None = None  # "skipped: ..." or "error: ..."


def bench_memory_client(owner: Any, opts: Options, ctx: Any) -> dict[int, Timings]:
    """Start a spawned client process and collect its timings."""
    raw_parent, raw_child = ctx.Pipe()
    result_parent, result_child = ctx.Pipe()
    server = threading.Thread(target=_serve_dict, args=(raw_parent,), daemon=True)
    server.start()
    proc = ctx.Process(
        target=_memory_client_child,
        args=(owner.to_config(), raw_child, opts.sizes, opts.repeat, result_child),
        daemon=True,
    )
    proc.start()
    raw_child.close()
    result_child.close()
    try:
        deadline = time.monotonic() + 600
        while not result_parent.poll(0.5):
            if not proc.is_alive():
                raise BackendFailed(f"memory client process died (exit code {proc.exitcode})")
            if time.monotonic() > deadline:
                raise BackendFailed("memory client process timed out")
        status, value = result_parent.recv()
        if status != "ok":
            raise BackendFailed(f"memory client process failed: {value.strip().splitlines()[-1]}")
        timings: dict[int, Timings] = value
        return timings
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        server.join(5)
        raw_parent.close()
        result_parent.close()


def bench_stores(opts: Options, cleanup: Cleanup, ctx: Any) -> list[StoreRow]:
    rows: list[StoreRow] = []
    wanted = [b for b in STORE_BACKENDS if b in opts.backends]
    for backend in wanted:
        reason = skip_reason(backend, opts)
        if reason is not None:
            labels = [backend] if backend != "memory" else ["memory (owner)", "memory (client)"]
            rows.extend(StoreRow(label, "", note=reason) for label in labels)
            continue
        try:
            rows.extend(_bench_store_backend(backend, opts, cleanup, ctx))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            rows.append(StoreRow(backend, "", note=f"error: {type(exc).__name__}: {msg}"))
    return rows


def _bench_store_backend(backend: str, opts: Options, cleanup: Cleanup, ctx: Any) -> list[StoreRow]:
    """Build faasml's store and the raw reference for ``backend`` and time every size."""
    if backend == "memory":
        return _bench_memory(opts, cleanup, ctx)
    if backend == "file":
        return _bench_file(opts, cleanup)
    if backend == "redis":
        return _bench_redis_store(opts, cleanup)
    if backend == "s3":
        return _bench_s3(opts, cleanup)
    raise AssertionError(backend)


def _time_sizes(
    label: str, raw_label: str, store: Any, make_raw: Callable[[int], StoreOps], opts: Options
) -> list[StoreRow]:
    rows: list[StoreRow] = []
    for size in opts.sizes:
        progress(f"{label} {human_size(size)}")
        timings = time_store(store_ops(store, f"bench/{size}"), make_raw(size), size, opts.repeat)
        rows.append(StoreRow(label, raw_label, size, timings))
    return rows


def _bench_memory(opts: Options, cleanup: Cleanup, ctx: Any) -> list[StoreRow]:
    from faasml.storage.memory import MemoryObjectStore

    owner = MemoryObjectStore()
    cleanup.add("memory store", owner.close)
    objects: dict[str, bytes] = {}

    def dict_raw(size: int) -> StoreOps:
        key = f"raw/{size}"
        return StoreOps(
            put=functools.partial(objects.__setitem__, key),
            get=functools.partial(objects.__getitem__, key),
        )

    try:
        rows = _time_sizes("memory (owner)", "dict", owner, dict_raw, opts)
        progress("memory (client in another process), all sizes")
        try:
            per_size = bench_memory_client(owner, opts, ctx)
        except BackendFailed as exc:
            rows.append(StoreRow("memory (client)", "", note=f"error: {exc}"))
        else:
            for size in opts.sizes:
                rows.append(StoreRow("memory (client)", "mp socket", size, per_size[size]))
    finally:
        owner.close()
        objects.clear()
    return rows


def _bench_file(opts: Options, cleanup: Cleanup) -> list[StoreRow]:
    import shutil

    from faasml.storage.file import FileObjectStore

    store = FileObjectStore()

    def remove_store() -> str:
        store.close()
        return f"removed file store {store.root}"

    cleanup.add("file store", remove_store)
    raw_dir = tempfile.mkdtemp(prefix="faasml-bench-raw-", dir=os.path.dirname(store.root))

    def remove_raw_dir() -> str:
        shutil.rmtree(raw_dir, ignore_errors=True)
        return f"removed {raw_dir}"

    cleanup.add("raw file dir", remove_raw_dir)
    print_note(f"file store root: {store.root} (raw files in {raw_dir})")

    def file_raw(size: int) -> StoreOps:
        path = os.path.join(raw_dir, f"obj-{size}")

        def put(data: bytes) -> None:
            with open(path, "wb") as f:
                f.write(data)

        def get() -> bytes:
            with open(path, "rb") as f:
                return f.read()

        return StoreOps(put, get)

    return _time_sizes("file", "open().write/read", store, file_raw, opts)


def _bench_redis_store(opts: Options, cleanup: Cleanup) -> list[StoreRow]:
    import redis

    from faasml.storage.redis import RedisObjectStore

    client: Any = redis.Redis.from_url(opts.redis_url)
    cleanup.add("redis client", client.close)
    cleanup.add_once("redis keys", functools.partial(drop_redis_keys, client, opts.redis_prefix))
    store = RedisObjectStore(opts.redis_url, prefix=opts.redis_prefix + "store:")
    cleanup.add("redis store", store.close)
    print_note(f"redis server {client.info('server').get('redis_version', '?')}")

    def redis_raw(size: int) -> StoreOps:
        key = f"{opts.redis_prefix}raw:obj:{size}"
        return StoreOps(
            put=functools.partial(client.set, key), get=functools.partial(client.get, key)
        )

    return _time_sizes("redis", "redis-py SET/GET", store, redis_raw, opts)


def _bench_s3(opts: Options, cleanup: Cleanup) -> list[StoreRow]:
    from faasml.storage.s3 import S3ObjectStore

    client = boto3_client("s3", opts.moto_url)
    cleanup.add("s3 client", client.close)
    cleanup.add("s3 bucket", functools.partial(drop_bucket, client, opts.bucket))
    store = S3ObjectStore(
        opts.bucket,
        region=AWS_REGION,
        endpoint_url=opts.moto_url,
        create_bucket=True,
        **AWS_SECRETS,
    )
    cleanup.add("s3 store", store.close)

    def s3_raw(size: int) -> StoreOps:
        key = f"raw/{size}"

        def put(data: bytes) -> object:
            return client.put_object(Bucket=opts.bucket, Key=key, Body=data)

        def get() -> bytes:
            body: bytes = client.get_object(Bucket=opts.bucket, Key=key)["Body"].read()
            return body

        return StoreOps(put, get)

    return _time_sizes("s3", "boto3 put/get_object", store, s3_raw, opts)


def drop_redis_keys(client: Any, prefix: str) -> str:
    count = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            count += client.unlink(*batch)
            batch = []
    if batch:
        count += client.unlink(*batch)
    return f"deleted {count} redis keys {prefix}*"


def drop_bucket(client: Any, bucket: str) -> str:
    from botocore.exceptions import ClientError

    count = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
                count += 1
        client.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return f"s3 bucket {bucket} was not created"
        raise
    return f"deleted s3 bucket {bucket} ({count} objects)"


_NOTES: list[str] = []


def print_note(text: str) -> None:
    _NOTES.append(text)


# --------------------------------------------------------------------------- PubSub: messages


def make_payload(seq: int, t_ns: int) -> bytes:
    """100 ASCII bytes (so raw SQS can send them as text): sequence number and send time."""
    head = b"%010d:%020d:" % (seq, t_ns)
    return head + b"x" * (PAYLOAD_SIZE - len(head))


def parse_payload(data: bytes) -> tuple[int, int]:
    return int(data[:10]), int(data[11:31])


# --------------------------------------------------------------------------- PubSub: publishers
# They run in the spawned publisher process; `spec` says which one to build.


class Publisher:
    def publish_timed(self, seq: int) -> None:
        """Publish one message stamped with the clock just before the publish call."""
        self.publish(make_payload(seq, time.monotonic_ns()))

    def burst(self, first: int, count: int) -> tuple[int, int]:
        """Publish ``count`` messages one call at a time; return first and last clock (ns)."""
        payloads = [make_payload(first + i, 0) for i in range(count)]
        publish = self.publish
        t0 = time.monotonic_ns()
        for payload in payloads:
            publish(payload)
        return t0, time.monotonic_ns()

    def publish(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FaasmlPublisher(Publisher):
    def __init__(self, spec: dict[str, Any]) -> None:
        self.pubsub = backend_class("pubsub", spec["backend"])(**spec["config"])
        self.topic: str = spec["topic"]

    def publish(self, data: bytes) -> None:
        self.pubsub.publish(self.topic, data)

    def close(self) -> None:
        self.pubsub.close()


class RedisRawPublisher(Publisher):
    def __init__(self, spec: dict[str, Any]) -> None:
        import redis

        self.client = redis.Redis.from_url(spec["url"])
        self.stream: str = spec["stream"]

    def publish(self, data: bytes) -> None:
        self.client.xadd(self.stream, {b"d": data})

    def close(self) -> None:
        self.client.close()


class NatsRawPublisher(Publisher):
    def __init__(self, spec: dict[str, Any]) -> None:
        import nats

        self.loop = asyncio.new_event_loop()
        self.nc = self.loop.run_until_complete(nats.connect(spec["url"]))
        self.js = self.nc.jetstream()
        self.subject: str = spec["subject"]
        self.stream: str = spec["stream"]

    def publish(self, data: bytes) -> None:
        self.loop.run_until_complete(self.js.publish(self.subject, data, stream=self.stream))

    def publish_timed(self, seq: int) -> None:
        async def send() -> None:
            data = make_payload(seq, time.monotonic_ns())
            await self.js.publish(self.subject, data, stream=self.stream)

        self.loop.run_until_complete(send())

    def burst(self, first: int, count: int) -> tuple[int, int]:
        payloads = [make_payload(first + i, 0) for i in range(count)]

        async def send() -> tuple[int, int]:
            publish = self.js.publish
            t0 = time.monotonic_ns()
            for data in payloads:
                await publish(self.subject, data, stream=self.stream)
            return t0, time.monotonic_ns()

        return self.loop.run_until_complete(send())

    def close(self) -> None:
        self.loop.run_until_complete(self.nc.close())
        self.loop.close()


class SqsRawPublisher(Publisher):
    def __init__(self, spec: dict[str, Any]) -> None:
        self.client = boto3_client("sqs", spec["endpoint"])
        self.queue_url: str = spec["queue_url"]

    def publish(self, data: bytes) -> None:
        self.client.send_message(
            QueueUrl=self.queue_url,
            MessageBody=data.decode("ascii"),
            MessageGroupId=uuid.uuid4().hex,
            MessageDeduplicationId=uuid.uuid4().hex,
        )

    def close(self) -> None:
        self.client.close()


PUBLISHERS: dict[str, Callable[[dict[str, Any]], Publisher]] = {
    "faasml": FaasmlPublisher,
    "redis": RedisRawPublisher,
    "nats": NatsRawPublisher,
    "sqs": SqsRawPublisher,
}


def _publisher_child(conn: Connection) -> None:
    """Main loop of the publisher process: every command gets one ("ok"|"error", value) reply."""
    publishers: dict[str, Publisher] = {}
    try:
        while True:
            try:
                cmd, name, arg = conn.recv()
            except EOFError:
                return
            if cmd == "exit":
                return
            try:
                value: Any = None
                if cmd == "open":
                    publishers[name] = PUBLISHERS[arg["kind"]](arg)
                elif cmd == "pub":
                    publishers[name].publish_timed(arg)
                elif cmd == "burst":
                    value = publishers[name].burst(*arg)
                elif cmd == "close":
                    publishers.pop(name).close()
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                conn.send(("ok", value))
            except Exception:
                conn.send(("error", traceback.format_exc(limit=4)))
    except KeyboardInterrupt:
        pass
    finally:
        for pub in publishers.values():
            with contextlib.suppress(Exception):
                pub.close()


class PublisherProcess:
    """The spawned process that publishes; commands go over a pipe."""

    def __init__(self, ctx: Any) -> None:
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_publisher_child, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        self._stopped = False

    def send(self, cmd: str, name: str, arg: Any = None) -> None:
        self._conn.send((cmd, name, arg))

    def reply(self, timeout: float = 60.0) -> Any:
        if not self._conn.poll(timeout):
            raise BackendFailed(f"the publisher process did not answer within {timeout:.0f} s")
        status, value = self._conn.recv()
        if status != "ok":
            last = value.strip().splitlines()[-1]
            raise BackendFailed(f"publisher failed: {last}")
        return value

    def call(self, cmd: str, name: str, arg: Any = None, timeout: float = 60.0) -> Any:
        self.send(cmd, name, arg)
        return self.reply(timeout)

    def check(self) -> None:
        """Raise if the publisher has already reported an error or died."""
        if self._conn.poll(0):
            status, value = self._conn.recv()
            if status != "ok":
                raise BackendFailed(f"publisher failed: {value.strip().splitlines()[-1]}")
            raise BackendFailed("publisher answered out of turn")
        if not self._proc.is_alive():
            raise BackendFailed(f"publisher process died (exit code {self._proc.exitcode})")

    def stop(self) -> None:
        """Ask the process to close its publishers and exit; terminate it if it does not."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(OSError, EOFError):
            self._conn.send(("exit", "", None))
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()


# --------------------------------------------------------------------------- PubSub: receivers
# They run in this process.

Received = list[tuple[bytes, Callable[[], object]]]  # (body, ack) pairs


class Receiver:
    """Consumer side of one measurement; subclasses implement :meth:`receive`."""

    def receive(self, count: int, timeout: float) -> Received:
        raise NotImplementedError

    def finish(self) -> None:
        """Make sure every ack was sent (for backends that ack in the background)."""

    def close(self) -> None:
        pass

    def round_trips(self, pub: PublisherProcess, name: str, first: int, n: int) -> list[int]:
        latencies: list[int] = []
        for seq in range(first, first + n):
            pub.send("pub", name, seq)
            deadline = time.monotonic() + 60
            while True:
                got = self.receive(1, RECEIVE_TIMEOUT)
                t = time.monotonic_ns()
                if not got:
                    pub.check()
                    if time.monotonic() > deadline:
                        raise BackendFailed(f"message {seq} did not arrive within 60 s")
                    continue
                found = False
                for body, ack in got:
                    ack()
                    got_seq, sent = parse_payload(body)
                    if got_seq == seq:
                        latencies.append(t - sent)
                        found = True
                if found:
                    break
            pub.reply()
        return latencies

    def consume(self, first: int, n: int, timeout: float) -> int:
        """Receive and ack messages ``first .. first+n-1``; return the clock after the last ack."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < n:
            got = self.receive(min(BATCH, n - len(seen)), RECEIVE_TIMEOUT)
            for body, ack in got:
                ack()
                seq = parse_payload(body)[0]
                if first <= seq < first + n:
                    seen.add(seq)
            if time.monotonic() > deadline:
                raise BackendFailed(f"received {len(seen)} of {n} messages within {timeout:.0f} s")
        self.finish()
        return time.monotonic_ns()


class FaasmlReceiver(Receiver):
    def __init__(self, pubsub: Any, topic: str) -> None:
        self.sub = pubsub.subscribe(topic, "bench")

    def receive(self, count: int, timeout: float) -> Received:
        return [(m.data, m.ack) for m in self.sub.get_many(count, timeout)]

    def finish(self) -> None:
        flush = getattr(self.sub, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        self.sub.close()


class RedisRawReceiver(Receiver):
    def __init__(self, url: str, stream: str) -> None:
        import redis

        self.client: Any = redis.Redis.from_url(url)
        self.stream = stream
        self.client.xgroup_create(stream, "bench", id="$", mkstream=True)

    def receive(self, count: int, timeout: float) -> Received:
        reply = self.client.xreadgroup(
            "bench", "c1", {self.stream: ">"}, count=count, block=int(timeout * 1000)
        )
        if not reply:
            return []
        ack = functools.partial(self.client.xack, self.stream, "bench")
        return [(fields[b"d"], functools.partial(ack, eid)) for eid, fields in reply[0][1]]

    def close(self) -> None:
        self.client.close()


class SqsRawReceiver(Receiver):
    def __init__(self, endpoint: str, queue_url: str) -> None:
        self.client = boto3_client("sqs", endpoint)
        self.queue_url = queue_url

    def receive(self, count: int, timeout: float) -> Received:
        reply = self.client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=count, WaitTimeSeconds=int(timeout)
        )
        delete = functools.partial(self.client.delete_message, QueueUrl=self.queue_url)
        return [
            (m["Body"].encode("ascii"), functools.partial(delete, ReceiptHandle=m["ReceiptHandle"]))
            for m in reply.get("Messages", [])
        ]

    def close(self) -> None:
        self.client.close()


class NatsRawReceiver(Receiver):
    """nats-py is asyncio-only: the loops themselves are coroutines on a private event loop."""

    def __init__(self, url: str, stream: str, subject: str) -> None:
        import nats
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        self.loop = asyncio.new_event_loop()

        async def setup() -> tuple[Any, Any]:
            nc = await nats.connect(url)
            js = nc.jetstream()
            await js.add_stream(
                StreamConfig(
                    name=stream,
                    subjects=[subject],
                    retention=RetentionPolicy.INTEREST,
                    storage=StorageType.FILE,
                )
            )
            psub = await js.pull_subscribe(subject, durable="bench", stream=stream)
            return nc, psub

        self.nc, self.psub = self.loop.run_until_complete(setup())

    async def _fetch(self, count: int, timeout: float) -> list[Any]:
        import nats.errors

        try:
            msgs: list[Any] = await self.psub.fetch(count, timeout=timeout)
        except (asyncio.TimeoutError, nats.errors.TimeoutError):
            return []
        return msgs

    def round_trips(self, pub: PublisherProcess, name: str, first: int, n: int) -> list[int]:
        async def run() -> list[int]:
            latencies: list[int] = []
            for seq in range(first, first + n):
                pub.send("pub", name, seq)
                deadline = time.monotonic() + 60
                while True:
                    msgs = await self._fetch(1, RECEIVE_TIMEOUT)
                    t = time.monotonic_ns()
                    if not msgs:
                        pub.check()
                        if time.monotonic() > deadline:
                            raise BackendFailed(f"message {seq} did not arrive within 60 s")
                        continue
                    found = False
                    for msg in msgs:
                        await msg.ack()
                        got_seq, sent = parse_payload(msg.data)
                        if got_seq == seq:
                            latencies.append(t - sent)
                            found = True
                    if found:
                        break
                pub.reply()
            return latencies

        return self.loop.run_until_complete(run())

    def consume(self, first: int, n: int, timeout: float) -> int:
        async def run() -> int:
            seen: set[int] = set()
            deadline = time.monotonic() + timeout
            while len(seen) < n:
                for msg in await self._fetch(min(BATCH, n - len(seen)), RECEIVE_TIMEOUT):
                    await msg.ack()
                    seq = parse_payload(msg.data)[0]
                    if first <= seq < first + n:
                        seen.add(seq)
                if time.monotonic() > deadline:
                    raise BackendFailed(f"received {len(seen)} of {n} within {timeout:.0f} s")
            await self.nc.flush()  # the acks are published: make sure they left
            return time.monotonic_ns()

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.nc.close())
        self.loop.close()


# --------------------------------------------------------------------------- PubSub: driver


@dataclasses.dataclass
class Rate:
    messages: int = 0
    seconds: float = 0.0  # first publish -> last ack, summed over runs
    publish_seconds: float = 0.0  # first publish -> last publish returned, summed

    @property
    def per_second(self) -> float | None:
        return self.messages / self.seconds if self.seconds > 0 else None

    @property
    def publish_per_second(self) -> float | None:
        return self.messages / self.publish_seconds if self.publish_seconds > 0 else None


@dataclasses.dataclass
class PubSubRow:
    backend: str
    raw_label: str = ""
    latency: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # impl -> ns
    rate: dict[str, Rate] = dataclasses.field(default_factory=dict)  # impl -> Rate
    note: str | None = None


@dataclasses.dataclass
class Side:
    """One implementation (ours or raw) of one backend: a receiver and a publisher name."""

    receiver: Receiver
    publisher: str


class PubSubBench:
    """Builds both sides of each backend, then runs latency and rate, ours and raw interleaved."""

    def __init__(self, opts: Options, cleanup: Cleanup, ctx: Any) -> None:
        self.opts = opts
        self.cleanup = cleanup
        self.ctx = ctx
        self._pub: PublisherProcess | None = None
        self._seq = 0

    @property
    def pub(self) -> PublisherProcess:
        if self._pub is None:
            self._pub = PublisherProcess(self.ctx)
            pub = self._pub
            self.cleanup.add("publisher process", lambda: pub.stop())
        return self._pub

    def stop_publisher(self) -> None:
        """Stop the publisher process; the next backend starts a fresh one.

        Called after every backend, so that a failed run cannot leave a stale reply in the pipe
        and so that publishers are closed before their streams and queues are deleted.
        """
        if self._pub is not None:
            self._pub.stop()
            self._pub = None

    def open_side(self, name: str, spec: dict[str, Any], receiver: Receiver) -> Side:
        self.cleanup.add(f"{name} receiver", lambda: receiver.close())
        # The publisher process closes its publishers when it exits (see stop_publisher).
        self.pub.call("open", name, spec)
        return Side(receiver, name)

    def next_seqs(self, n: int) -> int:
        first = self._seq
        self._seq += n
        return first

    def latency(self, side: Side, n: int) -> list[int]:
        warm = side.receiver.round_trips(self.pub, side.publisher, self.next_seqs(5), 5)
        del warm
        return side.receiver.round_trips(self.pub, side.publisher, self.next_seqs(n), n)

    def rate(self, side: Side, n: int, into: Rate) -> None:
        timeout = 120.0 + n * 0.05
        first = self.next_seqs(n)
        self.pub.send("burst", side.publisher, (first, n))
        t_end = side.receiver.consume(first, n, timeout)
        t_first, t_last = self.pub.reply(timeout)
        into.messages += n
        into.seconds += (t_end - t_first) / 1e9
        into.publish_seconds += (t_last - t_first) / 1e9

    def run(self, backend: str) -> PubSubRow:
        sides, raw_label = self.build(backend)
        sqs = backend == "sqs"
        n_lat = self.opts.sqs_round_trips if sqs else self.opts.round_trips
        n_msg = self.opts.sqs_messages if sqs else self.opts.messages
        row = PubSubRow(backend, raw_label)
        for impl, side in sides.items():  # warm-up: a small burst through each side
            progress(f"{backend} {impl}: warm-up")
            self.rate(side, min(20, n_msg), Rate())
        # ABBA order: ours, raw, raw, ours (halves), so that drift in load hits both alike.
        order = list(sides)
        schedule = order + order[::-1]
        halves = {"lat": (n_lat + 1) // 2, "msg": (n_msg + 1) // 2}
        for impl in schedule:
            progress(f"{backend} {impl}: {halves['lat']} round trips")
            lat = self.latency(sides[impl], halves["lat"])
            row.latency.setdefault(impl, []).extend(lat)
        for impl in schedule:
            progress(f"{backend} {impl}: {halves['msg']} messages")
            self.rate(sides[impl], halves["msg"], row.rate.setdefault(impl, Rate()))
        return row

    def build(self, backend: str) -> tuple[dict[str, Side], str]:
        """Create ours and raw (when there is one) for ``backend``; register their cleanup."""
        opts = self.opts
        sides: dict[str, Side] = {}
        if backend == "local":
            from faasml.pubsub.local import LocalPubSub

            ours: Any = LocalPubSub()
            self.cleanup.add("local pubsub", lambda: (ours.close(), f"removed {ours.path}")[1])
            print_note(f"local pubsub queue: {ours.path}")
            sides["ours"] = self.open_ours("local", ours)
            return sides, ""

        if backend == "redis":
            import redis

            from faasml.pubsub.redis import RedisPubSub

            admin = redis.Redis.from_url(opts.redis_url)
            self.cleanup.add("redis admin client", lambda: admin.close())
            self.cleanup.add_once("redis keys", lambda: drop_redis_keys(admin, opts.redis_prefix))
            ours = RedisPubSub(opts.redis_url, prefix=opts.redis_prefix + "ps:")
            self.cleanup.add("redis pubsub", lambda: ours.close())
            sides["ours"] = self.open_ours("redis", ours)
            stream = f"{opts.redis_prefix}raw:stream"
            spec = {"kind": "redis", "url": opts.redis_url, "stream": stream}
            sides["raw"] = self.open_side(
                "redis-raw", spec, RedisRawReceiver(opts.redis_url, stream)
            )
            return sides, "redis-py XADD/XREADGROUP/XACK"

        if backend == "nats":
            from faasml.pubsub.nats import NATSPubSub

            ours = NATSPubSub(opts.nats_url, stream_prefix=opts.nats_prefix)
            self.cleanup.add("nats streams", lambda: drop_nats_streams(opts.nats_url, opts))
            self.cleanup.add("nats pubsub", lambda: ours.close())
            with contextlib.suppress(Exception):
                v = ours._nc.connected_server_version
                print_note(f"nats server {v.major}.{v.minor}.{v.patch}")
            sides["ours"] = self.open_ours("nats", ours)
            stream = f"{opts.nats_prefix}_RAW"
            subject = f"bench.{opts.nats_prefix}.raw"
            spec = {"kind": "nats", "url": opts.nats_url, "stream": stream, "subject": subject}
            sides["raw"] = self.open_side(
                "nats-raw", spec, NatsRawReceiver(opts.nats_url, stream, subject)
            )
            return sides, "nats-py JetStream publish/fetch/ack"

        if backend == "sqs":
            from faasml.pubsub.sqs import SQSPubSub

            self.cleanup.add("sqs topics and queues", lambda: drop_aws_prefix(opts))
            ours = SQSPubSub(
                region=AWS_REGION,
                endpoint_url=opts.moto_url,
                prefix=opts.aws_prefix,
                **AWS_SECRETS,
            )
            self.cleanup.add("sqs pubsub", lambda: ours.close())
            sides["ours"] = self.open_ours("sqs", ours)
            sqs = boto3_client("sqs", opts.moto_url)
            self.cleanup.add("sqs client", lambda: sqs.close())
            queue_url = sqs.create_queue(
                QueueName=f"{opts.aws_prefix}raw.fifo",
                Attributes={
                    "FifoQueue": "true",
                    "ContentBasedDeduplication": "false",
                    "DeduplicationScope": "messageGroup",
                    "FifoThroughputLimit": "perMessageGroupId",
                },
            )["QueueUrl"]
            spec = {"kind": "sqs", "endpoint": opts.moto_url, "queue_url": queue_url}
            sides["raw"] = self.open_side("sqs-raw", spec, SqsRawReceiver(opts.moto_url, queue_url))
            return sides, "boto3 SQS send/receive/delete_message"

        raise AssertionError(backend)

    def open_ours(self, backend: str, pubsub: Any) -> Side:
        """The subscriber uses ``pubsub``; the publisher process rebuilds it from to_config()."""
        topic = "bench"
        receiver = FaasmlReceiver(pubsub, topic)  # the group exists before anything is published
        spec = {"kind": "faasml", "backend": backend, "config": pubsub.to_config(), "topic": topic}
        return self.open_side(f"{backend}-ours", spec, receiver)


def drop_nats_streams(url: str, opts: Options) -> str:
    import nats

    async def drop() -> list[str]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            names = [info.config.name for info in await js.streams_info()]
            mine = [n for n in names if n and n.startswith(opts.nats_prefix + "_")]
            for name in mine:
                await js.delete_stream(name)
            return mine
        finally:
            await nc.close()

    loop = asyncio.new_event_loop()
    try:
        dropped = loop.run_until_complete(drop())
    finally:
        loop.close()
    return f"deleted {len(dropped)} nats streams {opts.nats_prefix}_*"


def drop_aws_prefix(opts: Options) -> str:
    sns, sqs = boto3_client("sns", opts.moto_url), boto3_client("sqs", opts.moto_url)
    try:
        queues = sqs.list_queues(QueueNamePrefix=opts.aws_prefix).get("QueueUrls", [])
        for url in queues:
            sqs.delete_queue(QueueUrl=url)
        topics = 0
        for page in sns.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                if topic["TopicArn"].split(":")[-1].startswith(opts.aws_prefix):
                    sns.delete_topic(TopicArn=topic["TopicArn"])  # also its subscriptions
                    topics += 1
    finally:
        sns.close()
        sqs.close()
    return f"deleted {len(queues)} sqs queues and {topics} sns topics {opts.aws_prefix}*"


def bench_pubsubs(opts: Options, cleanup: Cleanup, ctx: Any) -> list[PubSubRow]:
    rows: list[PubSubRow] = []
    bench = PubSubBench(opts, cleanup, ctx)
    for backend in [b for b in PUBSUB_BACKENDS if b in opts.backends]:
        reason = skip_reason(backend, opts)
        if reason is not None:
            rows.append(PubSubRow(backend, note=reason))
            continue
        try:
            rows.append(bench.run(backend))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            text = str(exc).strip()
            msg = text.splitlines()[0] if text else repr(exc)
            rows.append(PubSubRow(backend, note=f"error: {type(exc).__name__}: {msg}"))
        finally:
            bench.stop_publisher()
    return rows


# --------------------------------------------------------------------------- report


def store_stats(lat: list[int], size: int) -> tuple[float, float, float, float]:
    """(p50 ms, p90 ms, MB/s, ops/s) of a list of latencies in ns."""
    total_s = sum(lat) / 1e9
    return (
        percentile(lat, 50) / 1e6,
        percentile(lat, 90) / 1e6,
        size * len(lat) / total_s / 1e6,
        len(lat) / total_s,
    )


def print_store_table(rows: list[StoreRow], opts: Options) -> None:
    print()
    print(
        f"1. ObjectStore put/get: {opts.repeat} rounds (ours/raw alternating); ops per round: "
        + ", ".join(f"{human_size(s)} x{ops_per_round(s)}" for s in opts.sizes)
        + "; MB = 10^6 bytes"
    )
    head = (
        f"{'backend':16s} {'size':>7s} {'op':3s} {'n':>4s} | {'p50 ms':>8s} {'p90 ms':>8s} "
        f"{'MB/s':>8s} {'ops/s':>8s} | {'raw p50':>8s} {'raw p90':>8s} {'raw MB/s':>8s} "
        f"{'raw ops/s':>9s} | {'ours/raw':>8s}  raw"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        if row.note is not None:
            print(f"{row.backend:16s} {row.note}")
            continue
        assert row.timings is not None
        for op in ("put", "get"):
            ours = store_stats(row.timings[f"ours {op}"], row.size)
            raw = store_stats(row.timings[f"raw {op}"], row.size)
            r = ratio(ours[2], raw[2])
            print(
                f"{row.backend:16s} {human_size(row.size):>7s} {op:3s} "
                f"{len(row.timings[f'ours {op}']):4d} | "
                + " ".join(f"{num(v):>8s}" for v in ours)
                + " | "
                + " ".join(f"{num(v):>8s}" for v in raw[:3])
                + f" {num(raw[3]):>9s} | {num(r):>8s}  {row.raw_label}"
            )
    print(
        "raw: dict = a dict in this process (keeps a reference; the store copies the bytes); "
        "mp socket = multiprocessing\n"
        "     socket pair from the client process to a dict-serving thread here (same transport, "
        "no faasml protocol);\n"
        "     ours/raw = throughput ratio (MB/s), > 1 means faasml was faster"
    )


def print_pubsub_tables(rows: list[PubSubRow], opts: Options) -> None:
    print()
    print(
        f"2a. PubSub publish->receive latency, {PAYLOAD_SIZE}-byte messages, publisher in "
        "another process, subscriber waiting in this one, one message at a time "
        f"({opts.round_trips} round trips, sqs {opts.sqs_round_trips}; ours and raw in ABBA "
        "halves)"
    )
    head = (
        f"{'backend':8s} {'n':>5s} | {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} | "
        f"{'raw p50':>8s} {'raw p90':>8s} {'raw p99':>8s} | {'p50 ours/raw':>12s}  raw"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        if row.note is not None:
            print(f"{row.backend:8s} {row.note}")
            continue
        ours = row.latency["ours"]
        raw = row.latency.get("raw")
        o = [percentile(ours, q) / 1e6 for q in (50, 90, 99)]
        w = [percentile(raw, q) / 1e6 for q in (50, 90, 99)] if raw else [None] * 3
        print(
            f"{row.backend:8s} {len(ours):5d} | "
            + " ".join(f"{num(v):>8s}" for v in o)
            + " | "
            + " ".join(f"{num(v):>8s}" for v in w)
            + f" | {num(ratio(o[0], w[0])):>12s}  {row.raw_label or '(no raw client)'}"
        )
    print()
    print(
        f"2b. PubSub sustained rate: one producer process (one publish call per message), one "
        f"consumer here (batches of <= {BATCH}, ack per message); {opts.messages} messages "
        f"(sqs {opts.sqs_messages}) per side, in ABBA halves"
    )
    head = (
        f"{'backend':8s} {'msgs':>5s} | {'msg/s':>8s} {'pub msg/s':>9s} | "
        f"{'raw msg/s':>9s} {'raw pub/s':>9s} | {'ours/raw':>8s}  raw"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        if row.note is not None:
            print(f"{row.backend:8s} {row.note}")
            continue
        ours_rate = row.rate["ours"]
        raw_rate = row.rate.get("raw")
        print(
            f"{row.backend:8s} {ours_rate.messages:5d} | {num(ours_rate.per_second):>8s} "
            f"{num(ours_rate.publish_per_second):>9s} | "
            f"{num(raw_rate.per_second if raw_rate else None):>9s} "
            f"{num(raw_rate.publish_per_second if raw_rate else None):>9s} | "
            f"{num(ratio(ours_rate.per_second, raw_rate.per_second if raw_rate else None)):>8s}"
            f"  {row.raw_label or '(no raw client)'}"
        )
    print(
        "msg/s = messages / (last ack - first publish); pub msg/s = the producer alone. Raw "
        "acks each message like faasml\n"
        "(XACK, msg.ack(), delete_message); faasml's sqs batches its acks in the background and "
        "publishes via SNS -> SQS"
    )


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("MET" if ok else "NOT MET")


def print_targets(stores: list[StoreRow], pubsubs: list[PubSubRow]) -> None:
    lines: list[tuple[str, str, str]] = []  # (target, measured, verdict)

    def store_row(backend: str, size: int) -> Timings | None:
        for row in stores:
            if row.backend == backend and row.size == size and row.timings is not None:
                return row.timings
        return None

    redis_1m = store_row("redis", MiB)
    for op, cmd in (("put", "SET"), ("get", "GET")):
        r = None
        if redis_1m is not None:
            r = ratio(
                store_stats(redis_1m[f"ours {op}"], MiB)[2],
                store_stats(redis_1m[f"raw {op}"], MiB)[2],
            )
        shown = "-" if r is None else f"{r:.0%} of raw"
        ok = None if r is None else r >= TARGET_RATIO
        lines.append((f"redis store {op} 1 MiB >= 70% of redis-py {cmd}", shown, verdict(ok)))
    file_32m = store_row("file", 32 * MiB)
    for op in ("put", "get"):
        mbs = None if file_32m is None else store_stats(file_32m[f"ours {op}"], 32 * MiB)[2]
        shown = "-" if mbs is None else f"{mbs / 1000:.2f} GB/s"
        ok = None if mbs is None else mbs * 1e6 >= TARGET_FILE_BYTES_PER_S
        lines.append((f"file store {op} 32 MiB >= 1 GB/s", shown, verdict(ok)))
    for row in pubsubs:
        if row.backend == "local":
            continue
        r = None
        if row.note is None and "raw" in row.rate:
            r = ratio(row.rate["ours"].per_second, row.rate["raw"].per_second)
        shown = "-" if r is None else f"{r:.0%} of raw"
        ok = None if r is None else r >= TARGET_RATIO
        lines.append((f"{row.backend} pubsub rate >= 70% of raw client", shown, verdict(ok)))
    for row in pubsubs:
        if row.backend not in ("redis", "nats"):
            continue
        p50 = None if row.note is not None else percentile(row.latency["ours"], 50) / 1e6
        shown = "-" if p50 is None else f"{p50:.3f} ms"
        ok = None if p50 is None else p50 < TARGET_P50_MS
        lines.append((f"{row.backend} p50 publish->receive < 2 ms", shown, verdict(ok)))
    if not lines:
        return
    print()
    print("targets")
    width = max(len(t) for t, _, _ in lines)
    for target, shown, result in lines:
        print(f"  {target:{width}s}  {shown:>12s}  {result}")
    if any(row.backend == "local" for row in pubsubs):
        print("  (local has no raw client: absolute figures only, no rate target)")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="ObjectStore and PubSub throughput of faasml beside the raw clients "
        "(see the module docstring)."
    )
    parser.add_argument(
        "--sizes",
        default="1KiB,1MiB,32MiB",
        help="comma-separated object sizes (1024, 1KiB, 32MiB ...); default %(default)s",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=10,
        help="interleaved ours/raw rounds per object size (each round does 1-40 ops); "
        "default %(default)s",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=4000,
        help="messages per side for the PubSub rate (sqs: a tenth); default %(default)s",
    )
    parser.add_argument(
        "--round-trips",
        type=int,
        default=None,
        help="PubSub latency round trips per side (sqs: a fifth); default min(400, --messages)",
    )
    parser.add_argument(
        "--backends",
        default=",".join(ALL_BACKENDS),
        help="comma-separated subset of " + ", ".join(ALL_BACKENDS) + " (redis is both a "
        "store and a PubSub)",
    )
    parser.add_argument(
        "--no-services",
        action="store_true",
        help="only the backends that need no service: " + ", ".join(SERVICE_FREE),
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--moto-url", default="http://127.0.0.1:5000")
    args = parser.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(ALL_BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {', '.join(ALL_BACKENDS)}")
    if args.no_services:
        backends = [b for b in backends if b in SERVICE_FREE]
    if args.repeat < 1 or args.messages < 1:
        parser.error("--repeat and --messages must be >= 1")
    round_trips = args.round_trips if args.round_trips is not None else min(400, args.messages)
    if round_trips < 1:
        parser.error("--round-trips must be >= 1")
    return Options(
        sizes=sizes,
        repeat=args.repeat,
        messages=args.messages,
        round_trips=round_trips,
        sqs_messages=max(10, args.messages // 10),
        sqs_round_trips=max(10, round_trips // 5),
        backends=backends,
        redis_url=args.redis_url,
        nats_url=args.nats_url,
        moto_url=args.moto_url.rstrip("/"),
        run_id=uuid.uuid4().hex[:10],
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    aws_credentials()
    ctx = multiprocessing.get_context("spawn")
    print(f"faasml storage throughput benchmark (run {opts.run_id})")
    for line in machine_header():
        print(line)
    print(
        f"backends: {', '.join(opts.backends) or 'none'}; sizes: "
        f"{', '.join(human_size(s) for s in opts.sizes)}"
    )
    sys.stdout.flush()
    cleanup = Cleanup()
    stores: list[StoreRow] = []
    pubsubs: list[PubSubRow] = []
    interrupted = False
    started = time.monotonic()
    try:
        if any(b in STORE_BACKENDS for b in opts.backends):
            stores = bench_stores(opts, cleanup, ctx)
            print_store_table(stores, opts)
            sys.stdout.flush()
        if any(b in PUBSUB_BACKENDS for b in opts.backends):
            pubsubs = bench_pubsubs(opts, cleanup, ctx)
            print_pubsub_tables(pubsubs, opts)
        print_targets(stores, pubsubs)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up", file=sys.stderr)
    finally:
        cleanup.run()
    if _NOTES or cleanup.report:
        print()
        print("notes")
        for note in _NOTES + cleanup.report:
            print(f"  {note}")
    print(f"total time {time.monotonic() - started:.0f} s")
    if interrupted:
        return 130
    failed = [r for r in stores if r.note and r.note.startswith("error")] + [
        r for r in pubsubs if r.note and r.note.startswith("error")
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

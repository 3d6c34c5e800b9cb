"""Executor paths that need a special setup: local modules by value, the store fallback."""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

import faasml
from faasml import executor, runtime
from faasml.errors import ServiceUnavailableError
from faasml.interfaces import Function, Invocation
from faasml.pubsub.local import LocalPubSub


def test_users_own_module_travels_by_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper module next to the user's script is not importable by the workers: ship it."""
    name = f"usermod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            FACTOR = 3

            def triple(x):
                return x * FACTOR
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    try:
        with faasml.connect("local", workers=1, progress=False) as cloud:
            assert list(cloud.map(module.triple, [1, 2])) == [3, 6]
    finally:
        sys.modules.pop(name, None)


class _InProcessFunction(Function):
    """Runs the runtime in threads of this process, so a test can patch what it sees."""

    name = "inprocess"
    timeout = 60.0
    max_payload_bytes = 6 * 1024 * 1024

    def __init__(self) -> None:
        self._pool = cf.ThreadPoolExecutor(2)

    def invoke(self, payload: bytes) -> bytes:
        return runtime.handle(payload)

    def invoke_async(self, payload: bytes) -> Invocation:
        invocation = Invocation(id=uuid.uuid4().hex, status="running")

        def run() -> None:
            try:
                runtime.handle(payload)
                invocation.status = "succeeded"
            except Exception as exc:
                invocation.status, invocation.error = "failed", exc

        self._pool.submit(run)
        return invocation

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def add_one(x: int) -> int:
    return x + 1


def test_completion_found_in_store_when_publishing_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = LocalPubSub.publish

    def refuse_completions(self: LocalPubSub, topic: str, data: Any) -> None:
        if topic.startswith("faasml-done-"):
            raise ServiceUnavailableError("pubsub down (test)", provider="local")
        original(self, topic, data)

    monkeypatch.setattr(LocalPubSub, "publish", refuse_completions)
    monkeypatch.setattr(executor, "_FALLBACK_AFTER", 0.3)
    function = _InProcessFunction()
    with faasml.connect(function, progress=False) as cloud:
        assert faasml.gather(cloud.map_futures(add_one, range(5)), timeout=30) == [1, 2, 3, 4, 5]
    function.close()


def compressible(n: int) -> bytes:
    return b"a" * n


def test_compression_follows_the_store_unless_configured(tmp_path: Path) -> None:
    """Same-host stores skip zlib (copying is faster); other stores and an explicit True use it."""
    from faasml.storage.file import FileObjectStore

    assert FileObjectStore.same_host
    for compression, expect_compressed in ((None, False), (True, True)):
        root = tmp_path / f"s{compression}"
        with faasml.connect(
            "local",
            storage="file",
            root=str(root),
            workers=1,
            inline_bytes=0,
            cleanup=False,
            compression=compression,
            progress=False,
        ) as c:
            assert c.submit(compressible, 200_000).result(timeout=30) == b"a" * 200_000
            sizes = [i.size for i in c.storage.list("jobs/") if i.key.endswith("/result")]
        assert sizes and (max(sizes) < 10_000) == expect_compressed, (compression, sizes)

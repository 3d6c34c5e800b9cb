"""Smoke test: the benchmarks in ``benchmarks/`` still run and print their tables.

They run as subprocesses with tiny sizes and no services. Timings are not asserted (benchmarks
are never timed in unit tests); this only keeps them from rotting as the SDK changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
#: a guard against hangs; both runs normally take a few seconds.
TIMEOUT = 60


def run_benchmark(script: str, *args: str) -> str:
    """Run ``benchmarks/<script>`` with ``args``; return its stdout, failing on a non-zero exit."""
    path = BENCHMARKS / script
    if not path.exists():
        pytest.fail(f"{path} is missing")
    try:
        done = subprocess.run(
            [sys.executable, str(path), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=BENCHMARKS.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script} {' '.join(args)} ran longer than {TIMEOUT} s:\n{exc.stdout!r}")
    assert done.returncode == 0, (
        f"{script} {' '.join(args)} exited with {done.returncode}\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done.stdout


def test_storage_throughput_runs_without_services() -> None:
    out = run_benchmark(
        "storage_throughput.py", "--no-services", "--sizes", "1024", "--repeat", "1",
        "--messages", "50",
    )  # fmt: skip
    for header in (
        "machine:",
        "packages:",
        "1. ObjectStore put/get",
        "2a. PubSub publish->receive latency",
        "2b. PubSub sustained rate",
        "targets",
    ):
        assert header in out, f"{header!r} missing from the output:\n{out}"
    for row in ("memory (owner)", "memory (client)", "file ", "local "):
        assert any(line.startswith(row) for line in out.splitlines()), f"no {row!r} row:\n{out}"
    assert "error:" not in out, out
    assert "removed file store" in out, f"the file store was not cleaned up:\n{out}"


def test_executor_overhead_runs() -> None:
    out = run_benchmark("executor_overhead.py", "--repeat", "1")
    assert "executor overhead" in out, out
    assert "workload" in out and "ProcessPool s" in out and "faasml s" in out, out
    assert "submit->result round trip" in out, out

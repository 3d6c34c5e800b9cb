"""Executor overhead: faasml on `local` beside ProcessPoolExecutor (and Lithops, if importable).

Run: ``python benchmarks/executor_overhead.py [--repeat 3]``. Every figure is the median of
``--repeat`` runs measured in this same process, so the ratios are meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import faasml


def noop(x: int) -> int:
    return x


def mib_array(i: int) -> np.ndarray:
    return np.full(131072, float(i))  # 1 MiB of float64


def median_seconds(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def round_trip(executor: cf.Executor, calls: int = 50) -> float:
    executor.submit(noop, 0).result()
    t0 = time.perf_counter()
    for i in range(calls):
        executor.submit(noop, i).result()
    return (time.perf_counter() - t0) / calls


def workloads(executor: cf.Executor) -> dict[str, Callable[[], Any]]:
    return {
        "map 1 no-op": lambda: list(executor.map(noop, range(1))),
        "map 100 no-ops": lambda: list(executor.map(noop, range(100))),
        "map 1000 no-ops": lambda: list(executor.map(noop, range(1000))),
        "map 50 x 1 MiB results": lambda: list(executor.map(mib_array, range(50))),
    }


def lithops_executor() -> Any | None:
    try:
        import lithops  # type: ignore[import-not-found]
    except ImportError:
        return None
    return lithops.FunctionExecutor(backend="localhost", storage="localhost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with cf.ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(noop, range(args.workers * 4)))  # warm
        results["ProcessPool"] = {
            name: median_seconds(run, args.repeat) for name, run in workloads(pool).items()
        }
        results["ProcessPool"]["submit->result round trip"] = round_trip(pool)
    with faasml.connect("local", workers=args.workers, progress=False) as cloud:
        list(cloud.map(noop, range(args.workers * 4)))  # warm
        results["faasml"] = {
            name: median_seconds(run, args.repeat) for name, run in workloads(cloud).items()
        }
        results["faasml"]["submit->result round trip"] = round_trip(cloud)
    lithops = lithops_executor()
    if lithops is not None:
        results["Lithops"] = {}  # Lithops is not a concurrent.futures.Executor: time its map
        for name, n, fn in (
            ("map 1 no-op", 1, noop),
            ("map 100 no-ops", 100, noop),
            ("map 1000 no-ops", 1000, noop),
            ("map 50 x 1 MiB results", 50, mib_array),
        ):
            results["Lithops"][name] = median_seconds(
                lambda n=n, fn=fn: lithops.get_result(lithops.map(fn, range(n))), 1
            )

    print(
        f"executor overhead, {args.workers} workers, median of {args.repeat}, "
        f"{os.cpu_count()} cores"
    )
    names = list(results["ProcessPool"])
    header = f"{'workload':32s} {'ProcessPool s':>14s} {'faasml s':>10s} {'faasml/PP':>10s}"
    if "Lithops" in results:
        header += f" {'Lithops s':>10s}"
    print(header)
    for name in names:
        pp, fm = results["ProcessPool"][name], results["faasml"][name]
        line = f"{name:32s} {pp:14.4f} {fm:10.4f} {fm / pp:10.2f}"
        if "Lithops" in results and name in results["Lithops"]:
            line += f" {results['Lithops'][name]:10.3f}"
        print(line)
    if "Lithops" not in results:
        print("(Lithops not installed: pip install lithops to add its column)")


if __name__ == "__main__":
    main()

"""Blocked GEMM on ``local`` workers beside one ``numpy.matmul``, measured in the same run.

Run: ``python benchmarks/gemm.py [--sizes 2048,4096,8192] [--dtypes float32,float64]
[--stores memory,file] [--block N] [--fuse F] [--workers 2]``.

The block size defaults to ``n / 2``: four output blocks (two per worker) and every k fused into
one task, which reads the least (each input block is read twice) and writes only ``C``. Smaller
blocks mean more tasks but more reads (``2 n^2 (n / block)`` elements in all).

For every (n, dtype) the script times ``numpy.matmul`` (all cores, this process) before and after
the faasml runs and takes the faster of the two as the reference (conservative on a shared, noisy
machine), and times
:func:`faasml.algorithms.gemm` on ``faasml.connect("local", workers=W, storage=S)`` for each
store, whole call included: storing A and B as blocks (ingest), the DAG on the workers, and
reading C back (egest). The table shows GFLOP/s (``2 n^3`` flops over the seconds), the ratio to
numpy, and where the time went. Worker columns are sums over workers of what they measured:
``read`` (fetching blocks, on a background thread that overlaps compute), ``compute`` (block
products), ``write`` (outputs, on another background thread), ``wait`` (compute stood still
waiting for data or the previous write). Every result is checked against numpy's.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from typing import Any

import numpy as np

import faasml
from faasml.algorithms import gemm
from faasml.algorithms.gemm import GemmReport


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    parts = [
        f"{info.get('internal_api')} {info.get('version')} {info.get('architecture')} "
        f"threads={info.get('num_threads')} ({os.path.basename(info.get('filepath', ''))})"
        for info in threadpool_info()
    ]
    return "; ".join(parts) or "none found"


def time_numpy(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    np.matmul(a[:256], b)  # load and warm the BLAS
    t0 = time.perf_counter()
    c = np.matmul(a, b)
    return time.perf_counter() - t0, c


def check(out: np.ndarray, ref: np.ndarray) -> str:
    tol = 1e-4 if ref.dtype == np.float32 else 1e-10
    scale = float(np.abs(ref).max())
    err = float(np.abs(out - ref).max()) / scale
    return "ok" if err < tol else f"WRONG (rel err {err:.1e})"


def row(cells: list[Any], widths: list[int]) -> str:
    return " | ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,4096,8192")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--stores", default="memory,file")
    parser.add_argument("--block", type=int, default=None, help="block size (default n / 2)")
    parser.add_argument("--fuse", type=int, default=None, help="k blocks per task (default auto)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    dtypes = [np.dtype(d) for d in args.dtypes.split(",")]
    stores = args.stores.split(",")

    print(f"BLAS: {blas_description()}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        print(f"{var}={os.environ.get(var, '(unset)')}")
    print(f"cores={os.cpu_count()} workers={args.workers} fuse={args.fuse or 'auto'}")
    print()

    header = [
        "n", "dtype", "store", "block", "numpy GF/s", "faasml GF/s", "ratio", "total s", "ingest",
        "dag", "egest", "read", "compute", "write", "wait", "tasks", "check",
    ]  # fmt: skip
    widths = [5, 7, 6, 5, 10, 11, 5, 7, 6, 6, 6, 6, 7, 6, 6, 5, 5]
    print(row(header, widths))
    print("-|-".join("-" * w for w in widths), flush=True)

    clouds = {
        store: faasml.connect("local", workers=args.workers, storage=store, progress=False)
        for store in stores
    }
    try:
        for cloud in clouds.values():  # start the worker processes before timing anything
            gemm(np.ones((4, 4)), np.ones((4, 4)), cloud=cloud, block=2)
        for n in sizes:
            for dtype in dtypes:
                rng = np.random.default_rng(n)
                a = rng.standard_normal((n, n), dtype=np.float64).astype(dtype)
                b = rng.standard_normal((n, n), dtype=np.float64).astype(dtype)
                np_s, ref = time_numpy(a, b)
                flops = 2.0 * n**3
                rows: list[list[Any]] = []
                for store, cloud in clouds.items():
                    gc.collect()
                    report = GemmReport()
                    t0 = time.perf_counter()
                    block = args.block or max(1, n // 2)
                    out = gemm(a, b, cloud=cloud, block=block, fuse=args.fuse, report=report)
                    total = time.perf_counter() - t0
                    verdict = check(out, ref)
                    del out
                    gf = flops / total / 1e9
                    t = report.totals()
                    rows.append([
                        n, dtype.name, store, block, None, f"{gf:.1f}", gf,
                        f"{total:.2f}", f"{report.ingest_s:.2f}",
                        f"{report.dag_s:.2f}", f"{report.egest_s:.2f}", f"{t['read_s']:.2f}",
                        f"{t['compute_s']:.2f}", f"{t['write_s']:.2f}", f"{t['wait_s']:.2f}",
                        int(t["tasks"]), verdict,
                    ])  # fmt: skip
                np_s = min(np_s, time_numpy(a, b)[0])
                np_gf = flops / np_s / 1e9
                for cells in rows:
                    cells[4], cells[6] = f"{np_gf:.1f}", f"{cells[6] / np_gf:.2f}"
                    print(row(cells, widths), flush=True)
                del a, b, ref
    finally:
        for cloud in clouds.values():
            cloud.shutdown()
    print()
    print("numpy GF/s: the faster of two numpy.matmul calls, before and after the faasml runs.")
    print("GF/s count the whole gemm() call (ingest + dag + egest). read/compute/write/wait are")
    print(
        "worker seconds summed over workers; read and write overlap compute (background threads)."
    )


if __name__ == "__main__":
    main()

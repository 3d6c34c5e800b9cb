"""Sparse logistic regression on the flights delay task: faasml on ``local`` vs scikit-learn.

In one run, on the identical hashed matrices (``faasml.datasets.flights(task="binary")``):

* scikit-learn ``LogisticRegression(solver="saga", C=1)`` and ``SGDClassifier(loss="log_loss")``;
* faasml's default :class:`~faasml.algorithms.SparseLogisticRegression` on the ``local`` provider
  (file store, local PubSub) with 1 and with 2 workers, on a warm function pool.

Printed: held-out log-loss, accuracy, wall time, samples/s, and the time faasml needed to reach
the target loss (1.01 x the best scikit-learn loss) as a ratio of saga's fit time. The machine is
shared and noisy, so absolute seconds are indicative; ``--repeat`` takes the median of several
runs. ``--micro`` prints the numpy-vs-numexpr micro-benchmark that decided the element-wise
kernels (see :mod:`faasml.algorithms.optim`).

For the scaling between worker counts it also prints, per faasml run, the steady-state
samples/s (between 20% and 90% of the samples, leaving out start-up and shut-down) and the CPU
seconds the driver process and the worker processes used during the fit. On ``C`` cores a fit
that burns ``D_n + W_n`` CPU seconds takes at least ``(D_n + W_n) / C`` seconds, so the speed-up
of 2 workers over one (fit time ``T_1``) cannot exceed ``C * T_1 / (D_2 + W_2)``: the table
prints that bound beside the measured ratio.

Usage::

    python benchmarks/train_sparse_lr.py [--repeat 3] [--workers 1,2] [--local-steps K]
        [--bsp] [--micro]

``--bsp`` adds, for each worker count, the same fits with ``sync="bsp"`` and their fit time
as a ratio of the default (``ssp`` with staleness 1) fit's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np


def environment() -> None:
    """Print what the numbers depend on: BLAS, its threads, CPU and load."""
    try:
        from threadpoolctl import threadpool_info

        blas = [
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')} "
            f"threads={i.get('num_threads')}"
            for i in threadpool_info()
        ]
    except ImportError:
        blas = ["threadpoolctl not installed"]
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, cpus {os.cpu_count()}")
    print("BLAS:", "; ".join(blas))
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS"):
        print(f"{var}={os.environ.get(var, '(unset)')}")
    one, five, fifteen = os.getloadavg()
    print(f"load average (1, 5, 15 min): {one:.2f} {five:.2f} {fifteen:.2f}")


def micro_benchmark() -> None:
    """numpy vs numexpr on the element-wise kernels, at minibatch sizes."""
    import numexpr as ne

    ne.set_num_threads(1)  # a worker owns one core; more threads only add overhead here
    rng = np.random.default_rng(0)
    print("micro-benchmark, microseconds per call (numexpr with 1 thread):")
    print(f"{'kernel':<24}{'size':>8}{'numpy':>10}{'numexpr':>10}")
    for size in (2_000, 10_000, 65_536):
        env = {
            "g": rng.standard_normal(size),
            "m": rng.standard_normal(size),
            "v": rng.random(size),
            "k": rng.random(size) + 1.0,
            "z": rng.standard_normal(size),
            "y": (rng.random(size) < 0.3).astype(float),
            "b1": 0.9,
            "b2": 0.999,
            "lr": 0.01,
            "eps": 1e-8,
        }

        def adam_np(e: dict[str, Any] = env) -> Any:
            m2 = e["b1"] * e["m"] + (1 - e["b1"]) * e["g"]
            v2 = e["b2"] * e["v"] + (1 - e["b2"]) * e["g"] * e["g"]
            return -e["lr"] * (m2 / e["k"]) / (np.sqrt(v2 / e["k"]) + e["eps"])

        def adam_ne(e: dict[str, Any] = env) -> Any:
            scope = dict(e)
            scope["m2"] = ne.evaluate("b1*m + (1-b1)*g", local_dict=scope)
            scope["v2"] = ne.evaluate("b2*v + (1-b2)*g*g", local_dict=scope)
            return ne.evaluate("-lr*(m2/k)/(sqrt(v2/k)+eps)", local_dict=scope)

        def logloss_np(e: dict[str, Any] = env) -> Any:
            z, y = e["z"], e["y"]
            ez = np.exp(-np.abs(z))
            loss = np.mean(np.log1p(ez) + np.maximum(z, 0) - y * z)
            return loss, np.where(z >= 0, 1 / (1 + ez), ez / (1 + ez)) - y

        def logloss_ne(e: dict[str, Any] = env) -> Any:
            scope = dict(e)
            scope["ez"] = ne.evaluate("exp(-abs(z))", local_dict=scope)
            loss = ne.evaluate("sum(log1p(ez) + where(z > 0, z, 0) - y*z)", local_dict=scope)
            residual = ne.evaluate("where(z >= 0, 1/(1+ez), ez/(1+ez)) - y", local_dict=scope)
            return loss, residual

        for name, a, b in (
            ("adam update", adam_np, adam_ne),
            ("log-loss + residual", logloss_np, logloss_ne),
        ):
            n = 300
            t_np = timeit.timeit(a, number=n) / n * 1e6
            t_ne = timeit.timeit(b, number=n) / n * 1e6
            print(f"{name:<24}{size:>8}{t_np:>10.1f}{t_ne:>10.1f}")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean held-out log-loss of class probabilities ``proba`` for integer labels ``y``."""
    p = np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)
    return float(-np.mean(np.log(p)))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steady_samples_per_s(history: list[dict[str, Any]]) -> float:
    """samples/s between the evaluations at 20% and 90% of the samples (start and end left out)."""
    total = history[-1]["samples"]
    first = next(e for e in history if e["samples"] >= 0.2 * total)
    last = next(e for e in history if e["samples"] >= 0.9 * total)
    if last["time"] <= first["time"]:
        return float(history[-1]["samples_per_s"])
    return float((last["samples"] - first["samples"]) / (last["time"] - first["time"]))


def time_to(history: list[dict[str, Any]], target: float) -> float | None:
    """Seconds into ``fit`` of the first evaluation at or below ``target``."""
    for entry in history:
        if entry["test_loss"] is not None and entry["test_loss"] <= target:
            return float(entry["time"])
    return None


Row = tuple[str, float, float, float, float, float | None]


def run(args: argparse.Namespace, estimator: Callable[..., Any], task: str) -> None:
    """Run the comparison for ``task`` (``"binary"`` or ``"multiclass"``) and print tables."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    import faasml
    from faasml.datasets import flights

    environment()
    X_tr, y_tr, X_te, y_te = flights(task=task)  # type: ignore[arg-type]
    nnz = X_tr.nnz / X_tr.shape[0]
    print(f"\nflights {task}: train {X_tr.shape}, test {X_te.shape}, nnz/row {nnz:.1f}")
    multi = task == "multiclass"

    rows: list[Row] = []
    saga_runs = []
    for _ in range(args.repeat):
        saga, t_saga = timed(lambda: LogisticRegression(solver="saga", C=1.0).fit(X_tr, y_tr))
        saga_runs.append((t_saga, log_loss(y_te, saga.predict_proba(X_te)), saga))
    saga_runs.sort(key=lambda r: r[0])
    t_saga, saga_loss, saga = saga_runs[len(saga_runs) // 2]
    saga_sps = X_tr.shape[0] * float(np.max(saga.n_iter_)) / t_saga
    saga_acc = float(np.mean(saga.predict(X_te) == y_te))
    rows.append(
        (
            "sklearn saga C=1" + (" multinom." if multi else ""),
            saga_loss,
            saga_acc,
            t_saga,
            saga_sps,
            None,
        )
    )

    def fit_sgd() -> Any:
        clf = SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=5, tol=None, random_state=0)
        return clf.fit(X_tr, y_tr)

    sgd, t_sgd = timed(fit_sgd)
    sgd_loss = log_loss(y_te, sgd.predict_proba(X_te))
    sgd_acc = float(np.mean(sgd.predict(X_te) == y_te))
    sgd_name = "sklearn SGDClassifier 5 ep" + (" OvR" if multi else "")
    rows.append((sgd_name, sgd_loss, sgd_acc, t_sgd, 5 * X_tr.shape[0] / t_sgd, None))
    best = min(saga_loss, sgd_loss)
    target = 1.01 * best
    print(f"saga epochs: {int(np.max(saga.n_iter_))}; target loss 1.01 x {best:.4f} = {target:.4f}")

    counts = [int(w) for w in args.workers.split(",")]
    speeds: dict[int, float] = {}
    steady: dict[int, float] = {}
    cpu: dict[int, tuple[float, float]] = {}
    verdicts: list[str] = []
    extra: dict[str, Any] = {}
    if args.local_steps is not None:
        extra["local_steps"] = args.local_steps
    with faasml.connect("local", workers=max(counts), retries=0) as cloud:
        _, t_warm = timed(lambda: list(cloud.map(abs, range(max(counts)))))
        print(f"local function pool warm-up: {t_warm:.2f} s (not counted below)")
        pids = list(getattr(cloud.function, "worker_pids", list)())
        for n in counts:
            fits = []
            for _ in range(args.repeat):
                model = estimator(workers=n, progress=False, **extra)
                workers_before = sum(process_cpu_seconds(pid) for pid in pids)
                driver_before = time.process_time()
                _, t_fit = timed(
                    lambda m=model: m.fit(X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te)
                )
                used = (
                    time.process_time() - driver_before,
                    sum(process_cpu_seconds(pid) for pid in pids) - workers_before,
                )
                fits.append((t_fit, model, used))
            fits.sort(key=lambda f: f[0])
            t_fit, model, cpu[n] = fits[len(fits) // 2]
            info = model.run_info_
            loss = model.log_loss(X_te, y_te)
            reach = time_to(model.history_, target)
            speeds[n] = info["samples_per_s"]
            steady[n] = steady_samples_per_s(model.history_)
            name = f"faasml local, {n} worker" + ("s" if n > 1 else "")
            rows.append((name, loss, model.score(X_te, y_te), t_fit, speeds[n], reach))
            print(
                f"  {n} worker(s), local_steps={model.local_steps}: upload "
                f"{info['upload_seconds']:.2f} s, train {info['train_seconds']:.2f} s, "
                f"{info['decisions']} rounds, {info['epochs']:.1f} epochs, steady "
                f"{steady[n]:,.0f} samples/s, CPU s driver {cpu[n][0]:.2f} workers "
                f"{cpu[n][1]:.2f}, outcomes {info['outcomes']}"
            )
            ok = loss <= target and t_fit <= t_saga
            verdicts.append(
                f"{n} worker(s): loss {loss:.4f} ({100 * (loss / best - 1):+.2f}% of best sklearn)"
                f", fit {t_fit:.2f} s = {t_fit / t_saga:.2f} x saga: "
                + ("meets the target" if ok else "misses the target")
            )
            if args.bsp:
                # the same fits under bsp: what the default's staleness of 1 saves
                bsp_fits = []
                for _ in range(args.repeat):
                    bsp_model = estimator(workers=n, progress=False, sync="bsp", **extra)
                    _, t_bsp = timed(
                        lambda m=bsp_model: m.fit(X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te)
                    )
                    bsp_fits.append((t_bsp, bsp_model))
                bsp_fits.sort(key=lambda f: f[0])
                t_bsp, bsp_model = bsp_fits[len(bsp_fits) // 2]
                bsp_loss = bsp_model.log_loss(X_te, y_te)
                rows.append(
                    (
                        f"{name}, bsp",
                        bsp_loss,
                        bsp_model.score(X_te, y_te),
                        t_bsp,
                        bsp_model.run_info_["samples_per_s"],
                        time_to(bsp_model.history_, target),
                    )
                )
                verdicts.append(
                    f"{n} worker(s), bsp: loss {bsp_loss:.4f}, fit {t_bsp:.2f} s = "
                    f"{t_bsp / t_fit:.2f} x the default (ssp) fit"
                )

    header = f"{'model':<30}{'log-loss':>10}{'acc':>8}{'wall s':>9}{'samples/s':>12}"
    print(f"\n{header}{'t->target s':>13}{'/saga':>7}")
    for name, loss, acc, wall, sps, reach in rows:
        reach_s = f"{reach:.2f}" if reach is not None else "-"
        ratio = f"{reach / t_saga:.2f}" if reach is not None else "-"
        print(f"{name:<30}{loss:>10.4f}{acc:>8.4f}{wall:>9.2f}{sps:>12,.0f}{reach_s:>13}{ratio:>7}")
    print()
    print("\n".join(verdicts))
    if 1 in speeds and 2 in speeds:
        cores = os.cpu_count() or 1
        fit_1 = next(r[3] for r in rows if r[0] == "faasml local, 1 worker")
        bound = cores * fit_1 / max(sum(cpu[2]), 1e-9)
        print(
            f"samples/s, 2 workers / 1 worker: {speeds[2] / speeds[1]:.2f}x whole fit, "
            f"{steady[2] / steady[1]:.2f}x steady state (goal >= 1.6x); the CPU allows at most "
            f"{cores} cores x {fit_1:.2f} s / ({cpu[2][0]:.2f} + {cpu[2][1]:.2f}) CPU s = "
            f"{bound:.2f}x"
        )


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="median of this many runs")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument(
        "--local-steps", type=int, help="the estimators' local_steps (default: theirs)"
    )
    parser.add_argument("--bsp", action="store_true", help="also fit with sync='bsp' and compare")
    parser.add_argument("--micro", action="store_true", help="numpy vs numexpr micro-benchmark")
    args = parser.parse_args()
    if args.micro:
        micro_benchmark()
        return
    from faasml.algorithms import SparseLogisticRegression

    run(args, SparseLogisticRegression, "binary")


if __name__ == "__main__":
    main()

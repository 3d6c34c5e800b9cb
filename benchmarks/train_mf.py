"""Matrix factorization on MovieLens: faasml on ``local`` vs numpy references, in one run.

On ``faasml.datasets.movielens()`` (100,004 ratings, the random 80/20 split of
``docs/benchmarks.md``), this prints the held-out RMSE and fit time of:

* the global mean rating;
* user and item biases, fitted by alternating ridge updates (regularization 10);
* ALS of rank 20 on the residual of those biases (regularization 0.2 per rating), the numpy
  reference of ``benchmarks.md``;
* faasml's default :class:`~faasml.algorithms.MatrixFactorization` on ``local`` with 1 and with 2
  workers.

Usage::

    python benchmarks/train_mf.py [--repeat 3] [--workers 1,2] [--rank R]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def dense_ids(train: Any, test: Any) -> tuple[Any, Any, int, int]:
    """Map the ids of both parts to 0-based indices over all ratings."""
    users = np.unique(np.concatenate([train[0], test[0]]))
    items = np.unique(np.concatenate([train[1], test[1]]))

    def index(part: Any) -> tuple[Any, Any, Any]:
        return np.searchsorted(users, part[0]), np.searchsorted(items, part[1]), part[2]

    return index(train), index(test), len(users), len(items)


def fit_biases(
    u: Any, i: Any, r: Any, n_u: int, n_i: int, reg: float = 10.0, sweeps: int = 10
) -> tuple[float, Any, Any]:
    """``mean + b_u + b_i`` by alternating closed-form ridge updates."""
    mean = float(r.mean())
    b_u, b_i = np.zeros(n_u), np.zeros(n_i)
    count_u = np.bincount(u, minlength=n_u) + reg
    count_i = np.bincount(i, minlength=n_i) + reg
    for _ in range(sweeps):
        b_u = np.bincount(u, weights=r - mean - b_i[i], minlength=n_u) / count_u
        b_i = np.bincount(i, weights=r - mean - b_u[u], minlength=n_i) / count_i
    return mean, b_u, b_i


def fit_als(
    u: Any, i: Any, residual: Any, n_u: int, n_i: int, rank: int, reg: float, sweeps: int = 10
) -> tuple[Any, Any]:
    """ALS on ``residual``: each factor row solves its ridge problem (``reg`` per rating)."""
    rng = np.random.default_rng(0)
    P, Q = 0.1 * rng.normal(size=(n_u, rank)), 0.1 * rng.normal(size=(n_i, rank))
    by_user = [np.flatnonzero(u == k) for k in range(n_u)]
    by_item = [np.flatnonzero(i == k) for k in range(n_i)]
    eye = np.eye(rank)
    for _ in range(sweeps):
        for rows, own, other, target in ((by_user, P, Q, i), (by_item, Q, P, u)):
            for k, idx in enumerate(rows):
                if idx.size:
                    F = other[target[idx]]
                    own[k] = np.linalg.solve(F.T @ F + reg * idx.size * eye, F.T @ residual[idx])
    return P, Q


def rmse(predicted: Any, actual: Any) -> float:
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="median of this many faasml fits")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--rank", type=int, help="faasml's rank (default: the estimator's)")
    args = parser.parse_args()

    import faasml
    from faasml.algorithms import MatrixFactorization
    from faasml.datasets import movielens

    train, test = movielens()
    (u, i, r), (tu, ti, tr), n_u, n_i = dense_ids(train, test)
    print(f"MovieLens: {r.size:,} train / {tr.size:,} test ratings, {n_u} users x {n_i} movies")
    rows: list[tuple[str, float, float | None]] = [("global mean", rmse(r.mean(), tr), None)]

    started = time.perf_counter()
    mean, b_u, b_i = fit_biases(u, i, r, n_u, n_i)
    rows.append(
        ("biases (reg 10)", rmse(mean + b_u[tu] + b_i[ti], tr), time.perf_counter() - started)
    )

    started = time.perf_counter()
    mean, b_u, b_i = fit_biases(u, i, r, n_u, n_i)
    P, Q = fit_als(u, i, r - mean - b_u[u] - b_i[i], n_u, n_i, rank=20, reg=0.2)
    predicted = mean + b_u[tu] + b_i[ti] + np.einsum("ij,ij->i", P[tu], Q[ti])
    rows.append(("numpy ALS rank 20 + biases", rmse(predicted, tr), time.perf_counter() - started))

    extra: dict[str, Any] = {} if args.rank is None else {"rank": args.rank}
    counts = [int(w) for w in args.workers.split(",")]
    with faasml.connect("local", workers=max(counts), retries=0) as cloud:
        list(cloud.map(abs, range(max(counts))))  # a warm pool, as for the other benchmarks
        for n in counts:
            fits = []
            for _ in range(args.repeat):
                model = MatrixFactorization(workers=n, progress=False, **extra)
                started = time.perf_counter()
                model.fit(train, cloud=cloud, test=test)
                fits.append((time.perf_counter() - started, model))
            fits.sort(key=lambda f: f[0])
            seconds, model = fits[len(fits) // 2]
            name = f"faasml MF rank {model.rank}, {n} worker" + ("s" if n > 1 else "")
            rows.append((name, model.rmse(test), seconds))

    print(f"\n{'model':<34}{'test RMSE':>10}{'fit s':>8}")
    for name, error, seconds in rows:
        shown = f"{seconds:.2f}" if seconds is not None else "-"
        print(f"{name:<34}{error:>10.4f}{shown:>8}")
    reference = rows[2][1]
    for name, error, _ in rows[3:]:
        print(f"{name}: RMSE {100 * (error / reference - 1):+.1f}% of numpy ALS")


if __name__ == "__main__":
    main()

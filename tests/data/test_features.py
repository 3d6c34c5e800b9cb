"""FeatureHasher (stable, process-independent columns) and the two scalers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from faasml.data import FeatureHasher, MinMaxScaler, StandardScaler
from faasml.errors import ConfigurationError, DataFormatError


def reference_column(token: str, n_features: int, seed: int = 0) -> int:
    digest = hashlib.blake2b(
        token.encode("utf-8"), digest_size=8, salt=seed.to_bytes(16, "little")
    ).digest()
    return int.from_bytes(digest, "little") % n_features


# --------------------------------------------------------------------------- FeatureHasher


def test_hasher_columns_match_the_documented_hash() -> None:
    h = FeatureHasher(1000, seed=5)
    X = h.transform([["a=1", "b=x"], ["c=é"]])
    assert X.shape == (2, 1000)
    assert sorted(X.getrow(0).indices) == sorted(
        {reference_column("a=1", 1000, 5), reference_column("b=x", 1000, 5)}
    )
    assert X.getrow(1).indices.tolist() == [reference_column("c=é", 1000, 5)]


def test_hasher_is_stable_across_processes_with_different_hash_salts() -> None:
    code = (
        "from faasml.data import FeatureHasher;"
        "print(FeatureHasher(2**18).transform([['carrier=UA','dest=IAH','x=1']]).indices.tolist())"
    )
    outputs = set()
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(out.stdout.strip())
    expected = sorted(reference_column(t, 2**18) for t in ("carrier=UA", "dest=IAH", "x=1"))
    assert outputs == {str(expected)}


def test_hasher_seed_changes_collisions() -> None:
    tokens = [[f"t={i}"] for i in range(200)]
    a = FeatureHasher(2**16, seed=0).transform(tokens).indices
    b = FeatureHasher(2**16, seed=1).transform(tokens).indices
    assert (a != b).mean() > 0.9


def test_hasher_binary_clips_duplicates_and_counts_otherwise() -> None:
    rows = [["a=1", "a=1", "b=2"], []]
    Xb = FeatureHasher(64).transform(rows)
    assert Xb.getrow(0).data.tolist() == [1.0, 1.0]
    assert Xb.getrow(1).nnz == 0
    Xc = FeatureHasher(64, binary=False).transform(rows)
    assert sorted(Xc.getrow(0).data.tolist()) == [1.0, 2.0]
    # two tokens colliding in one column are clipped like repeats
    X1 = FeatureHasher(1).transform([["a", "b", "c"]])
    assert X1.toarray().tolist() == [[1.0]]
    assert FeatureHasher(1, binary=False).transform([["a", "b", "c"]]).toarray().tolist() == [[3.0]]


def test_hasher_accepts_dicts_generators_and_matches_transform_fields() -> None:
    h = FeatureHasher(2**12)
    fields = {
        "carrier": np.array(["UA", "AA", "UA"], dtype=object),
        "month": np.array([1, 12, 1]),
        "code": np.array(["x", "y", "z"]),
    }
    by_fields = h.transform_fields(fields)
    by_rows = h.transform(
        [f"{k}={v}" for k, v in zip(fields, vals, strict=True)]
        for vals in zip(*(a.tolist() for a in fields.values()), strict=True)
    )
    by_dicts = h.transform(
        [dict(zip(fields, vals, strict=True)) for vals in zip(*fields.values(), strict=True)]
    )
    assert (by_fields != by_rows).nnz == 0
    assert (by_fields != by_dicts).nnz == 0
    assert by_fields.has_canonical_format


def test_hasher_bad_input() -> None:
    h = FeatureHasher(16)
    with pytest.raises(DataFormatError, match="row 1 is a string 'a=1'"):
        h.transform([["ok=1"], "a=1"])
    with pytest.raises(DataFormatError, match=r"tokens must be strings .* found 5 \(int\)"):
        h.transform([["a=1", 5]])  # type: ignore[list-item]
    with pytest.raises(DataFormatError, match="equal length"):
        h.transform_fields({"a": [1, 2], "b": [1]})
    with pytest.raises(DataFormatError, match="at least one field"):
        h.transform_fields({})
    with pytest.raises(ConfigurationError, match="n_features"):
        FeatureHasher(0)
    with pytest.raises(ConfigurationError, match="seed"):
        FeatureHasher(8, seed=-1)


def test_hasher_handles_flights_scale_quickly() -> None:
    # functional check at the real size (327k rows x 11 tokens); timings belong in benchmarks/
    rng = np.random.default_rng(0)
    n = 327_346
    fields: dict[str, np.ndarray] = {f"f{j}": rng.integers(0, 50 * (j + 1), n) for j in range(9)}
    fields["tail"] = rng.integers(0, 4000, n).astype(str)
    fields["flight"] = np.char.add("UA", rng.integers(0, 3800, n).astype(str))
    X = FeatureHasher(2**18).transform_fields(fields)
    assert X.shape == (n, 2**18)
    assert 10.9 < X.nnz / n <= 11.0
    assert X.data.max() == 1.0


# --------------------------------------------------------------------------- scalers


def test_minmax_dense_with_constant_column() -> None:
    X = np.array([[1.0, 5.0, -2.0], [3.0, 5.0, 2.0], [2.0, 5.0, 0.0]])
    s = MinMaxScaler().fit(X)
    out = s.transform(X)
    np.testing.assert_allclose(out, np.array([[0, 0, 0], [1, 0, 1], [0.5, 0, 0.5]]))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(s.data_min_, [1, 5, -2])
    np.testing.assert_array_equal(s.data_max_, [3, 5, 2])


def test_minmax_sparse_scales_by_max_abs_and_stays_sparse() -> None:
    X = sp.csr_matrix(np.array([[2.0, 0.0, 0.0], [-4.0, 0.0, 1.0]]))
    out = MinMaxScaler().fit_transform(X)
    assert sp.issparse(out) and out.nnz == X.nnz
    np.testing.assert_allclose(out.toarray(), np.array([[0.5, 0, 0], [-1, 0, 1]]))


def test_standard_dense_matches_numpy_and_handles_constant() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(100, 3))
    X[:, 2] = 7.0
    s = StandardScaler().fit(X)
    out = s.transform(X)
    np.testing.assert_allclose(out[:, :2].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out[:, :2].std(axis=0), 1, atol=1e-12)
    np.testing.assert_array_equal(out[:, 2], 0.0)
    assert s.scale_[2] == 1.0
    no_mean = StandardScaler(with_mean=False).fit(X).transform(X)
    np.testing.assert_allclose(no_mean[:, 0], X[:, 0] / X[:, 0].std())


def test_standard_sparse_scales_only() -> None:
    X = sp.csr_matrix(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    s = StandardScaler().fit(X)
    dense = X.toarray()
    np.testing.assert_allclose(s.mean_, dense.mean(axis=0))
    np.testing.assert_allclose(s.var_, dense.var(axis=0))
    out = s.transform(X)
    assert sp.issparse(out) and out.nnz == X.nnz
    np.testing.assert_allclose(out.toarray(), dense / dense.std(axis=0))
    # fitted on sparse, it also scales dense input without shifting it
    np.testing.assert_allclose(s.transform(dense), dense / dense.std(axis=0))


def test_scaler_errors() -> None:
    with pytest.raises(ConfigurationError, match="not fitted yet"):
        StandardScaler().transform(np.eye(2))
    s = StandardScaler().fit(np.eye(3))
    with pytest.raises(DataFormatError, match="X has 2 features but the scaler was fitted on 3"):
        s.transform(np.eye(2))
    with pytest.raises(DataFormatError, match="would make sparse X dense"):
        s.transform(sp.csr_matrix(np.eye(3)))
    bad = np.eye(2)
    bad[1, 0] = np.nan
    with pytest.raises(DataFormatError, match="MinMaxScaler: X has a NaN or infinite value at row"):
        MinMaxScaler().fit(bad)
    with pytest.raises(DataFormatError, match="empty"):
        MinMaxScaler().fit(np.zeros((0, 2)))

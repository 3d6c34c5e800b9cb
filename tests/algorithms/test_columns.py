"""Training on the used feature columns only: renumbering, and the same model either way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import faasml
from faasml.algorithms import SoftmaxRegression, SparseLogisticRegression
from faasml.algorithms.base import column_positions, compact_columns, renumber_columns
from faasml.data import upload_dataset
from faasml.datasets import digits


@pytest.fixture(scope="module")
def cloud() -> Iterator[faasml.Cloud]:
    with faasml.connect("local", workers=2, retries=0) as c:
        yield c


def test_compact_columns_keeps_the_used_ones_in_order() -> None:
    assert compact_columns(np.array([0, 3, 0, 1, 0])).tolist() == [1, 3]
    # nothing to gain: every column used, or none (an intercept-only model)
    assert compact_columns(np.array([2, 1, 5])) is None
    assert compact_columns(np.zeros(4, dtype=np.int64)) is None


def test_column_positions_map_used_columns_and_mark_the_rest() -> None:
    assert column_positions(np.array([1, 3]), 5).tolist() == [-1, 0, -1, 1, -1]


def test_renumber_columns_moves_values_and_drops_unused_columns() -> None:
    # column 2 only holds an explicit zero, so it is not a used column
    X = sp.csr_matrix(
        (np.array([1.0, 0.0, 2.0, 3.0, 4.0]), np.array([0, 2, 4, 4, 0]), np.array([0, 3, 3, 5])),
        shape=(3, 5),
    )
    position = column_positions(np.array([0, 4]), 5)
    out = renumber_columns(X, position)
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(out.toarray(), X.toarray()[:, [0, 4]])
    assert out.nnz == 4  # the explicit zero of the unused column is gone
    given = renumber_columns(X, position, n_columns=2)  # what batch readers pass, computed once
    assert given.shape == (3, 2) and (given != out).nnz == 0
    # a dense matrix and non-zeros in unused columns (a test set) are handled too
    dense = np.array([[5.0, 6.0, 7.0, 0.0, 8.0]])
    np.testing.assert_array_equal(renumber_columns(dense, position).toarray(), [[5.0, 8.0]])


def widen(X: np.ndarray, width: int, at: np.ndarray) -> np.ndarray:
    """``X`` placed in columns ``at`` of a ``width``-column zero matrix."""
    wide = np.zeros((X.shape[0], width))
    wide[:, at] = X
    return wide


@pytest.mark.parametrize("estimator", [SparseLogisticRegression, SoftmaxRegression])
def test_empty_columns_change_nothing(cloud: faasml.Cloud, estimator: Any) -> None:
    X_tr, y_tr, X_te, y_te = digits()
    X_tr, X_te = X_tr[:500] / 16.0, X_te / 16.0
    y_tr, y_te = (
        (y_tr[:500] % 2, y_te % 2)
        if estimator is SparseLogisticRegression
        else (
            y_tr[:500] % 3,
            y_te % 3,
        )
    )
    width = 1000
    at = np.sort(np.random.default_rng(0).choice(width, X_tr.shape[1], replace=False))
    X_wide = widen(X_tr, width, at)
    # the held-out set has values in columns training never saw: their weights are 0
    X_te_wide = widen(X_te, width, at)
    X_te_wide[:, 999 if 999 not in at else 998] = 5.0
    params = dict(workers=1, epochs=3, batch_size=50, seed=5, progress=False)
    narrow = estimator(**params).fit(X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te)
    wide = estimator(**params).fit(
        sp.csr_matrix(X_wide), y_tr, cloud=cloud, X_test=sp.csr_matrix(X_te_wide), y_test=y_te
    )
    used = int(np.count_nonzero(np.count_nonzero(X_tr, axis=0)))
    assert wide.run_info_["model_rows"] == used + 1  # not one row per column of the wide data
    assert narrow.run_info_["model_rows"] == used + 1
    assert wide.coef_.shape == (narrow.coef_.shape[0], width)
    np.testing.assert_allclose(wide.coef_[:, at], narrow.coef_, rtol=0, atol=1e-12)
    assert not np.delete(wide.coef_, at, axis=1).any()
    np.testing.assert_allclose(wide.intercept_, narrow.intercept_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        wide.predict_proba(X_te_wide), narrow.predict_proba(X_te), rtol=0, atol=1e-12
    )
    # the driver evaluated the held-out loss on the renumbered test set
    assert wide.history_[-1]["test_loss"] == pytest.approx(narrow.history_[-1]["test_loss"])
    assert wide.history_[-1]["test_loss"] == pytest.approx(wide.log_loss(X_te_wide, y_te))


def test_a_stored_dataset_trains_on_its_used_columns(cloud: faasml.Cloud) -> None:
    X_tr, y_tr, X_te, y_te = digits()
    at = np.arange(0, 640, 10)
    X_wide = sp.csr_matrix(widen(X_tr / 16.0, 640, at))
    # an explicit zero stored in a column without any non-zero value
    coo = X_wide.tocoo()
    X_wide = sp.csr_matrix(
        (np.append(coo.data, 0.0), (np.append(coo.row, 0), np.append(coo.col, 5))),
        shape=X_wide.shape,
    )
    assert (X_wide.data == 0).any()
    stored = upload_dataset(cloud.storage, X_wide, y_tr % 2, name="wide-digits", batch_size=100)
    model = SparseLogisticRegression(workers=2, epochs=4, progress=False).fit(stored, cloud=cloud)
    used = int(np.count_nonzero(np.count_nonzero(X_tr, axis=0)))
    assert model.run_info_["model_rows"] == used + 1
    assert model.coef_.shape == (1, 640)
    assert not np.delete(model.coef_, at, axis=1).any()
    assert model.score(widen(X_te / 16.0, 640, at), y_te % 2) > 0.85

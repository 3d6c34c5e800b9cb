"""SoftmaxRegression: gradient math, stability, digits convergence, label validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import faasml
from faasml.algorithms.base import sparse_gradient
from faasml.algorithms.softmax import Multinomial, SoftmaxRegression, log_softmax
from faasml.datasets import digits
from faasml.errors import ConfigurationError, DataFormatError

K = 4


def dense_objective(W: np.ndarray, X: np.ndarray, y: np.ndarray, l2: np.ndarray) -> float:
    """Mean cross-entropy + sum_j (l2_j / 2) ||W_j||^2, written independently in numpy."""
    Z = X @ W[:-1] + W[-1]
    Z = Z - Z.max(axis=1, keepdims=True)
    P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(P[np.arange(len(y)), y]))
    return float(loss + 0.5 * np.sum(l2[:, None] * W[:-1] ** 2))


def random_problem(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = sp.random(50, 20, density=0.15, random_state=seed, format="csr")
    X.data = rng.standard_normal(X.nnz)
    y = rng.integers(0, K, 50)
    W = rng.standard_normal((21, K)) * 0.5
    return X, y, W


def test_gradient_matches_dense_numpy_reference() -> None:
    X, y, W = random_problem()
    l2 = 0.05
    loss, rows, grad = sparse_gradient(Multinomial(K), W, X, y, l2)
    Xd = X.toarray()
    Z = Xd @ W[:-1] + W[-1]
    P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    Y = np.eye(K)[y]
    touched = np.flatnonzero((Xd != 0).any(axis=0))
    expected = (Xd.T @ (P - Y) / len(y) + l2 * W[:-1])[touched]
    assert rows.tolist() == [*touched.tolist(), 20]
    np.testing.assert_allclose(grad[:-1], expected, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(grad[-1], (P - Y).mean(axis=0), rtol=1e-11, atol=1e-14)
    assert loss == pytest.approx(dense_objective(W, Xd, y, np.zeros(20)), rel=1e-12)


def test_gradient_matches_finite_differences() -> None:
    X, y, W = random_problem(5)
    Xd = X.toarray()
    l2 = np.where((Xd != 0).any(axis=0), 0.1, 0.0)
    _, rows, grad = sparse_gradient(Multinomial(K), W, X, y, 0.1)
    full = np.zeros_like(W)
    full[rows] = grad
    eps = 1e-6
    for j in range(W.shape[0]):
        for k in range(K):
            Wp, Wm = W.copy(), W.copy()
            Wp[j, k] += eps
            Wm[j, k] -= eps
            numeric = (dense_objective(Wp, Xd, y, l2) - dense_objective(Wm, Xd, y, l2)) / (2 * eps)
            assert full[j, k] == pytest.approx(numeric, abs=1e-7), (j, k)


def test_softmax_is_row_wise_and_max_shifted() -> None:
    Z = np.array([[1000.0, 999.0, -1000.0], [0.0, 1.0, 2.0]])
    P = Multinomial(3).proba(Z)
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0)  # each row, not the whole matrix
    e = np.exp([0.0, 1.0, 2.0])
    np.testing.assert_allclose(P[1], e / e.sum())
    np.testing.assert_allclose(P[0, :2], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])
    loss, R = Multinomial(3).loss_and_residual(Z, np.array([2, 0]))
    assert np.isfinite(loss) and np.isfinite(R).all()
    np.testing.assert_allclose(log_softmax(Z)[1], np.log(e / e.sum()))


@pytest.mark.parametrize("k", [3, 40])
def test_log_softmax_matches_scipy(k: int) -> None:
    from scipy.special import log_softmax as reference

    Z = np.random.default_rng(k).standard_normal((50, k)) * 30
    np.testing.assert_allclose(log_softmax(Z), reference(Z, axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Multinomial(k).proba(Z), np.exp(reference(Z, axis=1)), atol=1e-15)


def test_whole_gradient_is_scaled_by_the_batch_size() -> None:
    # duplicating every row must leave the mean gradient unchanged (every column scaled by 1/B)
    X, y, W = random_problem(2)
    _, rows1, g1 = sparse_gradient(Multinomial(K), W, X, y, 0.0)
    _, rows2, g2 = sparse_gradient(Multinomial(K), W, sp.vstack([X, X]).tocsr(), np.tile(y, 2), 0.0)
    assert rows1.tolist() == rows2.tolist()
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)


@pytest.fixture(scope="module")
def cloud() -> Iterator[faasml.Cloud]:
    with faasml.connect("local", workers=2, retries=0) as c:
        yield c


def test_digits_test_accuracy_above_090(cloud: faasml.Cloud) -> None:
    X_tr, y_tr, X_te, y_te = digits()
    model = SoftmaxRegression(
        workers=2, batch_size=64, epochs=10, learning_rate=0.05, progress=False
    ).fit(X_tr / 16.0, y_tr, cloud=cloud, X_test=X_te / 16.0, y_test=y_te)
    assert model.score(X_te / 16.0, y_te) > 0.9
    assert model.classes_.tolist() == list(range(10))
    assert model.coef_.shape == (10, 64) and model.intercept_.shape == (10,)
    proba = model.predict_proba(X_te / 16.0)
    assert proba.shape == (len(y_te), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert model.history_[-1]["test_loss"] < 0.5
    assert model.log_loss(X_te / 16.0, y_te) == pytest.approx(model.history_[-1]["test_loss"])


def test_n_classes_beyond_the_labels_seen(cloud: faasml.Cloud) -> None:
    X_tr, y_tr, _, _ = digits()
    keep = y_tr < 3
    model = SoftmaxRegression(n_classes=5, workers=1, epochs=1, batch_size=100, progress=False)
    model.fit(X_tr[keep] / 16.0, y_tr[keep], cloud=cloud)
    assert model.predict_proba(X_tr[:3] / 16.0).shape == (3, 5)
    assert set(model.predict(X_tr[keep] / 16.0)) <= {0, 1, 2, 3, 4}


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([0, 1, -1, 2]), "class indices"),
        (np.array([0, 1, 1.5, 2]), "class indices"),
        (np.array([0, 0, 0, 0]), "at least 2 classes"),
    ],
)
def test_bad_labels(y: np.ndarray, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        SoftmaxRegression(progress=False).fit(np.eye(4), y)


def test_label_beyond_n_classes() -> None:
    with pytest.raises(DataFormatError, match="out of range for n_classes=3"):
        SoftmaxRegression(n_classes=3, progress=False).fit(np.eye(4), np.array([0, 1, 2, 3]))


def test_test_labels_outside_the_classes() -> None:
    with pytest.raises(DataFormatError, match="not class indices"):
        SoftmaxRegression(progress=False).fit(
            np.eye(4), np.array([0, 1, 2, 1]), X_test=np.eye(4), y_test=np.array([0, 3, 1, 1])
        )


@pytest.mark.parametrize(
    ("params", "match"),
    [({"n_classes": 1}, "n_classes"), ({"sync": "x"}, "sync"), ({"staleness": -3}, "staleness")],
)
def test_bad_hyperparameters(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SoftmaxRegression(**params)


def test_class_names_as_labels(cloud: faasml.Cloud) -> None:
    X_tr, y_tr, X_te, y_te = digits()
    names = np.array([f"digit-{d}" for d in range(10)])
    model = SoftmaxRegression(
        workers=2, batch_size=64, epochs=4, learning_rate=0.05, progress=False
    ).fit(X_tr / 16.0, names[y_tr], cloud=cloud, X_test=X_te / 16.0, y_test=names[y_te])
    assert model.classes_.tolist() == sorted(names.tolist())
    assert model.score(X_te / 16.0, names[y_te]) > 0.85
    # proba columns follow classes_: the argmax column names the prediction
    proba = model.predict_proba(X_te[:20] / 16.0)
    assert model.predict(X_te[:20] / 16.0).tolist() == model.classes_[proba.argmax(1)].tolist()
    assert model.log_loss(X_te / 16.0, names[y_te]) == pytest.approx(
        model.history_[-1]["test_loss"]
    )
    with pytest.raises(DataFormatError, match="not among the classes"):
        model.log_loss(X_te[:1] / 16.0, np.array(["digit-X"]))
    with pytest.raises(DataFormatError, match="n_classes only applies"):
        SoftmaxRegression(n_classes=3, progress=False).fit(np.eye(2), np.array(["a", "b"]))


def test_default_batch_size_adapts_to_a_small_data_set(cloud: faasml.Cloud) -> None:
    from sklearn.datasets import make_classification

    X, y = make_classification(2000, 30, n_informative=10, n_classes=3, random_state=0)
    model = SoftmaxRegression(workers=2, epochs=3, progress=False)
    model.fit(X[:1600], y[:1600], cloud=cloud)
    # 2,048-row batches would make an epoch a single step; 25 rows give 16 rounds per epoch
    assert model.run_info_["batch_size"] == 25
    assert model.run_info_["decisions"] >= 3 * 16
    prior = np.bincount(y[:1600]) / 1600
    assert model.log_loss(X[1600:], y[1600:]) < -np.mean(np.log(prior[y[1600:]])) - 0.2
    fixed = SoftmaxRegression(workers=2, epochs=1, batch_size=400, progress=False)
    assert fixed.fit(X, y, cloud=cloud).run_info_["batch_size"] == 400

"""SparseLogisticRegression: gradient math, end-to-end training on ``local``, bad input."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import faasml
from faasml.algorithms.base import Workspace, lazy_l2_scale, sparse_gradient
from faasml.algorithms.sparse_lr import BinaryLogistic, SparseLogisticRegression, sigmoid
from faasml.datasets import digits
from faasml.errors import ConfigurationError, DataFormatError

# ----------------------------------------------------------------------------- math


def dense_objective(W: np.ndarray, X: np.ndarray, y: np.ndarray, l2: np.ndarray) -> float:
    """Mean log-loss + sum_j (l2_j / 2) ||W_j||^2 over the given per-row penalties, in numpy."""
    z = X @ W[:-1, 0] + W[-1, 0]
    p = 1.0 / (1.0 + np.exp(-z))
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(loss + 0.5 * np.sum(l2 * W[:-1, 0] ** 2))


def random_problem(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = sp.random(40, 30, density=0.1, random_state=seed, format="csr")
    X.data = rng.standard_normal(X.nnz)
    y = (rng.random(40) < 0.4).astype(np.float64)
    W = rng.standard_normal((31, 1)) * 0.5
    return X, y, W


@pytest.mark.parametrize("with_scale", [False, True])
def test_gradient_matches_dense_numpy_reference(with_scale: bool) -> None:
    X, y, W = random_problem()
    l2 = 0.3
    scale = np.random.default_rng(1).uniform(1, 3, 30) if with_scale else None
    loss, rows, grad = sparse_gradient(BinaryLogistic(), W, X, y, l2, Workspace(30), scale)
    Xd = X.toarray()
    p = 1.0 / (1.0 + np.exp(-(Xd @ W[:-1, 0] + W[-1, 0])))
    touched = np.flatnonzero((Xd != 0).any(axis=0))
    penalty = l2 * (scale[touched] if scale is not None else 1.0)
    expected = Xd.T[touched] @ (p - y) / len(y) + penalty * W[touched, 0]
    assert rows.tolist() == [*touched.tolist(), 30]
    np.testing.assert_allclose(grad[:-1, 0], expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad[-1, 0], np.mean(p - y), rtol=1e-12)
    assert loss == pytest.approx(dense_objective(W, Xd, y, np.zeros(30)), rel=1e-12)


def test_gradient_matches_finite_differences() -> None:
    X, y, W = random_problem(3)
    Xd = X.toarray()
    touched = (Xd != 0).any(axis=0)
    l2 = np.where(touched, 0.2, 0.0)  # the lazy penalty: touched rows only
    _, rows, grad = sparse_gradient(BinaryLogistic(), W, X, y, 0.2)
    full = np.zeros(31)
    full[rows] = grad[:, 0]
    eps = 1e-6
    for j in range(31):
        Wp, Wm = W.copy(), W.copy()
        Wp[j, 0] += eps
        Wm[j, 0] -= eps
        numeric = (dense_objective(Wp, Xd, y, l2) - dense_objective(Wm, Xd, y, l2)) / (2 * eps)
        assert full[j] == pytest.approx(numeric, abs=1e-7), j


def test_overlay_equals_computing_on_the_updated_weights() -> None:
    X, y, W = random_problem(4)
    own = [
        (np.array([0, 3, 30]), np.array([[0.5], [-1.0], [0.25]])),
        (np.array([3, 7]), np.array([[0.1], [2.0]])),
    ]
    W_updated = W.copy()
    for rows, values in own:
        W_updated[rows] += values
    ws = Workspace(30)
    expected = sparse_gradient(BinaryLogistic(), W_updated, X, y, 0.1, ws)
    got = sparse_gradient(BinaryLogistic(), W, X, y, 0.1, ws, None, own)
    assert got[0] == pytest.approx(expected[0], rel=1e-12)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-12, atol=1e-15)
    assert ws.extra is not None and not ws.extra.any()  # the scratch is left clean
    np.testing.assert_array_equal(W, random_problem(4)[2])  # W itself is untouched


def test_l2_sign_shrinks_weights() -> None:
    # no data signal (y = p): the gradient is the penalty alone and must point away from zero,
    # so that subtracting it shrinks the weights
    X = sp.csr_matrix(np.eye(3))
    W = np.array([[2.0], [-3.0], [0.5], [0.0]])
    y = sigmoid(np.array([2.0, -3.0, 0.5]))
    _, rows, grad = sparse_gradient(BinaryLogistic(), W, X, y, 0.1)
    np.testing.assert_allclose(grad[:3, 0], 0.1 * W[:3, 0], atol=1e-12)
    assert np.all(np.sign(grad[:3, 0]) == np.sign(W[:3, 0]))


def test_log_loss_is_stable_for_extreme_scores() -> None:
    Z = np.array([[1000.0], [-1000.0], [1000.0], [-1000.0]])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    loss, R = BinaryLogistic().loss_and_residual(Z, y)
    assert np.isfinite(loss) and loss == pytest.approx(500.0)  # two rows right, two off by 1000
    np.testing.assert_allclose(R[:, 0], [0.0, 0.0, 1.0, -1.0])
    np.testing.assert_allclose(sigmoid(np.array([-800.0, 800.0])), [0.0, 1.0])


def test_lazy_l2_scale_makes_the_penalty_unbiased() -> None:
    counts = np.array([0, 1, 50, 100])
    scale = lazy_l2_scale(counts, n_rows=100, batch_size=10)
    p = 1 - (1 - counts / 100) ** 10
    assert scale[0] == 0.0
    np.testing.assert_allclose(scale[1:] * p[1:], 1.0)
    assert scale[3] == 1.0  # present in every row: every batch touches it


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def cloud() -> Iterator[faasml.Cloud]:
    with faasml.connect("local", workers=2, retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def odd_even() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X_tr, y_tr, X_te, y_te = digits()
    return X_tr / 16.0, y_tr % 2, X_te / 16.0, y_te % 2


def sequential_reference(
    X: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    batch_size: int,
    epochs: float,
    lr: float,
    momentum: float,
    l2: float,
) -> np.ndarray:
    """Plain minibatch momentum SGD in dense numpy, in faasml's documented data order.

    The rows are shuffled with ``default_rng(seed)``, cut into consecutive batches, and epoch
    ``e`` visits the batches in the order ``default_rng([seed, e]).permutation(n_batches)``;
    the penalty of feature ``j`` is ``l2 / p_j`` with ``p_j`` the chance a batch touches it.
    """
    n, d = X.shape
    perm = np.random.default_rng(seed).permutation(n)
    X, y = X[perm], y[perm]
    n_batches = -(-n // batch_size)
    p = 1 - (1 - np.count_nonzero(X, axis=0) / n) ** batch_size
    penalty = np.where(p > 0, l2 / np.where(p > 0, p, 1), 0.0)
    w, b = np.zeros(d), 0.0
    vel_w, vel_b = np.zeros(d), 0.0
    seen, position, target = 0, 0, int(np.ceil(epochs * n))
    while seen < target:
        epoch, offset = divmod(position, n_batches)
        k = np.random.default_rng([seed, epoch]).permutation(n_batches)[offset]
        Xb, yb = X[k * batch_size : (k + 1) * batch_size], y[k * batch_size : (k + 1) * batch_size]
        touched = (Xb != 0).any(axis=0)
        r = 1.0 / (1.0 + np.exp(-(Xb @ w + b))) - yb
        g = Xb.T @ r / len(yb) + penalty * w
        vel_w[touched] = momentum * vel_w[touched] + g[touched]  # lazy: touched rows only
        vel_b = momentum * vel_b + r.mean()
        w[touched] -= lr * vel_w[touched]
        b -= lr * vel_b
        seen += len(yb)
        position += 1
    return np.append(w, b)


@pytest.mark.parametrize("local_steps", [1, 3])
def test_one_worker_bsp_equals_sequential_sgd(
    cloud: faasml.Cloud, odd_even: Any, local_steps: int
) -> None:
    # with several local steps per round the worker still computes each step on its own latest
    # weights, so one worker is exactly sequential SGD whatever the round length
    X_tr, y_tr, _, _ = odd_even
    X, y = X_tr[:600], y_tr[:600]
    params = dict(seed=3, batch_size=50, epochs=5.0, lr=0.2, momentum=0.8, l2=1e-3)
    model = SparseLogisticRegression(
        workers=1,
        sync="bsp",
        optimizer="momentum",
        learning_rate=params["lr"],
        momentum=params["momentum"],
        schedule="constant",
        l2=params["l2"],
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        seed=params["seed"],
        averaging=0,
        update_dtype="float64",
        local_steps=local_steps,
        # several generations, each resuming from the checkpoint, the decision log and the
        # optimizer state its predecessor handed over
        generation_seconds=0.01,
        checkpoint_every=4,
        progress=False,
    ).fit(X, y, cloud=cloud)
    reference = sequential_reference(X, y, **params)  # type: ignore[arg-type]
    np.testing.assert_allclose(model.coef_[0], reference[:-1], rtol=0, atol=1e-10)
    assert model.intercept_[0] == pytest.approx(reference[-1], abs=1e-10)
    assert model.run_info_["samples"] == 3000
    generations = [w for w in model.run_info_["workers"] if w["outcome"] == "budget"]
    assert generations, "the run was meant to span several worker generations"


@pytest.mark.parametrize("local_steps", [1, 4])
def test_binary_digits_converges_with_two_workers(
    cloud: faasml.Cloud, odd_even: Any, local_steps: int
) -> None:
    X_tr, y_tr, X_te, y_te = odd_even
    model = SparseLogisticRegression(
        workers=2,
        batch_size=64,
        epochs=8,
        learning_rate=0.05,
        local_steps=local_steps,
        progress=False,
    ).fit(X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te)
    assert model.score(X_te, y_te) > 0.88
    losses = [h["test_loss"] for h in model.history_]
    assert losses[-1] < 0.5 * np.log(2)  # half the loss of the untrained (all-zero) model
    assert losses[-1] < losses[0]
    assert model.history_[-1]["epoch"] >= 8
    assert model.predict_proba(X_te).shape == (len(y_te), 2)
    np.testing.assert_allclose(model.predict_proba(X_te).sum(axis=1), 1.0)
    assert set(model.predict(X_te)) <= {0, 1}
    entry = model.history_[-1]
    # a decision is one round of local_steps minibatches from each worker
    assert model.run_info_["decisions"] <= 8 * 23 / (2 * local_steps) + 3
    assert set(entry) >= {"time", "step", "epoch", "train_loss", "test_loss", "samples_per_s"}
    assert entry["workers"] <= 2 and entry["samples_per_s"] > 0


def test_minus_one_one_labels_and_sparse_input(cloud: faasml.Cloud, odd_even: Any) -> None:
    X_tr, y_tr, X_te, y_te = odd_even
    y_pm = np.where(y_tr == 1, 1, -1)
    model = SparseLogisticRegression(workers=1, epochs=3, batch_size=100, progress=False)
    model.fit(sp.csr_matrix(X_tr), y_pm, cloud=cloud)
    assert model.classes_.tolist() == [-1, 1]
    assert set(model.predict(sp.csr_matrix(X_te))) <= {-1, 1}
    assert model.score(X_te, np.where(y_te == 1, 1, -1)) > 0.8
    assert model.history_[-1]["test_loss"] is None  # no held-out data was given


def test_cloud_none_connects_locally(odd_even: Any) -> None:
    X_tr, y_tr, _, _ = odd_even
    model = SparseLogisticRegression(workers=1, epochs=1, batch_size=200, progress=False)
    assert model.fit(X_tr[:400], y_tr[:400]) is model
    assert model.coef_.shape == (1, 64)
    # a provider name connects for the call only, like None
    assert model.fit(X_tr[:400], y_tr[:400], cloud="local").coef_.shape == (1, 64)
    with pytest.raises(TypeError, match="cloud must be a faasml.Cloud"):
        model.fit(X_tr[:400], y_tr[:400], cloud=42)
    with pytest.raises(faasml.errors.UnknownBackendError, match="nope"):
        model.fit(X_tr[:400], y_tr[:400], cloud="nope")


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"staleness": -1}, "staleness"),
        ({"local_steps": 0}, "local_steps"),
        ({"local_steps": 2.5}, "local_steps"),
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"sync": "hogwild"}, "sync"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"l2": -1.0}, "l2"),
        ({"momentum": 1.0}, "momentum"),
        ({"max_time": 0}, "max_time"),
        ({"target_loss": -1}, "target_loss"),
        ({"update_dtype": "float16"}, "update_dtype"),
        ({"aggregation": "median"}, "aggregation"),
        ({"fault_rate": 2.0}, "fault_rate"),
        ({"schedule": "cosine"}, "schedule"),
    ],
)
def test_bad_hyperparameters_are_refused_at_construction(
    params: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SparseLogisticRegression(**params)


def test_get_and_set_params() -> None:
    model = SparseLogisticRegression(workers=3, sync="asp")
    params = model.get_params()
    assert params["workers"] == 3 and params["sync"] == "asp"
    assert SparseLogisticRegression(**params).get_params() == params
    assert model.set_params(learning_rate=0.5) is model
    assert model.learning_rate == 0.5
    with pytest.raises(ConfigurationError, match="staleness"):
        model.set_params(staleness=-2)
    assert model.staleness == 1  # unchanged after a refused update
    with pytest.raises(ConfigurationError, match="unknown parameter"):
        model.set_params(alpha=1.0)
    assert "workers=3" in repr(model)


BAD_DATA = [
    (np.zeros((5, 3)), np.array([0, 1, 0, 1]), "5 rows but y has 4"),
    (np.zeros((0, 3)), np.zeros(0), "empty"),
    (np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 1]), "NaN"),
    (np.array([[0.0, np.inf], [1.0, 0.0]]), np.array([0, 1]), "NaN or infinite"),
    (np.eye(3), np.array([0, 1, 2]), "exactly 2 classes"),
    (np.eye(3), np.array([0.5, 1.5, 0.5]), "not whole numbers"),
    (np.eye(3), np.array([1, 1, 1]), "2 classes"),
    (np.eye(3), np.array(["no", "yes", "maybe"]), "exactly 2 classes"),
    (np.eye(3), np.array([0, "yes", 1], dtype=object), "mix types"),
    (np.eye(3), np.array(["no", None, "yes"], dtype=object), "missing"),
    (np.eye(3), np.array(["no", float("nan"), "yes"], dtype=object), "missing .* row 1"),
]


@pytest.mark.parametrize(("X", "y", "match"), BAD_DATA)
def test_bad_training_data_is_refused(X: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        SparseLogisticRegression(progress=False).fit(X, y)


def test_bad_test_data_is_refused() -> None:
    X, y = np.eye(4), np.array([0, 1, 0, 1])
    model = SparseLogisticRegression(progress=False)
    with pytest.raises(DataFormatError, match="both"):
        model.fit(X, y, X_test=X)
    with pytest.raises(DataFormatError, match="features"):
        model.fit(X, y, X_test=np.eye(3), y_test=np.array([0, 1, 0]))
    with pytest.raises(DataFormatError, match="not among the classes"):
        model.fit(X, y, X_test=X, y_test=np.array([0, 1, 2, 1]))
    with pytest.raises(ConfigurationError, match="n_features"):
        SparseLogisticRegression(n_features=7, progress=False).fit(X, y)


def test_more_workers_than_the_cloud_runs_at_once(cloud: faasml.Cloud) -> None:
    with pytest.raises(ConfigurationError, match="at most 2 invocations"):
        SparseLogisticRegression(workers=3, progress=False).fit(
            np.eye(4), np.array([0, 1, 0, 1]), cloud=cloud
        )


def test_predict_before_fit() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        SparseLogisticRegression().predict(np.eye(2))


# ----------------------------------------------------------------------------- significance


def test_significance_filter_holds_back_small_updates_without_losing_them() -> None:
    from faasml.algorithms._worker import SignificanceFilter

    filt = SignificanceFilter((5, 1), threshold=1.0)
    W = np.array([[10.0], [0.0], [1.0], [0.0], [0.0]])
    rows, values = filt.filter(np.array([0, 1, 2]), np.array([[0.5], [0.01], [2.0]]), W, t=0)
    # |0.5| <= 1/sqrt(1) * |10|: held back; a zero weight always sends; |2| > 1 * |1|: sent
    assert rows.tolist() == [1, 2]
    np.testing.assert_allclose(values[:, 0], [0.01, 2.0])
    sent = dict(zip(rows.tolist(), values[:, 0].tolist(), strict=True))
    rows, values = filt.filter(np.array([0]), np.array([[9.0]]), W, t=3)
    assert rows.tolist() == [0]  # 0.5 + 9 > 1/2 * 10: the held-back part goes with it
    np.testing.assert_allclose(values[:, 0], [9.5])
    sent[0] = 9.5
    assert sum(sent.values()) == pytest.approx(0.5 + 0.01 + 2.0 + 9.0)  # nothing was lost
    assert not filt.state()["acc_rows"].size


def test_significance_state_round_trip() -> None:
    from faasml.algorithms._worker import SignificanceFilter

    filt = SignificanceFilter((4, 2), threshold=5.0)
    W = np.ones((4, 2))
    filt.filter(np.array([1, 3]), np.full((2, 2), 0.1), W, t=0)
    again = SignificanceFilter((4, 2), threshold=5.0)
    again.restore(filt.state())
    np.testing.assert_array_equal(again.acc, filt.acc)
    assert again.pending.tolist() == filt.pending.tolist() == [False, True, False, True]


def test_significance_filter_sends_less_and_still_trains(cloud: faasml.Cloud) -> None:
    from faasml.datasets import flights

    X_tr, y_tr, X_te, y_te = flights(task="binary")
    X_tr, y_tr, X_te, y_te = X_tr[:60000], y_tr[:60000], X_te[:20000], y_te[:20000]
    runs = {}
    for v in (0.0, 0.3):
        # BSP: every round of both workers is decided, so the byte counts do not depend on
        # how the two processes happen to be scheduled
        model = SparseLogisticRegression(
            workers=2, epochs=2, sync="bsp", significance=v, progress=False
        ).fit(X_tr, y_tr, cloud=cloud, X_test=X_te, y_test=y_te)
        sent = sum(w["result"]["bytes_sent"] for w in model.run_info_["workers"] if w["result"])
        runs[v] = (sent, model.history_[-1]["test_loss"])
    assert runs[0.3][0] < 0.9 * runs[0.0][0]  # fewer delta bytes ...
    assert runs[0.3][1] < 1.03 * runs[0.0][1]  # ... for about the same held-out loss


# ----------------------------------------------------------------------------- data order


def test_slots_take_turns_on_one_stream_of_epoch_permutations() -> None:
    from faasml.algorithms._worker import batch_at

    n_batches, n_slots = 11, 3
    for epoch in range(3):
        expected = np.random.default_rng([4, epoch]).permutation(n_batches)
        stream = [
            batch_at(4, n_batches, position // n_slots, position % n_slots, n_slots)
            for position in range(epoch * n_batches, (epoch + 1) * n_batches)
        ]
        assert stream == expected.tolist()  # every epoch visits every batch exactly once
    assert batch_at(4, n_batches, 5) == np.random.default_rng([4, 0]).permutation(11)[5]


def test_class_names_as_labels(cloud: faasml.Cloud, odd_even: Any) -> None:
    X_tr, y_tr, X_te, y_te = odd_even
    names = np.array(["even", "odd"])
    model = SparseLogisticRegression(workers=2, epochs=3, batch_size=100, progress=False)
    model.fit(X_tr, names[y_tr], cloud=cloud, X_test=X_te, y_test=names[y_te])
    assert model.classes_.tolist() == ["even", "odd"]
    assert set(model.predict(X_te)) <= {"even", "odd"}
    assert model.score(X_te, names[y_te]) > 0.8
    # the positive class is the second name: column 1 of predict_proba is p("odd")
    numeric = SparseLogisticRegression(workers=2, epochs=3, batch_size=100, progress=False)
    numeric.fit(X_tr, y_tr, cloud=cloud)
    agree = np.mean(model.predict(X_te) == names[numeric.predict(X_te)])
    assert agree > 0.9
    assert model.log_loss(X_te, names[y_te]) == pytest.approx(model.history_[-1]["test_loss"])
    with pytest.raises(DataFormatError, match="not among the classes"):
        model.log_loss(X_te[:2], np.array(["even", "three"]))


def test_scikit_learn_model_selection_accepts_the_estimator(odd_even: Any) -> None:
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import cross_val_score

    X_tr, y_tr, _, _ = odd_even
    model = SparseLogisticRegression(workers=1, epochs=2, batch_size=100, progress=False)
    assert is_classifier(model)
    assert clone(model).get_params() == model.get_params()
    scores = cross_val_score(model, X_tr[:600], y_tr[:600], cv=2)
    assert scores.shape == (2,) and scores.min() > 0.7
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(model, {"learning_rate": [0.05, 0.5]}, cv=2).fit(X_tr[:600], y_tr[:600])
    assert search.best_params_["learning_rate"] in (0.05, 0.5)
    assert search.best_estimator_.score(X_tr[600:], y_tr[600:]) > 0.7


@pytest.mark.parametrize(
    ("n_train", "workers", "local_steps", "expected"),
    [
        (261_876, 2, 2, 2048),  # flights: the tuned default
        (261_876, 1, 2, 2048),
        (1_600, 2, 2, 25),
        (10, 4, 2, 1),
    ],
)
def test_auto_batch_size(n_train: int, workers: int, local_steps: int, expected: int) -> None:
    from faasml.algorithms.base import auto_batch_size

    assert auto_batch_size(n_train, workers, local_steps) == expected


def test_predicting_on_nan_or_inf_is_refused_like_training(odd_even: Any) -> None:
    X_tr, y_tr, X_te, _ = odd_even
    model = SparseLogisticRegression(workers=1, epochs=1, batch_size=100, progress=False)
    model.fit(X_tr, y_tr)
    bad = X_te[:3].copy()
    bad[1, 5] = np.nan
    with pytest.raises(DataFormatError, match="row 1, column 5"):
        model.predict(bad)
    bad[1, 5] = np.inf
    with pytest.raises(DataFormatError, match="NaN or infinite"):
        model.predict_proba(sp.csr_matrix(bad))


def test_divergence_stops_training_with_a_typed_error(cloud: faasml.Cloud) -> None:
    from faasml.errors import DivergenceError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 10)) * 1000.0  # unscaled features and a huge plain SGD step
    y = (X[:, 0] > 0).astype(np.int64)
    model = SparseLogisticRegression(
        workers=2, epochs=50, optimizer="sgd", learning_rate=1e6, progress=False
    )
    started = time.monotonic()
    with pytest.raises(DivergenceError, match=r"diverged.*lower learning_rate \(now 1e\+06\)"):
        model.fit(X, y, cloud=cloud)
    assert time.monotonic() - started < 30  # stopped at the first NaN, not after 50 epochs
    assert not list(cloud.storage.list("train/"))  # the run's objects are gone
    assert issubclass(DivergenceError, ArithmeticError)


def test_any_two_integer_labels(cloud: faasml.Cloud, odd_even: Any) -> None:
    # LIBSVM's breast-cancer data labels its classes 2 and 4
    X_tr, y_tr, X_te, y_te = odd_even
    model = SparseLogisticRegression(workers=1, epochs=3, batch_size=100, progress=False)
    model.fit(X_tr, 2 + 2 * y_tr, cloud=cloud, X_test=X_te, y_test=2 + 2 * y_te)
    assert model.classes_.tolist() == [2, 4]
    assert model.score(X_te, 2 + 2 * y_te) > 0.8
    assert model.history_[-1]["test_loss"] == pytest.approx(model.log_loss(X_te, 2 + 2 * y_te))
    # the same labels from a dataset already in the store (raw values, mapped by the workers)
    from faasml.data import upload_dataset

    stored = upload_dataset(cloud.storage, X_tr, 2 + 2 * y_tr, name="two-four", batch_size=100)
    try:
        again = SparseLogisticRegression(workers=1, epochs=3, progress=False).fit(
            stored, cloud=cloud
        )
        assert again.classes_.tolist() == [2, 4]
        assert again.score(X_te, 2 + 2 * y_te) > 0.8
    finally:
        for info in list(cloud.storage.list("datasets/two-four/")):
            cloud.storage.delete(info.key)


def test_one_worker_ssp_computes_exactly_what_bsp_does(cloud: faasml.Cloud, odd_even: Any) -> None:
    # computing the next round on the replica plus the own undecided delta (read-your-writes)
    # is the same arithmetic as waiting for the decision, as docs/training.md says
    X_tr, y_tr, _, _ = odd_even
    params: dict[str, Any] = dict(workers=1, epochs=3, batch_size=64, seed=2, progress=False)
    bsp = SparseLogisticRegression(sync="bsp", **params).fit(X_tr, y_tr, cloud=cloud)
    ssp = SparseLogisticRegression(sync="ssp", staleness=2, **params).fit(X_tr, y_tr, cloud=cloud)
    np.testing.assert_array_equal(ssp.coef_, bsp.coef_)
    np.testing.assert_array_equal(ssp.intercept_, bsp.intercept_)

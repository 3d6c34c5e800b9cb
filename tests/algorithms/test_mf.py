"""Matrix factorization: its gradient, and low-rank recovery by stateless workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import faasml
from faasml.algorithms import MatrixFactorization
from faasml.algorithms.mf import FactorObjective
from faasml.errors import ConfigurationError, DataFormatError


@pytest.fixture(scope="module")
def cloud() -> Iterator[faasml.Cloud]:
    with faasml.connect("local", workers=2, retries=0) as c:
        yield c


def low_rank(seed: int = 0, n: int = 12000) -> tuple[tuple[Any, Any, Any], tuple[Any, Any, Any]]:
    """Ratings ``3 + p_u . q_i + noise(0.1)`` of rank 3: (train, test) triples."""
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(size=(150, 3)), rng.normal(size=(100, 3))
    u, i = rng.integers(0, 150, n), rng.integers(0, 100, n)
    r = 3.0 + (P[u] * Q[i]).sum(axis=1) + 0.1 * rng.normal(size=n)
    cut = int(0.8 * n)
    return (u[:cut], i[:cut], r[:cut]), (u[cut:], i[cut:], r[cut:])


def two_hot(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    n = users.size
    cols = np.column_stack([users, n_users + items]).reshape(-1)
    return sp.csr_matrix((np.ones(2 * n), cols, np.arange(0, 2 * n + 1, 2)), (n, n_users + n_items))


@pytest.mark.parametrize("biases", [False, True])
def test_gradient_matches_finite_differences(biases: bool) -> None:
    rng = np.random.default_rng(1)
    n_users, n_items, k = 5, 4, 3
    objective = FactorObjective(k, 0.5, n_users, biases)
    W = objective.initial((n_users + n_items + 1, objective.n_outputs), 1.0, seed=1)
    users, items = rng.integers(0, n_users, 12), rng.integers(0, n_items, 12)
    X, y = two_hot(users, items, n_users, n_items), rng.normal(size=12)
    scale = rng.random(n_users + n_items + 1) + 0.5
    l2 = 0.1

    def total(V: np.ndarray) -> float:
        loss = objective.evaluate(V, X, y)
        touched = np.unique(np.concatenate([users, n_users + items]))
        return loss + 0.5 * l2 * float((scale[touched][:, None] * V[touched] ** 2).sum())

    loss, rows, grad = objective.gradient(W, X, y, l2, l2_scale=scale)
    assert loss == pytest.approx(objective.evaluate(W, X, y))
    assert rows.tolist() == np.unique(np.concatenate([users, n_users + items])).tolist()
    eps = 1e-6
    for row_pos, row in enumerate(rows.tolist()):
        if biases:  # the constant 1 of each row never moves
            constant = k + 1 if row < n_users else k
            assert W[row, constant] == 1.0 and grad[row_pos, constant] == 0.0
        for col in range(k + (1 if biases else 0)):
            if biases and row >= n_users:
                col = col if col < k else k + 1  # an item's bias is its last column
            V = W.copy()
            V[row, col] += eps
            up = total(V)
            V[row, col] -= 2 * eps
            numeric = (up - total(V)) / (2 * eps)
            assert grad[row_pos, col] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_overlay_and_offset_equal_computing_on_the_updated_factors() -> None:
    rng = np.random.default_rng(2)
    W = rng.normal(size=(10, 2))
    X = two_hot(np.array([0, 1, 2]), np.array([0, 3, 3]), 5, 4)
    y = np.array([1.0, -1.0, 0.5])
    objective = FactorObjective(2, 0.0, 5, biases=False)
    # an own undecided delta; row 7 (item 2) is not in this minibatch
    pending = (np.array([1, 7, 8]), rng.normal(size=(3, 2)))
    offset = np.zeros_like(W)
    offset[[0, 5]] = rng.normal(size=(2, 2))  # this round's earlier local steps
    updated = W + offset
    updated[pending[0]] += pending[1]
    expected = objective.gradient(updated, X, y, 0.01)
    got = objective.gradient(W, X, y, 0.01, overlay=[pending], offset=offset)
    assert got[0] == pytest.approx(expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-12)


def test_two_workers_recover_a_low_rank_matrix(cloud: faasml.Cloud) -> None:
    train, test = low_rank()
    model = MatrixFactorization(
        rank=3, workers=2, epochs=20, learning_rate=0.02, progress=False
    ).fit(train, cloud=cloud, test=test)
    baseline = float(np.sqrt(np.mean((test[2] - train[2].mean()) ** 2)))
    assert baseline > 1.0
    assert model.rmse(test) < 0.25  # the noise alone is 0.1
    assert model.score(test) > 0.95
    losses = [h["test_loss"] for h in model.history_]
    assert losses[-1] < 0.05 * losses[0]
    assert model.user_factors_.shape == (150, 3) and model.item_factors_.shape == (100, 3)
    assert model.run_info_["outcomes"] == {"stopped": 2}
    prediction = model.predict(test[0][:5], test[1][:5])
    assert prediction.shape == (5,)
    np.testing.assert_allclose(prediction, test[2][:5], atol=0.5)


def test_ids_of_any_kind_and_unseen_ones(cloud: faasml.Cloud) -> None:
    train, _ = low_rank(3, 3000)
    names = np.array([f"user-{u}" for u in train[0]])
    table = np.column_stack([train[0], train[1], train[2]])  # an (n, 3) array works too
    by_name = MatrixFactorization(rank=2, workers=1, epochs=2, progress=False).fit(
        (names, train[1], train[2]), cloud=cloud
    )
    assert by_name.users_[0].startswith("user-")
    MatrixFactorization(rank=2, workers=1, epochs=1, progress=False).fit(table, cloud=cloud)
    # an unseen user or item adds nothing: the mean plus the other one's bias
    got = by_name.predict(np.array(["nobody", names[0]]), np.array([train[1][0], 10_000]))
    item = int(np.searchsorted(by_name.items_, train[1][0]))
    user = int(np.searchsorted(by_name.users_, names[0]))
    expected = [by_name.mean_ + by_name.item_bias_[item], by_name.mean_ + by_name.user_bias_[user]]
    np.testing.assert_allclose(got, expected)
    assert by_name.predict(np.array(["nobody"]), np.array([-1]))[0] == by_name.mean_


@pytest.mark.parametrize(
    ("ratings", "match"),
    [
        ((np.zeros(3), np.zeros(3), np.array([1.0, np.nan, 2.0])), "rating 1 is NaN"),
        ((np.zeros(3), np.zeros(2), np.zeros(3)), "of one length"),
        (np.zeros((4, 2)), r"\(n, 3\) array"),
        ((np.zeros(0), np.zeros(0), np.zeros(0)), "empty dataset"),
        ((np.zeros(2), np.zeros(2), np.array(["a", "b"])), "ratings must be numbers"),
    ],
)
def test_bad_ratings_are_refused(ratings: Any, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        MatrixFactorization(workers=1, progress=False).fit(ratings)


def test_hyperparameters_and_misuse() -> None:
    with pytest.raises(ConfigurationError, match="rank must be an integer >= 1"):
        MatrixFactorization(rank=0)
    with pytest.raises(ConfigurationError, match="init_scale must be a number > 0"):
        MatrixFactorization(init_scale=-1.0)
    with pytest.raises(ConfigurationError, match="biases must be True or False"):
        MatrixFactorization(biases="yes")  # type: ignore[arg-type]
    model = MatrixFactorization(rank=4)
    assert model.get_params()["rank"] == 4
    assert model.set_params(rank=5).rank == 5
    with pytest.raises(RuntimeError, match="not fitted yet"):
        model.predict([1], [2])
    with pytest.raises(TypeError, match="use predict"):
        model.predict_proba(np.zeros((1, 2)))


def test_killed_and_relaunched_workers_start_from_the_shared_initial_factors(
    cloud: faasml.Cloud,
) -> None:
    # replacements load the newest checkpoint: the random start (decision -1) or a later one
    train, test = low_rank(4)
    model = MatrixFactorization(
        rank=3,
        workers=2,
        epochs=20,
        learning_rate=0.02,
        fault_rate=0.3,
        checkpoint_every=20,
        progress=False,
    ).fit(train, cloud=cloud, test=test)
    outcomes = model.run_info_["outcomes"]
    assert outcomes.get("died", 0) >= 1, outcomes
    assert model.rmse(test) < 0.3

"""Sparse optimizers against hand-computed updates, laziness, state round trips, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faasml.algorithms.optim import (
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    learning_rate_at,
    make_optimizer,
)
from faasml.errors import ConfigurationError

ROWS = np.array([1, 3], dtype=np.int64)


def test_sgd_delta_is_minus_lr_times_grad() -> None:
    opt = SGD(0.5)
    opt.init((5, 1))
    delta = opt.step(ROWS, np.array([[2.0], [-4.0]]), t=0)
    np.testing.assert_array_equal(delta, [[-1.0], [2.0]])


def test_momentum_is_per_coordinate_and_lazy() -> None:
    opt = Momentum(0.1, momentum=0.5)
    opt.init((4, 1))
    d1 = opt.step(np.array([0, 1]), np.array([[1.0], [2.0]]), t=0)
    np.testing.assert_allclose(d1, [[-0.1], [-0.2]])
    # only row 1 is touched: v1 = 0.5 * 2 + 1 = 2; row 0 keeps v0 = 1 (lazy, not decayed)
    d2 = opt.step(np.array([1]), np.array([[1.0]]), t=1)
    np.testing.assert_allclose(d2, [[-0.2]])
    np.testing.assert_allclose(opt.state["velocity"][:, 0], [1.0, 2.0, 0.0, 0.0])
    # row 0 again: v0 = 0.5 * 1 + 3 = 3.5, independent of row 1's history (per coordinate)
    d3 = opt.step(np.array([0]), np.array([[3.0]]), t=2)
    np.testing.assert_allclose(d3, [[-0.35]])


def test_nesterov_momentum() -> None:
    opt = Momentum(0.1, momentum=0.9, nesterov=True)
    opt.init((2, 1))
    opt.step(np.array([0]), np.array([[1.0]]), 0)  # v = 1
    d = opt.step(np.array([0]), np.array([[1.0]]), 1)  # v = 1.9; delta = -0.1 * (1 + 0.9*1.9)
    np.testing.assert_allclose(d, [[-0.1 * (1.0 + 0.9 * 1.9)]])


def test_adagrad_hand_computed() -> None:
    opt = AdaGrad(1.0, eps=1e-8)
    opt.init((3, 1))
    d1 = opt.step(np.array([2]), np.array([[3.0]]), 0)
    np.testing.assert_allclose(d1, [[-3.0 / (3.0 + 1e-8)]])
    d2 = opt.step(np.array([2]), np.array([[4.0]]), 1)  # h = 9 + 16 = 25
    np.testing.assert_allclose(d2, [[-4.0 / (5.0 + 1e-8)]])


def test_adam_bias_corrected_hand_computed() -> None:
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.01
    opt = Adam(lr, beta1=b1, beta2=b2, eps=eps)
    opt.init((2, 1))
    g1, g2 = 0.5, -1.5
    d1 = opt.step(np.array([0]), np.array([[g1]]), 0)
    # first step: m_hat = g, v_hat = g^2 -> delta = -lr * g / (|g| + eps)
    np.testing.assert_allclose(d1, [[-lr * g1 / (abs(g1) + eps)]])
    d2 = opt.step(np.array([0]), np.array([[g2]]), 1)
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    m_hat, v_hat = m / (1 - b1**2), v / (1 - b2**2)
    np.testing.assert_allclose(d2, [[-lr * m_hat / (math.sqrt(v_hat) + eps)]], rtol=1e-12)


def test_adam_bias_correction_counts_updates_per_row() -> None:
    opt = Adam(0.01)
    opt.init((3, 1))
    for t in range(5):
        opt.step(np.array([0]), np.array([[1.0]]), t)
    # row 2 seen for the first time at step 5: its first update is a full-size, sign(g) step
    d = opt.step(np.array([2]), np.array([[-7.0]]), 5)
    np.testing.assert_allclose(d, [[0.01]], rtol=1e-6)
    assert opt.state["count"][:, 0].tolist() == [5.0, 0.0, 1.0]


def test_multi_output_rows_share_adam_count() -> None:
    opt = Adam(0.1)
    opt.init((2, 3))
    d = opt.step(np.array([1]), np.array([[1.0, -2.0, 0.5]]), 0)
    np.testing.assert_allclose(d, [[-0.1, 0.1, -0.1]], rtol=1e-6)


def test_invsqrt_schedule() -> None:
    assert learning_rate_at(1.0, "constant", 100) == 1.0
    assert learning_rate_at(1.0, "invsqrt", 3) == pytest.approx(0.5)
    assert learning_rate_at(1.0, "invsqrt", 8, decay_steps=8) == pytest.approx(1 / math.sqrt(2))
    opt = SGD(1.0, schedule="invsqrt")
    opt.init((1, 1))
    np.testing.assert_allclose(opt.step(np.array([0]), np.array([[1.0]]), t=3), [[-0.5]])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adagrad", "adam"])
def test_state_round_trip_continues_identically(name: str) -> None:
    rng = np.random.default_rng(0)
    a, b = make_optimizer(name, 0.1), make_optimizer(name, 0.1)
    a.init((50, 2))
    for t in range(5):
        rows = np.unique(rng.integers(0, 50, 10))
        a.step(rows, rng.standard_normal((rows.size, 2)), t)
    b.init((50, 2))
    b.set_state(a.get_state())
    rows = np.arange(0, 50, 3)
    g = rng.standard_normal((rows.size, 2))
    np.testing.assert_array_equal(a.step(rows, g, 5), b.step(rows, g, 5))


def test_get_state_is_sparse() -> None:
    opt = AdaGrad(0.1)
    opt.init((1000, 1))
    opt.step(np.array([4, 900]), np.ones((2, 1)), 0)
    assert opt.get_state()["rows"].tolist() == [4.0, 900.0]


def test_set_state_rejects_foreign_state() -> None:
    opt = Adam(0.1)
    opt.init((10, 1))
    with pytest.raises(ValueError, match="lacks"):
        opt.set_state({"rows": np.zeros(0)})


def test_step_before_init_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="init"):
        SGD(0.1).step(ROWS, np.ones((2, 1)), 0)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SGD(-0.1), "learning_rate"),
        (lambda: SGD(0.0), "learning_rate"),
        (lambda: SGD(float("nan")), "learning_rate"),
        (lambda: SGD(0.1, schedule="cosine"), "schedule"),
        (lambda: Momentum(0.1, momentum=1.0), "momentum"),
        (lambda: Adam(0.1, beta1=-0.1), "beta1"),
        (lambda: Adam(0.1, eps=0), "eps"),
        (lambda: make_optimizer("lbfgs", 0.1), "unknown optimizer"),
    ],
)
def test_bad_configuration(factory: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        factory()  # type: ignore[operator]

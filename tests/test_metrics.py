"""Metrics against scikit-learn's, on random data with ties."""

from __future__ import annotations

import numpy as np
import pytest

from faasml.metrics import accuracy, log_loss, roc_auc

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_log_loss_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(4), size=500)
    y = rng.integers(0, 4, size=500)
    assert log_loss(y, proba, [0, 1, 2, 3]) == pytest.approx(
        sklearn_metrics.log_loss(y, proba, labels=[0, 1, 2, 3]), rel=1e-12
    )


def test_roc_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=2000)
    score = np.round(rng.random(2000) + 0.3 * y, 2)  # rounding makes many ties
    assert roc_auc(y, score) == pytest.approx(sklearn_metrics.roc_auc_score(y, score), rel=1e-12)


def test_accuracy_and_errors() -> None:
    assert accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shape"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="not in classes"):
        log_loss([5], [[0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="two classes"):
        roc_auc([1, 1], [0.2, 0.3])

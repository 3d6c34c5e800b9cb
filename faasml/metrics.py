"""Evaluation metrics on numpy arrays (no scikit-learn needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["accuracy", "log_loss", "roc_auc"]

_EPS = 1e-15


def log_loss(y: npt.ArrayLike, proba: npt.ArrayLike, classes: npt.ArrayLike) -> float:
    """Mean negative log-likelihood of the true class.

    :param y: true labels, values of ``classes``.
    :param proba: ``(n, n_classes)`` probabilities with columns in the order of ``classes``.
    :param classes: the class values.
    :raises ValueError: a label is not one of ``classes`` or the shapes disagree.
    """
    labels = np.asarray(y)
    probs = np.asarray(proba, dtype=np.float64)
    cls = np.asarray(classes)
    if probs.ndim != 2 or probs.shape != (labels.shape[0], cls.shape[0]):
        raise ValueError(f"proba has shape {probs.shape}, expected ({len(labels)}, {len(cls)})")
    index = np.searchsorted(cls, labels)
    index = np.clip(index, 0, len(cls) - 1)
    if not np.array_equal(cls[index], labels):
        raise ValueError("y contains labels that are not in classes")
    picked = np.clip(probs[np.arange(len(labels)), index], _EPS, 1.0)
    return float(-np.mean(np.log(picked)))


def accuracy(y: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Fraction of ``predicted`` equal to ``y``."""
    a, b = np.asarray(y), np.asarray(predicted)
    if a.shape != b.shape:
        raise ValueError(f"y has shape {a.shape} but predicted has {b.shape}")
    return float(np.mean(a == b))


def roc_auc(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Area under the ROC curve for binary ``y`` (the larger label is positive), ties averaged.

    :raises ValueError: ``y`` does not have exactly two classes.
    """
    labels = np.asarray(y)
    values = np.asarray(score, dtype=np.float64)
    classes = np.unique(labels)
    if classes.shape[0] != 2:
        raise ValueError(f"roc_auc needs two classes, got {classes.tolist()}")
    positive = labels == classes[1]
    ranks = _average_ranks(values)
    n_pos = int(positive.sum())
    n_neg = labels.shape[0] - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
    """1-based ranks with ties sharing their average rank (Mann-Whitney U)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks

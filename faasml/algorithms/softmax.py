"""Multinomial (softmax) regression trained by stateless function workers.

``p(y=k | x) = softmax(x W + b)_k`` with a weight column per class, minimizing the mean
cross-entropy plus ``(l2 / 2) ||W||^2``. The softmax is computed **row by row after subtracting
each row's maximum** (so no exponent overflows and each row sums to one), and the whole gradient
``X^T (P - Y) / B`` is scaled by the batch size -- the two bugs of Cirrus' softmax that the
research notes warn about.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from faasml.algorithms.base import (
    LOCAL_STEPS_DEFAULT,
    FloatArray,
    LinearEstimator,
    Objective,
    is_numeric,
    unique_labels,
)
from faasml.errors import ConfigurationError, DataFormatError

__all__ = ["Multinomial", "SoftmaxRegression", "log_softmax"]


# numpy reduces a short contiguous axis very slowly (Z.max(axis=1) on (65536, 4) takes ~2.5 ms,
# a loop over the 4 columns ~0.3 ms): with few classes, reduce column by column instead
_COLUMN_LOOP = 32


def _row_max(Z: FloatArray) -> FloatArray:
    if Z.shape[1] > _COLUMN_LOOP:
        out: FloatArray = Z.max(axis=1)
        return out
    m = Z[:, 0].copy()
    for k in range(1, Z.shape[1]):
        np.maximum(m, Z[:, k], out=m)
    return m


def _row_sum(Z: FloatArray) -> FloatArray:
    if Z.shape[1] > _COLUMN_LOOP:
        out: FloatArray = Z.sum(axis=1)
        return out
    s = Z[:, 0].copy()
    for k in range(1, Z.shape[1]):
        s += Z[:, k]
    return s


def log_softmax(Z: FloatArray) -> FloatArray:
    """Row-wise ``log(softmax(Z))``, computed from max-shifted scores."""
    shifted = Z - _row_max(Z)[:, None]
    out: FloatArray = shifted - np.log(_row_sum(np.exp(shifted)))[:, None]
    return out


class Multinomial(Objective):
    """Cross-entropy of ``K`` score columns against class indices ``0..K-1``.

    :param n_classes: ``K`` (>= 2).
    """

    def __init__(self, n_classes: int) -> None:
        if n_classes < 2:
            raise ConfigurationError(f"n_classes must be >= 2, got {n_classes}")
        self.n_outputs = int(n_classes)

    def loss_and_residual(self, Z: FloatArray, y: npt.NDArray[Any]) -> tuple[float, FloatArray]:
        """Mean cross-entropy and ``P - onehot(y)``."""
        rows = np.arange(Z.shape[0])
        shifted = Z - _row_max(Z)[:, None]
        E = np.exp(shifted)
        S = _row_sum(E)
        loss = float(np.mean(np.log(S) - shifted[rows, y]))
        R = E / S[:, None]
        R[rows, y] -= 1.0
        return loss, R

    def loss(self, Z: FloatArray, y: npt.NDArray[Any]) -> float:
        """Mean cross-entropy."""
        return float(-np.mean(log_softmax(Z)[np.arange(Z.shape[0]), y]))

    def proba(self, Z: FloatArray) -> FloatArray:
        """Row-wise softmax."""
        E = np.exp(Z - _row_max(Z)[:, None])
        out: FloatArray = E / _row_sum(E)[:, None]
        return out


class SoftmaxRegression(LinearEstimator):
    """Multinomial logistic regression, trained on FaaS workers.

    Labels are either integer class indices ``0..K-1`` (then ``classes_`` is ``0..K-1``, even
    for classes absent from the training sample when ``n_classes`` says so) or class names of
    any other type, e.g. strings (then ``classes_`` is their sorted set, as in scikit-learn).

    Same training machinery and parameters as
    :class:`~faasml.algorithms.SparseLogisticRegression` (see there; the defaults differ where
    tuning on the 4-class flights task said so: ``epochs=14``, ``learning_rate=0.5``), plus:

    :param n_classes: number of classes ``K`` for integer labels (``None``: the largest
        training label + 1); with class names it must be ``None`` or their number.

    Fitted attributes: ``coef_`` (K, n_features), ``intercept_`` (K,), ``classes_`` (the
    order of the ``predict_proba`` columns) and the same ``history_``, ``decisions_``,
    ``run_info_``, ``n_iter_``.

    :raises ConfigurationError: a hyperparameter is out of range (at construction).
    """

    def __init__(
        self,
        *,
        n_classes: int | None = None,
        workers: int = 2,
        epochs: float = 14.0,
        batch_size: int | None = None,
        learning_rate: float = 0.5,
        optimizer: str = "adam",
        schedule: str = "invsqrt",
        momentum: float = 0.9,
        l2: float | None = None,
        sync: str = "ssp",
        staleness: int = 1,
        local_steps: int = LOCAL_STEPS_DEFAULT,
        significance: float = 0.0,
        aggregation: str = "mean",
        averaging: float = 1.0,
        update_dtype: str = "float32",
        max_time: float | None = None,
        target_loss: float | None = None,
        seed: int = 0,
        n_features: int | None = None,
        checkpoint_every: int = 100,
        generation_seconds: float | None = None,
        eval_every: int | None = None,
        step_timeout: float = 60.0,
        shuffle: bool = True,
        progress: bool | None = None,
        fault_rate: float = 0.0,
    ) -> None:
        self.n_classes = n_classes
        self.workers = workers
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.schedule = schedule
        self.momentum = momentum
        self.l2 = l2
        self.sync = sync
        self.staleness = staleness
        self.local_steps = local_steps
        self.significance = significance
        self.aggregation = aggregation
        self.averaging = averaging
        self.update_dtype = update_dtype
        self.max_time = max_time
        self.target_loss = target_loss
        self.seed = seed
        self.n_features = n_features
        self.checkpoint_every = checkpoint_every
        self.generation_seconds = generation_seconds
        self.eval_every = eval_every
        self.step_timeout = step_timeout
        self.shuffle = shuffle
        self.progress = progress
        self.fault_rate = fault_rate
        self._validate_params()

    _multi_class = True

    def _validate_extra_params(self) -> None:
        k = self.n_classes
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2):
            raise ConfigurationError(
                f"SoftmaxRegression: n_classes must be None or an integer >= 2, got {k!r}"
            )

    def _make_objective(self) -> Objective:
        return Multinomial(len(self.classes_))

    def _learn_labels(self, labels: npt.NDArray[Any], source: str) -> None:
        values = unique_labels(labels, source)
        if not is_numeric(values):
            # class names: classes_ is their sorted set, as in scikit-learn
            k = len(values)
            if self.n_classes is not None and self.n_classes != k:
                raise DataFormatError(
                    f"{source}: n_classes={self.n_classes} but the labels name {k} classes "
                    f"{values[:10].tolist()}; n_classes only applies to integer class indices"
                )
            if k < 2:
                raise DataFormatError(f"{source}: softmax regression needs at least 2 classes")
            self.classes_ = values
            return
        as_float = values.astype(np.float64)
        bad = as_float[(as_float < 0) | (as_float != np.round(as_float))]
        if bad.size:
            raise DataFormatError(
                f"{source}: softmax labels must be class indices 0..K-1 (or class names such as "
                f"strings), found {bad[:5].tolist()}"
            )
        top = int(as_float.max())
        k = self.n_classes if self.n_classes is not None else top + 1
        if top >= k:
            raise DataFormatError(
                f"{source}: label {top} is out of range for n_classes={k} (labels are 0..K-1)"
            )
        if k < 2:
            raise DataFormatError(f"{source}: softmax regression needs at least 2 classes")
        self.classes_ = np.arange(k)

    def _encode(self, y: npt.NDArray[Any], source: str) -> npt.NDArray[Any]:
        yv = np.asarray(y)
        classes = np.asarray(self.classes_)
        if not is_numeric(classes):
            known = np.isin(yv, classes)
            if not known.all():
                raise DataFormatError(
                    f"{source}: labels {yv[~known][:5].tolist()} are not among the classes "
                    f"{classes[:10].tolist()}"
                )
            return np.searchsorted(classes, yv).astype(np.int64)
        if yv.dtype.kind not in "biuf":
            raise DataFormatError(f"{source}: labels must be numbers, found dtype {yv.dtype}")
        as_float = yv.astype(np.float64)
        k = len(classes)
        bad = (as_float < 0) | (as_float >= k) | (as_float != np.round(as_float))
        if bad.any():
            raise DataFormatError(
                f"{source}: labels {as_float[bad][:5].tolist()} are not class indices 0..{k - 1}"
            )
        return as_float.astype(np.int64)

    def _worker_label(self, *, encoded: bool) -> float | None:
        return None

    def _set_coefficients(self, W: FloatArray) -> None:
        self.coef_ = W[:-1].T.copy()
        self.intercept_ = W[-1].copy()

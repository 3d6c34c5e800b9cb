"""Shared machinery of the replicated linear models: objectives, sparse gradients, the estimator.

The weight matrix ``W`` has shape ``(n_features + 1, n_outputs)``: one row per feature and a
last row for the intercept (``n_outputs`` is 1 for logistic regression, the number of classes
for softmax regression). The minimized objective of a minibatch of ``B`` rows is

    mean_i loss(x_i W + b, y_i) + (l2 / 2) * sum over touched feature rows j of ||W_j||^2

so its gradient is ``X^T R / B + l2 * W`` on the touched rows (``R = dloss/dz`` per row) and
``mean_i R_i`` for the intercept, which is not penalized (scikit-learn's convention). The L2 term
is applied lazily, to the feature rows the minibatch touches, as sparse SGD does: that keeps a
step O(non-zeros) instead of O(n_features). The sign is that of a *minimization*: the optimizers
subtract the gradient, so L2 always shrinks weights.

:class:`LinearEstimator` implements the scikit-learn conventions (hyperparameters only in
``__init__``, validated there and in :meth:`~LinearEstimator.set_params`; ``fit`` returns
``self``; fitted attributes end in ``_``) and the driver side of training: it shards the data
into the object store, launches the workers through :mod:`faasml.algorithms._worker`, and runs
the step coordinator (:class:`faasml.sync.SyncDriver`).
"""

from __future__ import annotations

import abc
import inspect
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from faasml._progress import interactive
from faasml._rows import add_rows, take_rows
from faasml.algorithms.optim import OPTIMIZERS, SCHEDULES
from faasml.data import StoredDataset, check_xy, upload_dataset
from faasml.data.formats import Matrix, refuse_nonfinite
from faasml.errors import ConfigurationError, DataFormatError, DivergenceError
from faasml.sync import (
    AGGREGATIONS,
    SYNC_MODES,
    RunKeys,
    StepCoordinator,
    SyncDriver,
    encode_arrays,
)
from faasml.sync.driver import WeightsFn

if TYPE_CHECKING:
    import concurrent.futures as cf

    from faasml.algorithms._worker import WorkerSpec
    from faasml.executor import Cloud

__all__ = [
    "BATCH_SIZE_DEFAULT",
    "LOCAL_STEPS_DEFAULT",
    "LinearEstimator",
    "Objective",
    "Workspace",
    "auto_batch_size",
    "column_positions",
    "compact_columns",
    "is_numeric",
    "lazy_l2_scale",
    "renumber_columns",
    "scores",
    "sparse_gradient",
    "unique_labels",
]

log = logging.getLogger("faasml.algorithms")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: default ``local_steps`` of the estimators: minibatch steps per synchronization round.
LOCAL_STEPS_DEFAULT = 2

#: the largest minibatch ``batch_size=None`` picks (tuned on flights: 260k rows, 2^18 features)
BATCH_SIZE_DEFAULT = 2048

#: ``batch_size=None`` keeps at least this many sync rounds per epoch on small data sets
MIN_ROUNDS_PER_EPOCH = 16


def auto_batch_size(n_train: int, workers: int, local_steps: int) -> int:
    """The minibatch size ``batch_size=None`` uses for ``n_train`` rows.

    :data:`BATCH_SIZE_DEFAULT`, unless the data set is too small for it: then the largest size
    that still gives :data:`MIN_ROUNDS_PER_EPOCH` rounds per epoch (e.g. 25 rows for 1,600 rows,
    2 workers and 2 local steps), and never below 1. With 2,048-row batches such a data set
    would be a single step per epoch, and a few epochs would barely move the model.
    """
    fitting = n_train // max(1, workers * local_steps * MIN_ROUNDS_PER_EPOCH)
    return int(max(1, min(BATCH_SIZE_DEFAULT, fitting)))


#: with the default ``eval_every``, the share of the training's wall time the driver may spend
#: on held-out evaluations (measured on flights with 2 local workers: evaluating every quarter
#: epoch took about 6% and cost 2 workers 5% of their speed; the budget thins them out there,
#: never on a cloud, where a step takes far longer than an evaluation)
EVAL_BUDGET = 0.03


# =========================================================================== math


class Objective(abc.ABC):
    """The per-row loss of a linear model on scores ``Z = X W + b`` (shape ``(B, n_outputs)``)."""

    #: number of columns of ``W`` (and of ``Z``).
    n_outputs: int

    @abc.abstractmethod
    def loss_and_residual(self, Z: FloatArray, y: npt.NDArray[Any]) -> tuple[float, FloatArray]:
        """Return the mean loss over the rows and ``R = dloss_i / dZ_i`` (shape of ``Z``)."""

    @abc.abstractmethod
    def loss(self, Z: FloatArray, y: npt.NDArray[Any]) -> float:
        """Mean loss over the rows (no gradient)."""

    @abc.abstractmethod
    def proba(self, Z: FloatArray) -> FloatArray:
        """Class probabilities ``(n, n_classes)`` for scores ``Z``."""

    #: labels are real values (a regression target), not class indices.
    regression: ClassVar[bool] = False

    def gradient(
        self,
        W: FloatArray,
        X: sp.csr_matrix,
        y: npt.NDArray[Any],
        l2: float,
        workspace: Workspace | None = None,
        l2_scale: FloatArray | None = None,
        overlay: Sequence[tuple[IntArray, FloatArray]] = (),
        offset: FloatArray | None = None,
    ) -> tuple[float, IntArray, FloatArray]:
        """Loss and gradient of one minibatch on the rows it touches (:func:`sparse_gradient`)."""
        return sparse_gradient(self, W, X, y, l2, workspace, l2_scale, overlay, offset)

    def evaluate(self, W: FloatArray, X: Matrix, y: npt.NDArray[Any]) -> float:
        """Mean loss of weights ``W`` on ``(X, y)`` (held-out evaluations)."""
        return self.loss(scores(W, X), y)


class Workspace:
    """Scratch arrays reused across minibatches for the touched-column remapping.

    :param n_features: number of feature columns.
    """

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features
        self.mask = np.zeros(n_features, dtype=bool)
        self.pos = np.zeros(n_features, dtype=np.int64)
        self.extra: FloatArray | None = None


def sparse_gradient(
    objective: Objective,
    W: FloatArray,
    X: sp.csr_matrix,
    y: npt.NDArray[Any],
    l2: float,
    workspace: Workspace | None = None,
    l2_scale: FloatArray | None = None,
    overlay: Sequence[tuple[IntArray, FloatArray]] = (),
    offset: FloatArray | None = None,
) -> tuple[float, IntArray, FloatArray]:
    """Loss and gradient of one minibatch on the rows of ``W`` it touches.

    :param W: weights ``(n_features + 1, n_outputs)``, the last row being the intercept.
    :param X: the minibatch, CSR ``(B, n_features)``.
    :param y: encoded labels (0/1 floats for logistic, class indices for softmax).
    :param l2: L2 strength (>= 0), applied to the touched feature rows only.
    :param workspace: reusable scratch (allocated when ``None``).
    :param l2_scale: per-feature multiplier of ``l2`` (see :func:`lazy_l2_scale`); ``None`` is 1.
    :param overlay: sparse deltas ``(rows, values)`` to add to ``W`` for this gradient only: a
        worker's own deltas that are announced but not decided yet, so that under SSP it never
        computes on weights that miss its own previous steps (read-your-writes).
    :param offset: a dense array of ``W``'s shape also added for this gradient only: the
        updates of the worker's current round of local steps, not announced yet.
    :returns: ``(mean data loss, rows, grad)`` with ``rows`` sorted (touched features, then the
        intercept row) and ``grad`` of shape ``(len(rows), n_outputs)``.
    """
    n_features = W.shape[0] - 1
    B = X.shape[0]
    ws = workspace if workspace is not None else Workspace(n_features)
    indices = X.indices
    # touched columns via a reusable mask: O(nnz + n_features) and no sort, cheaper than
    # np.unique on hashed features
    ws.mask[indices] = True
    cols = np.flatnonzero(ws.mask)
    ws.mask[cols] = False
    ws.pos[cols] = np.arange(cols.size)
    local = sp.csr_matrix((X.data, ws.pos[indices], X.indptr), shape=(B, cols.size))
    W_touched = take_rows(W, cols)
    bias = W[n_features]
    if overlay:
        if ws.extra is None or ws.extra.shape != W.shape:
            ws.extra = np.zeros(W.shape, dtype=np.float64)
        extra = ws.extra
        for rows_o, values_o in overlay:
            add_rows(extra, rows_o, values_o)
        W_touched = W_touched + take_rows(extra, cols)
        bias = bias + extra[n_features]
        for rows_o, _ in overlay:
            extra[rows_o] = 0.0
    if offset is not None:
        W_touched = W_touched + take_rows(offset, cols)
        bias = bias + offset[n_features]
    Z = local @ W_touched + bias
    loss, R = objective.loss_and_residual(np.asarray(Z, dtype=np.float64), y)
    grad = np.empty((cols.size + 1, W.shape[1]), dtype=np.float64)
    grad[:-1] = local.T @ R
    grad[:-1] /= B
    if l2:
        if l2_scale is None:
            grad[:-1] += l2 * W_touched
        else:
            grad[:-1] += (l2 * l2_scale[cols])[:, None] * W_touched
    grad[-1] = R.sum(axis=0) / B
    rows = np.append(cols, n_features).astype(np.int64)
    return loss, rows, grad


def lazy_l2_scale(counts: npt.NDArray[Any], n_rows: int, batch_size: int) -> FloatArray:
    """Per-feature factor that makes the lazily applied L2 penalty unbiased.

    A minibatch only regularizes the features it touches, so a rare feature would be shrunk far
    less often than the objective says (the reason lazily-regularized SGD overfits rare hashed
    tokens). Feature ``j`` appears in a minibatch of ``B`` rows with probability
    ``p_j = 1 - (1 - c_j / n)^B`` (``c_j`` rows of ``n`` contain it); dividing its penalty by
    ``p_j`` makes the expected penalty gradient per step exactly ``l2 * w_j``.

    :param counts: rows containing each feature (``c_j``).
    :param n_rows: training rows ``n``.
    :param batch_size: minibatch size ``B``.
    :returns: ``1 / p_j`` (0 for features never seen, which are never touched anyway).
    """
    freq = np.asarray(counts, dtype=np.float64) / max(n_rows, 1)
    p = -np.expm1(min(batch_size, n_rows) * np.log1p(-np.minimum(freq, 1.0 - 1e-16)))
    p = np.where(freq >= 1.0, 1.0, p)
    out: FloatArray = np.where(p > 0, 1.0 / np.maximum(p, 1e-300), 0.0)
    return out


def scores(W: FloatArray, X: Matrix) -> FloatArray:
    """``X W[:-1] + W[-1]`` for a CSR or dense ``X``."""
    Z: FloatArray = np.asarray(X @ W[:-1], dtype=np.float64) + W[-1]
    return Z


# =========================================================================== estimator


@dataclass
class _Prepared:
    dataset: StoredDataset | None
    X: Matrix | None
    y: npt.NDArray[Any] | None
    X_test: Matrix | None
    y_test: npt.NDArray[Any] | None
    n_features: int
    n_train: int


def _feature_counts(X: Matrix | None, dataset: StoredDataset) -> npt.NDArray[np.int64]:
    """Training rows in which each feature is non-zero (read from the store without ``X``)."""
    n_features = dataset.n_features

    def count(M: Any) -> npt.NDArray[np.int64]:
        if sp.issparse(M):
            C = sp.csr_matrix(M, copy=True)
            C.sum_duplicates()
            C.eliminate_zeros()
            found: npt.NDArray[np.int64] = np.bincount(C.indices, minlength=n_features)
            return found.astype(np.int64)
        dense: npt.NDArray[np.int64] = np.count_nonzero(np.asarray(M), axis=0)
        return dense.astype(np.int64)

    if X is not None:
        return count(X)
    total = np.zeros(n_features, dtype=np.int64)
    with dataset.iter_batches(dataset.train_ids) as batches:
        for Xb, _ in batches:
            total += count(Xb)
    return total


def compact_columns(counts: npt.NDArray[Any]) -> IntArray | None:
    """The columns with a non-zero in the training data, or ``None`` when that is all of them.

    Hashed features leave most columns empty (flights: 9,000 of 262,144), and a column without
    a non-zero never moves its weight from 0. Training on a model with a row per *used* column
    computes exactly the same weights while every dense pass of a step (masks, buffers, the
    optimizer's and the replicas' arrays) is that many times smaller and stays in cache.
    """
    used = np.flatnonzero(np.asarray(counts))
    if used.size == len(counts) or used.size == 0:
        return None
    return used.astype(np.int64)


def column_positions(columns: IntArray, n_features: int) -> npt.NDArray[np.int32]:
    """``position[j]``: the model row of column ``j`` (``-1`` for a column not in ``columns``)."""
    position = np.full(n_features, -1, dtype=np.int32)
    position[columns] = np.arange(columns.size, dtype=np.int32)
    return position


def renumber_columns(
    X: Matrix, position: npt.NDArray[np.integer[Any]], n_columns: int | None = None
) -> sp.csr_matrix:
    """``X`` (CSR or dense) with column ``j`` moved to ``position[j]``; the entries of columns
    whose position is ``-1`` are dropped (their weights are 0, so they change no score).

    :param n_columns: columns of the result (``None``: ``position.max() + 1``, a pass over
        ``position`` that callers renumbering many batches should make once).
    """
    if n_columns is None:
        n_columns = int(position.max()) + 1 if position.size else 0
    C = sp.csr_matrix(X)
    new = position[C.indices]
    keep = new >= 0
    if keep.all():
        return sp.csr_matrix((C.data, new, C.indptr), shape=(C.shape[0], n_columns))
    per_row = np.diff(C.indptr)
    row_of = np.repeat(np.arange(C.shape[0]), per_row)
    indptr = np.zeros(C.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of[keep], minlength=C.shape[0]), out=indptr[1:])
    return sp.csr_matrix((C.data[keep], new[keep], indptr), shape=(C.shape[0], n_columns))


def _restrict(X: Matrix, n_features: int) -> tuple[IntArray | None, Matrix]:
    """The model rows a sparse test set uses (its columns, then the intercept) and the test set
    with its columns renumbered to match; a dense test set uses every row (``None``)."""
    if not sp.issparse(X):
        return None, X
    C = sp.csr_matrix(X)
    cols = np.flatnonzero(np.bincount(C.indices, minlength=n_features))
    pos = np.zeros(n_features, dtype=np.int64)
    pos[cols] = np.arange(cols.size)
    local = sp.csr_matrix((C.data, pos[C.indices], C.indptr), shape=(C.shape[0], cols.size))
    return np.append(cols, n_features).astype(np.int64), local


def unique_labels(labels: npt.NDArray[Any], source: str) -> npt.NDArray[Any]:
    """Sorted distinct labels; class names must be of one comparable type (not ``1`` and ``"a"``).

    :raises DataFormatError: the labels cannot be sorted.
    """
    try:
        return np.unique(np.asarray(labels))
    except TypeError:
        kinds = sorted({type(v).__name__ for v in np.asarray(labels).tolist()})
        raise DataFormatError(
            f"{source}: labels mix types that do not compare ({', '.join(kinds)}); use one type"
        ) from None


def is_numeric(labels: npt.NDArray[Any]) -> bool:
    """Whether labels are numbers (or booleans) rather than class names."""
    return np.asarray(labels).dtype.kind in "biuf"


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class LinearEstimator(abc.ABC):
    """Base class of :class:`~faasml.algorithms.SparseLogisticRegression` and
    :class:`~faasml.algorithms.SoftmaxRegression`; see those for the parameters.
    """

    #: prefix of the run's keys in the object store.
    _store_prefix: ClassVar[str] = "train"

    # hyperparameters (set verbatim by the subclasses' __init__)
    workers: int
    epochs: float
    batch_size: int | None
    learning_rate: float
    optimizer: str
    schedule: str
    momentum: float
    l2: float | None
    sync: str
    staleness: int
    local_steps: int
    significance: float
    aggregation: str
    averaging: float
    update_dtype: str
    max_time: float | None
    target_loss: float | None
    seed: int
    n_features: int | None
    checkpoint_every: int
    generation_seconds: float | None
    eval_every: int | None
    step_timeout: float
    shuffle: bool
    progress: bool | None
    fault_rate: float

    # scikit-learn's model selection (cross_val_score, GridSearchCV) asks what kind of estimator
    # this is; older releases read the attribute, newer ones call __sklearn_tags__
    _estimator_type: ClassVar[str] = "classifier"

    def __sklearn_tags__(self) -> Any:
        """Estimator tags for scikit-learn >= 1.6 (imported lazily: scikit-learn is optional)."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_class=self._multi_class),
            input_tags=InputTags(sparse=True),
            non_deterministic=True,  # asynchronous workers: runs may differ in the last digits
        )

    #: whether the estimator handles more than two classes.
    _multi_class: ClassVar[bool] = False

    # ------------------------------------------------------------------ params

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            name
            for name, p in sig.parameters.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the hyperparameters as a dict (scikit-learn convention).

        :param deep: accepted for scikit-learn compatibility (there are no nested estimators).
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> LinearEstimator:
        """Set hyperparameters and validate them; return ``self``.

        :raises ConfigurationError: an unknown name or an out-of-range value (nothing is changed).
        """
        valid = self._param_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ConfigurationError(
                f"unknown parameter(s) {unknown} for {type(self).__name__}; valid: {valid}"
            )
        old = self.get_params()
        for name, value in params.items():
            setattr(self, name, value)
        try:
            self._validate_params()
        except ConfigurationError:
            for name, value in old.items():
                setattr(self, name, value)
            raise
        return self

    def __repr__(self) -> str:
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if name != "self"
        }
        changed = [
            f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k, object()) != v
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def _validate_params(self) -> None:
        """Check every hyperparameter; raise :class:`ConfigurationError` naming the bad one."""

        def fail(name: str, rule: str) -> None:
            raise ConfigurationError(
                f"{type(self).__name__}: {name} must be {rule}, got {getattr(self, name)!r}"
            )

        if not _is_int(self.workers) or self.workers < 1:
            fail("workers", "an integer >= 1")
        if not _is_number(self.epochs) or not (0 < self.epochs < math.inf):
            fail("epochs", "a number > 0")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            fail("batch_size", "None or an integer >= 1")
        if not _is_number(self.learning_rate) or not (0 < self.learning_rate < math.inf):
            fail("learning_rate", "a number > 0")
        if self.optimizer not in OPTIMIZERS:
            fail("optimizer", f"one of {sorted(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            fail("schedule", f"one of {list(SCHEDULES)}")
        if not _is_number(self.momentum) or not (0 <= self.momentum < 1):
            fail("momentum", "a number in [0, 1)")
        if self.l2 is not None and (not _is_number(self.l2) or not (0 <= self.l2 < math.inf)):
            fail("l2", "None or a number >= 0")
        if self.sync not in SYNC_MODES:
            fail("sync", f"one of {list(SYNC_MODES)}")
        if not _is_int(self.staleness) or self.staleness < 0:
            fail("staleness", "an integer >= 0")
        if not _is_int(self.local_steps) or self.local_steps < 1:
            fail("local_steps", "an integer >= 1")
        if not _is_number(self.significance) or not (0 <= self.significance < math.inf):
            fail("significance", "a number >= 0")
        if self.aggregation not in AGGREGATIONS:
            fail("aggregation", f"one of {list(AGGREGATIONS)}")
        if not _is_number(self.averaging) or not (0 <= self.averaging < math.inf):
            fail("averaging", "a number of epochs >= 0 (0 disables averaging)")
        if self.update_dtype not in ("float32", "float64"):
            fail("update_dtype", "'float32' or 'float64'")
        if self.max_time is not None and (
            not _is_number(self.max_time) or not (0 < self.max_time < math.inf)
        ):
            fail("max_time", "None or a number of seconds > 0")
        if self.target_loss is not None and (
            not _is_number(self.target_loss) or not (0 <= self.target_loss < math.inf)
        ):
            fail("target_loss", "None or a number >= 0")
        if not _is_int(self.seed) or self.seed < 0:
            fail("seed", "an integer >= 0")
        if self.n_features is not None and (not _is_int(self.n_features) or self.n_features < 1):
            fail("n_features", "None or an integer >= 1")
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 1:
            fail("checkpoint_every", "an integer >= 1")
        if self.generation_seconds is not None and (
            not _is_number(self.generation_seconds) or not (0 < self.generation_seconds < math.inf)
        ):
            fail("generation_seconds", "None or a number of seconds > 0")
        if self.eval_every is not None and (not _is_int(self.eval_every) or self.eval_every < 1):
            fail("eval_every", "None or an integer >= 1")
        if not _is_number(self.step_timeout) or not (0 < self.step_timeout < math.inf):
            fail("step_timeout", "a number of seconds > 0")
        if not isinstance(self.shuffle, (bool, np.bool_)):
            fail("shuffle", "True or False")
        if self.progress is not None and not isinstance(self.progress, (bool, np.bool_)):
            fail("progress", "None, True or False")
        if not _is_number(self.fault_rate) or not (0 <= self.fault_rate <= 1):
            fail("fault_rate", "a number in [0, 1]")
        self._validate_extra_params()

    def _validate_extra_params(self) -> None:  # noqa: B027 - optional hook for subclasses
        """Subclass hook for their own hyperparameters."""

    # ------------------------------------------------------------------ subclass contract

    @abc.abstractmethod
    def _make_objective(self) -> Objective:
        """The objective for the encoded labels (after :meth:`_learn_labels`)."""

    @abc.abstractmethod
    def _learn_labels(self, labels: npt.NDArray[Any], source: str) -> None:
        """Set ``classes_`` from the distinct training labels, or raise DataFormatError."""

    @abc.abstractmethod
    def _encode(self, y: npt.NDArray[Any], source: str) -> npt.NDArray[Any]:
        """Map labels to the objective's encoding, or raise DataFormatError for unknown ones."""

    @abc.abstractmethod
    def _worker_label(self, *, encoded: bool) -> float | None:
        """Label value the worker maps to 1 (binary); ``None`` when labels are class indices.

        :param encoded: the stored labels are :meth:`_encode`'s output (``fit`` uploaded them),
            not a stored dataset's own values.
        """

    def _default_l2(self, n_train: int) -> float:
        """``l2`` when it is ``None``: scikit-learn's C = 1, i.e. ``1 / n`` on the mean loss."""
        return 1.0 / n_train

    def _initial_weights(self, shape: tuple[int, int]) -> FloatArray | None:
        """Weights training starts from (``None``: zeros, right for a convex linear model)."""
        return None

    @abc.abstractmethod
    def _set_coefficients(self, W: FloatArray) -> None:
        """Set ``coef_`` and ``intercept_`` from the final weights."""

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        X: Any,
        y: Any = None,
        cloud: Cloud | str | None = None,
        *,
        X_test: Any = None,  # noqa: N803 - scikit-learn naming
        y_test: Any = None,
    ) -> LinearEstimator:
        """Train on ``(X, y)`` with ``workers`` stateless function workers; return ``self``.

        :param X: a scipy sparse matrix or a 2-D numpy array (sharded into the object store for
            the run and deleted afterwards), or a :class:`~faasml.data.StoredDataset` already in
            the cloud's store (then ``y`` must be ``None``; its test split is used for the
            held-out loss unless ``X_test`` is given).
        :param y: labels, one per row of ``X``.
        :param cloud: where to run: a :class:`~faasml.Cloud`, or a provider name connected for
            this call only (``None``: ``"local"``).
        :param X_test: held-out features; the driver evaluates the held-out log-loss on them
            every ``eval_every`` steps (``history_[i]["test_loss"]``).
        :param y_test: held-out labels.
        :raises DataFormatError: bad data: length mismatch, empty, NaN/inf, unexpected labels.
        :raises ConfigurationError: bad hyperparameters or more workers than the cloud runs at once.
        """
        self._validate_params()
        started = time.monotonic()
        prepared = self._prepare(X, y, X_test, y_test)
        return self._fit_prepared(prepared, cloud, started)

    def _fit_prepared(
        self, prepared: _Prepared, cloud: Cloud | str | None, started: float | None = None
    ) -> Self:
        """Train on checked data on ``cloud`` (an instance, a provider name or ``None``)."""
        started = time.monotonic() if started is None else started
        if cloud is not None and not isinstance(cloud, str):
            if not (hasattr(cloud, "function") and hasattr(cloud, "storage")):
                raise TypeError(
                    f"cloud must be a faasml.Cloud (from faasml.connect), a provider name or "
                    f"None, got {type(cloud).__name__}"
                )
            self._fit_on(cloud, prepared, started)
            return self
        import faasml

        # the driver relaunches dead workers itself: executor-level retries would only add a
        # duplicate invocation per crash
        with faasml.connect(cloud or "local", workers=self.workers, retries=0) as owned:
            self._fit_on(owned, prepared, started)
        return self

    def _prepare(self, X: Any, y: Any, X_test: Any, y_test: Any) -> _Prepared:
        if (X_test is None) != (y_test is None):
            raise DataFormatError("pass both X_test and y_test, or neither")
        Xt: Matrix | None = None
        yt: npt.NDArray[Any] | None = None
        if isinstance(X, StoredDataset):
            if y is not None:
                raise DataFormatError("y must be None when X is a StoredDataset (it holds labels)")
            if X.labels is None:
                raise DataFormatError(f"dataset {X.name!r} has no label set (a regression target?)")
            self._learn_labels(np.asarray(X.labels), f"dataset {X.name!r}")
            n_features = X.n_features
            prepared = _Prepared(X, None, None, None, None, n_features, X.n_train_rows)
        else:
            Xv, yv = check_xy(X, y, numeric_labels=False)
            self._learn_labels(unique_labels(yv, "y"), "y")
            y_enc = self._encode(yv, "y")
            n_features = Xv.shape[1]
            prepared = _Prepared(None, Xv, y_enc, None, None, n_features, Xv.shape[0])
        if X_test is not None:
            Xt, yt_raw = check_xy(X_test, y_test, numeric_labels=False)
            if Xt.shape[1] != n_features:
                raise DataFormatError(
                    f"X_test has {Xt.shape[1]} features but the training data has {n_features}"
                )
            yt = self._encode(yt_raw, "y_test")
        if self.n_features is not None and self.n_features != n_features:
            raise ConfigurationError(
                f"n_features={self.n_features} but the data has {n_features} features"
            )
        prepared.X_test, prepared.y_test = Xt, yt
        return prepared

    def _fit_on(self, cloud: Cloud, data: _Prepared, started: float) -> None:
        if self.workers > cloud.function.concurrency:
            raise ConfigurationError(
                f"workers={self.workers} but the {cloud.function.name!r} function runs at most "
                f"{cloud.function.concurrency} invocations at once; a synchronous step would wait "
                f"forever for the rest (connect(..., workers={self.workers}) for local)"
            )
        run = uuid.uuid4().hex[:12]
        keys = RunKeys(f"{self._store_prefix}/{run}", run)
        # the layout of faasml.data.upload_dataset: everything of dataset <name> under this prefix
        own_dataset = f"datasets/faasml-fit-{run}/" if data.dataset is None else None
        try:
            self._train(cloud, data, started, run, keys)
        finally:
            self._cleanup(cloud.storage, keys, own_dataset)

    def _train(
        self, cloud: Cloud, data: _Prepared, started: float, run: str, keys: RunKeys
    ) -> None:
        from faasml.algorithms._worker import WorkerSpec

        storage = cloud.storage
        upload_started = time.monotonic()
        if data.dataset is None:
            assert data.X is not None and data.y is not None
            X, y = data.X, data.y
            if self.shuffle:
                # minibatch objects are contiguous rows: shuffle once so that no batch is, say,
                # a single day of a date-ordered table
                perm = np.random.default_rng(self.seed).permutation(X.shape[0])
                X, y = X[perm], y[perm]
            batch_size = self.batch_size or auto_batch_size(
                X.shape[0], self.workers, self.local_steps
            )
            dataset = upload_dataset(storage, X, y, name=f"faasml-fit-{run}", batch_size=batch_size)
        else:
            dataset = data.dataset
        upload_seconds = time.monotonic() - upload_started
        X_test, y_test = data.X_test, data.y_test
        if X_test is None and data.dataset is not None and len(dataset.test_ids):
            Xt, yt_raw = dataset.to_arrays(dataset.test_ids)
            X_test, y_test = Xt, self._encode(np.asarray(yt_raw), f"dataset {dataset.name!r}")
        if X_test is not None and not sp.issparse(X_test):
            X_test = np.asarray(X_test, dtype=np.float64)

        objective = self._make_objective()
        n_batches = len(dataset.train_ids)
        steps_per_epoch = max(1.0, n_batches / self.workers)
        # scikit-learn's default C = 1 is l2 = 1 / n on the mean loss
        l2 = float(self.l2) if self.l2 is not None else self._default_l2(data.n_train)
        # counting a stored dataset's columns reads all of it: only worth it for the L2 scale
        counts = _feature_counts(data.X, dataset) if l2 > 0 or data.X is not None else None
        columns = compact_columns(counts) if counts is not None else None
        position: npt.NDArray[np.int32] | None = None
        columns_key: str | None = None
        if columns is not None:
            position = column_positions(columns, data.n_features)
            columns_key = f"{keys.prefix}/columns"
            storage.put(columns_key, encode_arrays({}, {"position": position}))
        n_model_columns = data.n_features if columns is None else columns.size
        shape = (n_model_columns + 1, objective.n_outputs)
        l2_key: str | None = None
        if l2 > 0:
            assert counts is not None
            l2_key = f"{keys.prefix}/l2scale"
            scale = lazy_l2_scale(counts, data.n_train, dataset.batch_size)
            if columns is not None:
                scale = scale[columns]
            storage.put(l2_key, encode_arrays({}, {"scale": scale}))
        k = int(self.local_steps)
        rounds_per_epoch = steps_per_epoch / k  # decisions per epoch
        eval_every = self.eval_every or max(1, int(round(rounds_per_epoch / 4)))
        timeout = float(cloud.function.timeout)
        safety = max(1.0, min(30.0, 0.05 * timeout))
        generation = self.generation_seconds or max(1.0, 0.8 * timeout)
        spec_base = dict(
            run=run,
            prefix=keys.prefix,
            n_slots=self.workers,
            dataset=dataset.name,
            train_ids=(dataset.train_ids.start, dataset.train_ids.stop),
            objective=objective,
            shape=shape,
            optimizer=self.optimizer,
            learning_rate=float(self.learning_rate),
            schedule=self.schedule,
            decay_steps=float(steps_per_epoch),
            momentum=float(self.momentum),
            l2=l2,
            l2_scale_key=l2_key,
            significance=float(self.significance),
            aggregation=self.aggregation,
            update_dtype=self.update_dtype,
            mode=self.sync,
            staleness=int(self.staleness) if self.sync == "ssp" else 0,
            seed=int(self.seed),
            local_steps=k,
            generation_seconds=float(generation),
            safety_seconds=float(safety),
            positive_label=self._worker_label(encoded=data.dataset is None),
            fault_rate=float(self.fault_rate),
            columns_key=columns_key,
        )

        def launch(slot: int, gen: int, start_t: int) -> cf.Future[Any]:
            spec = WorkerSpec(slot=slot, gen=gen, start_t=start_t, **spec_base)  # type: ignore[arg-type]
            return self._launch_worker(cloud, spec)

        n_train = data.n_train
        target_samples = int(math.ceil(self.epochs * n_train))
        train_started = time.monotonic()

        last_train_loss: list[float | None] = [None]
        if X_test is not None and position is not None:
            X_test = (
                renumber_columns(X_test, position)
                if sp.issparse(X_test)
                else np.asarray(X_test)[:, columns]
            )
        test_rows, test_X = (
            _restrict(X_test, n_model_columns) if X_test is not None else (None, None)
        )

        def evaluate(weights: WeightsFn, info: dict[str, Any]) -> dict[str, Any]:
            test_loss = None
            if test_X is not None and y_test is not None:
                test_loss = objective.evaluate(weights(test_rows), test_X, y_test)
            train_loss = info["train_loss"]
            if train_loss is None:  # no delta since the last entry (e.g. the final one)
                train_loss = last_train_loss[0]
            last_train_loss[0] = train_loss
            elapsed = time.monotonic() - train_started
            return {
                "time": time.monotonic() - started,
                "step": info["d"],
                "epoch": info["samples"] / n_train,
                "train_loss": train_loss,
                "test_loss": test_loss,
                "loss": test_loss if test_loss is not None else train_loss,
                "samples": info["samples"],
                "samples_per_s": info["samples"] / elapsed if elapsed > 0 else 0.0,
                "workers": info["workers"],
            }

        coordinator = StepCoordinator(
            mode=self.sync,
            staleness=int(self.staleness) if self.sync == "ssp" else 0,
            step_timeout=float(self.step_timeout),
            join_timeout=max(float(self.step_timeout), 120.0),
        )
        driver = SyncDriver(
            storage,
            cloud.pubsub,
            keys,
            shape,
            coordinator,
            n_slots=self.workers,
            launch=launch,
            evaluate=evaluate,
            eval_every=eval_every,
            eval_budget=None if self.eval_every else EVAL_BUDGET,
            checkpoint_every=self.checkpoint_every,
            aggregation=self.aggregation,
            average_window=(
                max(1.0, self.averaging * rounds_per_epoch) if self.averaging > 0 else None
            ),
            initial=self._initial_weights(shape),
        )
        bar = self._progress_bar(target_samples)
        drawn = [0.0]

        def stop_when(drv: SyncDriver) -> str | None:
            now = time.monotonic()
            if bar is not None and now - drawn[0] >= 0.2:  # the loop runs far more often
                drawn[0] = now
                bar.n = min(drv.samples, target_samples)
                if drv.history and drv.history[-1]["loss"] is not None:
                    bar.set_postfix(loss=f"{drv.history[-1]['loss']:.4f}", refresh=False)
                bar.refresh()
            if drv.samples >= target_samples:
                return "epochs"
            if self.max_time is not None and time.monotonic() - started >= self.max_time:
                return "max_time"
            if self.target_loss is not None and drv.history:
                last = drv.history[-1]["loss"]
                if last is not None and last <= self.target_loss:
                    return "target_loss"
            return None

        hint = (
            f"lower learning_rate (now {self.learning_rate:g}), use optimizer='adam' or "
            "'adagrad', or scale the features (faasml.data.StandardScaler)"
        )
        try:
            driver.run(stop_when)
        except DivergenceError as exc:
            raise DivergenceError(f"{exc}; {hint}") from None
        finally:
            if bar is not None:
                bar.n = min(driver.samples, target_samples)
                bar.close()
            driver.wait_workers(timeout=30.0)

        train_seconds = time.monotonic() - train_started
        with np.errstate(over="ignore", invalid="ignore"):
            final = driver.weights()
        if columns is not None:
            # back to a row per column: the columns the training data never used weigh 0
            full = np.zeros((data.n_features + 1, final.shape[1]), dtype=final.dtype)
            full[columns] = final[:-1]
            full[-1] = final[-1]
            final = full
        if not np.isfinite(final).all():
            raise DivergenceError(
                f"training diverged: the model has NaN or infinite weights; {hint}"
            )
        self._set_coefficients(final)
        self.n_features_in_ = data.n_features
        self.history_ = driver.history
        self.decisions_ = list(coordinator.decisions)
        self.n_iter_ = driver.replica.samples / n_train
        outcomes: dict[str, int] = {}
        for rec in driver.workers:
            outcomes[rec.outcome] = outcomes.get(rec.outcome, 0) + 1
        self.run_info_ = {
            "run": run,
            "stop_reason": driver.stop_reason,
            "decisions": driver.replica.applied + 1,
            "samples": driver.replica.samples,
            "epochs": driver.replica.samples / n_train,
            "batch_size": dataset.batch_size,
            # weight rows trained: the used feature columns and the intercept
            "model_rows": shape[0],
            "upload_seconds": upload_seconds,
            "train_seconds": train_seconds,
            "fit_seconds": time.monotonic() - started,
            "samples_per_s": driver.replica.samples / train_seconds if train_seconds else 0.0,
            "invocations": len(driver.workers),
            "outcomes": outcomes,
            "workers": [
                {
                    "slot": rec.slot,
                    "gen": rec.gen,
                    "start_t": rec.start_t,
                    "outcome": rec.outcome,
                    "result": rec.result,
                    "error": None if rec.error is None else repr(rec.error),
                }
                for rec in driver.workers
            ],
        }

    def _launch_worker(self, cloud: Cloud, spec: WorkerSpec) -> cf.Future[Any]:
        """Invoke one worker (a separate method so tests can inject duplicate invocations)."""
        from faasml.algorithms._worker import run_worker

        return cloud.submit(run_worker, spec)

    def _progress_bar(self, total: int) -> Any:
        show = self.progress
        if show is None:
            show = interactive()
        if not show:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=type(self).__name__, unit="sample", unit_scale=True)

    @staticmethod
    def _cleanup(storage: Any, keys: RunKeys, dataset_prefix: str | None) -> None:
        """Delete the run's objects (and the dataset ``fit`` uploaded); never raise."""
        for prefix in (keys.prefix + "/", dataset_prefix):
            if prefix is None:
                continue
            try:
                storage.delete_prefix(prefix)
            except Exception:  # cleaning up must not mask the result or the real error
                log.warning(
                    "deleting %s after training run %s failed", prefix, keys.run, exc_info=True
                )

    # ------------------------------------------------------------------ prediction

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) first"
            )

    def _check_X(self, X: Any) -> Matrix:  # noqa: N802 - scikit-learn naming
        self._check_fitted()
        if sp.issparse(X):
            Xv: Matrix = sp.csr_matrix(X)
        else:
            Xv = np.asarray(X, dtype=np.float64)
            if Xv.ndim != 2:
                raise DataFormatError(f"X must be 2-D, got shape {Xv.shape}")
        if Xv.shape[1] != self.n_features_in_:
            raise DataFormatError(
                f"X has {Xv.shape[1]} features but the model was fitted with {self.n_features_in_}"
            )
        refuse_nonfinite(Xv)  # as in fit: a NaN score would silently pick the first class
        return Xv

    def _weights(self) -> FloatArray:
        coef = np.asarray(self.coef_, dtype=np.float64)  # (n_outputs, n_features)
        W = np.empty((coef.shape[1] + 1, coef.shape[0]), dtype=np.float64)
        W[:-1] = coef.T
        W[-1] = self.intercept_
        return W

    def decision_function(self, X: Any) -> FloatArray:
        """Scores ``X coef_^T + intercept_``: shape ``(n,)`` for binary, ``(n, K)`` otherwise."""
        Z = scores(self._weights(), self._check_X(X))
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict_proba(self, X: Any) -> FloatArray:
        """Class probabilities, shape ``(n, n_classes)``, columns in the order of ``classes_``."""
        Xv = self._check_X(X)
        return self._make_objective().proba(scores(self._weights(), Xv))

    def predict(self, X: Any) -> npt.NDArray[Any]:
        """The most probable class of each row, as a value of ``classes_``."""
        proba = self.predict_proba(X)
        classes: npt.NDArray[Any] = np.asarray(self.classes_)
        chosen: npt.NDArray[Any] = classes[np.argmax(proba, axis=1)]
        return chosen

    def score(self, X: Any, y: Any) -> float:
        """Mean accuracy of :meth:`predict` on ``(X, y)``."""
        yv = np.asarray(y)
        pred = self.predict(X)
        if yv.shape != pred.shape:
            raise DataFormatError(f"X has {pred.shape[0]} rows but y has {yv.shape} labels")
        return float(np.mean(pred == yv))

    def log_loss(self, X: Any, y: Any) -> float:
        """Mean log-loss (cross-entropy) of the model on ``(X, y)``."""
        Xv = self._check_X(X)
        y_enc = self._encode(np.asarray(y), "y")
        return self._make_objective().loss(scores(self._weights(), Xv), y_enc)

    # fitted attributes, declared for type checkers
    coef_: FloatArray
    intercept_: FloatArray
    classes_: npt.NDArray[Any]
    n_features_in_: int
    history_: list[dict[str, Any]]
    decisions_: list[Any]
    n_iter_: float
    run_info_: dict[str, Any]

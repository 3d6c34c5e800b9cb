"""Sparse binary logistic regression trained by stateless function workers.

The model is ``p(y=1 | x) = sigmoid(x . w + b)``, minimizing the mean log-loss plus
``(l2 / 2) ||w||^2`` with minibatch steps of a sparse, lazy optimizer (:mod:`.optim`). Workers
hold replicas of ``w`` and exchange sparse deltas through the object store and PubSub
(:mod:`faasml.sync`); see :class:`SparseLogisticRegression`.

Numerics: the log-loss is computed as ``log1p(exp(-|z|)) + max(z, 0) - y z`` and the sigmoid
from ``exp(-|z|)``, so neither overflows for any score.
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
    unique_labels,
)
from faasml.errors import DataFormatError

__all__ = ["BinaryLogistic", "SparseLogisticRegression", "sigmoid"]


def sigmoid(z: FloatArray) -> FloatArray:
    """``1 / (1 + exp(-z))`` without overflow for large ``|z|``."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class BinaryLogistic(Objective):
    """Log-loss of a single score column against 0/1 labels."""

    n_outputs = 1

    def loss_and_residual(self, Z: FloatArray, y: npt.NDArray[Any]) -> tuple[float, FloatArray]:
        """Mean log-loss and ``sigmoid(z) - y`` (the derivative of the loss in ``z``)."""
        z = Z[:, 0]
        e = np.exp(-np.abs(z))
        loss = float(np.mean(np.log1p(e) + np.maximum(z, 0.0) - y * z))
        p = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return loss, (p - y).reshape(-1, 1)

    def loss(self, Z: FloatArray, y: npt.NDArray[Any]) -> float:
        """Mean log-loss."""
        z = Z[:, 0]
        return float(np.mean(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0.0) - y * z))

    def proba(self, Z: FloatArray) -> FloatArray:
        """``[[1 - p, p], ...]`` like scikit-learn."""
        p = sigmoid(Z[:, 0])
        return np.column_stack([1.0 - p, p])


class SparseLogisticRegression(LinearEstimator):
    """Binary logistic regression on sparse (e.g. hashed) features, trained on FaaS workers.

    Each worker keeps a full replica of the weights, computes the gradient of its minibatch on
    the coordinates the minibatch touches, turns it into a sparse delta with its optimizer and
    broadcasts it through the object store and PubSub; the driver (this process) decides each
    step's set of deltas, evaluates the held-out loss and checkpoints the model.

    Labels are any two classes: 0/1, -1/1, two other integers, booleans or two names (e.g.
    ``"no"``/``"yes"``); sorted, the second is the positive class (``predict_proba[:, 1]``).
    The estimator works with scikit-learn's model selection (``clone``, ``cross_val_score``,
    ``GridSearchCV``).

    :param workers: number of function workers (slots) training at once.
    :param epochs: passes over the training set (fractional values allowed); training stops
        once the decided steps have covered ``epochs * n_train`` samples.
    :param batch_size: rows per minibatch (and per stored batch object when ``fit`` shards the
        data itself; a :class:`~faasml.data.StoredDataset` keeps its own batch size). ``None``:
        2,048, or less on a small data set so that an epoch still has at least 16 sync rounds
        (:func:`~faasml.algorithms.base.auto_batch_size`); ``run_info_["batch_size"]`` tells.
    :param learning_rate: base step size of the optimizer.
    :param optimizer: ``"sgd"``, ``"momentum"``, ``"adagrad"`` or ``"adam"``.
    :param schedule: ``"constant"`` or ``"invsqrt"`` (rate divided by ``sqrt(1 + epoch)``).
    :param momentum: momentum coefficient of ``optimizer="momentum"``.
    :param l2: L2 penalty ``(l2 / 2) ||w||^2`` on the mean loss (intercept not penalized);
        scikit-learn's ``C`` corresponds to ``l2 = 1 / (C * n_samples)``; ``None`` is
        ``1 / n_samples``, scikit-learn's default ``C = 1``. A minibatch applies
        it to the features it touches, scaled by the inverse probability that a minibatch
        touches the feature, so rare features are regularized as much as the objective says.
    :param sync: ``"bsp"`` (every step waits for every worker), ``"ssp"`` (workers may run
        ``staleness`` steps ahead of the last decided step) or ``"asp"`` (no waiting).
    :param staleness: the SSP bound, in rounds (ignored otherwise).
    :param local_steps: minibatch steps a worker takes on its own replica between two
        synchronizations (one *round*, local SGD). Synchronizing costs a store write, messages and
        the peers' deltas, whatever the batch; more local steps amortize it (cloud stores have
        millisecond latencies) at the price of replicas drifting apart for longer. One worker
        gives plain sequential SGD for any value.
    :param significance: MLLess significance filter ``v``: a worker sends a coordinate only when
        its accumulated update exceeds ``v / sqrt(t + 1)`` times the weight, keeping the rest for
        later (0 sends every touched coordinate). Measured on flights: ``v = 0.3`` sends about
        20% fewer delta bytes for a held-out loss within 1%; ``v = 1`` delays updates so much
        that training degrades.
    :param aggregation: how the deltas of one step combine: ``"mean"`` gives each weight the
        mean of the deltas that moved it (a weight several workers touched moves like one
        larger-batch step; one only a single worker touched gets that worker's full delta);
        ``"sum"`` adds every delta (MLLess).
    :param averaging: the model returned (and evaluated) is the running average of the
        iterates over about this many epochs (Polyak-Ruppert averaging, kept by the driver at
        O(touched rows) per step); it removes most of the minibatch noise. 0 returns the last
        iterate.
    :param update_dtype: ``"float32"`` (half the bytes) or ``"float64"`` values in deltas.
    :param max_time: stop after this many seconds of ``fit`` (``None``: no limit).
    :param target_loss: stop once the held-out log-loss (training loss without a test set)
        reaches this value.
    :param seed: seeds the data order (shared by the workers) and fault injection.
    :param n_features: expected number of features (``None``: taken from the data).
    :param checkpoint_every: steps between model checkpoints in the store.
    :param generation_seconds: a worker invocation hands over to the next generation of its
        slot after this long (``None``: 80% of the function time limit).
    :param eval_every: sync rounds between held-out evaluations (``None``: about four per
        epoch, thinned out so that evaluations take at most 3% of the training time).
    :param step_timeout: seconds a worker may stay silent while a step waits for it before it
        is evicted and replaced.
    :param shuffle: shuffle the rows once before sharding them into batch objects.
    :param progress: show a progress bar (``None``: when stderr is a terminal or in Jupyter).
    :param fault_rate: **testing hook**: the fraction of worker invocations that kill their own
        process (``os._exit``) at a random step among their first 30, to exercise recovery.
        Leave it at 0.

    Fitted attributes: ``coef_`` (1, n_features), ``intercept_`` (1,), ``classes_`` (the two
    label values, the second being the positive class), ``n_features_in_``, ``history_`` (list of
    dicts: ``time``, ``step`` (the synchronization round), ``epoch``, ``train_loss``,
    ``test_loss``, ``loss``, ``samples``, ``samples_per_s``, ``workers``), ``decisions_`` (the
    driver's round decisions),
    ``run_info_`` (timings and what happened to every worker invocation) and ``n_iter_``
    (epochs done).

    :raises ConfigurationError: a hyperparameter is out of range (at construction).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        epochs: float = 10.0,
        batch_size: int | None = None,
        learning_rate: float = 0.7,
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

    def _make_objective(self) -> Objective:
        return BinaryLogistic()

    def _learn_labels(self, labels: npt.NDArray[Any], source: str) -> None:
        # any two classes, sorted, the second being the positive one: 0/1, -1/1, 2/4 (LIBSVM's
        # breast-cancer), False/True, "no"/"yes"
        values = unique_labels(labels, source)
        if len(values) < 2:
            raise DataFormatError(
                f"{source}: logistic regression needs samples of 2 classes, found only "
                f"{values.tolist()}"
            )
        if len(values) > 2:
            raise DataFormatError(
                f"{source}: logistic regression needs exactly 2 classes, found {len(values)}: "
                f"{values[:10].tolist()}; use SoftmaxRegression for more than two classes"
            )
        if values.dtype.kind == "f" and not np.all(values == np.round(values)):
            raise DataFormatError(
                f"{source}: labels {values.tolist()} are not whole numbers: class labels are "
                "integers or names (is this a regression target?)"
            )
        self.classes_ = values

    def _encode(self, y: npt.NDArray[Any], source: str) -> npt.NDArray[Any]:
        yv = np.asarray(y)
        classes = np.asarray(self.classes_)
        known = np.isin(yv, classes)
        if not known.all():
            bad = yv[~known][:5]
            raise DataFormatError(
                f"{source}: labels {bad.tolist()} are not among the classes {classes.tolist()}"
            )
        encoded: npt.NDArray[Any] = (yv == classes[1]).astype(np.float64)
        return encoded

    def _worker_label(self, *, encoded: bool) -> float | None:
        # encoded labels are 0/1; a stored dataset holds numbers, never class names
        return 1.0 if encoded else float(np.asarray(self.classes_)[1])

    def _set_coefficients(self, W: FloatArray) -> None:
        self.coef_ = W[:-1, 0].reshape(1, -1).copy()
        self.intercept_ = W[-1, :1].copy()

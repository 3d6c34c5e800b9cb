"""Matrix factorization of a ratings matrix, trained by stateless function workers.

A rating of user ``u`` for item ``i`` is predicted as ``mean + p_u . q_i`` with rank-``k`` factor
vectors, minimizing the mean of ``(prediction - rating)^2 / 2`` plus ``(l2 / 2)`` times the
squared norms of the factors a minibatch touches (scaled like the linear models' lazy L2).

The factors live in the same replicated weight matrix as the linear models' weights: row ``u``
holds ``p_u`` and row ``n_users + i`` holds ``q_i``. A rating is stored as a training row with a
1 in the user's column and a 1 in the item's column, so sharding, minibatches, the sync protocol,
checkpoints and fault tolerance are the linear models' own; only the gradient differs. A
minibatch moves the factor rows of the users and items it rates, which is what makes the
updates sparse.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from faasml._rows import add_rows, take_rows
from faasml.algorithms.base import (
    LOCAL_STEPS_DEFAULT,
    FloatArray,
    IntArray,
    LinearEstimator,
    Objective,
    Workspace,
    _Prepared,
)
from faasml.errors import ConfigurationError, DataFormatError

__all__ = ["FactorObjective", "MatrixFactorization"]


class FactorObjective(Objective):
    """Squared error of ``mean + b_u + b_i + p_u . q_i`` against ratings, on two-hot rows.

    With ``biases``, a user row is ``[p_u, b_u, 1]`` and an item row ``[q_i, 1, b_i]``, so the
    dot product of the two rows is ``p_u . q_i + b_u + b_i``. The two constant 1s never move:
    their gradient is always 0, so no optimizer ever changes them.

    :param rank: ``k``, the factor dimension.
    :param mean: the global mean rating, added to every prediction.
    :param n_users: weight rows ``0 .. n_users - 1`` are users', the rest items'.
    :param biases: learn a bias per user and per item (two more columns).
    """

    regression: ClassVar[bool] = True

    def __init__(self, rank: int, mean: float, n_users: int, biases: bool = True) -> None:
        self.rank = int(rank)
        self.biases = bool(biases)
        self.n_outputs = self.rank + (2 if self.biases else 0)
        self.mean = float(mean)
        self.n_users = int(n_users)

    def initial(self, shape: tuple[int, int], scale: float, seed: int) -> FloatArray:
        """Random factors, zero biases and the constant 1s (the last row, unused, is 0)."""
        W = np.random.default_rng([int(seed), 0x3F]).normal(0.0, scale, size=shape)
        W[-1] = 0.0
        if self.biases:
            k, users = self.rank, slice(0, self.n_users)
            items = slice(self.n_users, shape[0] - 1)
            W[users, k], W[users, k + 1] = 0.0, 1.0
            W[items, k], W[items, k + 1] = 1.0, 0.0
        return W

    def loss_and_residual(self, Z: FloatArray, y: npt.NDArray[Any]) -> tuple[float, FloatArray]:
        """Mean ``(z - y)^2 / 2`` of predictions ``Z`` (shape ``(B, 1)``) and ``z - y``."""
        R = Z - np.asarray(y, dtype=np.float64).reshape(-1, 1)
        return float(np.mean(R * R) / 2.0), R

    def loss(self, Z: FloatArray, y: npt.NDArray[Any]) -> float:
        """Mean ``(z - y)^2 / 2`` of predictions ``Z`` (shape ``(B, 1)``)."""
        return self.loss_and_residual(Z, y)[0]

    def proba(self, Z: FloatArray) -> FloatArray:
        """Not defined: ratings are not classes."""
        raise TypeError("a matrix factorization predicts ratings, not class probabilities")

    def pairs(self, X: sp.csr_matrix) -> tuple[IntArray, IntArray]:
        """The (user row, item row) of each two-hot rating row of ``X``.

        :raises DataFormatError: a row does not hold exactly one user and one item column.
        """
        C = sp.csr_matrix(X)
        if not (np.diff(C.indptr) == 2).all():
            raise DataFormatError("each rating row must hold one user and one item column")
        cols = C.indices.reshape(-1, 2).astype(np.int64)
        first, second = cols.min(axis=1), cols.max(axis=1)
        return first, second

    def predict(self, W: FloatArray, X: sp.csr_matrix) -> FloatArray:
        """Predicted ratings ``(B,)`` of the two-hot rows ``X`` with factors ``W``."""
        users, items = self.pairs(X)
        out: FloatArray = np.einsum("ij,ij->i", W[users], W[items]) + self.mean
        return out

    def evaluate(self, W: FloatArray, X: Any, y: npt.NDArray[Any]) -> float:
        """Mean ``(prediction - rating)^2 / 2`` on ``(X, y)``."""
        return self.loss(self.predict(W, X).reshape(-1, 1), y)

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
        """Loss and gradient of a minibatch of ratings on the factor rows it touches."""
        users, items = self.pairs(X)
        rows, inverse = np.unique(np.concatenate([users, items]), return_inverse=True)
        F = take_rows(W, rows)  # the touched factors, plus undecided updates of this worker
        if overlay:
            extra = np.zeros_like(F)
            for rows_o, values_o in overlay:
                # where each overlay row sits among the (sorted) touched rows, if it does
                at = np.searchsorted(rows, rows_o).clip(0, rows.size - 1)
                keep = rows[at] == rows_o
                add_rows(extra, at[keep], values_o[keep])
            F = F + extra
        if offset is not None:
            F = F + take_rows(offset, rows)
        B = users.size
        at_user, at_item = inverse[:B], inverse[B:]
        P, Q = F[at_user], F[at_item]
        predicted = np.einsum("ij,ij->i", P, Q) + self.mean
        loss, R = self.loss_and_residual(predicted.reshape(-1, 1), y)
        grad = np.zeros_like(F)
        np.add.at(grad, at_user, R * Q)
        np.add.at(grad, at_item, R * P)
        grad /= B
        if l2:
            scale = 1.0 if l2_scale is None else l2_scale[rows][:, None]
            grad += l2 * scale * F
        if self.biases:
            # the constant 1 of a user row (its last column) and of an item row never move
            is_user = rows < self.n_users
            grad[is_user, self.rank + 1] = 0.0
            grad[~is_user, self.rank] = 0.0
        return loss, rows.astype(np.int64), grad


def _ratings(ratings: Any, source: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any], FloatArray]:
    """``(users, items, values)`` from a ``(users, items, values)`` tuple or an ``(n, 3)`` array."""
    if isinstance(ratings, tuple | list) and len(ratings) == 3:
        users, items, values = (np.asarray(part) for part in ratings)
    else:
        table = np.asarray(ratings)
        if table.ndim != 2 or table.shape[1] != 3:
            raise DataFormatError(
                f"{source} must be (users, items, ratings) or an (n, 3) array, found "
                f"{type(ratings).__name__} of shape {getattr(table, 'shape', None)}"
            )
        users, items, values = table[:, 0], table[:, 1], table[:, 2]
    if not (users.ndim == items.ndim == values.ndim == 1) or not (
        users.shape == items.shape == values.shape
    ):
        raise DataFormatError(
            f"{source}: users, items and ratings must be 1-D and of one length, found shapes "
            f"{users.shape}, {items.shape}, {values.shape}"
        )
    try:
        numbers = values.astype(np.float64)
    except (TypeError, ValueError):
        raise DataFormatError(f"{source}: ratings must be numbers") from None
    if not np.isfinite(numbers).all():
        row = int(np.flatnonzero(~np.isfinite(numbers))[0])
        raise DataFormatError(f"{source}: rating {row} is NaN or infinite")
    return users, items, numbers


class MatrixFactorization(LinearEstimator):
    """Low-rank factorization of a ratings matrix, trained by stateless function workers.

    ``fit(ratings)`` takes ``(users, items, ratings)`` arrays (or an ``(n, 3)`` array); users and
    items are any ids (numbers or strings). ``predict(users, items)`` returns predicted ratings;
    a user or item unseen in training adds nothing to the mean rating.

    :param rank: factor dimension ``k``.
    :param biases: also learn a bias per user and per item: ``mean + b_u + b_i + p_u . q_i``.
    :param init_scale: standard deviation of the random initial factors (the all-zero start is
        a saddle point that gradients never leave).

    The other hyperparameters are those of :class:`~faasml.algorithms.SparseLogisticRegression`
    (``l2=None`` means ``1e-4`` here). ``history_`` holds the held-out ``loss``: mean squared
    error divided by 2. Fitted attributes: ``users_``, ``items_`` (sorted ids),
    ``user_factors_``, ``item_factors_``, ``user_bias_``, ``item_bias_``, ``mean_``, and the
    usual ``history_``, ``run_info_``.

    :raises ConfigurationError: a hyperparameter is out of range (at construction).
    """

    _estimator_type: ClassVar[str] = "regressor"
    #: estimators of this family take no n_features: a model row per user and item
    n_features = None

    def __init__(
        self,
        *,
        rank: int = 10,
        biases: bool = True,
        init_scale: float = 0.1,
        workers: int = 2,
        epochs: float = 10.0,
        batch_size: int | None = None,
        learning_rate: float = 0.01,
        optimizer: str = "adam",
        schedule: str = "constant",
        momentum: float = 0.9,
        l2: float | None = None,
        sync: str = "ssp",
        staleness: int = 1,
        local_steps: int = LOCAL_STEPS_DEFAULT,
        significance: float = 0.0,
        aggregation: str = "mean",
        averaging: float = 0.0,
        update_dtype: str = "float32",
        max_time: float | None = None,
        target_loss: float | None = None,
        seed: int = 0,
        checkpoint_every: int = 100,
        generation_seconds: float | None = None,
        eval_every: int | None = None,
        step_timeout: float = 60.0,
        shuffle: bool = True,
        progress: bool | None = None,
        fault_rate: float = 0.0,
    ) -> None:
        self.rank = rank
        self.biases = biases
        self.init_scale = init_scale
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
        self.checkpoint_every = checkpoint_every
        self.generation_seconds = generation_seconds
        self.eval_every = eval_every
        self.step_timeout = step_timeout
        self.shuffle = shuffle
        self.progress = progress
        self.fault_rate = fault_rate
        self._validate_params()

    def __sklearn_tags__(self) -> Any:
        """Estimator tags for scikit-learn >= 1.6 (a regressor)."""
        from sklearn.utils import RegressorTags, Tags, TargetTags

        return Tags(
            estimator_type="regressor",
            target_tags=TargetTags(required=False),
            regressor_tags=RegressorTags(),
            non_deterministic=True,
        )

    def _validate_extra_params(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int | np.integer):
            raise ConfigurationError(
                f"MatrixFactorization: rank must be an integer >= 1, got {self.rank!r}"
            )
        if self.rank < 1:
            raise ConfigurationError(
                f"MatrixFactorization: rank must be an integer >= 1, got {self.rank!r}"
            )
        if not isinstance(self.biases, bool | np.bool_):
            raise ConfigurationError(
                f"MatrixFactorization: biases must be True or False, got {self.biases!r}"
            )
        scale = self.init_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < 1e6:
            raise ConfigurationError(
                f"MatrixFactorization: init_scale must be a number > 0, got {scale!r}"
            )

    # ------------------------------------------------------------------ fit

    def fit(  # type: ignore[override]  # ratings, not (X, y)
        self, ratings: Any, cloud: Any = None, *, test: Any = None
    ) -> MatrixFactorization:
        """Factorize ``ratings`` with ``workers`` stateless function workers; return ``self``.

        :param ratings: ``(users, items, values)`` arrays, or an ``(n, 3)`` array.
        :param cloud: a :class:`~faasml.Cloud`, a provider name, or ``None`` (``"local"``).
        :param test: held-out ratings in the same form; their loss is recorded in ``history_``
            (pairs with a user or item unseen in training are left out of it).
        :raises DataFormatError: malformed, empty or non-finite ratings.
        """
        self._validate_params()
        started = time.monotonic()
        users, items, values = _ratings(ratings, "ratings")
        if values.size == 0:
            raise DataFormatError("empty dataset: no ratings")
        self.users_, user_index = np.unique(users, return_inverse=True)
        self.items_, item_index = np.unique(items, return_inverse=True)
        self.mean_ = float(values.mean())
        n_users, n_items = len(self.users_), len(self.items_)
        X = self._two_hot(user_index.reshape(-1), item_index.reshape(-1))
        prepared = _Prepared(None, X, values, None, None, n_users + n_items, values.size)
        if test is not None:
            t_users, t_items, t_values = _ratings(test, "test")
            u, i, seen_u, seen_i = self._indices(t_users, t_items)
            known = seen_u & seen_i
            prepared.X_test = self._two_hot(u[known], i[known])
            prepared.y_test = t_values[known]
        return self._fit_prepared(prepared, cloud, started)

    def _two_hot(self, user_index: IntArray, item_index: IntArray) -> sp.csr_matrix:
        n = user_index.size
        cols = np.column_stack([user_index, len(self.users_) + item_index]).reshape(-1)
        width = len(self.users_) + len(self.items_)
        return sp.csr_matrix((np.ones(2 * n), cols, np.arange(0, 2 * n + 1, 2)), shape=(n, width))

    def _indices(
        self, users: npt.NDArray[Any], items: npt.NDArray[Any]
    ) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Row indices of ``users`` and ``items``, and which of each were seen in training."""
        u = np.searchsorted(self.users_, users).clip(0, max(len(self.users_) - 1, 0))
        i = np.searchsorted(self.items_, items).clip(0, max(len(self.items_) - 1, 0))
        seen_u = np.asarray(self.users_[u] == users, dtype=bool)
        seen_i = np.asarray(self.items_[i] == items, dtype=bool)
        return u.astype(np.int64), i.astype(np.int64), seen_u, seen_i

    # ------------------------------------------------------------------ subclass contract

    def _make_objective(self) -> Objective:
        return FactorObjective(int(self.rank), self.mean_, len(self.users_), bool(self.biases))

    def _learn_labels(self, labels: npt.NDArray[Any], source: str) -> None:
        """Ratings are values, not classes: nothing to learn."""

    def _encode(self, y: npt.NDArray[Any], source: str) -> npt.NDArray[Any]:
        return np.asarray(y, dtype=np.float64)

    def _worker_label(self, *, encoded: bool) -> float | None:
        return None

    def _initial_weights(self, shape: tuple[int, int]) -> FloatArray:
        objective = FactorObjective(int(self.rank), self.mean_, len(self.users_), self.biases)
        return objective.initial(shape, float(self.init_scale), int(self.seed))

    def _default_l2(self, n_train: int) -> float:
        return 1e-4

    def _set_coefficients(self, W: FloatArray) -> None:
        n_users, k = len(self.users_), int(self.rank)
        users, items = W[:n_users], W[n_users : n_users + len(self.items_)]
        self.user_factors_ = users[:, :k].copy()
        self.item_factors_ = items[:, :k].copy()
        self.user_bias_ = users[:, k].copy() if self.biases else np.zeros(n_users)
        self.item_bias_ = items[:, k + 1].copy() if self.biases else np.zeros(len(self.items_))

    # ------------------------------------------------------------------ prediction

    def predict(self, users: Any, items: Any = None) -> FloatArray:  # type: ignore[override]
        """Predicted ratings of ``(users[j], items[j])``; an unseen id adds nothing to the mean."""
        self._check_fitted()
        u_ids, i_ids = np.asarray(users), np.asarray(items)
        if u_ids.shape != i_ids.shape or u_ids.ndim != 1:
            raise DataFormatError(
                f"users and items must be 1-D and of one length, found {u_ids.shape} and "
                f"{i_ids.shape}"
            )
        u, i, seen_u, seen_i = self._indices(u_ids, i_ids)
        out = np.full(u_ids.shape, self.mean_, dtype=np.float64)
        # an id seen in training contributes its bias even when the other one is new
        known = seen_u & seen_i
        out[seen_u] += self.user_bias_[u[seen_u]]
        out[seen_i] += self.item_bias_[i[seen_i]]
        out[known] += np.einsum(
            "ij,ij->i", self.user_factors_[u[known]], self.item_factors_[i[known]]
        )
        return out

    def rmse(self, ratings: Any) -> float:
        """Root mean squared error of :meth:`predict` on ``(users, items, values)``."""
        users, items, values = _ratings(ratings, "ratings")
        return float(np.sqrt(np.mean((self.predict(users, items) - values) ** 2)))

    def score(self, ratings: Any, y: Any = None) -> float:  # type: ignore[override]
        """Coefficient of determination R^2 of :meth:`predict` on ``ratings`` (1 is perfect)."""
        users, items, values = _ratings(ratings, "ratings")
        residual = float(np.sum((self.predict(users, items) - values) ** 2))
        total = float(np.sum((values - values.mean()) ** 2))
        return 1.0 - residual / total if total > 0 else 0.0

    def _check_fitted(self) -> None:
        if not hasattr(self, "user_factors_"):
            raise RuntimeError(
                "this MatrixFactorization is not fitted yet; call fit(ratings) first"
            )

    def predict_proba(self, X: Any) -> FloatArray:
        """Not defined: ratings are not classes."""
        raise TypeError("MatrixFactorization predicts ratings: use predict(users, items)")

    def decision_function(self, X: Any) -> FloatArray:
        """Not defined: use :meth:`predict`."""
        raise TypeError("MatrixFactorization predicts ratings: use predict(users, items)")

    def log_loss(self, X: Any, y: Any) -> float:
        """Not defined: use :meth:`rmse`."""
        raise TypeError("MatrixFactorization predicts ratings: use rmse(ratings)")

"""Sparse, lazy, per-coordinate optimizers for the replicated linear models.

Every optimizer turns a sparse gradient -- the rows of the weight matrix a minibatch touched and
their gradient values -- into a sparse *delta* for those same rows: the change the step makes to
the weights. Workers broadcast deltas, not gradients (MLLess-style), so every replica can apply
them by plain addition.

State is kept per coordinate (per weight) and updated **lazily**: only the rows a minibatch
touched are read and written. A coordinate that is absent from a minibatch keeps its state
unchanged -- its momentum neither decays nor keeps moving the weight, and its Adam moments do not
decay. This is the usual convention for sparse models (TensorFlow's ``LazyAdam``, Cirrus'
sparse updates); it costs O(touched rows) per step instead of O(all weights), which is what makes
2^18-wide models cheap. It also means the momentum is per coordinate, never one scalar shared by
all weights (the Cirrus bug the research notes warn about).

Adam's bias correction uses a per-row update count (how many times that row was touched), not the
global step, so a coordinate first seen late in training starts with correctly scaled moments.

The weight matrix has shape ``(n_rows, n_outputs)``: ``n_outputs`` is 1 for logistic regression
and the number of classes for softmax regression; a row is one feature (plus the bias row).

Numerics are plain numpy: a micro-benchmark (``benchmarks/train_sparse_lr.py --micro``) showed
numexpr *slower* than numpy for these kernels at minibatch sizes (Adam on 10,000 touched rows:
numpy 49 us, numexpr with 1 thread 114 us; log-loss and residual of 10,000 scores: 106 us vs
260 us), because its per-call overhead dominates arrays this small.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from faasml._rows import put_rows, take_rows
from faasml.errors import ConfigurationError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Optimizer",
    "learning_rate_at",
    "make_optimizer",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: names accepted by ``schedule=``: ``"constant"`` keeps the rate, ``"invsqrt"`` divides it by
#: ``sqrt(1 + t / decay_steps)``.
SCHEDULES = ("constant", "invsqrt")


def learning_rate_at(
    learning_rate: float, schedule: str, t: int | float, decay_steps: float = 1.0
) -> float:
    """Return the learning rate for global step ``t`` (0-based).

    :param learning_rate: the base rate.
    :param schedule: ``"constant"`` or ``"invsqrt"`` (``lr / sqrt(1 + t / decay_steps)``).
    :param t: the global step.
    :param decay_steps: steps over which ``"invsqrt"`` divides the rate by ``sqrt(2)``.
    :raises ConfigurationError: unknown ``schedule``.
    """
    if schedule == "constant":
        return learning_rate
    if schedule == "invsqrt":
        return learning_rate / math.sqrt(1.0 + max(t, 0) / decay_steps)
    raise ConfigurationError(f"unknown learning-rate schedule {schedule!r}; use one of {SCHEDULES}")


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def _check_fraction(name: str, value: float) -> float:
    value = _check_positive(name, value, allow_zero=True)
    if value >= 1.0:
        raise ConfigurationError(f"{name} must be in [0, 1), got {value!r}")
    return value


class Optimizer(abc.ABC):
    """Base class: turns sparse gradients into sparse deltas, keeping per-coordinate state.

    Call :meth:`init` with the weight shape once, then :meth:`step` for every minibatch.

    :param learning_rate: base step size (> 0).
    :param schedule: ``"constant"`` or ``"invsqrt"``, see :func:`learning_rate_at`.
    :param decay_steps: the ``"invsqrt"`` time constant, in global steps (> 0).
    :raises ConfigurationError: an argument is out of range.
    """

    #: registry name used by ``optimizer="..."`` in the estimators.
    name: ClassVar[str] = ""
    #: names of the per-coordinate state arrays, each shaped like the weights (or ``(rows, 1)``).
    state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, learning_rate: float = 0.01, *, schedule: str = "constant", decay_steps: float = 1.0
    ) -> None:
        self.learning_rate = _check_positive("learning_rate", learning_rate)
        if schedule not in SCHEDULES:
            raise ConfigurationError(
                f"unknown learning-rate schedule {schedule!r}; use one of {SCHEDULES}"
            )
        self.schedule = schedule
        self.decay_steps = _check_positive("decay_steps", decay_steps)
        self.state: dict[str, FloatArray] = {}
        self.shape: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self.learning_rate:g}, {self.schedule})"

    def init(self, shape: tuple[int, int]) -> None:
        """Allocate zeroed state for weights of ``shape`` = ``(n_rows, n_outputs)``."""
        self.shape = (int(shape[0]), int(shape[1]))
        self.state = {name: self._zeros(name) for name in self.state_names}

    def _zeros(self, name: str) -> FloatArray:
        assert self.shape is not None
        return np.zeros(self.shape, dtype=np.float64)

    def rate(self, t: int) -> float:
        """The scheduled learning rate at global step ``t``."""
        return learning_rate_at(self.learning_rate, self.schedule, t, self.decay_steps)

    def step(self, rows: IntArray, grad: FloatArray, t: int) -> FloatArray:
        """Return the delta for ``rows`` given their gradient ``grad`` at global step ``t``.

        :param rows: distinct row indices, shape ``(r,)``.
        :param grad: gradient of the minimized objective for those rows, shape ``(r, n_outputs)``.
        :param t: the global step (drives the schedule).
        :returns: the change to add to ``W[rows]``, shape ``(r, n_outputs)``.
        """
        if self.shape is None:
            raise RuntimeError(f"{type(self).__name__}.init(shape) must be called before step()")
        return self._step(rows, np.asarray(grad, dtype=np.float64), self.rate(t))

    @abc.abstractmethod
    def _step(self, rows: IntArray, grad: FloatArray, lr: float) -> FloatArray:
        """Update the state of ``rows`` and return their delta for learning rate ``lr``."""

    # ---- persistence (a worker hands its state to the next generation of its slot)

    def state_rows(self) -> IntArray:
        """Rows whose state is not all zero (the only ones worth saving)."""
        if not self.state:
            return np.zeros(0, dtype=np.int64)
        touched = np.zeros(next(iter(self.state.values())).shape[0], dtype=bool)
        for arr in self.state.values():
            touched |= (arr != 0).any(axis=1)
        return np.flatnonzero(touched).astype(np.int64)

    def get_state(self) -> dict[str, FloatArray]:
        """The state in sparse form: ``{"rows": rows, name: values of those rows, ...}``."""
        rows = self.state_rows()
        out: dict[str, FloatArray] = {"rows": rows.astype(np.float64)}
        for name, arr in self.state.items():
            out[name] = arr[rows]
        return out

    def set_state(self, saved: dict[str, npt.NDArray[np.float64]]) -> None:
        """Restore what :meth:`get_state` returned (after :meth:`init` with the same shape).

        :raises ValueError: the saved state does not match this optimizer or shape.
        """
        if self.shape is None:
            raise RuntimeError(f"{type(self).__name__}.init(shape) must be called first")
        rows = np.asarray(saved["rows"]).astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise ValueError("saved optimizer state has rows outside the weight matrix")
        for name in self.state_names:
            if name not in saved:
                raise ValueError(f"saved optimizer state lacks {name!r} for {self.name}")
            values = np.asarray(saved[name], dtype=np.float64)
            arr = self._zeros(name)
            if values.shape != (rows.size, arr.shape[1]):
                raise ValueError(f"saved optimizer state {name!r} has shape {values.shape}")
            arr[rows] = values
            self.state[name] = arr


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``delta = -lr_t * g``."""

    name = "sgd"

    def _step(self, rows: IntArray, grad: FloatArray, lr: float) -> FloatArray:
        return -lr * grad


class Momentum(Optimizer):
    """Heavy-ball (or Nesterov) momentum with one velocity per coordinate.

    ``v_j = mu * v_j + g_j``; ``delta_j = -lr_t * v_j`` (Nesterov: ``-lr_t * (g_j + mu * v_j)``).

    :param momentum: ``mu`` in [0, 1).
    :param nesterov: use the Nesterov look-ahead form.
    """

    name = "momentum"
    state_names = ("velocity",)

    def __init__(
        self,
        learning_rate: float = 0.01,
        *,
        momentum: float = 0.9,
        nesterov: bool = False,
        schedule: str = "constant",
        decay_steps: float = 1.0,
    ) -> None:
        super().__init__(learning_rate, schedule=schedule, decay_steps=decay_steps)
        self.momentum = _check_fraction("momentum", momentum)
        self.nesterov = bool(nesterov)

    def _step(self, rows: IntArray, grad: FloatArray, lr: float) -> FloatArray:
        vel = self.state["velocity"]
        v = self.momentum * take_rows(vel, rows) + grad
        put_rows(vel, rows, v)
        if self.nesterov:
            return -lr * (grad + self.momentum * v)
        return -lr * v


class AdaGrad(Optimizer):
    """AdaGrad: ``h_j += g_j^2``; ``delta_j = -lr_t * g_j / (sqrt(h_j) + eps)``.

    :param eps: added to the denominator for numerical safety (> 0).
    """

    name = "adagrad"
    state_names = ("sum_sq",)

    def __init__(
        self,
        learning_rate: float = 0.1,
        *,
        eps: float = 1e-8,
        schedule: str = "constant",
        decay_steps: float = 1.0,
    ) -> None:
        super().__init__(learning_rate, schedule=schedule, decay_steps=decay_steps)
        self.eps = _check_positive("eps", eps)

    def _step(self, rows: IntArray, grad: FloatArray, lr: float) -> FloatArray:
        acc = self.state["sum_sq"]
        h = take_rows(acc, rows) + grad * grad
        put_rows(acc, rows, h)
        return -lr * grad / (np.sqrt(h) + self.eps)


class Adam(Optimizer):
    """Adam with bias correction, lazy and per coordinate.

    ``m_j = b1 m_j + (1-b1) g_j``; ``v_j = b2 v_j + (1-b2) g_j^2``; with ``k_j`` the number of
    times row ``j`` was updated, ``delta_j = -lr_t * (m_j / (1-b1^k_j)) / (sqrt(v_j / (1-b2^k_j))
    + eps)``.

    :param beta1: first-moment decay in [0, 1).
    :param beta2: second-moment decay in [0, 1).
    :param eps: denominator safety term (> 0).
    """

    name = "adam"
    state_names = ("m", "v", "count")

    def __init__(
        self,
        learning_rate: float = 0.001,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        schedule: str = "constant",
        decay_steps: float = 1.0,
    ) -> None:
        super().__init__(learning_rate, schedule=schedule, decay_steps=decay_steps)
        self.beta1 = _check_fraction("beta1", beta1)
        self.beta2 = _check_fraction("beta2", beta2)
        self.eps = _check_positive("eps", eps)

    def _zeros(self, name: str) -> FloatArray:
        assert self.shape is not None
        if name == "count":  # one update count per row, shared by the row's outputs
            return np.zeros((self.shape[0], 1), dtype=np.float64)
        return np.zeros(self.shape, dtype=np.float64)

    def _step(self, rows: IntArray, grad: FloatArray, lr: float) -> FloatArray:
        m_all, v_all, count = self.state["m"], self.state["v"], self.state["count"]
        b1, b2 = self.beta1, self.beta2
        m = b1 * take_rows(m_all, rows) + (1.0 - b1) * grad
        v = b2 * take_rows(v_all, rows) + (1.0 - b2) * (grad * grad)
        k = take_rows(count, rows) + 1.0
        put_rows(m_all, rows, m)
        put_rows(v_all, rows, v)
        put_rows(count, rows, k)
        m_hat = m / (1.0 - b1**k)
        v_hat = v / (1.0 - b2**k)
        return -lr * m_hat / (np.sqrt(v_hat) + self.eps)


#: ``optimizer=`` name -> class.
OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Momentum, AdaGrad, Adam)}


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    schedule: str = "constant",
    decay_steps: float = 1.0,
    momentum: float = 0.9,
) -> Optimizer:
    """Build the optimizer called ``name`` (``"sgd"``, ``"momentum"``, ``"adagrad"``, ``"adam"``).

    :param momentum: used by ``"momentum"`` only.
    :raises ConfigurationError: unknown name or out-of-range value.
    """
    cls = OPTIMIZERS.get(name)
    if cls is None:
        raise ConfigurationError(f"unknown optimizer {name!r}; use one of {sorted(OPTIMIZERS)}")
    if cls is Momentum:
        return Momentum(
            learning_rate, momentum=momentum, schedule=schedule, decay_steps=decay_steps
        )
    return cls(learning_rate, schedule=schedule, decay_steps=decay_steps)

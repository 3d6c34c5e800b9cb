"""Feature preparation: the hashing trick and column scalers.

:class:`FeatureHasher` maps categorical ``"field=value"`` tokens to columns of a fixed-width sparse
matrix with a keyed BLAKE2b hash. Python's built-in ``hash()`` is salted per process, so it would
give a different matrix on every worker; BLAKE2b gives the same columns everywhere, forever.

:class:`MinMaxScaler` and :class:`StandardScaler` follow scikit-learn's ``fit``/``transform``
convention. On sparse input they only scale (never shift), so a CSR matrix stays sparse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from faasml.data.formats import Matrix, first_nonfinite
from faasml.errors import ConfigurationError, DataFormatError

__all__ = ["FeatureHasher", "MinMaxScaler", "StandardScaler"]

#: a row for :meth:`FeatureHasher.transform`: tokens, or a ``{field: value}`` mapping.
Row = Iterable[str] | Mapping[str, object]

# a per-hasher memo of token -> column; bounded so a stream of unique ids cannot grow it forever
_MEMO_LIMIT = 1 << 20


class FeatureHasher:
    """Hash ``"field=value"`` tokens into a fixed number of columns (the hashing trick).

    The column of a token is ``BLAKE2b-64(token, salt=seed) mod n_features``; it does not depend on
    the process, the platform or the order rows arrive in, so workers hashing separately agree.

    :param n_features: number of output columns.
    :param seed: changes which tokens collide (any int in ``[0, 2**128)``).
    :param binary: value 1 for every present token, with duplicates in a row (repeated tokens or
        hash collisions) clipped to 1. When false, a column holds the number of tokens of the row
        that hash to it.
    """

    def __init__(self, n_features: int = 2**18, *, seed: int = 0, binary: bool = True) -> None:
        if not isinstance(n_features, int | np.integer) or n_features < 1:
            raise ConfigurationError(f"n_features must be a positive integer, got {n_features!r}")
        if not 0 <= seed < 2**128:
            raise ConfigurationError(f"seed must be in [0, 2**128), got {seed}")
        self.n_features = int(n_features)
        self.seed = int(seed)
        self.binary = bool(binary)
        self._salt = self.seed.to_bytes(16, "little")
        self._memo: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"FeatureHasher(n_features={self.n_features}, seed={self.seed}, binary={self.binary})"
        )

    def column(self, token: str) -> int:
        """Return the column ``token`` hashes to."""
        col = self._memo.get(token)
        if col is None:
            if not isinstance(token, str):
                raise DataFormatError(
                    f"feature tokens must be strings like 'field=value', found {token!r} "
                    f"({type(token).__name__})"
                )
            digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8, salt=self._salt).digest()
            col = int.from_bytes(digest, "little") % self.n_features
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[token] = col
        return col

    def transform(self, rows: Iterable[Row]) -> sp.csr_matrix:
        """Hash rows of tokens into a CSR matrix with one row per input row.

        Each distinct token is hashed once; the per-token work is a dict lookup done in C.

        :param rows: each row an iterable of ``"field=value"`` strings, or a mapping
            ``{field: value}`` meaning the tokens ``f"{field}={value}"``.
        :raises DataFormatError: a row is a bare string (a common slip for a one-token row) or a
            token is not a string.
        """
        token_rows: list[list[str] | tuple[str, ...]] = []
        for i, row in enumerate(rows):
            if isinstance(row, str):
                raise DataFormatError(
                    f"row {i} is a string {row[:40]!r}; expected an iterable of tokens "
                    "(wrap a single token in a list)"
                )
            if isinstance(row, Mapping):
                token_rows.append([f"{k}={v}" for k, v in row.items()])
            elif isinstance(row, list | tuple):
                token_rows.append(row)
            else:
                token_rows.append(list(row))
        n_rows = len(token_rows)
        counts = np.fromiter(map(len, token_rows), dtype=np.int64, count=n_rows)
        flat = list(chain.from_iterable(token_rows))
        lookup = {tok: self.column(tok) for tok in dict.fromkeys(flat)}
        cols = np.fromiter(map(lookup.__getitem__, flat), dtype=np.int64, count=len(flat))
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return self._assemble(cols, indptr, n_rows)

    def transform_fields(self, fields: Mapping[str, npt.ArrayLike]) -> sp.csr_matrix:
        """Hash columnar data: row ``i`` gets the token ``f"{name}={values[i]}"`` of each field.

        Equivalent to :meth:`transform` on those tokens, but each column is factorised with
        :func:`numpy.unique` (numbers) or a dict (strings), so no Python code runs per row.
        Missing values should be filled first: ``None`` and NaN would become the tokens
        ``"name=None"`` and ``"name=nan"``.

        :param fields: ``{field name: 1-D array of values}``, all of the same length.
        :raises DataFormatError: the fields have different lengths or are not 1-D.
        """
        if not fields:
            raise DataFormatError("transform_fields needs at least one field")
        arrays = {name: np.asarray(values) for name, values in fields.items()}
        lengths = {name: a.shape for name, a in arrays.items()}
        n_rows = next(iter(arrays.values())).shape[0] if arrays else 0
        if any(len(s) != 1 or s[0] != n_rows for s in lengths.values()):
            raise DataFormatError(f"fields must be 1-D and of equal length, found shapes {lengths}")
        cols = np.empty((n_rows, len(arrays)), dtype=np.int64)
        for j, (name, values) in enumerate(arrays.items()):
            if values.dtype.kind in "biuf":
                uniq, inverse = np.unique(values, return_inverse=True)
                lut = np.fromiter(
                    (self.column(f"{name}={v}") for v in uniq.tolist()),
                    dtype=np.int64,
                    count=len(uniq),
                )
                cols[:, j] = lut[inverse.reshape(-1)]
            else:
                # strings and objects: hashing into a dict beats sorting them for np.unique
                items = values.tolist()
                col_of = {v: self.column(f"{name}={v}") for v in dict.fromkeys(items)}
                cols[:, j] = np.fromiter(map(col_of.__getitem__, items), np.int64, n_rows)
        indptr = np.arange(0, cols.size + 1, len(arrays), dtype=np.int64)
        return self._assemble(cols.reshape(-1), indptr, n_rows)

    def _assemble(self, cols: np.ndarray, indptr: np.ndarray, n_rows: int) -> sp.csr_matrix:
        idx_dtype = np.int32 if max(self.n_features, len(cols)) < 2**31 else np.int64
        X = sp.csr_matrix(
            (
                np.ones(len(cols), dtype=np.float64),
                cols.astype(idx_dtype, copy=False),
                indptr.astype(idx_dtype, copy=False),
            ),
            shape=(n_rows, self.n_features),
        )
        X.sum_duplicates()  # repeated tokens and collisions add up; sorts the indices too
        if self.binary:
            X.data[:] = 1.0
        return X


# --------------------------------------------------------------------------- scalers


def _as_matrix(X: Matrix | sp.spmatrix | npt.ArrayLike, who: str) -> Matrix:
    """Return ``X`` as float CSR or a 2-D float array, refusing NaN/inf."""
    M: Matrix
    if sp.issparse(X):
        M = sp.csr_matrix(X)
        if not np.issubdtype(M.dtype, np.floating):
            M = M.astype(np.float64)
    else:
        M = np.asarray(X)
        if M.ndim != 2:
            raise DataFormatError(f"{who}: X must be 2-D, found shape {M.shape}")
        if not np.issubdtype(M.dtype, np.floating):
            M = M.astype(np.float64)
    bad = first_nonfinite(M)
    if bad is not None:
        raise DataFormatError(
            f"{who}: X has a NaN or infinite value at row {bad[0]}, column {bad[1]}; "
            "impute missing values first"
        )
    return M


class _Scaler:
    """Shared machinery: ``transform(X) = (X - center_) / scale_`` column by column."""

    center_: np.ndarray
    scale_: np.ndarray
    n_features_in_: int

    def fit(self, X: Matrix | sp.spmatrix | npt.ArrayLike, y: Any = None) -> _Scaler:
        """Learn the per-column statistics of ``X``; ``y`` is ignored. Returns ``self``."""
        raise NotImplementedError

    def _check_fitted(self, M: Matrix) -> None:
        name = type(self).__name__
        if not hasattr(self, "scale_"):
            raise ConfigurationError(f"this {name} is not fitted yet; call fit(X) first")
        if M.shape[1] != self.n_features_in_:
            raise DataFormatError(
                f"{name}: X has {M.shape[1]} features but the scaler was fitted on "
                f"{self.n_features_in_}"
            )

    def transform(self, X: Matrix | sp.spmatrix | npt.ArrayLike) -> Matrix:
        """Scale ``X`` with the fitted statistics; CSR in gives CSR out.

        :raises ConfigurationError: the scaler is not fitted.
        :raises DataFormatError: the number of columns differs from ``fit``'s, ``X`` has NaN/inf,
            or ``X`` is sparse but the scaler was fitted on dense data and would shift it.
        """
        name = type(self).__name__
        M = _as_matrix(X, name)
        self._check_fitted(M)
        if sp.issparse(M):
            if self.center_.any():
                raise DataFormatError(
                    f"{name} was fitted on dense data and shifts columns, which would make sparse "
                    "X dense; fit it on the sparse matrix or pass X.toarray()"
                )
            out = M.copy()
            out.data /= self.scale_[out.indices]
            return out
        return (M - self.center_) / self.scale_

    def fit_transform(self, X: Matrix | sp.spmatrix | npt.ArrayLike, y: Any = None) -> Matrix:
        """Fit on ``X`` then transform it."""
        return self.fit(X).transform(X)


def _safe_scale(scale: np.ndarray, constant: np.ndarray) -> np.ndarray:
    # a constant column carries no information: leave it unscaled rather than divide by ~0
    out = scale.astype(np.float64, copy=True)
    out[constant | (out == 0)] = 1.0
    return out


class MinMaxScaler(_Scaler):
    """Scale each column to ``[0, 1]``; on sparse input scale by the column's max ``|x|``.

    Dense: ``(x - min) / (max - min)``. Sparse: ``x / max|x|`` (values land in ``[-1, 1]``, zeros
    stay zero). A constant column is shifted to 0 (dense) or left as is (sparse), never divided by
    zero.

    Fitted attributes: ``data_min_``, ``data_max_`` (dense fit), ``max_abs_``, ``scale_``,
    ``center_``, ``n_features_in_``.
    """

    data_min_: np.ndarray
    data_max_: np.ndarray
    max_abs_: np.ndarray

    def fit(self, X: Matrix | sp.spmatrix | npt.ArrayLike, y: Any = None) -> MinMaxScaler:
        """Learn column minimum and maximum (dense) or maximum absolute value (sparse)."""
        M = _as_matrix(X, "MinMaxScaler")
        if M.shape[0] == 0:
            raise DataFormatError("MinMaxScaler: cannot fit on an empty X")
        self.n_features_in_ = M.shape[1]
        if sp.issparse(M):
            self.max_abs_ = np.asarray(abs(M).max(axis=0).toarray()).ravel().astype(np.float64)
            self.center_ = np.zeros(M.shape[1])
            self.scale_ = _safe_scale(self.max_abs_, self.max_abs_ == 0)
        else:
            self.data_min_ = M.min(axis=0).astype(np.float64)
            self.data_max_ = M.max(axis=0).astype(np.float64)
            self.max_abs_ = np.maximum(np.abs(self.data_min_), np.abs(self.data_max_))
            self.center_ = self.data_min_
            self.scale_ = _safe_scale(
                self.data_max_ - self.data_min_, self.data_max_ == self.data_min_
            )
        return self


class StandardScaler(_Scaler):
    """Standardise columns to zero mean and unit variance; on sparse input only scale.

    Centring a sparse matrix would fill it in, so for CSR input ``transform`` divides by the
    standard deviation (computed over all rows, implicit zeros included) and never subtracts the
    mean; ``mean_`` is still reported. A constant column keeps scale 1.

    :param with_mean: centre dense data (ignored for sparse data).
    :param with_std: divide by the standard deviation.

    Fitted attributes: ``mean_``, ``var_``, ``scale_``, ``center_``, ``n_features_in_``.
    """

    mean_: np.ndarray
    var_: np.ndarray

    def __init__(self, *, with_mean: bool = True, with_std: bool = True) -> None:
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X: Matrix | sp.spmatrix | npt.ArrayLike, y: Any = None) -> StandardScaler:
        """Learn column means and variances."""
        M = _as_matrix(X, "StandardScaler")
        n = M.shape[0]
        if n == 0:
            raise DataFormatError("StandardScaler: cannot fit on an empty X")
        self.n_features_in_ = M.shape[1]
        if sp.issparse(M):
            mean = np.asarray(M.mean(axis=0)).ravel()
            sq = np.asarray(M.multiply(M).mean(axis=0)).ravel()
            var = np.maximum(sq - mean**2, 0.0)
        else:
            mean = M.mean(axis=0, dtype=np.float64)
            var = M.var(axis=0, dtype=np.float64)
        self.mean_ = mean
        self.var_ = var
        eps = np.finfo(np.float64).eps
        # the same bound scikit-learn uses: variance indistinguishable from rounding error
        constant = var <= n * eps * var + (n * mean * eps) ** 2
        self.scale_ = _safe_scale(np.sqrt(var), constant) if self.with_std else np.ones_like(var)
        centre = self.with_mean and not sp.issparse(M)
        self.center_ = mean.copy() if centre else np.zeros_like(mean)
        return self

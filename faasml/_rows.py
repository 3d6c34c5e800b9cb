"""Gather, scatter and scatter-add of whole rows of a 2-D array by row index.

The training hot paths move a few thousand rows of a ``(n_rows, n_outputs)`` float64 array per
step. numpy's generic fancy indexing does that slowly when rows are short: measured on 6,000 rows,
``A[rows]`` takes 7 us for 1 column and 46 us for 4, against 4 and 6 us for ``np.take``;
``A[rows] = v`` takes 45 us for 4 columns, against 22 us through a view of each row as one
opaque item. These helpers pick the fast form. Row indices must be distinct for
:func:`add_rows` (a repeated row would be added once).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["add_rows", "put_rows", "take_rows"]

Array = npt.NDArray[Any]


def take_rows(A: Array, rows: npt.NDArray[np.int64]) -> Array:
    """``A[rows]`` (a new array)."""
    return np.take(A, rows, axis=0)


def _row_items(A: Array) -> Array | None:
    """A 1-D view of ``A`` with one opaque item per row, or ``None`` when that is not possible."""
    if A.ndim != 2 or A.shape[1] < 2 or not A.flags.c_contiguous:
        return None
    return A.view(np.dtype((np.void, A.dtype.itemsize * A.shape[1]))).reshape(-1)


def put_rows(A: Array, rows: npt.NDArray[np.int64], values: Array) -> None:
    """``A[rows] = values``."""
    items = _row_items(A)
    if items is None:
        A[rows] = values
        return
    packed = _row_items(np.ascontiguousarray(values, dtype=A.dtype).reshape(len(rows), A.shape[1]))
    assert packed is not None
    items[rows] = packed


def add_rows(A: Array, rows: npt.NDArray[np.int64], values: Array) -> None:
    """``A[rows] += values`` for distinct ``rows``."""
    current = take_rows(A, rows)
    current += values
    put_rows(A, rows, current)

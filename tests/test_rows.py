"""faasml._rows: the fast row gather/scatter helpers agree with plain numpy indexing."""

from __future__ import annotations

import numpy as np
import pytest

from faasml._rows import add_rows, put_rows, take_rows


@pytest.mark.parametrize("columns", [1, 2, 4, 7])
@pytest.mark.parametrize("order", ["C", "F"])
def test_helpers_match_fancy_indexing(columns: int, order: str) -> None:
    rng = np.random.default_rng(columns)
    A = np.asarray(rng.standard_normal((300, columns)), order=order)
    B = np.array(A, order="C")
    rows = np.unique(rng.integers(0, 300, 80)).astype(np.int64)
    values = rng.standard_normal((rows.size, columns))
    np.testing.assert_array_equal(take_rows(A, rows), B[rows])
    add_rows(A, rows, values)
    B[rows] += values
    np.testing.assert_array_equal(A, B)
    put_rows(A, rows, values.T.copy().T)  # a non-contiguous source
    B[rows] = values
    np.testing.assert_array_equal(A, B)


def test_put_rows_converts_the_dtype_and_leaves_other_rows() -> None:
    A = np.zeros((5, 3))
    put_rows(A, np.array([1, 3]), np.ones((2, 3), dtype=np.float32))
    assert A.dtype == np.float64
    np.testing.assert_array_equal(A.sum(axis=1), [0, 3, 0, 3, 0])


def test_one_dimensional_arrays_work() -> None:
    a = np.arange(10.0)
    add_rows(a, np.array([2, 4]), np.array([10.0, 20.0]))
    assert a[2] == 12.0 and a[4] == 24.0
    np.testing.assert_array_equal(take_rows(a, np.array([4, 2])), [24.0, 12.0])

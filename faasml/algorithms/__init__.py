"""The portable ML layer: algorithms that use only the three interfaces (design.md §5)."""

from __future__ import annotations

from faasml.algorithms.blockmatrix import BlockMatrix
from faasml.algorithms.gemm import gemm
from faasml.algorithms.mf import MatrixFactorization
from faasml.algorithms.softmax import SoftmaxRegression
from faasml.algorithms.sparse_lr import SparseLogisticRegression

__all__ = [
    "BlockMatrix",
    "MatrixFactorization",
    "SoftmaxRegression",
    "SparseLogisticRegression",
    "gemm",
]

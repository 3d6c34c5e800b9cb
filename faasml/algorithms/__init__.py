"""The portable ML layer: algorithms that use only the three interfaces (design.md §5)."""

from __future__ import annotations

from faasml.algorithms.blockmatrix import BlockMatrix
from faasml.algorithms.gemm import gemm

__all__ = [
    "BlockMatrix",
    "gemm",
]

"""The task DAG of blocked GEMM: fused block products and a reduction tree over k.

For output block ``C[i, j]`` the ``K`` block products ``A[i, k] @ B[k, j]`` are cut into groups
of ``fuse`` consecutive k's. A *leaf* (level 0) sums one group's products; level ``l + 1`` sums
up to ``arity`` consecutive nodes of level ``l`` (numpywren's 4-ary tree). The single node of
the top level is ``C[i, j]`` itself. With ``fuse >= K`` there is one leaf, which is the root:
no partial sums are written at all.

A node is ``(i, j, level, index)``. Nothing here touches storage: the plan is pure index
arithmetic, so every worker carries the whole DAG as a handful of integers (like numpywren,
which never materializes its DAG either).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ARITY", "Node", "Plan", "auto_fuse"]

#: fan-in of the reduction tree (numpywren's GEMM uses 4).
ARITY = 4

Node = tuple[int, int, int, int]


def _level_sizes(leaves: int, arity: int) -> tuple[int, ...]:
    sizes = [leaves]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / arity))
    return tuple(sizes)


@dataclass(frozen=True)
class Plan:
    """Shape of a GEMM DAG.

    :param grid_m: block rows of ``A`` (and ``C``).
    :param grid_n: block columns of ``B`` (and ``C``).
    :param grid_k: blocks along the reduced dimension.
    :param fuse: consecutive k blocks summed inside one leaf task.
    :param arity: fan-in of the reduction tree.
    :raises ValueError: a size is < 1 or ``arity`` < 2.
    """

    grid_m: int
    grid_n: int
    grid_k: int
    fuse: int
    arity: int = ARITY

    def __post_init__(self) -> None:
        if min(self.grid_m, self.grid_n, self.grid_k, self.fuse) < 1 or self.arity < 2:
            raise ValueError(f"invalid GEMM plan {self}")

    @property
    def levels(self) -> tuple[int, ...]:
        """Number of nodes per (i, j) at each level; the last entry is always 1."""
        return _level_sizes(math.ceil(self.grid_k / self.fuse), self.arity)

    @property
    def top(self) -> int:
        """Level of the root nodes."""
        return len(self.levels) - 1

    def is_root(self, node: Node) -> bool:
        """Whether ``node`` computes an output block ``C[i, j]``."""
        return node[2] == self.top

    def root(self, i: int, j: int) -> Node:
        """The node that computes ``C[i, j]``."""
        return (i, j, self.top, 0)

    def leaf_ks(self, node: Node) -> range:
        """The k blocks a leaf sums."""
        if node[2] != 0:
            raise ValueError(f"{node} is not a leaf")
        return range(node[3] * self.fuse, min((node[3] + 1) * self.fuse, self.grid_k))

    def children(self, node: Node) -> list[Node]:
        """Nodes whose outputs a reduction node sums (empty for a leaf)."""
        i, j, level, index = node
        if level == 0:
            return []
        below = self.levels[level - 1]
        first = index * self.arity
        return [(i, j, level - 1, c) for c in range(first, min(first + self.arity, below))]

    def parent(self, node: Node) -> Node | None:
        """The node that consumes ``node``'s output, or ``None`` for a root."""
        i, j, level, index = node
        if level == self.top:
            return None
        return (i, j, level + 1, index // self.arity)

    def leaves(self) -> Iterator[Node]:
        """Every leaf, grouped by output block so that reductions can start early."""
        for i in range(self.grid_m):
            for j in range(self.grid_n):
                for p in range(self.levels[0]):
                    yield (i, j, 0, p)

    def nodes(self) -> Iterator[Node]:
        """Every node of the DAG, level by level."""
        for level, size in enumerate(self.levels):
            for i in range(self.grid_m):
                for j in range(self.grid_n):
                    for p in range(size):
                        yield (i, j, level, p)

    @property
    def task_count(self) -> int:
        """Number of nodes (tasks) in the DAG."""
        return self.grid_m * self.grid_n * sum(self.levels)

    def contains(self, node: Node) -> bool:
        """Whether ``node`` is a node of this DAG (validates untrusted messages)."""
        i, j, level, index = node
        return (
            0 <= i < self.grid_m
            and 0 <= j < self.grid_n
            and 0 <= level <= self.top
            and 0 <= index < self.levels[level]
        )


def auto_fuse(grid_m: int, grid_n: int, grid_k: int, workers: int) -> int:
    """Choose how many k blocks one leaf task sums.

    Fusing all of k into one task per output block writes no partial sums, reads each pair of
    input blocks once and needs no reduction, which is the cheapest DAG; it is chosen whenever
    there are at least ``2 * workers`` output blocks to keep every worker busy. With fewer output
    blocks, k is split into just enough groups to reach that parallelism, and a reduction tree
    sums the groups.

    :param workers: the number of workers that will run the DAG.
    """
    outputs = grid_m * grid_n
    groups = max(1, min(grid_k, math.ceil(2 * max(1, workers) / outputs)))
    return math.ceil(grid_k / groups)

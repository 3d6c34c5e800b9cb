"""docs/training.md lists every estimator hyperparameter with its real default."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from faasml.algorithms import SoftmaxRegression, SparseLogisticRegression

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def _table() -> dict[str, str]:
    """The rows of the hyperparameter table: ``name -> default cell``."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Choosing hyperparameters", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def _spellings(value: Any) -> set[str]:
    if value is None or isinstance(value, bool):
        return {f"`{value}`"}
    if isinstance(value, str):
        return {f'`"{value}"`'}
    if isinstance(value, float) and value.is_integer():
        return {str(int(value)), str(value)}
    return {str(value)}


def _defaults(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    return {name: p.default for name, p in params.items() if name != "self"}


@pytest.mark.parametrize("cls", [SparseLogisticRegression, SoftmaxRegression])
def test_every_hyperparameter_is_in_the_table_with_its_default(cls: type) -> None:
    table = _table()
    label = "softmax" if cls is SoftmaxRegression else None
    for name, default in _defaults(cls).items():
        assert name in table, f"add {name} to the table in docs/training.md"
        cell = table[name]
        own = re.search(rf"\({label}: ([^)]+)\)", cell) if label else None
        shown = own.group(1) if own else re.sub(r"\s*\(softmax: [^)]+\)", "", cell)
        assert shown in _spellings(default), f"{name}: docs say {shown}, the code {default!r}"


def test_the_table_has_no_stale_rows() -> None:
    known = set(_defaults(SparseLogisticRegression)) | set(_defaults(SoftmaxRegression))
    assert set(_table()) <= known

"""Softmax regression on the 4-class flights delay task: faasml on ``local`` vs scikit-learn.

Same protocol as ``train_sparse_lr.py`` (whose ``run`` it reuses) on
``faasml.datasets.flights(task="multiclass")``: scikit-learn's multinomial
``LogisticRegression(solver="saga", C=1)`` and ``SGDClassifier(loss="log_loss")`` (one-vs-rest)
on the identical matrices, then faasml's default
:class:`~faasml.algorithms.SoftmaxRegression` on ``local`` with 1 and 2 workers.

Usage::

    python benchmarks/train_softmax.py [--repeat 3] [--workers 1,2] [--local-steps K] [--bsp]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_sparse_lr import run  # noqa: E402 - the sibling script, importable once on the path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="median of this many runs")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument(
        "--local-steps", type=int, help="the estimator's local_steps (default: its own)"
    )
    parser.add_argument("--bsp", action="store_true", help="also fit with sync='bsp' and compare")
    args = parser.parse_args()
    from faasml.algorithms import SoftmaxRegression

    run(args, SoftmaxRegression, "multiclass")


if __name__ == "__main__":
    main()

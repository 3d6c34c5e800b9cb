"""``faasml train``: real training runs through the CLI, on small real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faasml import cli
from faasml.data import dump_libsvm


def test_softmax_on_digits_writes_metrics_history_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history, plot = tmp_path / "h.json", tmp_path / "loss.png"
    code = cli.main(
        [
            "train",
            "softmax",
            "--data",
            "digits",
            "--workers",
            "2",
            "--epochs",
            "10",
            "--no-progress",
            "--history",
            str(history),
            "--plot",
            str(plot),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    metrics = dict(
        line.split(None, 1)
        for line in out.replace("held-out ", "held-out_")
        .replace("class-prior ", "class-prior_")
        .replace("fit wall time", "fit_wall")
        .splitlines()
    )
    assert float(metrics["held-out_accuracy"]) > 0.85
    assert float(metrics["held-out_log-loss"]) < float(metrics["class-prior_log-loss"])
    rows = json.loads(history.read_text())
    assert rows and {"time", "step", "epoch"} <= set(rows[-1])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sparse_lr_on_a_libsvm_file_with_held_out_fraction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    X = (rng.random((600, 20)) < 0.3).astype(np.float64)
    w = rng.normal(size=20)
    y = (X @ w + 0.1 * rng.normal(size=600) > 0).astype(np.int64)
    path = tmp_path / "data.svm"
    import scipy.sparse as sp

    dump_libsvm(path, sp.csr_matrix(X), y)
    code = cli.main(
        [
            "train",
            "sparse-lr",
            "--data",
            str(path),
            "--n-features",
            "21",
            "--test-fraction",
            "0.25",
            "--workers",
            "1",
            "--epochs",
            "5",
            "--batch-size",
            "64",
            "--local-steps",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "held-out AUC" in out
    assert "(2 minibatch steps each)" in out
    accuracy = float(next(line for line in out.splitlines() if "accuracy" in line).split()[-1])
    assert accuracy > 0.8


@pytest.mark.parametrize(
    ("flag", "value", "name"),
    [("--learning-rate", "-1", "learning_rate"), ("--local-steps", "0", "local_steps")],
)
def test_bad_hyperparameter_is_refused_before_loading(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, name: str
) -> None:
    code = cli.main(["train", "sparse-lr", "--data", "/nonexistent.svm", flag, value])
    assert code == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err


def test_missing_data_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "sparse-lr", "--data", "/nonexistent/x.svm"]) != 0
    assert "/nonexistent/x.svm" in capsys.readouterr().err

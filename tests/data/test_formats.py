"""Loaders, writers and check_xy: round trips, and every bad input naming file and line."""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from faasml.data import (
    check_xy,
    dump_libsvm,
    load,
    load_csv,
    load_libsvm,
    load_npz,
    load_ratings,
    save_npz,
)
from faasml.errors import ConfigurationError, DataFormatError

FILES = Path(__file__).parent / "files"
formats = sys.modules["faasml.data.formats"]


def write(tmp_path: Path, text: str, name: str = "data.svm") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def random_csr(rng: np.random.Generator, rows: int, cols: int, density: float) -> sp.csr_matrix:
    X = sp.random(rows, cols, density=density, format="csr", random_state=rng)
    X.data = rng.normal(size=X.nnz)
    return X


# --------------------------------------------------------------------------- LIBSVM: reading


def test_libsvm_fixture_comments_blank_lines_qid_and_unsorted_rows() -> None:
    X, y = load_libsvm(FILES / "small.svm")
    assert y.tolist() == [1.0, 0.0, -1.0]
    assert X.shape == (3, 4)  # one-based (no index 0): columns 0..3
    expected = np.array([[0.5, 0, -2, 0], [0, 1e-3, 0, 7], [3, 0, 0, 1.25]])
    np.testing.assert_array_equal(X.toarray(), expected)
    assert X.has_canonical_format


def test_libsvm_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = random_csr(rng, 200, 50, 0.1)
    y = rng.integers(0, 3, 200).astype(np.float64)
    path = tmp_path / "rt.svm"
    dump_libsvm(path, X, y)
    X2, y2 = load_libsvm(path, n_features=50)
    assert (X2 != X).nnz == 0
    np.testing.assert_array_equal(y2, y)


def test_libsvm_zero_based_dump_and_auto_detection(tmp_path: Path) -> None:
    X = sp.csr_matrix(np.array([[1.0, 0, 2], [0, 3, 0]]))
    path = tmp_path / "zb.svm"
    dump_libsvm(path, X, [1, 0], zero_based=True)
    assert path.read_text().splitlines()[0] == "1 0:1.0 2:2.0"
    X2, _ = load_libsvm(path)  # auto: index 0 present -> zero-based
    np.testing.assert_array_equal(X2.toarray(), X.toarray())
    X3, _ = load_libsvm(path, zero_based=True, n_features=5)
    assert X3.shape == (2, 5)


def test_libsvm_one_based_auto_and_n_features(tmp_path: Path) -> None:
    path = write(tmp_path, "1 1:1 3:1\n0 2:5\n")
    X, _ = load_libsvm(path, n_features=3)
    np.testing.assert_array_equal(X.toarray(), [[1, 0, 1], [0, 5, 0]])
    X, _ = load_libsvm(path, zero_based=False)
    assert X.shape == (2, 3)


def test_libsvm_empty_rows_and_file(tmp_path: Path) -> None:
    X, y = load_libsvm(write(tmp_path, "1\n0 2:1\n\n-1\n"))
    assert X.shape == (3, 2) and y.tolist() == [1, 0, -1]
    assert X.getrow(0).nnz == 0 and X.getrow(2).nnz == 0
    X, y = load_libsvm(write(tmp_path, "# only a comment\n\n", "empty.svm"), n_features=4)
    assert X.shape == (0, 4) and len(y) == 0


def test_libsvm_dtype_crlf_tabs_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "d.svm.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"+1\t1:0.5  2:-.25\r\n-1 2:3.\r\n")
    X, y = load_libsvm(path, dtype=np.float32)
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X.toarray(), [[0.5, -0.25], [0, 3]])
    assert y.tolist() == [1, -1]


def test_libsvm_values_the_fast_pass_refuses_are_still_read(tmp_path: Path) -> None:
    # letters send the file to the exact parser; it accepts what Python's float() accepts
    path = write(tmp_path, "1 1:nan 2:inf\n0 3:-Infinity 1:1E5\n")
    X, y = load_libsvm(path)
    dense = X.toarray()
    assert np.isnan(dense[0, 0]) and dense[0, 1] == np.inf
    assert dense[1, 2] == -np.inf and dense[1, 0] == 1e5


def test_libsvm_fast_and_exact_parsers_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    lines = []
    for _ in range(300):
        idx = np.sort(rng.choice(1000, size=rng.integers(0, 12), replace=False)) + 1
        vals = rng.normal(size=len(idx)) * 10.0 ** rng.integers(-5, 5, size=len(idx))
        fmt = ["{:.3f}", "{!r}", "{:.6e}", "{:g}"][rng.integers(0, 4)]
        toks = [f"{i}:{fmt.format(float(v))}" for i, v in zip(idx, vals, strict=True)]
        lines.append(" ".join([str(rng.integers(-1, 2)), *toks]))
    text = "\n".join(lines) + "\n"
    path = write(tmp_path, text)
    fast = formats._parse_libsvm_fast(text.encode(), None, "auto")
    assert fast is not None, "the fast pass should accept plain decimal numbers"
    exact = formats._parse_libsvm_exact(str(path), text, None, "auto")
    for a, b in zip(fast, exact, strict=True):
        np.testing.assert_array_equal(a, b)


def test_libsvm_fast_pass_never_accepts_what_the_exact_parser_refuses() -> None:
    # corrupt well-formed lines with characters the fast pass does parse; whenever it accepts
    # the text, the exact (Python int/float) parser must accept it too, with the same result
    rng = np.random.default_rng(11)
    junk = list(" :+-.eE\n\t0123456789")
    accepted = 0
    for _ in range(1500):
        lines = []
        for _ in range(rng.integers(1, 5)):
            idx = rng.integers(0, 30, size=rng.integers(0, 5))
            feats = [f"{i}:{rng.normal():.{rng.integers(0, 4)}f}" for i in idx]
            lines.append(" ".join([str(rng.integers(-1, 2)), *feats]))
        chars = list("\n".join(lines))
        for _ in range(rng.integers(0, 3)):
            pos = int(rng.integers(0, len(chars)))
            chars.insert(pos, str(rng.choice(junk)))
        text = "".join(chars)
        fast = formats._parse_libsvm_fast(text.encode(), 25, "auto")
        if fast is None:
            continue
        accepted += 1
        exact = formats._parse_libsvm_exact("f", text, 25, "auto")  # must not raise
        for a, b in zip(fast, exact, strict=True):
            np.testing.assert_array_equal(a, b)
    assert accepted > 300


def test_libsvm_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    X = random_csr(rng, 500, 40, 0.2)
    y = rng.integers(0, 2, 500)
    path = tmp_path / "chunks.svm"
    dump_libsvm(path, X, y)
    monkeypatch.setattr(formats, "_CHUNK", 97)  # many chunks, each cut mid-line then extended
    X2, y2 = load_libsvm(path, n_features=40)
    assert (X2 != X).nnz == 0
    np.testing.assert_array_equal(y2, y)


def test_libsvm_file_without_trailing_newline(tmp_path: Path) -> None:
    X, y = load_libsvm(write(tmp_path, "1 1:2\n0 2:3"))
    np.testing.assert_array_equal(X.toarray(), [[2, 0], [0, 3]])


# --------------------------------------------------------------------------- LIBSVM: errors


def assert_error(path: Path, line: int, fragment: str, **kw: object) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        load_libsvm(path, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{path}, line {line}:"), message
    assert fragment in message, message
    return info.value


BAD_LIBSVM = [
    # (file text, failing line, message fragment, kwargs)
    ("1 1:1\n0 x:2\n", 2, "expected an integer feature index, found 'x'", {}),
    ("1 1:1\n0 1.5:2\n", 2, "expected an integer feature index, found '1.5'", {}),
    ("1 1:1\n0 1e3:2\n", 2, "expected an integer feature index, found '1e3'", {}),
    ("1 1:1\n\n0 -3:2\n", 3, "feature index -3 is negative", {}),
    ("1 1:1\n0 0:2\n", 2, "feature index 0 in a one-based file", {"zero_based": False}),
    ("1 1:1\n0 2:abc\n", 2, "expected a numeric value for feature 2, found 'abc'", {}),
    ("1 1:1\n0 2:1.5.2\n", 2, "expected a numeric value for feature 2, found '1.5.2'", {}),
    ("1 1:1\n0 2:1-2 3:\n", 2, "expected a numeric value for feature 2, found '1-2'", {}),
    ("1 1:1\n0 2:1e5.3\n", 2, "found '1e5.3'", {}),
    ("1 1:1\nyes 2:1\n", 2, "expected a numeric label as the first token, found 'yes'", {}),
    ("1 1:1\n2:1 3:1\n", 2, "expected a numeric label as the first token, found '2:1'", {}),
    ("1 1:1\n0 2:1 3\n", 2, "expected a feature 'index:value', found '3'", {}),
    ("1 1:1\n0 2:1:3 5\n", 2, "expected a feature 'index:value', found '2:1:3'", {}),
    ("1 1:1\n0 :5\n", 2, "expected a feature 'index:value', found ':5'", {}),
    ("1 1:1\n0 5:\n", 2, "expected a feature 'index:value', found '5:'", {}),
    ("1 1:1\n0 2:1 7:1\n", 2, "feature index 7 is beyond n_features=5", {"n_features": 5}),
    ("1 1:1\n0 5:1 6:1\n", 2, "expected a one-based index <= 5", {"n_features": 5}),
    ("0 0:1\n0 5:1\n", 2, "expected a zero-based index <= 4", {"n_features": 5}),
    ("1 1:1\n0 2:1 3:1 2:4\n", 2, "feature index 2 appears twice in the row", {}),
    ("1 1:1\n0 99999999999999999999:1\n", 2, "is too large to represent", {}),
]


@pytest.mark.parametrize(("text", "line", "fragment", "kw"), BAD_LIBSVM)
def test_libsvm_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str, kw: dict[str, object]
) -> None:
    assert_error(write(tmp_path, text), line, fragment, **kw)


def test_libsvm_first_error_in_file_order_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "1 1:1\n0 -1:2\n1 2:x\n")
    assert_error(path, 2, "negative")
    # beyond n_features is only known once the whole file fixed the base: still the first line
    path = write(tmp_path, "1 9:1\n0 0:1\n1 12:1\n", "auto.svm")
    assert_error(path, 1, "feature index 9 is beyond n_features=9", n_features=9)


def test_libsvm_bad_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bin.svm"
    path.write_bytes(b"1 1:1\n0 2:1\n1 3:\xff\n")
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}, line 3: expected UTF-8"):
        load_libsvm(path)


def test_libsvm_bad_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, "1 1:1\n")
    with pytest.raises(ConfigurationError, match="zero_based"):
        load_libsvm(path, zero_based="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="n_features"):
        load_libsvm(path, n_features=-1)


def test_dump_libsvm_checks_lengths(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="X has 2 rows but y has 3 labels"):
        dump_libsvm(tmp_path / "x.svm", np.eye(2), [1, 2, 3])


# --------------------------------------------------------------------------- CSV


def test_csv_header_auto_and_label_by_name(tmp_path: Path) -> None:
    X, y = load_csv(FILES / "small.csv", "label")
    np.testing.assert_array_equal(X, [[31, 1.8], [47, 1.65]])
    assert y.tolist() == [1, 0]
    X, y = load_csv(FILES / "small.csv", 0)
    np.testing.assert_array_equal(y, [31, 47])
    np.testing.assert_array_equal(X, [[1.8, 1], [1.65, 0]])


def test_csv_without_header_default_last_column_sparse_and_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "1;0;5\n\n0;2;7\n", "plain.csv")
    X, y = load_csv(path, delimiter=";", sparse=True)
    assert sp.issparse(X) and X.nnz == 2
    np.testing.assert_array_equal(X.toarray(), [[1, 0], [0, 2]])
    assert y.tolist() == [5, 7]
    X, _ = load_csv(path, delimiter=";", header=True)
    assert X.shape == (1, 2)  # the first line became the header


def test_csv_quoted_header(tmp_path: Path) -> None:
    path = write(tmp_path, '"a, b",y\n1,2\n', "q.csv")
    X, y = load_csv(path, "y")
    assert X.tolist() == [[1.0]] and y.tolist() == [2.0]


def test_csv_ragged_row_names_line_and_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5\n", "ragged.csv")
    with pytest.raises(DataFormatError) as info:
        load_csv(path)
    assert str(info.value) == f"{path}, line 3: expected 3 columns (as in line 1), found 2"


def test_csv_non_numeric_and_empty_cells_name_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,c\n1,2,3\n4,oops,6\n", "bad.csv")
    with pytest.raises(DataFormatError) as info:
        load_csv(path)
    assert str(info.value) == (f"{path}, line 3, column 2 ('b'): expected a number, found 'oops'")
    path = write(tmp_path, "1,2,3\n4,,6\n", "empty.csv")
    with pytest.raises(DataFormatError) as info:
        load_csv(path)
    assert str(info.value) == (
        f"{path}, line 2, column 2: expected a number, found an empty cell (a missing value: "
        "missing='indicator' reads it as 0 plus a flag)"
    )


def test_csv_label_column_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "1,2\n3,4\n", "nohead.csv")
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}: .*no header row"):
        load_csv(path, "label")
    with pytest.raises(DataFormatError, match="out of range for 2 columns"):
        load_csv(path, 5)
    with pytest.raises(ConfigurationError, match="header=False"):
        load_csv(path, "label", header=False)
    with pytest.raises(ConfigurationError, match="header must be"):
        load_csv(path, header="maybe")  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match=r"no column named 'z'; columns are \['age'"):
        load_csv(FILES / "small.csv", "z")


def test_csv_empty_file_and_header_only(tmp_path: Path) -> None:
    X, y = load_csv(write(tmp_path, "", "e.csv"))
    assert X.shape == (0, 0) and len(y) == 0
    X, y = load_csv(write(tmp_path, "a,b,c\n", "h.csv"))
    assert X.shape == (0, 2)


# --------------------------------------------------------------------------- NPZ


def test_npz_round_trips_sparse_and_dense(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = random_csr(rng, 30, 10, 0.3)
    y = rng.integers(0, 2, 30)
    save_npz(tmp_path / "s.npz", X, y)
    X2, y2 = load_npz(tmp_path / "s.npz")
    assert sp.issparse(X2) and (X2 != X).nnz == 0
    np.testing.assert_array_equal(y2, y)
    # the file is also a valid scipy.sparse.save_npz file
    assert (sp.load_npz(tmp_path / "s.npz") != X).nnz == 0
    D = X.toarray()
    save_npz(tmp_path / "d.npz", D, y, compressed=False)
    D2, _ = load_npz(tmp_path / "d.npz")
    np.testing.assert_array_equal(D2, D)


def test_npz_scipy_file_plus_labels_and_plain_components(tmp_path: Path) -> None:
    X = sp.csc_matrix(np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]]))
    sp.save_npz(tmp_path / "scipy.npz", X)
    with np.load(tmp_path / "scipy.npz") as npz:
        arrays = dict(npz)
    np.savez(tmp_path / "withy.npz", **arrays, y=np.array([1, 0, 1]))
    X2, y2 = load_npz(tmp_path / "withy.npz")
    np.testing.assert_array_equal(X2.toarray(), X.toarray())
    assert sp.isspmatrix_csr(X2) and y2.tolist() == [1, 0, 1]
    C = sp.csr_matrix(X)
    np.savez(
        tmp_path / "parts.npz",
        data=C.data,
        indices=C.indices,
        indptr=C.indptr,
        shape=np.array(C.shape),
        y=np.zeros(3),
    )
    X3, _ = load_npz(tmp_path / "parts.npz")
    np.testing.assert_array_equal(X3.toarray(), X.toarray())


def test_npz_missing_arrays_are_named(tmp_path: Path) -> None:
    X = sp.csr_matrix(np.eye(3))
    sp.save_npz(tmp_path / "nolabels.npz", X)
    path = tmp_path / "nolabels.npz"
    pattern = rf"^{re.escape(str(path))}: .*missing array\(s\) \['y'\]"
    with pytest.raises(DataFormatError, match=pattern):
        load_npz(path)
    np.savez(tmp_path / "partial.npz", data=X.data, indptr=X.indptr, y=np.zeros(3))
    with pytest.raises(DataFormatError, match=r"missing array\(s\) \['indices', 'shape'\]"):
        load_npz(tmp_path / "partial.npz")
    np.savez(tmp_path / "dense_no_y.npz", X=np.eye(2))
    with pytest.raises(DataFormatError, match="missing array 'y'"):
        load_npz(tmp_path / "dense_no_y.npz")
    np.savez(tmp_path / "other.npz", a=np.eye(2))
    with pytest.raises(DataFormatError, match=r"found \['a'\]"):
        load_npz(tmp_path / "other.npz")


def test_npz_inconsistent_content(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "bad.npz",
        data=np.ones(2),
        indices=np.array([0, 9]),
        indptr=np.array([0, 1, 2]),
        shape=np.array([2, 3]),
        y=np.zeros(2),
    )
    with pytest.raises(DataFormatError, match="inconsistent csr components"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "len.npz", X=np.eye(3), y=np.zeros(2))
    with pytest.raises(DataFormatError, match="X has 3 rows but y has 2 labels"):
        load_npz(tmp_path / "len.npz")
    np.savez(tmp_path / "coo.npz", format=np.array(b"coo"), data=np.ones(1), indices=np.zeros(1),
             indptr=np.zeros(2), shape=np.array([1, 1]), y=np.zeros(1))  # fmt: skip
    with pytest.raises(DataFormatError, match="unsupported sparse format 'coo'"):
        load_npz(tmp_path / "coo.npz")
    np.savez(tmp_path / "obj.npz", X=np.array([[object()]], dtype=object), y=np.zeros(1))
    with pytest.raises(DataFormatError, match="cannot read arrays"):
        load_npz(tmp_path / "obj.npz")  # pickled object arrays are refused
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="junk.npz"):
        load_npz(tmp_path / "junk.npz")


# --------------------------------------------------------------------------- load()


def test_load_dispatches_on_extension(tmp_path: Path) -> None:
    X, _ = load(FILES / "small.svm")
    assert X.shape == (3, 4)
    X, _ = load(FILES / "small.csv", label_column="label")
    assert X.shape == (2, 2)
    save_npz(tmp_path / "a.npz", np.eye(2), [0, 1])
    X, _ = load(tmp_path / "a.npz")
    assert X.shape == (2, 2)
    txt = write(tmp_path, "1 1:1\n", "a.txt")
    assert load(txt)[0].shape == (1, 1)
    with pytest.raises(DataFormatError, match=r"a\.parquet: cannot tell the format"):
        load(tmp_path / "a.parquet")


# --------------------------------------------------------------------------- check_xy


def test_check_xy_accepts_and_normalises() -> None:
    X, y = check_xy([[1, 2], [3, 4]], [0, 1])
    assert X.dtype == np.float64 and y.tolist() == [0, 1]
    Xs, _ = check_xy(sp.coo_matrix(np.eye(2)), np.array([1.0, 2.0]))
    assert sp.isspmatrix_csr(Xs)
    Xb, _ = check_xy(sp.csr_matrix(np.eye(2, dtype=bool)), [0, 1])
    assert Xb.dtype == np.float64 and Xb.nnz == 2
    with pytest.raises(DataFormatError, match="X must hold real numbers"):
        check_xy(sp.csr_matrix(np.eye(2, dtype=complex)), [0, 1])
    X32, _ = check_xy(np.ones((2, 2), dtype=np.float32), [0, 1])
    assert X32.dtype == np.float32


def test_check_xy_length_mismatch_message() -> None:
    with pytest.raises(DataFormatError) as info:
        check_xy(np.zeros((10, 2)), np.zeros(9))
    assert str(info.value) == "X has 10 rows but y has 9 labels"


def test_check_xy_rejections() -> None:
    with pytest.raises(DataFormatError, match="empty dataset"):
        check_xy(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(DataFormatError, match="y must be 1-D"):
        check_xy(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(DataFormatError, match="X must be 2-D"):
        check_xy(np.zeros(3), np.zeros(3))
    with pytest.raises(DataFormatError, match=r"column 0 holds 'a' \(row 0\); for categories"):
        check_xy(np.array([["a", "b"]]), [1])
    with pytest.raises(DataFormatError, match="y must hold numbers"):
        check_xy(np.eye(2), np.array(["a", "b"]))
    with pytest.raises(DataFormatError, match="y has a NaN or infinite label at row 1"):
        check_xy(np.eye(2), [0.0, np.nan])


def test_check_xy_names_first_nonfinite_cell_dense_and_sparse() -> None:
    X = np.ones((4, 3))
    X[2, 1] = np.inf
    X[3, 0] = np.nan
    with pytest.raises(DataFormatError, match="at row 2, column 1; impute"):
        check_xy(X, np.zeros(4))
    S = sp.csr_matrix((np.array([1.0, np.nan, np.inf]), np.array([2, 4, 1]), np.array([0, 1, 3])),
                      shape=(2, 5))  # fmt: skip
    with pytest.raises(DataFormatError, match="at row 1, column 1"):
        check_xy(S, np.zeros(2))
    out, _ = check_xy(X, np.zeros(4), allow_nan=True)
    assert np.isnan(out[3, 0])


@pytest.mark.parametrize(
    ("text", "filename"),
    [
        ("a;b;label\n1;2.5;0\n3;4;1\n", "semicolons.csv"),
        ("a\tb\tlabel\n1\t2.5\t0\n3\t4\t1\n", "tabs.tsv"),
        ("a|b|label\n1|2.5|0\n3|4|1\n", "pipes.csv"),
        ('a,"b",label\n1,"2.5",0\n3,4,1\n', "quoted.csv"),
    ],
)
def test_csv_delimiter_is_detected(tmp_path: Path, text: str, filename: str) -> None:
    X, y = load(write(tmp_path, text, filename), label_column="label")
    np.testing.assert_array_equal(X, [[1.0, 2.5], [3.0, 4.0]])
    np.testing.assert_array_equal(y, [0.0, 1.0])


def test_csv_detection_does_not_hide_a_ragged_row(tmp_path: Path) -> None:
    path = write(tmp_path, "1;2;3\n4;5\n", "ragged.csv")
    with pytest.raises(DataFormatError, match=r"line 2: expected 3 columns .* found 2"):
        load_csv(path)
    # an explicit delimiter is taken as given
    with pytest.raises(
        DataFormatError, match="single column, so there is no feature; is the delim"
    ):
        load_csv(write(tmp_path, "1;2;3\n4;5;6\n", "semi.csv"), delimiter=",")


def test_check_xy_refuses_missing_class_names_from_pandas() -> None:
    import pandas as pd  # the test extra installs it (through faasml[datasets])

    names = pd.Series(["a", "b", pd.NA, "a"], dtype="string")
    with pytest.raises(DataFormatError, match="missing .* label at row 2"):
        check_xy(np.eye(4), names, numeric_labels=False)
    _, y = check_xy(np.eye(2), pd.Series(["a", "b"], dtype="string"), numeric_labels=False)
    assert y.tolist() == ["a", "b"]
    with pytest.raises(DataFormatError, match="y must hold numbers"):
        check_xy(np.eye(2), np.array(["a", "b"]))  # numeric labels stay the default


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("a.svm", "libsvm"),
        ("a.TXT.gz", "libsvm"),
        ("a.tsv", "csv"),
        ("a.csv.gz", "csv"),
        ("a.npz", "npz"),
    ],
)
def test_file_format_by_extension(path: str, kind: str) -> None:
    from faasml.data.formats import file_format

    assert file_format(path) == kind


PEOPLE = "age,city,income,label\n34,paris,51.5,yes\n51,rome,38.0,no\n29, paris ,62.25,yes\n"


def test_csv_categorical_columns_are_hashed_after_the_numeric_ones(tmp_path: Path) -> None:
    from faasml.data import FeatureHasher

    X, y = load_csv(write(tmp_path, PEOPLE, "people.csv"), "label", hash_features=64)
    assert sp.issparse(X) and X.shape == (3, 2 + 64)
    dense = X.toarray()
    np.testing.assert_array_equal(dense[:, :2], [[34, 51.5], [51, 38.0], [29, 62.25]])
    hasher = FeatureHasher(64)
    for row, city in enumerate(["paris", "rome", "paris"]):  # cells are stripped
        expected = np.zeros(64)
        expected[hasher.column(f"city={city}")] = 1.0
        np.testing.assert_array_equal(dense[row, 2:], expected)
    assert y.tolist() == ["yes", "no", "yes"]  # class names, as the estimators take them
    # hashing needs no vocabulary: another file with the same columns lines up
    X2, _ = load_csv(write(tmp_path, "age,city,income,label\n40,rome,1,no\n", "t.csv"), "label")
    X1, _ = load_csv(write(tmp_path, PEOPLE, "again.csv"), "label")
    assert X2.shape[1] == X1.shape[1] == 2 + 2**18
    np.testing.assert_array_equal(X2[0, 2:].nonzero()[1], X1[1, 2:].nonzero()[1])


def test_csv_categorical_columns_named_or_numbered(tmp_path: Path) -> None:
    text = "zip,age,y\n75001,30,1\n00184,40,0\n75001,50,1\n"
    path = write(tmp_path, text, "zip.csv")
    X, y = load_csv(path, "y")  # zip codes look like numbers: numeric unless named
    assert not sp.issparse(X) and X.shape == (3, 2)
    by_name, y2 = load_csv(path, "y", categorical=["zip"], hash_features=16)
    by_position, _ = load_csv(path, "y", categorical=[0], hash_features=16)
    assert by_name.shape == (3, 1 + 16) and (by_name != by_position).nnz == 0
    np.testing.assert_array_equal(by_name[:, 0].toarray().ravel(), [30, 40, 50])
    tokens = by_name[:, 1:]
    assert (tokens[0] != tokens[2]).nnz == 0 and (tokens[0] != tokens[1]).nnz > 0
    assert y2.dtype == np.float64 and y2.tolist() == [1.0, 0.0, 1.0]
    # an empty categorical cell is a category of its own; without a header columns are numbered
    # (a first row of categories and numbers is data: it names no column of numbers)
    X3, _ = load_csv(write(tmp_path, "a,1\n,0\nb,1\n", "nohead.csv"), categorical=[0])
    assert X3.shape == (3, 2**18) and X3.nnz == 3 and len(set(X3.indices.tolist())) == 3


def test_csv_categorical_and_label_problems(tmp_path: Path) -> None:
    path = write(tmp_path, PEOPLE, "people.csv")
    with pytest.raises(DataFormatError, match=r"categorical column 'town' is not a column name"):
        load_csv(path, "label", categorical=["town"])
    with pytest.raises(DataFormatError, match="categorical column 9 is out of range for 4"):
        load_csv(path, "label", categorical=[9])
    with pytest.raises(ConfigurationError, match="'label' is the label column"):
        load_csv(path, "label", categorical=["label"])
    with pytest.raises(ConfigurationError, match="categorical must be 'auto' or a list"):
        load_csv(path, "label", categorical="city")
    with pytest.raises(ConfigurationError, match="hash_features must be a positive integer"):
        load_csv(path, "label", hash_features=0)
    missing = write(tmp_path, "a,label\n1,yes\n2,\n", "nolabel.csv")
    with pytest.raises(DataFormatError) as info:
        load_csv(missing, "label")
    assert (
        str(info.value)
        == f"{missing}, line 3, column 2 ('label'): the label is missing (an empty cell)"
    )
    # a stray word among numeric labels is a typo to report, not a class name
    typo = write(tmp_path, "a,label\n1,0\n2,1\n3,O\n", "typo.csv")
    with pytest.raises(DataFormatError) as info:
        load_csv(typo, "label")
    assert str(info.value) == f"{typo}, line 4, column 2 ('label'): expected a number, found 'O'"


@pytest.mark.parametrize(
    ("text", "header"),
    [
        ("age,city,y\n34,paris,yes\n51,rome,no\n", True),  # a name over numbers
        ("city,y\nparis,yes\nrome,no\n", True),  # names the columns never repeat
        ("paris,yes\nrome,no\nparis,no\n", False),  # categories repeat: data
        ("paris,1\nrome,0\n", False),  # categories and numbers: data
        ("1,2\n3,4\n", False),
    ],
)
def test_csv_header_detection(tmp_path: Path, text: str, header: bool) -> None:
    X, _ = load_csv(write(tmp_path, text, "h.csv"))
    body_rows = text.count("\n") - int(header)
    assert X.shape[0] == body_rows


def test_a_text_column_of_a_data_frame_is_named_with_what_to_do() -> None:
    import pandas as pd  # the test extra installs it (through faasml[datasets])

    frame = pd.DataFrame({"age": [30, 40], "city": ["paris", "rome"]})
    with pytest.raises(DataFormatError) as info:
        check_xy(frame, [0, 1])
    assert str(info.value) == (
        "X must hold numbers, but column 1 ('city') holds 'paris' (row 0); for categories, hash "
        "them into columns with faasml.data.FeatureHasher (load_csv does that for text columns "
        "of a CSV file)"
    )


def test_csv_missing_values_as_zero_plus_an_indicator(tmp_path: Path) -> None:
    from faasml.data import FeatureHasher

    text = "age,city,income,y\n34,paris,NA,yes\n,rome,38,no\n29,paris,nan,yes\n40,oslo,50,no\n"
    path = write(tmp_path, text, "missing.csv")
    with pytest.raises(DataFormatError, match=r"found 'NA' \(a missing value: missing='indicator'"):
        load_csv(path)
    X, y = load_csv(path, missing="indicator", hash_features=1024)
    dense = X.toarray()
    np.testing.assert_array_equal(dense[:, :2], [[34, 0], [0, 38], [29, 0], [40, 50]])
    hasher = FeatureHasher(1024)
    flag = {c: 2 + hasher.column(f"{c}=<missing>") for c in ("age", "income")}
    assert dense[:, flag["income"]].tolist() == [1, 0, 1, 0]  # NA and NaN alike
    assert dense[:, flag["age"]].tolist() == [0, 1, 0, 0]
    assert dense[:, 2 + hasher.column("city=rome")].tolist() == [0, 1, 0, 0]
    assert y.tolist() == ["yes", "no", "yes", "no"]
    # a typo next to a missing value is still the error, not the marker
    typo = write(tmp_path, "a,b,y\nNA,1,0\noops,2,1\n3,4,0\n4,5,1\n", "typo.csv")
    with pytest.raises(
        DataFormatError, match=r"line 3, column 1 \('a'\): expected a number, found 'oops'$"
    ):
        load_csv(typo, missing="indicator")
    # a mostly numeric column with many NA cells stays numeric
    many = write(tmp_path, "a,y\nNA,0\nNA,1\n?,0\n2.5,1\n", "many.csv")
    X2, _ = load_csv(many, missing="indicator", hash_features=8)
    assert X2[:, 0].toarray().ravel().tolist() == [0, 0, 0, 2.5]
    with pytest.raises(ConfigurationError, match="missing must be 'error' or 'indicator'"):
        load_csv(many, missing="drop")  # type: ignore[arg-type]


def test_load_ratings_reads_user_item_rating_rows(tmp_path: Path) -> None:
    movielens = (
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n7,31,4,0\n"
    )
    users, items, ratings = load_ratings(write(tmp_path, movielens, "ratings.csv"))
    assert users.dtype == np.int64 and users.tolist() == [1, 1, 7]
    assert items.tolist() == [31, 1029, 31]
    assert ratings.tolist() == [2.5, 3.0, 4.0]
    names, titles, _ = load_ratings(write(tmp_path, "ann\tdune\t5\nbob\tdune\t3\n", "r.tsv"))
    assert names.tolist() == ["ann", "bob"] and titles.tolist() == ["dune", "dune"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("u,i,r\n1,2\n", ", line 2: expected user, item and rating columns, found 2 column(s)"),
        ("u,i,r\n1,2,3\n1,3,good\n", ", line 3, column 3: expected a rating, found 'good'"),
        ("1,2,3\n,3,4\n", ", line 2: an empty user or item id"),
        ("1,2,3\n2,3,inf\n", ", line 2: a NaN or infinite rating"),
        ("u,i,r\n", ": no ratings (expected rows of user, item, rating)"),
    ],
)
def test_load_ratings_refuses_bad_rows(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text, "bad.csv")
    with pytest.raises(DataFormatError) as info:
        load_ratings(path)
    assert str(info.value) == f"{path}{message}"

"""Loaders and writers for LIBSVM, CSV and NPZ data, and the :func:`check_xy` validator.

Every loader returns ``(X, y)``: ``X`` a :class:`scipy.sparse.csr_matrix` (LIBSVM, NPZ with sparse
components, CSV with ``sparse=True``) or a 2-D :class:`numpy.ndarray`, and ``y`` a 1-D array.

Malformed input raises :class:`~faasml.errors.DataFormatError` whose message names the file, the
1-based line number and what was expected. The LIBSVM parser is vectorised: one fast pass parses the
whole file with numpy; only when that pass detects a problem does a slow line-by-line validator run,
purely to find and describe the first bad line. Errors are rare, so their cost does not matter, and
all error messages come from one place.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from faasml.errors import ConfigurationError, DataFormatError

__all__ = [
    "check_xy",
    "dump_libsvm",
    "file_format",
    "first_nonfinite",
    "refuse_nonfinite",
    "load",
    "load_csv",
    "load_libsvm",
    "load_npz",
    "load_ratings",
    "save_npz",
]

PathLike = str | os.PathLike[str]
#: what the loaders return as the feature matrix: a ``scipy.sparse.csr_matrix`` or a 2-D
#: ``numpy.ndarray`` (spelled ``Any`` because scipy ships no type information).
Matrix: TypeAlias = Any
ZeroBased = bool | Literal["auto"]

_LIBSVM_EXTS = (".svm", ".libsvm", ".txt")
_INT32_MAX = np.iinfo(np.int32).max
_MAX_INDEX = 2**62  # far beyond any real width, and safe from int64 overflow downstream


# --------------------------------------------------------------------------- helpers


def _read_bytes(path: PathLike) -> bytes:
    """Read a whole file, decompressing it when the name ends in ``.gz``."""
    name = os.fspath(path)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(name, "rb") as fh:
        data: bytes = fh.read()
    return data


def _decode(name: str, data: bytes) -> str:
    """Decode UTF-8; a bad byte is reported with its line number."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(
            f"{name}, line {line}: expected UTF-8 text, found byte {data[exc.start]:#04x}"
        ) from None


def _index_dtype(n_features: int, nnz: int) -> type[np.signedinteger[Any]]:
    # scipy's sparse kernels are fastest with int32 indices; use int64 only when needed
    return np.int32 if max(n_features, nnz) <= _INT32_MAX else np.int64


# --------------------------------------------------------------------------- LIBSVM


def load_libsvm(
    path: PathLike,
    n_features: int | None = None,
    *,
    zero_based: ZeroBased = "auto",
    dtype: npt.DTypeLike = np.float64,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Load a LIBSVM/SVMlight file into a CSR matrix and a label vector.

    Each line is ``label idx:val idx:val ... # comment``. Blank lines and comments are skipped,
    ``qid:N`` tokens are ignored. Files ending in ``.gz`` are decompressed.

    :param path: the file to read.
    :param n_features: number of columns of ``X``; default: the largest index seen + 1. An index
        beyond it is an error.
    :param zero_based: whether indices start at 0. ``"auto"`` (default) treats the file as
        zero-based when it contains index 0, else as one-based (the LIBSVM convention).
    :param dtype: dtype of ``X``'s values.
    :returns: ``(X, y)``: ``X`` a canonical CSR matrix (sorted indices, no duplicates), ``y`` a
        float64 array with one label per data line.
    :raises DataFormatError: naming the file, the 1-based line and what was expected, for a
        non-numeric label, a malformed ``idx:val`` token, a non-integer, negative or (one-based)
        zero index, a non-numeric value, an index beyond ``n_features`` or an index repeated in a
        row.
    """
    if zero_based not in (True, False, "auto"):
        raise ConfigurationError(f"zero_based must be True, False or 'auto', got {zero_based!r}")
    if n_features is not None and n_features < 0:
        raise ConfigurationError(f"n_features must be >= 0, got {n_features}")
    name = os.fspath(path)
    data = _read_bytes(path)
    if b"#" in data or b"qid:" in data:
        # strip comments and qid tokens; newlines stay, so reported line numbers do not move
        data = _COMMENT_RE.sub(b"", data)
        data = _QID_RE.sub(b"", data)
    parsed = _parse_libsvm_fast(data, n_features, zero_based)
    if parsed is None:
        # the fast pass refused something: the exact parser either reads it (e.g. 'nan' values)
        # or raises the first error in file order with its line number
        parsed = _parse_libsvm_exact(name, _decode(name, data), n_features, zero_based)
    labels, indptr, indices, values, base = parsed
    if n_features is not None:
        n_cols = n_features
    else:
        n_cols = int(indices.max()) + 1 - base if len(indices) else 0
    idx_dtype = _index_dtype(n_cols, len(indices))
    X = sp.csr_matrix(
        (
            values.astype(dtype, copy=False),
            (indices - base).astype(idx_dtype, copy=False),
            indptr.astype(idx_dtype, copy=False),
        ),
        shape=(len(labels), n_cols),
    )
    X.has_sorted_indices = True
    return X, labels


_COMMENT_RE = re.compile(rb"#[^\n]*")
_QID_RE = re.compile(rb"(?<![^\s])qid:[^\s]*")
_ParsedLibsvm = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]

# byte classes for the fast pass; anything else (letters, commas, non-ASCII) sends the file to
# the exact parser, so the fast pass only has to be right about plain decimal numbers
_DIGIT, _WS, _COLON, _SIGN, _DOT, _EXP, _OTHER = range(7)
_CLASS = np.full(256, _OTHER, dtype=np.uint8)
_CLASS[np.frombuffer(b"0123456789", np.uint8)] = _DIGIT
_CLASS[np.frombuffer(b" \t\n\r\x0b\x0c", np.uint8)] = _WS
_CLASS[ord(":")] = _COLON
_CLASS[np.frombuffer(b"+-", np.uint8)] = _SIGN
_CLASS[ord(".")] = _DOT
_CLASS[np.frombuffer(b"eE", np.uint8)] = _EXP
_CHUNK = 1 << 23  # parse ~8 MiB at a time: bounded temporaries, cache-friendly


def _parse_libsvm_fast(
    data: bytes, n_features: int | None, zero_based: ZeroBased
) -> _ParsedLibsvm | None:
    """Parse with vectorised numpy passes; return ``None`` whenever anything looks unusual.

    Must be *sound* (never accept bad data or misplace a number) but need not be complete:
    ``None`` just means the exact parser takes over. Returns ``(labels, indptr, indices, values,
    base)`` with indices in file numbering and sorted within each row.
    """
    labels_l: list[np.ndarray] = []
    counts_l: list[np.ndarray] = []
    idx_l: list[np.ndarray] = []
    val_l: list[np.ndarray] = []
    pos = 0
    while pos < len(data):
        end = len(data) if len(data) - pos <= _CHUNK else data.find(b"\n", pos + _CHUNK) + 1
        if end == 0:
            end = len(data)
        chunk = _parse_chunk(data[pos:end])
        if chunk is None:
            return None
        labels_l.append(chunk[0])
        counts_l.append(chunk[1])
        idx_l.append(chunk[2])
        val_l.append(chunk[3])
        pos = end
    labels = np.concatenate(labels_l) if labels_l else np.zeros(0)
    counts = np.concatenate(counts_l) if counts_l else np.zeros(0, np.int64)
    indices = np.concatenate(idx_l) if idx_l else np.zeros(0, np.int64)
    values = np.concatenate(val_l) if val_l else np.zeros(0)
    n_rows = len(labels)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    if len(indices) == 0:
        return labels, indptr, indices, values, 0
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0:
        return None
    base = (0 if lo == 0 else 1) if zero_based == "auto" else (0 if zero_based else 1)
    if base == 1 and lo == 0:
        return None
    if n_features is not None and hi - base >= n_features:
        return None
    # rows are usually written with increasing indices: check in O(nnz), sort only if not
    row_of = np.repeat(np.arange(n_rows), counts)
    same_row = row_of[1:] == row_of[:-1]
    if (same_row & (indices[1:] <= indices[:-1])).any():
        order = np.lexsort((indices, row_of))
        indices, values = indices[order], values[order]
        if (same_row & (indices[1:] == indices[:-1])).any():
            return None  # a duplicate index inside a row
    return labels, indptr, indices, values, base


def _parse_chunk(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Fast-parse whole lines: return ``(labels, nnz per row, indices, values)`` or ``None``."""
    buf = np.frombuffer(data, dtype=np.uint8)
    cls = _CLASS[buf]
    nz = np.flatnonzero(cls)  # everything but digits: separators, signs, dots, exponents
    kinds = cls[nz]
    if (kinds == _OTHER).any():
        return None
    # tokens are maximal runs of non-whitespace; find them from the whitespace positions alone
    ws = nz[kinds == _WS]
    wsp = np.concatenate(([-1], ws, [len(buf)]))
    gap = np.flatnonzero(np.diff(wsp) > 1)
    starts = wsp[gap] + 1
    n_tok = len(starts)
    if n_tok == 0:
        empty = np.zeros(0)
        return empty, np.zeros(0, np.int64), np.zeros(0, np.int64), empty
    # a token opens a row when a newline lies in the whitespace run before it
    newlines = np.cumsum(np.concatenate(([1], buf[ws] == 10, [0])))
    first = np.empty(n_tok, dtype=bool)
    first[0] = True
    first[1:] = newlines[gap[1:]] > newlines[gap[:-1]]
    feature = ~first
    # token id of every non-digit byte, by counting the token starts that precede it
    is_ws = kinds == _WS
    after = cls[np.minimum(nz + 1, len(buf) - 1)]
    opens = is_ws & (nz + 1 < len(buf)) & (after != _WS)
    tok_id = np.cumsum(opens) - (1 if cls[0] == _WS else 0)
    # the label has no ':', every other token exactly one, at neither end of the token
    is_colon = kinds == _COLON
    colons = nz[is_colon]
    if not np.array_equal(np.bincount(tok_id[is_colon], minlength=n_tok), feature.astype(np.intp)):
        return None
    # (a colon at byte 0 would sit in a label, which the count above already refused)
    at_edge = (cls[colons - 1] == _WS).any() or (after[is_colon] == _WS).any()
    if len(colons) and (at_edge or colons[-1] + 1 == len(buf)):
        return None
    # every field (text between separators) must hold at most one number, so that counting the
    # numbers np.fromstring returns proves each field was exactly one number
    signs = nz[kinds == _SIGN]
    before = cls[np.maximum(signs - 1, 0)]
    if ((signs > 0) & (before != _WS) & (before != _COLON) & (before != _EXP)).any():
        return None
    is_sep = is_ws | is_colon
    field = np.cumsum(is_sep)
    is_dot, is_exp = kinds == _DOT, kinds == _EXP
    field_of_dot = field[is_dot]
    if (field_of_dot[1:] == field_of_dot[:-1]).any():
        return None  # two dots in one field
    if is_exp.any():
        last_exp_field = np.maximum.accumulate(np.where(is_exp, field, -1))
        if (last_exp_field[is_dot] == field_of_dot).any():
            return None  # a dot after the exponent
    # indices are plain integers: a dot or exponent must not sit before a feature token's colon
    marks = is_dot | is_exp
    if marks.any():
        last_sep = np.maximum.accumulate(np.where(is_sep, np.arange(len(nz)), -1))[marks]
        in_first_field = (last_sep < 0) | (kinds[np.maximum(last_sep, 0)] == _WS)
        if (in_first_field & feature[tok_id[marks]]).any():
            return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy < 2.3 only warns on unparsable text
            numbers = np.fromstring(data.replace(b":", b" "), dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None
    n_feat = int(feature.sum())
    if len(numbers) != n_tok + n_feat:
        return None
    width = 1 + feature.astype(np.int64)
    offsets = np.cumsum(width) - width
    labels = numbers[offsets[first]]
    feat_off = offsets[feature]
    idx_f = numbers[feat_off]
    if len(idx_f) and np.abs(idx_f).max() >= 2.0**53:
        return None  # beyond exact float integers: let the exact parser use Python ints
    indices = idx_f.astype(np.int64)
    if (indices != idx_f).any():
        return None
    values = numbers[feat_off + 1]
    row_of_tok = np.cumsum(first) - 1
    counts = np.bincount(row_of_tok[feature], minlength=len(labels)).astype(np.int64)
    return labels, counts, indices, values


def _parse_libsvm_exact(
    name: str, text: str, n_features: int | None, zero_based: ZeroBased
) -> _ParsedLibsvm:
    """Parse line by line with Python's ``int``/``float``, raising the first error in file order.

    Slow, and only used when the fast pass refused the file (unusual numbers such as ``nan``, or
    an error to locate).
    """
    base_known = zero_based != "auto"
    base = 0 if zero_based is True or zero_based == "auto" else 1
    deferred: list[tuple[int, int]] = []  # (line, index) checked against n_features once base known
    labels: list[float] = []
    counts: list[int] = []
    indices: list[int] = []
    values: list[float] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        tokens = raw.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"{name}, line {lineno}"
        try:
            labels.append(float(tokens[0]))
        except ValueError:
            raise DataFormatError(
                f"{where}: expected a numeric label as the first token, found {tokens[0]!r}"
            ) from None
        seen: dict[int, float] = {}
        for tok in tokens[1:]:
            if tok.startswith("qid:"):
                continue
            idx_s, sep, val_s = tok.partition(":")
            if not sep or not idx_s or not val_s or ":" in val_s:
                raise DataFormatError(f"{where}: expected a feature 'index:value', found {tok!r}")
            try:
                idx = int(idx_s)
            except ValueError:
                raise DataFormatError(
                    f"{where}: expected an integer feature index, found {idx_s!r} in {tok!r}"
                ) from None
            if idx < 0:
                raise DataFormatError(
                    f"{where}: feature index {idx} is negative; expected an index >= 0"
                )
            if idx >= _MAX_INDEX:
                raise DataFormatError(f"{where}: feature index {idx} is too large to represent")
            if idx == 0 and base_known and base == 1:
                raise DataFormatError(
                    f"{where}: feature index 0 in a one-based file (zero_based=False); "
                    "expected an index >= 1"
                )
            try:
                val = float(val_s)
            except ValueError:
                raise DataFormatError(
                    f"{where}: expected a numeric value for feature {idx}, found {val_s!r}"
                ) from None
            if idx in seen:
                raise DataFormatError(
                    f"{where}: feature index {idx} appears twice in the row; "
                    "expected each index at most once"
                )
            seen[idx] = val
            if n_features is not None:
                if base_known and idx - base >= n_features:
                    raise DataFormatError(_beyond_message(where, idx, n_features, base))
                deferred.append((lineno, idx))
        for idx in sorted(seen):
            indices.append(idx)
            values.append(seen[idx])
        counts.append(len(seen))
    if not base_known:
        base = 0 if indices and min(indices) == 0 else 1
    if n_features is not None:
        for lineno, idx in deferred:
            if idx - base >= n_features:
                raise DataFormatError(
                    _beyond_message(f"{name}, line {lineno}", idx, n_features, base)
                )
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return (
        np.array(labels, dtype=np.float64),
        indptr,
        np.array(indices, dtype=np.int64),
        np.array(values, dtype=np.float64),
        base if indices else 0,
    )


def _beyond_message(where: str, idx: int, n_features: int, base: int) -> str:
    limit = n_features - 1 + base
    kind = "zero-based" if base == 0 else "one-based"
    return (
        f"{where}: feature index {idx} is beyond n_features={n_features}; "
        f"expected a {kind} index <= {limit}"
    )


def dump_libsvm(
    path: PathLike, X: Matrix | sp.spmatrix, y: npt.ArrayLike, *, zero_based: bool = False
) -> None:
    """Write ``(X, y)`` as a LIBSVM file that :func:`load_libsvm` reads back exactly.

    Values are written with Python's shortest round-trip ``repr``, so floats survive unchanged.
    Explicitly stored zeros are dropped.

    :param zero_based: write indices starting at 0 (default: one-based, the LIBSVM convention).
    :raises DataFormatError: ``X`` and ``y`` have different lengths or ``y`` is not 1-D.
    """
    Xc = sp.csr_matrix(X)
    Xc.eliminate_zeros()
    Xc.sort_indices()
    yv = np.asarray(y)
    _check_lengths(Xc.shape[0], yv)
    offset = 0 if zero_based else 1
    indptr = Xc.indptr.tolist()
    # build all "idx:val" tokens with C-level maps, then join row slices
    idx_text = map(str, (Xc.indices.astype(np.int64) + offset).tolist())
    val_text = map(repr, Xc.data.astype(np.float64).tolist())
    tokens = list(map("{}:{}".format, idx_text, val_text))
    labels = [_format_label(v) for v in yv.tolist()]
    with open(os.fspath(path), "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(
            f"{label} {' '.join(tokens[lo:hi])}\n" if hi > lo else f"{label}\n"
            for label, lo, hi in zip(labels, indptr[:-1], indptr[1:], strict=True)
        )


def _format_label(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- CSV


#: what ``delimiter="auto"`` tries, in order of preference.
_DELIMITERS = (",", ";", "\t", "|")


def _sniff_delimiter(text: str, lines: int = 5) -> str:
    """The delimiter that splits the first non-blank lines into equally many (> 1) columns (the
    most columns wins; ties go to the earlier of :data:`_DELIMITERS`)."""
    head = [line for line in text[:65536].splitlines() if line.strip()][:lines]
    if len(head) > 1 and len(text) > 65536:
        head = head[:-1]  # the last line of the sample may be cut short
    if not head:
        return ","
    widths = {c: [len(row) for row in csv.reader(head, delimiter=c)] for c in _DELIMITERS}
    consistent = [c for c in _DELIMITERS if len(set(widths[c])) == 1 and widths[c][0] > 1]
    # none consistent: a ragged file; split it the way its first line splits widest, so the
    # error names the short row rather than a cell holding a whole line
    pool = consistent or [c for c in _DELIMITERS if widths[c][0] > 1] or [","]
    return max(pool, key=lambda c: (widths[c][0], -_DELIMITERS.index(c)))


def load_csv(
    path: PathLike,
    label_column: int | str = -1,
    *,
    header: bool | Literal["auto"] = "auto",
    delimiter: str = "auto",
    sparse: bool = False,
    dtype: npt.DTypeLike = np.float64,
    categorical: Literal["auto"] | Sequence[int | str] = "auto",
    hash_features: int = 2**18,
    missing: Literal["error", "indicator"] = "error",
) -> tuple[Matrix, np.ndarray]:
    """Load a CSV file; one column holds the label, every other column is a feature.

    Numeric columns become features as they are. Categorical columns (such as ``city`` holding
    ``paris``, ``rome`` ...) go through the hashing trick: each cell becomes the token
    ``"<column name>=<value>"`` hashed (:class:`~faasml.data.FeatureHasher`) into one of
    ``hash_features`` extra 0/1 columns. ``X`` then is CSR with the numeric columns first, and
    since hashing needs no vocabulary, a test file with the same columns lines up with the
    training file.

    :param label_column: position (negative counts from the end) or header name of the label.
        Numeric labels are returned as float64; other labels (``"yes"``, ``">50K"``) as strings,
        which the estimators accept as class names.
    :param header: whether the first row is a header; ``"auto"`` treats it as one when any of its
        cells is not a number.
    :param delimiter: the field separator; ``"auto"`` picks the one of ``,`` ``;`` tab ``|``
        that splits the first lines into the same, largest number of columns (``,`` on a tie).
    :param sparse: return ``X`` as CSR (explicit zeros dropped) instead of a dense array.
    :param dtype: dtype of ``X``.
    :param categorical: the categorical feature columns, by header name or position; ``"auto"``
        takes every column in which most non-empty cells are not numbers (so a stray typo in a
        numeric column is still reported, not turned into categories). An empty cell of a
        categorical column is a category of its own.
    :param hash_features: columns the categorical tokens are hashed into.
    :param missing: what a missing value in a numeric column is: an empty cell, ``NA``,
        ``N/A``, ``NaN``, ``null``, ``None`` or ``?``. ``"error"`` reports the first one
        (``NaN`` is passed on, and ``fit`` refuses it); ``"indicator"`` makes it 0 and sets a
        hashed ``"<column name>=<missing>"`` column, so the model learns what a missing value
        means for that column.
    :returns: ``(X, y)``.
    :raises DataFormatError: a row with a different number of columns than the first (naming the
        line and the expected and found counts), a non-numeric or empty cell in a numeric column
        or an empty label (naming line and column), or a ``label_column`` or ``categorical``
        column the file does not have.
    :raises ConfigurationError: ``header`` is not a bool or ``"auto"``, a label name is given
        with ``header=False``, the label column is listed as categorical, or ``hash_features``
        is not a positive integer.
    """
    if header not in (True, False, "auto"):
        raise ConfigurationError(f"header must be True, False or 'auto', got {header!r}")
    if not isinstance(categorical, str | Sequence) or (
        isinstance(categorical, str) and categorical != "auto"
    ):
        raise ConfigurationError(
            f"categorical must be 'auto' or a list of column names or positions, got "
            f"{categorical!r}"
        )
    if isinstance(hash_features, bool) or not isinstance(hash_features, int) or hash_features < 1:
        raise ConfigurationError(f"hash_features must be a positive integer, got {hash_features!r}")
    if missing not in ("error", "indicator"):
        raise ConfigurationError(f"missing must be 'error' or 'indicator', got {missing!r}")
    indicate = missing == "indicator"
    if isinstance(label_column, str) and header is False:
        raise ConfigurationError(
            f"label_column={label_column!r} is a column name but header=False; pass a position"
        )
    name = os.fspath(path)
    text = _decode(name, _read_bytes(path))
    if delimiter == "auto":
        delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[list[str]] = []
    linenos: list[int] = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        rows.append(row)
        linenos.append(reader.line_num)
    if not rows:
        return _empty_csv(sparse, dtype)
    has_header = header is True or (header == "auto" and _looks_like_header(rows))
    names: list[str] | None = [c.strip() for c in rows[0]] if has_header else None
    n_cols = len(rows[0])
    for row, lineno in zip(rows, linenos, strict=True):
        if len(row) != n_cols:
            raise DataFormatError(
                f"{name}, line {lineno}: expected {n_cols} columns (as in line {linenos[0]}), "
                f"found {len(row)}"
            )
    label_pos = _label_position(name, label_column, names, n_cols)
    if n_cols == 1 and len(rows) > has_header:
        raise DataFormatError(
            f"{name}: every row has a single column, so there is no feature; is the delimiter "
            f"{delimiter!r} the file's?"
        )
    data_rows = rows[1:] if has_header else rows
    data_lines = linenos[1:] if has_header else linenos
    if not data_rows:
        return _empty_csv(sparse, dtype, n_cols - 1)
    cells = np.empty((len(data_rows), n_cols), dtype=object)
    cells[:] = data_rows
    features = [j for j in range(n_cols) if j != label_pos]
    values: npt.NDArray[np.float64] | None = None
    if categorical == "auto":
        try:
            values = cells[:, features].astype(np.float64)  # all numbers: one pass, in C
            hashed: list[int] = []
        except ValueError:
            hashed = [j for j in features if _mostly_text(cells[:, j], skip_missing=indicate)]
    else:
        hashed = _categorical_positions(name, categorical, names, n_cols, label_pos)
    numeric = [j for j in features if j not in hashed]
    y = _csv_labels(name, cells[:, label_pos], data_lines, label_pos, names)
    if values is None:
        block = cells[:, numeric]
        if indicate:
            # a missing marker reads as NaN here, and becomes 0 plus its indicator below
            block = np.where(_missing_cells(block), "nan", block)
        try:
            values = block.astype(np.float64)
        except ValueError:
            _locate_csv_error(name, data_rows, data_lines, names, numeric, allow_missing=indicate)
            raise DataFormatError(f"{name}: non-numeric cell (could not locate it)") from None
    absent = np.isnan(values) if indicate else None
    if absent is not None and absent.any():
        values = np.where(absent, 0.0, values)
    else:
        absent = None
    X = values.astype(dtype, copy=False)
    if hashed or absent is not None:
        from faasml.data.features import FeatureHasher  # features imports this module

        hasher = FeatureHasher(hash_features)
        tokens = sp.csr_matrix((len(data_rows), hash_features), dtype=dtype)
        if hashed:
            tokens = hasher.transform_fields(
                {_column_name(j, names): np.array([c.strip() for c in cells[:, j]]) for j in hashed}
            ).astype(dtype)
        if absent is not None:
            rows_at, cols_at = np.nonzero(absent)
            flag_of = np.array(
                [hasher.column(f"{_column_name(j, names)}=<missing>") for j in numeric]
            )
            flags = sp.csr_matrix(
                (np.ones(rows_at.size, dtype=dtype), (rows_at, flag_of[cols_at])),
                shape=tokens.shape,
            )
            tokens = tokens + flags
            tokens.data[:] = 1.0  # two tokens hashing to one column still make a 0/1 feature
        return sp.hstack([sp.csr_matrix(X), tokens], format="csr"), y
    if sparse:
        return sp.csr_matrix(X), y
    return X, y


#: how a missing value is written in a numeric column (compared stripped and lower-cased).
_MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


def _missing_cells(block: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Which cells of an object array of strings are missing values."""
    flat = [cell.strip().lower() in _MISSING_MARKERS for cell in block.ravel().tolist()]
    return np.array(flat, dtype=bool).reshape(block.shape)


def _column_name(position: int, names: list[str] | None) -> str:
    """The header name of a column, or ``column<n>`` (1-based, as in error messages)."""
    return names[position] if names is not None else f"column{position + 1}"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _mostly_text(column: npt.NDArray[Any], *, skip_missing: bool = False) -> bool:
    """Whether most non-empty cells of a column are not numbers: a categorical column.

    :param skip_missing: also leave out the cells that are missing-value markers (``NA``).
    """
    try:
        column.astype(np.float64)  # the common case, in C: every cell is a number
        return False
    except ValueError:
        pass
    skip = _MISSING_MARKERS if skip_missing else frozenset({""})
    filled = [c for c in column.tolist() if c.strip().lower() not in skip]
    text = sum(1 for c in filled if not _is_number(c))
    return 2 * text > len(filled)


def _categorical_positions(
    name: str,
    categorical: Sequence[int | str],
    names: list[str] | None,
    n_cols: int,
    label_pos: int,
) -> list[int]:
    positions = []
    for column in categorical:
        if isinstance(column, str):
            if names is None or names.count(column) != 1:
                raise DataFormatError(
                    f"{name}: categorical column {column!r} is not a column name of the file"
                    + (f"; columns are {names}" if names is not None else " (it has no header)")
                )
            position = names.index(column)
        elif isinstance(column, int | np.integer) and -n_cols <= column < n_cols:
            position = int(column) % n_cols
        else:
            raise DataFormatError(
                f"{name}: categorical column {column!r} is out of range for {n_cols} columns"
            )
        if position == label_pos:
            raise ConfigurationError(
                f"{name}: column {_column_name(position, names)!r} is the label column; it "
                "cannot also be a categorical feature"
            )
        positions.append(position)
    return sorted(set(positions))


def _csv_labels(
    name: str,
    column: npt.NDArray[Any],
    linenos: list[int],
    position: int,
    names: list[str] | None,
) -> npt.NDArray[Any]:
    """Numeric labels as float64, class names as strings; an empty label is an error."""
    try:
        return column.astype(np.float64)
    except ValueError:
        pass
    for cell, lineno in zip(column.tolist(), linenos, strict=True):
        if not cell.strip():
            raise DataFormatError(
                f"{name}, line {lineno}, column {position + 1}"
                + (f" ({names[position]!r})" if names is not None else "")
                + ": the label is missing (an empty cell)"
            )
    if not _mostly_text(column):  # a stray word among numbers: a typo, reported as such
        _locate_csv_error(name, [[c] for c in column.tolist()], linenos, names, [0], position)
    return np.array([c.strip() for c in column.tolist()])


def _empty_csv(
    sparse: bool, dtype: npt.DTypeLike, n_features: int = 0
) -> tuple[Matrix, np.ndarray]:
    X = np.zeros((0, n_features), dtype=dtype)
    return (sp.csr_matrix(X) if sparse else X), np.zeros(0, dtype=np.float64)


#: data rows the header detection looks at.
_HEADER_SAMPLE = 200


def _looks_like_header(rows: list[list[str]]) -> bool:
    """Whether the first row names the columns rather than holding data.

    It does when one of its cells is text over a column of numbers (``age`` over ``34``, ``51``),
    or when all its cells are text that the column below never repeats (``city`` over ``paris``,
    ``rome``): a data row of categories repeats its values sooner or later.
    """
    first, body = rows[0], rows[1:_HEADER_SAMPLE]
    if all(_is_number(cell) for cell in first):
        return False
    columns = list(zip(*body, strict=False)) if body else [() for _ in first]
    for cell, column in zip(first, columns, strict=False):
        if not _is_number(cell) and column and not _mostly_text(np.array(column, dtype=object)):
            return True
    if any(_is_number(cell) for cell in first):
        return not body  # text and numbers mixed over categorical columns: a data row
    return all(
        cell.strip() not in {c.strip() for c in column}
        for cell, column in zip(first, columns, strict=False)
    )


def _label_position(
    name: str, label_column: int | str, names: list[str] | None, n_cols: int
) -> int:
    if isinstance(label_column, str):
        if names is None:
            raise DataFormatError(
                f"{name}: label_column={label_column!r} is a column name but the file has no "
                "header row; pass a position or add a header"
            )
        hits = [i for i, n in enumerate(names) if n == label_column]
        if len(hits) != 1:
            problem = "has no column" if not hits else "has several columns"
            raise DataFormatError(
                f"{name}: the header {problem} named {label_column!r}; columns are {names}"
            )
        return hits[0]
    if not -n_cols <= label_column < n_cols:
        raise DataFormatError(
            f"{name}: label_column={label_column} is out of range for {n_cols} columns"
        )
    return label_column % n_cols


def _locate_csv_error(
    name: str,
    rows: list[list[str]],
    linenos: list[int],
    names: list[str] | None,
    columns: Sequence[int] | None = None,
    offset: int = 0,
    *,
    allow_missing: bool = False,
) -> None:
    """Raise for the first non-numeric cell among ``columns`` (default: all) of ``rows``.

    :param offset: added to a column's position in ``rows`` to give its position in the file.
    :param allow_missing: missing-value markers (``NA``, an empty cell ...) are not at fault.
    """
    for row, lineno in zip(rows, linenos, strict=True):
        for col in columns if columns is not None else range(len(row)):
            cell = row[col]
            if allow_missing and cell.strip().lower() in _MISSING_MARKERS:
                continue
            if not _is_number(cell):
                at = col + offset
                label = f" ({names[at]!r})" if names is not None else ""
                found = "an empty cell" if not cell.strip() else repr(cell)
                hint = ""
                if cell.strip().lower() in _MISSING_MARKERS:
                    hint = " (a missing value: missing='indicator' reads it as 0 plus a flag)"
                raise DataFormatError(
                    f"{name}, line {lineno}, column {at + 1}{label}: expected a number, "
                    f"found {found}{hint}"
                )


# --------------------------------------------------------------------------- NPZ

_SPARSE_PARTS = ("data", "indices", "indptr", "shape")


def save_npz(
    path: PathLike, X: Matrix | sp.spmatrix, y: npt.ArrayLike, *, compressed: bool = True
) -> None:
    """Save ``(X, y)`` to an ``.npz`` file that :func:`load_npz` reads back.

    A sparse ``X`` is stored in :func:`scipy.sparse.save_npz`'s layout (CSR) plus an array
    ``y``, so ``scipy.sparse.load_npz`` also opens the file; a dense ``X`` is stored as arrays
    ``X`` and ``y``.

    :raises DataFormatError: ``X`` and ``y`` have different lengths or ``y`` is not 1-D.
    """
    yv = np.asarray(y)
    arrays: dict[str, Any]
    if sp.issparse(X):
        Xc = sp.csr_matrix(X)
        _check_lengths(Xc.shape[0], yv)
        arrays = {
            "format": np.array(b"csr"),
            "shape": np.array(Xc.shape, dtype=np.int64),
            "data": Xc.data,
            "indices": Xc.indices,
            "indptr": Xc.indptr,
            "y": yv,
        }
    else:
        Xd = np.asarray(X)
        _check_lengths(Xd.shape[0] if Xd.ndim else 0, yv)
        arrays = {"X": Xd, "y": yv}
    saver = np.savez_compressed if compressed else np.savez
    saver(os.fspath(path), **arrays)


def load_ratings(
    path: PathLike, *, delimiter: str = "auto"
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.float64]]:
    """Load ``user, item, rating`` rows (further columns, such as a timestamp, are ignored).

    A first row whose rating is not a number is a header. Ids that are all whole numbers come
    back as int64, others as strings (MovieLens' ``userId,movieId,rating,timestamp`` loads as is).

    :returns: ``(users, items, ratings)``.
    :raises DataFormatError: a row with fewer than 3 columns, a rating that is not a finite
        number, an empty id (naming the line), or no ratings at all.
    """
    name = os.fspath(path)
    text = _decode(name, _read_bytes(path))
    if delimiter == "auto":
        delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < 3:
            raise DataFormatError(
                f"{name}, line {reader.line_num}: expected user, item and rating columns, "
                f"found {len(row)} column(s)"
            )
        user, item, rating = (cell.strip() for cell in row[:3])
        try:
            value = float(rating)
        except ValueError:
            if not ratings and not users:
                continue  # the header
            raise DataFormatError(
                f"{name}, line {reader.line_num}, column 3: expected a rating, found {rating!r}"
            ) from None
        if not math.isfinite(value) or not user or not item:
            problem = "a NaN or infinite rating" if user and item else "an empty user or item id"
            raise DataFormatError(f"{name}, line {reader.line_num}: {problem}")
        users.append(user)
        items.append(item)
        ratings.append(value)
    if not ratings:
        raise DataFormatError(f"{name}: no ratings (expected rows of user, item, rating)")
    return _ids(users), _ids(items), np.array(ratings, dtype=np.float64)


def _ids(values: list[str]) -> npt.NDArray[Any]:
    """Whole-number ids as int64, others as strings."""
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.array(values)


def load_npz(path: PathLike) -> tuple[Matrix, np.ndarray]:
    """Load ``(X, y)`` from an ``.npz`` file.

    Accepted layouts: arrays ``X`` (dense) and ``y``; or CSR components ``data``, ``indices``,
    ``indptr``, ``shape`` and ``y`` (this is what :func:`scipy.sparse.save_npz` writes, with
    ``format`` ``csr`` or ``csc``, plus a ``y`` array). Pickled object arrays are refused.

    :raises DataFormatError: naming the file and the missing arrays, an unsupported sparse format,
        inconsistent CSR components, or a ``y`` whose length differs from ``X``'s rows.
    """
    name = os.fspath(path)
    try:
        npz = np.load(name, allow_pickle=False)
    except ValueError as exc:
        raise DataFormatError(f"{name}: not a readable .npz file ({exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataFormatError(f"{name}: expected an .npz archive, found a single .npy array")
    with npz:
        keys = set(npz.files)
        try:
            if "X" in keys:
                X: Matrix = npz["X"]
                if X.ndim != 2:
                    raise DataFormatError(f"{name}: array 'X' must be 2-D, found shape {X.shape}")
                need = ["y"]
            elif keys & set(_SPARSE_PARTS):
                need = [k for k in (*_SPARSE_PARTS, "y") if k not in keys]
                if need:
                    raise DataFormatError(
                        f"{name}: sparse .npz is missing array(s) {need}; expected "
                        f"{list(_SPARSE_PARTS)} and 'y'"
                    )
                X = _sparse_from_npz(name, npz)
                need = []
            else:
                raise DataFormatError(
                    f"{name}: expected arrays 'X' and 'y' (dense) or 'data', 'indices', 'indptr', "
                    f"'shape' and 'y' (sparse); found {sorted(keys)}"
                )
            if "y" not in keys:
                raise DataFormatError(f"{name}: missing array 'y' (the labels)")
            y = npz["y"]
        except ValueError as exc:
            if isinstance(exc, DataFormatError):
                raise
            raise DataFormatError(f"{name}: cannot read arrays ({exc})") from None
    try:
        _check_lengths(X.shape[0], y)
    except DataFormatError as exc:
        raise DataFormatError(f"{name}: {exc}") from None
    return X, y


def _sparse_from_npz(name: str, npz: Any) -> sp.csr_matrix:
    fmt_arr = npz["format"] if "format" in npz.files else np.array(b"csr")
    fmt = fmt_arr.item()
    fmt = fmt.decode("ascii", "replace") if isinstance(fmt, bytes) else str(fmt)
    if fmt not in ("csr", "csc"):
        raise DataFormatError(f"{name}: unsupported sparse format {fmt!r}; expected 'csr' or 'csc'")
    shape = tuple(int(v) for v in npz["shape"])
    cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
    try:
        M = cls((npz["data"], npz["indices"], npz["indptr"]), shape=shape)
        M.check_format(full_check=True)
    except (ValueError, TypeError) as exc:
        raise DataFormatError(f"{name}: inconsistent {fmt} components ({exc})") from None
    return sp.csr_matrix(M)


# --------------------------------------------------------------------------- dispatch


def file_format(path: PathLike) -> Literal["libsvm", "csv", "npz"]:
    """The format :func:`load` reads ``path`` as, from its extension (a trailing ``.gz`` ignored).

    :raises DataFormatError: the extension is not one :func:`load` knows.
    """
    name = os.fspath(path)
    base = name[:-3] if name.endswith(".gz") else name
    ext = os.path.splitext(base)[1].lower()
    if ext in _LIBSVM_EXTS:
        return "libsvm"
    if ext in (".csv", ".tsv"):
        return "csv"
    if ext == ".npz":
        return "npz"
    raise DataFormatError(
        f"{name}: cannot tell the format from extension {ext!r}; expected one of "
        f"{', '.join((*_LIBSVM_EXTS, '.csv', '.tsv', '.npz'))} or call "
        "load_libsvm/load_csv/load_npz"
    )


def load(path: PathLike, **kwargs: Any) -> tuple[Matrix, np.ndarray]:
    """Load ``(X, y)`` choosing the reader from the extension (a trailing ``.gz`` is ignored).

    ``.svm``/``.libsvm``/``.txt`` -> :func:`load_libsvm`, ``.csv``/``.tsv`` -> :func:`load_csv`,
    ``.npz`` -> :func:`load_npz`; ``kwargs`` go to that reader.

    :raises DataFormatError: the extension is not one of those.
    """
    kind = file_format(path)
    if kind == "libsvm":
        return load_libsvm(path, **kwargs)
    if kind == "csv":
        return load_csv(path, **kwargs)
    return load_npz(path, **kwargs)


# --------------------------------------------------------------------------- validation


def _not_numeric(X: npt.NDArray[Any], columns: Any) -> str:
    """Say which column of ``X`` holds the first value that is not a number, and what to do."""
    for j in range(X.shape[1]):
        for i, value in enumerate(X[:, j].tolist()):
            try:
                float(value)
            except (ValueError, TypeError):
                name = f" ({columns[j]!r})" if columns is not None and j < len(columns) else ""
                return (
                    f"X must hold numbers, but column {j}{name} holds {value!r} (row {i}); "
                    "for categories, hash them into columns with faasml.data.FeatureHasher "
                    "(load_csv does that for text columns of a CSV file)"
                )
    return f"X must hold numbers, found dtype {X.dtype}"


def _check_lengths(n_rows: int, y: np.ndarray) -> None:
    if y.ndim != 1:
        raise DataFormatError(
            f"y must be 1-D (one label per row), found shape {y.shape}; use y.ravel() if it is a "
            "column vector"
        )
    if len(y) != n_rows:
        raise DataFormatError(f"X has {n_rows} rows but y has {len(y)} labels")


def check_xy(
    X: Matrix | sp.spmatrix | npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    allow_nan: bool = False,
    numeric_labels: bool = True,
) -> tuple[Matrix, np.ndarray]:
    """Validate a training set and return it as ``(CSR or 2-D float ndarray, 1-D ndarray)``.

    NaN and infinite features are refused rather than silently imputed: the caller imputes first
    (or passes ``allow_nan=True`` for a model that handles them). Labels must always be finite.
    ``numeric_labels=False`` also admits class names (strings or other objects), which a
    classifier maps to indices itself; stored datasets hold numbers only.

    :raises DataFormatError: ``X`` is not 2-D or not numeric, ``y`` is not 1-D, their lengths
        differ (``"X has 10 rows but y has 9 labels"``), the dataset is empty, or a feature or label
        is NaN/infinite (naming the first bad row and column).
    """
    Xv: Matrix
    if sp.issparse(X):
        Xv = sp.csr_matrix(X)
        if not (np.issubdtype(Xv.dtype, np.number) or Xv.dtype == np.bool_) or np.issubdtype(
            Xv.dtype, np.complexfloating
        ):
            raise DataFormatError(f"X must hold real numbers, found dtype {Xv.dtype}")
        if not np.issubdtype(Xv.dtype, np.floating):
            Xv = Xv.astype(np.float64)
    else:
        columns = getattr(X, "columns", None)  # a pandas DataFrame's column names
        Xv = np.asarray(X)
        if Xv.ndim != 2:
            raise DataFormatError(
                f"X must be 2-D (rows x features), found shape {Xv.shape}; use X.reshape(-1, 1) "
                "for a single feature"
            )
        if Xv.dtype == np.bool_ or not np.issubdtype(Xv.dtype, np.floating):
            try:
                Xv = Xv.astype(np.float64)
            except (ValueError, TypeError):
                raise DataFormatError(_not_numeric(Xv, columns)) from None
    yv = np.asarray(y)
    _check_lengths(Xv.shape[0], yv)
    if Xv.shape[0] == 0 or Xv.shape[1] == 0:
        raise DataFormatError(f"empty dataset: X has shape {Xv.shape}; expected at least 1 x 1")
    if not allow_nan:
        refuse_nonfinite(Xv)
    if np.issubdtype(yv.dtype, np.floating) and not np.isfinite(yv).all():
        r = int(np.flatnonzero(~np.isfinite(yv))[0])
        raise DataFormatError(f"y has a NaN or infinite label at row {r}")
    if numeric_labels and not (np.issubdtype(yv.dtype, np.number) or yv.dtype == np.bool_):
        raise DataFormatError(f"y must hold numbers, found dtype {yv.dtype}")
    if yv.dtype == object:
        # pandas marks a missing class name with None or NaN
        missing = [i for i, v in enumerate(yv.tolist()) if _is_missing(v)]
        if missing:
            raise DataFormatError(f"y has a missing (None or NaN) label at row {missing[0]}")
    return Xv, yv


def _is_missing(value: object) -> bool:
    """None, NaN, or pandas' ``NA`` (whose truth value is ambiguous, so comparing it raises)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True


def refuse_nonfinite(X: Matrix) -> None:
    """Raise :class:`DataFormatError` naming the first NaN/inf cell of ``X``, if it has one."""
    bad = first_nonfinite(X)
    if bad is not None:
        raise DataFormatError(
            f"X has a NaN or infinite value at row {bad[0]}, column {bad[1]}; impute or drop "
            "missing values first"
        )


def first_nonfinite(X: Matrix) -> tuple[int, int] | None:
    """Return (row, column) of the first NaN/inf in row-major order, or ``None``."""
    if sp.issparse(X):
        bad = np.flatnonzero(~np.isfinite(X.data))
        if not len(bad):
            return None
        row = int(np.searchsorted(X.indptr, bad[0], side="right") - 1)
        lo, hi = X.indptr[row], X.indptr[row + 1]
        seg = X.data[lo:hi]
        col = int(X.indices[lo:hi][~np.isfinite(seg)].min())
        return row, col
    finite = np.isfinite(X)
    if finite.all():
        return None
    r, c = np.argwhere(~finite)[0]
    return int(r), int(c)

"""Binary formats of the sync protocol and its JSON messages."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from faasml.errors import DataFormatError
from faasml.sync import (
    Announcement,
    Decision,
    Included,
    Leave,
    decode_arrays,
    decode_delta,
    decode_message,
    encode_arrays,
    encode_delta,
)


def test_delta_round_trip_float64_is_exact() -> None:
    rows = np.array([0, 5, 6, 262143, 4_000_000], dtype=np.int64)
    values = np.random.default_rng(0).standard_normal((5, 3))
    out_rows, out_values = decode_delta(encode_delta(rows, values, dtype="float64"))
    assert out_rows.dtype == np.int64 and out_rows.tolist() == rows.tolist()
    assert np.array_equal(out_values, values)


def test_delta_float32_rounds_like_numpy() -> None:
    rows = np.array([3, 9])
    values = np.array([[0.1], [1e-9]])
    _, out = decode_delta(encode_delta(rows, values))
    assert np.array_equal(out, values.astype(np.float32).astype(np.float64))


def test_empty_delta() -> None:
    rows, values = decode_delta(encode_delta(np.zeros(0, np.int64), np.zeros((0, 2))))
    assert rows.size == 0 and values.shape == (0, 2)


def test_hashed_indices_compress() -> None:
    rows = np.unique(np.random.default_rng(1).integers(0, 2**18, 3000))
    blob = encode_delta(rows, np.zeros((rows.size, 1)))
    index_bytes = len(blob) - 24 - rows.size * 4  # header and raw float32 values aside
    assert index_bytes < rows.size * 4 / 2  # gaps squeeze to well under raw uint32 indices


def test_version_1_deltas_with_zlib_indices_still_decode() -> None:
    import struct
    import zlib

    rows = np.array([3, 9, 300, 70_000], dtype=np.int64)
    values = np.arange(4, dtype=np.float32).reshape(4, 1)
    gaps = zlib.compress(np.diff(rows, prepend=0).astype("<u4").tobytes(), 1)
    header = struct.pack("<4sBBHQII", b"FMLD", 1, 1, 0, 4, 1, len(gaps))
    out_rows, out_values = decode_delta(header + gaps + values.tobytes())
    assert out_rows.tolist() == rows.tolist()
    assert np.array_equal(out_values, values.astype(np.float64))


def test_escaped_gaps_round_trip() -> None:
    # gaps of exactly 255 (the escape byte), above it, and a first index above it
    rows = np.array([255, 510, 511, 766, 2**32 - 1], dtype=np.int64)
    out_rows, _ = decode_delta(encode_delta(rows, np.zeros((5, 1))))
    assert out_rows.tolist() == rows.tolist()


@pytest.mark.parametrize(
    ("rows", "values", "match"),
    [
        (np.array([2, 1]), np.zeros((2, 1)), "sorted"),
        (np.array([1, 1]), np.zeros((2, 1)), "sorted"),
        (np.array([-1, 1]), np.zeros((2, 1)), "2\\*\\*32"),
        (np.array([1, 2]), np.zeros((3, 1)), "do not match"),
    ],
)
def test_bad_delta_is_refused(rows: np.ndarray, values: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_delta(rows, values)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"XXXX" + b"\0" * 30,
        encode_delta(np.array([1, 2]), np.ones((2, 1)))[:-3],
        encode_delta(np.array([1, 2]), np.ones((2, 1)))[:24] + b"garbage",
    ],
)
def test_corrupt_delta_raises_data_format_error(blob: bytes) -> None:
    with pytest.raises(DataFormatError):
        decode_delta(blob, key="k")


def test_array_frame_round_trip() -> None:
    arrays = {
        "W": np.arange(12, dtype=np.float64).reshape(4, 3),
        "rows": np.array([1, 7], dtype=np.int64),
        "mask": np.array([True, False]),
    }
    meta, out = decode_arrays(encode_arrays({"d": 7, "note": "x"}, arrays))
    assert meta == {"d": 7, "note": "x"}
    for name, arr in arrays.items():
        assert out[name].dtype == arr.dtype and np.array_equal(out[name], arr)
    out["W"][0, 0] = 5.0  # decoded arrays are writable copies


def test_array_frame_refuses_objects_and_garbage() -> None:
    with pytest.raises(ValueError, match="dtype"):
        encode_arrays({}, {"x": np.array([object()])})
    with pytest.raises(DataFormatError):
        decode_arrays(b"FMLA\x01\0\0\0\xff\0\0\0{")
    blob = encode_arrays({}, {"x": np.zeros(10)})
    with pytest.raises(DataFormatError):
        decode_arrays(blob[:-4])


def test_messages_round_trip() -> None:
    ann = Announcement(1, 2, 30, "k/30", n=64, base=29, loss=0.5, rows=12)
    assert decode_message(ann.encode()) == ann
    # the hand-written encoder carries every field of the dataclass
    assert json.loads(ann.encode()) == dataclasses.asdict(ann)
    leave = Leave(1, 2, 31, "budget")
    assert decode_message(leave.encode()) == leave
    dec = Decision(
        5, (Included(0, 0, 5, "a", 10, 4), Included(1, 3, 4, None, 10, 3)), ((2, 1),), False
    )
    assert decode_message(dec.encode()) == dec
    assert dec.samples == 20


@pytest.mark.parametrize(
    "raw", [b"not json", b'{"type": "other"}', b'{"type": "delta", "slot": 1}', b"[]"]
)
def test_bad_messages(raw: bytes) -> None:
    with pytest.raises(DataFormatError):
        decode_message(raw)

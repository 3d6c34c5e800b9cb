"""BlockMatrix: storage layout, block codec, laziness, write-once, views and elementwise ops."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import faasml
from faasml.algorithms import BlockMatrix
from faasml.algorithms.blockmatrix import (
    BLOCK_HEADER_BYTES,
    block_buffer,
    decode_block,
    encode_block,
    normalize_block,
)
from faasml.errors import AlreadyExistsError, DataFormatError, NotFoundError
from faasml.interfaces import ObjectInfo, ObjectStore
from faasml.storage.memory import MemoryObjectStore


class CountingStore(ObjectStore):
    """Wraps an in-process store and records which keys were read and written."""

    name = "memory"

    def __init__(self) -> None:
        self.inner = MemoryObjectStore()
        self.gets: list[str] = []
        self.puts: list[str] = []

    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        self.puts.append(key)
        self.inner.put(key, data, if_absent=if_absent)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        self.gets.append(key)
        return self.inner.get(key, start, end)

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def to_config(self) -> dict[str, Any]:
        return self.inner.to_config()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def store() -> Iterator[CountingStore]:
    s = CountingStore()
    yield s
    s.close()


def _matrix(shape: tuple[int, int], dtype: Any = np.float64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------- block codec


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_codec_round_trip_is_exact_and_zero_copy(dtype: Any) -> None:
    arr = _matrix((5, 3), dtype)
    data = bytes(encode_block(arr))
    assert len(data) == BLOCK_HEADER_BYTES + arr.nbytes
    out = decode_block(data, key="k", dtype=dtype, shape=(5, 3))
    assert out.dtype == dtype and out.shape == (5, 3)
    np.testing.assert_array_equal(out, arr)
    assert not out.flags.writeable  # decoded straight over the immutable bytes


def test_block_buffer_view_writes_into_the_encoded_bytes() -> None:
    buf, view = block_buffer(2, 3, np.float32)
    view[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = decode_block(bytes(buf), key="k", dtype=np.float32, shape=(2, 3))
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d[:10], "shorter than"),
        (lambda d: b"XXXX" + d[4:], "not a faasml matrix block"),
        (lambda d: d[:4] + b"\x07\x00" + d[6:], "format version 7"),
        (lambda d: d[:6] + b"\x09" + d[7:], "unknown dtype code"),
        (lambda d: d[:-8], "truncated"),
        (lambda d: d + b"\x00" * 8, "truncated"),
    ],
)
def test_decode_refuses_damaged_objects_naming_the_key(mutate: Any, match: str) -> None:
    data = mutate(bytes(encode_block(np.ones((2, 2)))))
    with pytest.raises(DataFormatError, match=match) as info:
        decode_block(data, key="some/key", dtype=np.float64, shape=(2, 2))
    assert "some/key" in str(info.value)


def test_decode_checks_dtype_and_shape_against_the_header() -> None:
    data = bytes(encode_block(np.ones((2, 3), dtype=np.float32)))
    with pytest.raises(DataFormatError, match="holds float32 .* says float64"):
        decode_block(data, key="k", dtype=np.float64)
    with pytest.raises(DataFormatError, match=r"shape \(2, 3\) .* implies \(3, 2\)"):
        decode_block(data, key="k", shape=(3, 2))


def test_encode_refuses_non_2d_and_non_float() -> None:
    with pytest.raises(ValueError, match="2-D"):
        encode_block(np.ones(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        encode_block(np.ones((2, 2), dtype=np.int64))


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "block"),
    [((1, 1), 1), ((1, 1), 64), ((7, 13), 3), ((7, 13), (7, 13)), ((300, 257), 64), ((5, 9), 4)],
)
def test_round_trip_exact(
    store: CountingStore, shape: tuple[int, int], block: Any, dtype: Any
) -> None:
    arr = _matrix(shape, dtype)
    bm = BlockMatrix.from_numpy(store, arr, block=block)
    out = bm.to_numpy()
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, arr)
    reopened = BlockMatrix.open(store, bm.name)
    assert (reopened.shape, reopened.block_shape, reopened.dtype) == (
        bm.shape,
        bm.block_shape,
        bm.dtype,
    )
    np.testing.assert_array_equal(reopened.to_numpy(), arr)


def test_layout_keys_and_unpadded_edge_blocks(store: CountingStore) -> None:
    arr = _matrix((7, 13))
    bm = BlockMatrix.from_numpy(store, arr, block=5, name="m1", prefix="data/mats")
    assert bm.grid == (2, 3)
    keys = {info.key: info.size for info in store.list("data/mats/m1/")}
    assert set(keys) == {"data/mats/m1/header.json"} | {
        f"data/mats/m1/b/{i}_{j}" for i in range(2) for j in range(3)
    }
    # edge blocks are stored at their real size: 2 rows x 3 columns for the corner
    assert keys["data/mats/m1/b/1_2"] == BLOCK_HEADER_BYTES + 2 * 3 * 8
    assert keys["data/mats/m1/b/0_0"] == BLOCK_HEADER_BYTES + 5 * 5 * 8
    # the header is written last: it marks the matrix complete
    assert store.puts[-1] == "data/mats/m1/header.json"


def test_open_reads_only_the_header_and_blocks_are_lazy(store: CountingStore) -> None:
    bm = BlockMatrix.from_numpy(store, _matrix((20, 20)), block=5)
    store.gets.clear()
    opened = BlockMatrix.open(store, bm.name)
    assert store.gets == [bm.header_key]
    assert opened.T.shape == (20, 20)  # views are metadata only
    assert store.gets == [bm.header_key]
    store.gets.clear()
    BlockMatrix(store, bm.name, (20, 20), (5, 5), np.float64)
    assert store.gets == []


def test_sub_range_reads_only_the_blocks_it_touches(store: CountingStore) -> None:
    arr = _matrix((40, 30))
    bm = BlockMatrix.from_numpy(store, arr, block=10)
    store.gets.clear()
    out = bm.to_numpy(rows=slice(12, 25), cols=slice(5, 9))
    np.testing.assert_array_equal(out, arr[12:25, 5:9])
    assert sorted(store.gets) == sorted(bm.block_key(i, 0) for i in (1, 2))


@pytest.mark.parametrize(
    ("rows", "cols"),
    [
        (slice(None), slice(3, 4)),
        (slice(0, 40, 3), slice(29, 0, -4)),
        (slice(-5, None), slice(None, None, -1)),
        (slice(10, 10), slice(None)),
    ],
)
def test_sub_range_slices_behave_like_numpy(store: CountingStore, rows: slice, cols: slice) -> None:
    arr = _matrix((40, 30))
    bm = BlockMatrix.from_numpy(store, arr, block=7)
    np.testing.assert_array_equal(bm.to_numpy(rows=rows, cols=cols), arr[rows, cols])


def test_sub_range_rejects_non_slices(store: CountingStore) -> None:
    bm = BlockMatrix.from_numpy(store, _matrix((4, 4)), block=2)
    with pytest.raises(TypeError, match="rows must be a slice"):
        bm.to_numpy(rows=3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- validation


def test_block_size_rule() -> None:
    assert normalize_block(2048, (300, 5)) == (300, 5)  # clamped to the matrix
    assert normalize_block((4, 100), (10, 10)) == (4, 10)
    for bad in (0, -3, 2.5, True, (3,), (3, 0)):
        with pytest.raises(ValueError, match="block"):
            normalize_block(bad, (10, 10))  # type: ignore[arg-type]


def test_from_numpy_validates_input(store: CountingStore) -> None:
    with pytest.raises(ValueError, match="2-D"):
        BlockMatrix.from_numpy(store, np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        BlockMatrix.from_numpy(store, np.ones((0, 4)))
    with pytest.raises(TypeError, match="float32 or float64"):
        BlockMatrix.from_numpy(store, np.ones((2, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="block sizes must be integers >= 1"):
        BlockMatrix.from_numpy(store, np.ones((2, 2)), block=0)
    with pytest.raises(ValueError, match="without '/'"):
        BlockMatrix.from_numpy(store, np.ones((2, 2)), name="a/b")


def test_open_missing_and_bad_header(store: CountingStore) -> None:
    with pytest.raises(
        NotFoundError, match="no BlockMatrix named 'nope'.*blockmatrix/nope/header.json"
    ):
        BlockMatrix.open(store, "nope")
    store.put("blockmatrix/bad/header.json", b'{"format": "other"}')
    with pytest.raises(DataFormatError, match="blockmatrix/bad/header.json"):
        BlockMatrix.open(store, "bad")


def test_missing_block_error_names_the_key(store: CountingStore) -> None:
    arr = _matrix((6, 6))
    bm = BlockMatrix.from_numpy(store, arr, block=3, name="holey")
    store.delete("blockmatrix/holey/b/1_0")
    with pytest.raises(NotFoundError, match=r"block \(1, 0\).*'blockmatrix/holey/b/1_0'"):
        bm.to_numpy()
    # the blocks that are still there remain readable
    np.testing.assert_array_equal(bm.to_numpy(rows=slice(0, 3)), arr[0:3])


def test_damaged_block_is_a_data_format_error(store: CountingStore) -> None:
    bm = BlockMatrix.from_numpy(store, _matrix((4, 4)), block=2, name="dmg")
    store.inner.delete("blockmatrix/dmg/b/0_1")
    store.inner.put("blockmatrix/dmg/b/0_1", bytes(encode_block(np.ones((2, 2), np.float32))))
    with pytest.raises(DataFormatError, match="blockmatrix/dmg/b/0_1"):
        bm.get_block(0, 1)


# --------------------------------------------------------------------------- write-once


def test_rewriting_identical_content_is_a_no_op(store: CountingStore) -> None:
    arr = _matrix((6, 5))
    first = BlockMatrix.from_numpy(store, arr, block=2, name="same")
    again = BlockMatrix.from_numpy(store, arr, block=2, name="same")
    np.testing.assert_array_equal(again.to_numpy(), first.to_numpy())
    first.put_block(1, 1, arr[2:4, 2:4])


def test_different_content_under_the_same_name_is_refused(store: CountingStore) -> None:
    BlockMatrix.from_numpy(store, _matrix((6, 5)), block=2, name="once")
    with pytest.raises(AlreadyExistsError, match="blockmatrix/once/b/0_0.*write-once"):
        BlockMatrix.from_numpy(store, _matrix((6, 5), seed=1), block=2, name="once")
    bm = BlockMatrix.open(store, "once")
    with pytest.raises(AlreadyExistsError, match="write-once"):
        bm.put_block(0, 0, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"has shape \(2, 1\)"):
        bm.put_block(2, 2, np.zeros((2, 2)))


def test_delete_frees_every_object(store: CountingStore) -> None:
    bm = BlockMatrix.from_numpy(store, _matrix((6, 5)), block=2)
    other = BlockMatrix.from_numpy(store, _matrix((2, 2)), block=2)
    assert bm.delete() == 9 + 1
    assert list(store.list(f"blockmatrix/{bm.name}/")) == []
    assert other.to_numpy().shape == (2, 2)
    with pytest.raises(NotFoundError):
        BlockMatrix.open(store, bm.name)


# --------------------------------------------------------------------------- views, pickling


def test_transpose_is_a_metadata_only_view(store: CountingStore) -> None:
    arr = _matrix((7, 13))
    bm = BlockMatrix.from_numpy(store, arr, block=(3, 5))
    puts = len(store.puts)
    t = bm.T
    assert len(store.puts) == puts
    assert (t.shape, t.block_shape, t.grid) == ((13, 7), (5, 3), (3, 3))
    np.testing.assert_array_equal(t.to_numpy(), arr.T)
    np.testing.assert_array_equal(t.to_numpy(rows=slice(4, 11), cols=slice(1, 6)), arr.T[4:11, 1:6])
    np.testing.assert_array_equal(t.get_block(2, 1), arr.T[10:13, 3:6])
    np.testing.assert_array_equal(t.T.to_numpy(), arr)


def test_pickles_without_its_store(store: CountingStore) -> None:
    bm = BlockMatrix.from_numpy(store, _matrix((4, 4)), block=2).T
    clone = pickle.loads(pickle.dumps(bm))
    assert (clone.name, clone.shape, clone.transposed) == (bm.name, bm.shape, True)
    with pytest.raises(RuntimeError, match=r"attach\(store\)"):
        clone.to_numpy()
    np.testing.assert_array_equal(clone.attach(store).to_numpy(), bm.to_numpy())


# --------------------------------------------------------------------------- elementwise ops


def test_add_and_scale_locally(store: CountingStore) -> None:
    x, y = _matrix((9, 7)), _matrix((9, 7), seed=1)
    a = BlockMatrix.from_numpy(store, x, block=4)
    b = BlockMatrix.from_numpy(store, y, block=(2, 3))  # blocks that do not line up with a's
    np.testing.assert_allclose((a + b).to_numpy(), x + y, rtol=0, atol=0)
    np.testing.assert_array_equal((a * 2.5).to_numpy(), x * 2.5)
    np.testing.assert_array_equal((3 * a).to_numpy(), 3 * x)
    s = a.add(b.T.T, name="sum")
    assert BlockMatrix.open(store, "sum").shape == (9, 7)
    np.testing.assert_array_equal(s.to_numpy(), x + y)


def test_add_promotes_mixed_dtypes_and_checks_shapes(store: CountingStore) -> None:
    x32 = _matrix((5, 4), np.float32)
    x64 = _matrix((5, 4), np.float64, seed=2)
    a = BlockMatrix.from_numpy(store, x32, block=2)
    b = BlockMatrix.from_numpy(store, x64, block=2)
    out = (a + b).to_numpy()
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, x32.astype(np.float64) + x64)
    with pytest.raises(ValueError, match=r"shapes \(5, 4\) and \(4, 5\)"):
        a.add(b.T)
    with pytest.raises(TypeError, match="real number"):
        a.scale(1j)  # type: ignore[arg-type]
    assert a.__add__(3) is NotImplemented


def test_add_and_scale_as_cloud_tasks() -> None:
    with faasml.connect("local", workers=2, storage="memory", progress=False) as cloud:
        x, y = _matrix((30, 20)), _matrix((20, 30), seed=3)
        a = BlockMatrix.from_numpy(cloud.storage, x, block=8)
        b = BlockMatrix.from_numpy(cloud.storage, y, block=8)
        np.testing.assert_array_equal(a.add(b.T, cloud=cloud).to_numpy(), x + y.T)
        np.testing.assert_array_equal(a.scale(-0.5, cloud=cloud).to_numpy(), -0.5 * x)

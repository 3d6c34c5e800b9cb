"""Sharding into an object store: batch codec, manifest, reading, prefetching and its thread."""

from __future__ import annotations

import gc
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.sparse as sp

from faasml.data import StoredDataset, decode_batch, encode_batch, upload_dataset
from faasml.errors import ConfigurationError, DataFormatError, NotFoundError
from faasml.storage.memory import MemoryObjectStore


@pytest.fixture
def store() -> Iterator[MemoryObjectStore]:
    s = MemoryObjectStore()
    yield s
    s.close()


def csr(rows: int, cols: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = sp.random(rows, cols, density=0.1, format="csr", random_state=rng)
    X.data = rng.normal(size=X.nnz)
    return X


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "faasml-prefetch"]


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize("compression", ["zlib", None])
def test_codec_round_trips_sparse_and_dense(compression: str | None) -> None:
    X = csr(37, 11)
    y = np.arange(37, dtype=np.int64)
    X2, y2 = decode_batch(encode_batch(X, y, compression=compression))  # type: ignore[arg-type]
    assert sp.isspmatrix_csr(X2) and (X2 != X).nnz == 0 and X2.shape == X.shape
    np.testing.assert_array_equal(y2, y)
    assert y2.dtype == np.int64
    X2.data[0] = 99.0  # decoded arrays are writable, not views of the blob
    D = np.arange(12, dtype=np.float32).reshape(4, 3)
    yb = np.array([True, False, True, True])
    D2, yb2 = decode_batch(encode_batch(D, yb, compression=compression))  # type: ignore[arg-type]
    assert D2.dtype == np.float32 and yb2.dtype == np.bool_
    np.testing.assert_array_equal(D2, D)
    np.testing.assert_array_equal(yb2, yb)


def test_codec_converts_integer_features_and_handles_empty_batches() -> None:
    X2, _ = decode_batch(encode_batch(np.eye(2, dtype=np.int64), np.zeros(2)))
    assert X2.dtype == np.float64
    E, ye = decode_batch(encode_batch(sp.csr_matrix((0, 5)), np.zeros(0)))
    assert E.shape == (0, 5) and len(ye) == 0


def test_codec_compresses_hashed_features() -> None:
    cols = np.sort(np.random.default_rng(0).integers(0, 2**18, size=(1024, 11)), axis=1)
    X = sp.csr_matrix((np.ones(cols.size), cols.ravel(), np.arange(0, cols.size + 1, 11)))
    y = np.zeros(1024, dtype=np.int64)
    assert len(encode_batch(X, y)) < 0.8 * len(encode_batch(X, y, compression=None))


def test_codec_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="compression"):
        encode_batch(np.eye(2), np.zeros(2), compression="lz4")  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match="y has shape"):
        encode_batch(np.eye(2), np.zeros(3))
    with pytest.raises(DataFormatError, match="y has dtype <U1"):
        encode_batch(np.eye(2), np.array(["a", "b"]))


def header_fields(blob: bytes) -> list[object]:
    return list(struct.unpack_from("<4sBBBBBBxxQQQQI", blob))


def repack(blob: bytes, **changes: object) -> bytes:
    names = "magic version kind codec x i y rows cols nnz len crc".split()
    fields = dict(zip(names, header_fields(blob), strict=True))
    fields.update(changes)
    size = struct.calcsize("<4sBBBBBBxxQQQQI")
    return struct.pack("<4sBBBBBBxxQQQQI", *fields.values()) + blob[size:]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda b: b[:10], "truncated batch object"),
        (lambda b: b"XXXX" + b[4:], "not a faasml batch object"),
        (lambda b: repack(b, version=9), "newer than this faasml reads"),
        (lambda b: repack(b, x=99), "unknown dtype code"),
        (lambda b: repack(b, x=6), "invalid feature dtype"),
        (lambda b: repack(b, rows=10**12), "does not match the header shapes"),
        (lambda b: repack(b, crc=0), "CRC mismatch"),
        (lambda b: b[:-3], "compressed body does not hold"),
        (lambda b: b[:60] + b"\x00" * (len(b) - 60), "corrupt compressed body"),
        (lambda b: b + b"trailing", "compressed body does not hold"),
    ],
)
def test_decode_refuses_corrupt_objects_naming_the_key(mutate: object, fragment: str) -> None:
    blob = encode_batch(csr(20, 8), np.zeros(20))
    with pytest.raises(DataFormatError) as info:
        decode_batch(mutate(blob), key="datasets/x/batch-000003")  # type: ignore[operator]
    assert str(info.value).startswith("datasets/x/batch-000003: ")
    assert fragment in str(info.value)


def test_decode_validates_csr_structure_behind_a_valid_crc() -> None:
    X = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]]))
    blob = encode_batch(X, np.zeros(2), compression=None)
    hdr = struct.calcsize("<4sBBBBBBxxQQQQI")
    body = bytearray(blob[hdr:])
    # indptr occupies 3 int32 (padded to 16 bytes), then indices: make column 1 -> 7
    body[16 + 4 : 16 + 8] = np.int32(7).tobytes()
    bad = repack(blob[:hdr] + bytes(body), crc=zlib.crc32(body))
    with pytest.raises(DataFormatError, match="column index out of range for 2 columns"):
        decode_batch(bad)
    body = bytearray(blob[hdr:])
    body[4:8] = np.int32(5).tobytes()  # indptr no longer monotonic and ends wrong
    bad = repack(blob[:hdr] + bytes(body), crc=zlib.crc32(body))
    with pytest.raises(DataFormatError, match="inconsistent CSR indptr"):
        decode_batch(bad)


# --------------------------------------------------------------------------- upload + manifest


def test_upload_layout_manifest_and_ranges(store: MemoryObjectStore) -> None:
    X = csr(2500, 30)
    y = np.random.default_rng(0).integers(0, 3, 2500)
    ds = upload_dataset(store, X, y, name="demo", batch_size=1000, test_fraction=0.2)
    # 2000 train rows -> 2 batches, 500 test rows -> 1 batch
    assert ds.train_ids == range(0, 2) and ds.test_ids == range(2, 3)
    keys = [info.key for info in store.list("datasets/demo/")]
    assert keys == [
        "datasets/demo/batch-000000",
        "datasets/demo/batch-000001",
        "datasets/demo/batch-000002",
        "datasets/demo/manifest.json",
    ]
    manifest = json.loads(store.get("datasets/demo/manifest.json"))
    assert manifest == {
        "format": "faasml-dataset",
        "format_version": 1,
        "name": "demo",
        "n_rows": 2500,
        "n_train_rows": 2000,
        "n_test_rows": 500,
        "n_features": 30,
        "nnz": X.nnz,
        "n_batches": 3,
        "batch_size": 1000,
        "train_batches": [0, 2],
        "test_batches": [2, 3],
        "labels": [0, 1, 2],
        "x_dtype": "float64",
        "y_dtype": "int64",
        "sparse": True,
        "compression": None,  # "auto" on a same-host store: inflating costs more than copying
    }
    reopened = StoredDataset.open(store, "demo")
    Xb, yb = reopened.read_batch(2)
    assert (Xb != X[2000:]).nnz == 0
    np.testing.assert_array_equal(yb, y[2000:])
    Xt, yt = reopened.to_arrays(reopened.train_ids)
    assert (Xt != X[:2000]).nnz == 0
    np.testing.assert_array_equal(yt, y[:2000])


class RemoteLikeStore(MemoryObjectStore):
    """A memory store that reports itself as remote, as a cloud store does."""

    same_host = False


@pytest.mark.parametrize(
    ("store_class", "compression", "expected"),
    [
        (MemoryObjectStore, "auto", None),
        (RemoteLikeStore, "auto", "zlib"),
        (MemoryObjectStore, "zlib", "zlib"),
        (RemoteLikeStore, None, None),
    ],
)
def test_upload_compresses_only_for_remote_stores_by_default(
    store_class: type[MemoryObjectStore], compression: str | None, expected: str | None
) -> None:
    store = store_class()
    X, y = csr(300, 40), np.zeros(300)
    ds = upload_dataset(store, X, y, name="c", batch_size=100, compression=compression)  # type: ignore[arg-type]
    assert ds.compression == expected
    Xb, _ = ds.read_batch(1)
    assert (Xb != X[100:200]).nnz == 0
    store.close()


def test_upload_refuses_an_unknown_compression(store: MemoryObjectStore) -> None:
    with pytest.raises(ConfigurationError, match="'zlib', None or 'auto'"):
        upload_dataset(store, np.eye(3), np.zeros(3), name="z", compression="lz4")  # type: ignore[arg-type]
    assert list(store.list("datasets/z/")) == []


def test_upload_last_batch_of_each_split_is_smaller(store: MemoryObjectStore) -> None:
    X = np.arange(46, dtype=np.float64).reshape(23, 2)
    y = np.arange(23.0)
    ds = upload_dataset(store, X, y, name="dense", batch_size=5, test=(X[:7], y[:7]), max_workers=1)
    assert ds.train_ids == range(0, 5) and ds.test_ids == range(5, 7)
    assert [ds.batch_rows(i) for i in range(7)] == [5, 5, 5, 5, 3, 5, 2]
    assert ds.read_batch(4)[0].shape == (3, 2)
    Xtest, ytest = ds.to_arrays(ds.test_ids)
    np.testing.assert_array_equal(Xtest, X[:7])
    np.testing.assert_array_equal(ytest, y[:7])
    assert ds.manifest["labels"] == list(range(23)) and not ds.sparse


def test_upload_explicit_test_converts_to_train_kind_and_checks_width(
    store: MemoryObjectStore,
) -> None:
    X = csr(10, 4)
    ds = upload_dataset(store, X, np.zeros(10), name="mixed", test=(np.ones((3, 4)), np.ones(3)))
    Xt, _ = ds.read_batch(ds.test_ids[0])
    assert sp.issparse(Xt)
    np.testing.assert_array_equal(Xt.toarray(), np.ones((3, 4)))
    ds = upload_dataset(
        store,
        np.ones((4, 2)),
        np.array([0, 1, 0, 1], dtype=np.int8),
        name="dtypes",
        test=(np.ones((2, 2), dtype=np.float32), np.array([0.5, 1.5])),
    )
    (_, y_train), (X_test, y_test) = ds.read_batch(0), ds.read_batch(1)
    assert X_test.dtype == np.float64 and y_train.dtype == y_test.dtype == np.float64
    with pytest.raises(DataFormatError, match="X_test has 5 features but X has 4"):
        upload_dataset(store, X, np.zeros(10), name="w", test=(np.ones((3, 5)), np.ones(3)))


def test_upload_overwrites_and_many_labels_are_not_listed(store: MemoryObjectStore) -> None:
    X = np.random.default_rng(0).normal(size=(1500, 2))
    ds = upload_dataset(store, X, X[:, 0], name="reg", batch_size=700, compression=None)
    assert ds.labels is None and ds.compression is None
    assert ds.train_ids == range(3) and not ds.test_ids  # 700 + 700 + 100 rows, no test split
    np.testing.assert_array_equal(ds.to_arrays()[0], X)
    ds = upload_dataset(store, X[:10], np.zeros(10), name="reg")
    assert StoredDataset.open(store, "reg").n_rows == 10


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": 0.5, "test": (np.eye(2), np.zeros(2))}, "not both"),
        ({"compression": "gzip"}, "compression"),
        ({"max_workers": 0}, "max_workers"),
        ({"test_fraction": 0.9}, "train split is empty"),
        ({"name": ""}, "dataset name"),
    ],
)
def test_upload_configuration_errors(
    store: MemoryObjectStore, kwargs: dict[str, object], fragment: str
) -> None:
    args: dict[str, object] = {"name": "cfg", **kwargs}
    with pytest.raises(ConfigurationError, match=fragment):
        upload_dataset(store, np.eye(1), np.zeros(1), **args)  # type: ignore[arg-type]


def test_upload_validates_data(store: MemoryObjectStore) -> None:
    with pytest.raises(DataFormatError, match="X has 3 rows but y has 2 labels"):
        upload_dataset(store, np.eye(3), np.zeros(2), name="bad")
    assert not list(store.list("datasets/bad/"))


class FailingPutStore(MemoryObjectStore):
    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        if key.endswith("batch-000003"):
            raise OSError("quota exceeded")
        super().put(key, data, if_absent=if_absent)


@pytest.mark.parametrize("workers", [1, 3])
def test_upload_failure_propagates_and_writes_no_manifest(workers: int) -> None:
    store = FailingPutStore()
    with pytest.raises(OSError, match="quota exceeded"):
        upload_dataset(
            store, csr(100, 5), np.zeros(100), name="f", batch_size=10, max_workers=workers
        )
    assert not store.exists("datasets/f/manifest.json")
    with pytest.raises(NotFoundError):
        StoredDataset.open(store, "f")
    store.close()


def test_open_missing_dataset_names_key_and_hint(store: MemoryObjectStore) -> None:
    with pytest.raises(NotFoundError) as info:
        StoredDataset.open(store, "nope")
    message = str(info.value)
    assert "'datasets/nope/manifest.json' does not exist" in message
    assert "upload_dataset(store, X, y, name='nope')" in message


def test_open_rejects_bad_manifests(store: MemoryObjectStore) -> None:
    store.put("datasets/a/manifest.json", b"{not json")
    with pytest.raises(DataFormatError, match="datasets/a/manifest.json: manifest is not valid"):
        StoredDataset.open(store, "a")
    store.put("datasets/b/manifest.json", b'{"format": "other"}')
    with pytest.raises(DataFormatError, match="not a faasml dataset manifest"):
        StoredDataset.open(store, "b")
    store.put("datasets/c/manifest.json", b'{"format": "faasml-dataset", "format_version": 2}')
    with pytest.raises(DataFormatError, match="version 2 is not supported"):
        StoredDataset.open(store, "c")
    store.put("datasets/d/manifest.json", b'{"format": "faasml-dataset", "format_version": 1}')
    with pytest.raises(DataFormatError, match="invalid dataset manifest"):
        StoredDataset.open(store, "d")


def test_read_batch_errors(store: MemoryObjectStore) -> None:
    ds = upload_dataset(store, csr(30, 5), np.zeros(30), name="r", batch_size=10)
    with pytest.raises(IndexError, match="batch id 3 out of range for 3 batches"):
        ds.read_batch(3)
    store.put(ds.key(1), encode_batch(csr(4, 5), np.zeros(4)))
    with pytest.raises(DataFormatError, match="batch-000001: batch has shape"):
        ds.read_batch(1)
    store.delete(ds.key(2))
    with pytest.raises(NotFoundError):
        ds.read_batch(2)


# --------------------------------------------------------------------------- prefetching


class SlowStore(MemoryObjectStore):
    """Records when each batch get happens; can block, fail or slow down reads."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        super().__init__()
        self.delay = delay
        self.fail_on = fail_on
        self.gets: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        if "batch-" in key:
            self.gate.wait(10)
            self.gets.append(key)
            time.sleep(self.delay)
            if self.fail_on and key.endswith(self.fail_on):
                raise OSError(f"disk on fire reading {key}")
        return super().get(key, start, end)


def upload_small(store: MemoryObjectStore, n_batches: int = 6) -> StoredDataset:
    X = np.arange(n_batches * 4 * 2, dtype=np.float64).reshape(n_batches * 4, 2)
    return upload_dataset(store, X, np.arange(n_batches * 4.0), name="p", batch_size=4)


def test_iter_batches_yields_in_order_and_reads_ahead() -> None:
    store = SlowStore()
    ds = upload_small(store)
    with ds.iter_batches([5, 0, 3], prefetch=2) as it:
        # before anything is consumed the thread has already read ahead, bounded by prefetch
        assert wait_for(lambda: len(store.gets) >= 2)
        time.sleep(0.2)
        assert len(store.gets) <= 3  # 2 queued + at most 1 read blocked on the full queue
        ys = [yb[0] for _, yb in it]
    assert ys == [20.0, 0.0, 12.0]
    assert store.gets == [ds.key(5), ds.key(0), ds.key(3)]
    store.close()


def test_prefetch_reads_the_next_batch_while_the_consumer_computes() -> None:
    store = SlowStore()
    ds = upload_small(store, n_batches=6)
    store.gets.clear()
    with ds.iter_batches(prefetch=1) as it:
        for i, _ in enumerate(it):
            # while batch i is being "computed", batch i+1 is fetched without another next()
            assert wait_for(lambda i=i: len(store.gets) >= min(i + 2, 6)), i
    assert store.gets == [ds.key(i) for i in range(6)]
    store.close()


def test_reader_error_is_raised_in_consumer_after_earlier_batches() -> None:
    store = SlowStore(fail_on="batch-000002")
    ds = upload_small(store)
    it = ds.iter_batches(range(5), prefetch=2)
    got = [next(it)[1][0], next(it)[1][0]]
    with pytest.raises(OSError, match="disk on fire reading datasets/p/batch-000002"):
        next(it)
    assert got == [0.0, 4.0]
    assert it.thread is not None and not it.thread.is_alive()
    with pytest.raises(StopIteration):
        next(it)
    store.close()


def test_close_stops_a_thread_blocked_on_a_full_queue() -> None:
    store = SlowStore()
    ds = upload_small(store)
    it = ds.iter_batches(prefetch=1)
    next(it)
    assert it.thread is not None
    assert wait_for(lambda: len(store.gets) >= 3)  # 1 consumed, 1 queued, 1 waiting to be put
    it.close()
    assert not it.thread.is_alive()
    with pytest.raises(StopIteration):
        next(it)
    it.close()  # idempotent
    store.close()


def test_close_waits_for_the_read_in_flight() -> None:
    store = SlowStore()
    ds = upload_small(store)
    store.gate.clear()  # the first read blocks
    it = ds.iter_batches(prefetch=2)
    assert it.thread is not None
    threading.Timer(0.2, store.gate.set).start()
    it.close()
    assert not it.thread.is_alive()
    store.close()


def test_abandoned_iterator_stops_its_thread() -> None:
    store = SlowStore()
    ds = upload_small(store)
    before = len(prefetch_threads())

    def consume_one() -> threading.Thread:
        it = ds.iter_batches(prefetch=1)
        next(it)
        assert it.thread is not None
        return it.thread  # `it` goes out of scope here, unclosed

    thread = consume_one()
    gc.collect()
    assert wait_for(lambda: not thread.is_alive())
    assert len(prefetch_threads()) == before
    store.close()


def test_for_loop_to_the_end_leaves_no_thread(store: MemoryObjectStore) -> None:
    ds = upload_small(store)
    before = len(prefetch_threads())
    it = ds.iter_batches(prefetch=3)
    assert sum(len(yb) for _, yb in it) == 24
    assert it.thread is not None and not it.thread.is_alive()
    assert len(prefetch_threads()) == before


def test_prefetch_zero_reads_synchronously(store: MemoryObjectStore) -> None:
    ds = upload_small(store)
    with ds.iter_batches([1, 2], prefetch=0) as it:
        assert it.thread is None
        assert [yb[0] for _, yb in it] == [4.0, 8.0]
    with pytest.raises(ConfigurationError, match="prefetch"):
        ds.iter_batches(prefetch=-1)
    with pytest.raises(IndexError):
        ds.iter_batches([0, 99])
    assert ds.to_arrays([])[0].shape == (0, 2)

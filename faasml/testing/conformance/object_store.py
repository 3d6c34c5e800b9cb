"""The :class:`~faasml.interfaces.ObjectStore` conformance suite.

Every backend, built-in or third-party, runs the same tests by subclassing
:class:`ObjectStoreTests` and providing an ``object_store`` fixture::

    import pytest
    from faasml.testing.conformance.object_store import ObjectStoreTests

    class TestMyStore(ObjectStoreTests):
        @pytest.fixture
        def object_store(self, tmp_path):
            store = MyObjectStore(root=str(tmp_path))
            yield store
            store.close()

Every test writes only under a fresh ``key_prefix`` and deletes it afterwards, so the suite can
run against persistent, shared servers (Redis, S3) without collisions. Override the
``supports_cross_process`` fixture to return ``False`` for a backend that cannot be rebuilt in
another process (the cross-process test is then reported as skipped, with the reason).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest

from faasml.errors import AlreadyExistsError, InvalidKeyError, NotFoundError
from faasml.interfaces import ObjectStore

__all__ = ["INVALID_KEYS", "ObjectStoreTests"]

#: keys every backend must refuse with :class:`~faasml.errors.InvalidKeyError`.
INVALID_KEYS: tuple[str, ...] = (
    "../x",
    "/abs",
    "a//b",
    "",
    "a/./b",
    "a/../../etc/passwd",
    "a\\b",
)

_CHILD_TIMEOUT = 120.0


def _child_round_trip(
    store_cls: type[ObjectStore],
    config_json: str,
    read_key: str,
    write_key: str,
    conn: Connection,
) -> None:
    """Run in a spawned process: rebuild the store, read the parent's object, write one back.

    Module-level so that ``spawn`` can pickle it by reference. Reports ``("ok", data)`` or
    ``("error", formatted traceback)`` through ``conn``.
    """
    try:
        store = store_cls(**json.loads(config_json))
        try:
            data = store.get(read_key)
            store.put(write_key, b"from child: " + data)
        finally:
            store.close()
        conn.send(("ok", data))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    """Start ``count`` threads running ``target(i)`` released together; re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a store operation hung for over 60 seconds"
    if errors:
        raise errors[0]


class ObjectStoreTests:
    """Behaviour every :class:`~faasml.interfaces.ObjectStore` must have.

    Subclass it in a ``Test*`` class and override the ``object_store`` fixture (yield the store,
    close it afterwards). Capability fixtures may be overridden too.
    """

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def object_store(self) -> Iterator[ObjectStore]:
        """The store under test; subclasses must override this fixture."""
        raise NotImplementedError("subclass ObjectStoreTests and provide an object_store fixture")

    @pytest.fixture
    def supports_cross_process(self) -> bool:
        """Whether a store rebuilt from ``to_config()`` in another process shares the objects."""
        return True

    @pytest.fixture
    def key_prefix(self, object_store: ObjectStore) -> Iterator[str]:
        """A unique prefix this test writes under; everything below it is deleted afterwards."""
        prefix = f"conformance-{uuid.uuid4().hex}/"
        yield prefix
        object_store.delete_prefix(prefix)

    # ------------------------------------------------------------------ basic round trips

    def test_round_trip(self, object_store: ObjectStore, key_prefix: str) -> None:
        key = key_prefix + "hello"
        object_store.put(key, b"hello world")
        assert object_store.get(key) == b"hello world"
        assert isinstance(object_store.get(key), bytes)

    def test_overwrite_replaces(self, object_store: ObjectStore, key_prefix: str) -> None:
        key = key_prefix + "k"
        object_store.put(key, b"first version, longer")
        object_store.put(key, b"second")
        assert object_store.get(key) == b"second"
        assert object_store.head(key).size == len(b"second")

    def test_empty_object(self, object_store: ObjectStore, key_prefix: str) -> None:
        key = key_prefix + "empty"
        object_store.put(key, b"")
        assert object_store.get(key) == b""
        assert object_store.head(key).size == 0
        assert [i.key for i in object_store.list(key_prefix)] == [key]

    def test_all_byte_values(self, object_store: ObjectStore, key_prefix: str) -> None:
        data = bytes(range(256)) * 3
        object_store.put(key_prefix + "bin", data)
        assert object_store.get(key_prefix + "bin") == data

    def test_bytearray_and_memoryview_input(
        self, object_store: ObjectStore, key_prefix: str
    ) -> None:
        source = bytearray(b"0123456789")
        object_store.put(key_prefix + "ba", source)
        object_store.put(key_prefix + "mv", memoryview(source)[2:6])
        source[:] = b"X" * 10  # the store must have taken its own copy
        assert object_store.get(key_prefix + "ba") == b"0123456789"
        assert object_store.get(key_prefix + "mv") == b"2345"

    # ------------------------------------------------------------------ ranges and metadata

    def test_ranged_get(self, object_store: ObjectStore, key_prefix: str) -> None:
        key = key_prefix + "range"
        data = bytes(range(100))
        object_store.put(key, data)
        assert object_store.get(key, start=90) == data[90:]
        assert object_store.get(key, end=10) == data[:10]
        assert object_store.get(key, 10, 20) == data[10:20]
        assert object_store.get(key, 95, 1000) == data[95:]
        assert object_store.get(key, 0, 100) == data
        assert object_store.get(key, 40, 40) == b""
        assert object_store.get(key, 200) == b""
        assert object_store.get(key, 200, 300) == b""
        assert object_store.get(key, 60, 50) == b""

    @pytest.mark.parametrize(("start", "end"), [(-1, None), (None, -1), (-5, -1)])
    def test_ranged_get_negative_bounds_raise(
        self, object_store: ObjectStore, key_prefix: str, start: int | None, end: int | None
    ) -> None:
        key = key_prefix + "range"
        object_store.put(key, b"0123456789")
        with pytest.raises(ValueError):
            object_store.get(key, start, end)

    def test_head(self, object_store: ObjectStore, key_prefix: str) -> None:
        key = key_prefix + "dir/obj.bin"
        object_store.put(key, b"x" * 1234)
        info = object_store.head(key)
        assert info.key == key
        assert info.size == 1234

    # ------------------------------------------------------------------ listing

    def test_list_prefix_sorted(self, object_store: ObjectStore, key_prefix: str) -> None:
        # Inserted out of order, with siblings that sort around "a/" ("-" < "/" < "0").
        keys = ["b", "a/2", "a", "a-b", "a/1", "a0", "a/1/deep/er"]
        for i, k in enumerate(keys):
            object_store.put(key_prefix + k, b"v" * i)
        listed = list(object_store.list(key_prefix))
        assert [i.key for i in listed] == sorted(key_prefix + k for k in keys)
        sizes = {i.key: i.size for i in listed}
        assert sizes == {key_prefix + k: i for i, k in enumerate(keys)}

    def test_list_nested_keys(self, object_store: ObjectStore, key_prefix: str) -> None:
        for k in ["x/y/z", "x/y/w", "x/v", "u"]:
            object_store.put(key_prefix + k, b"1")
        assert [i.key for i in object_store.list(key_prefix + "x/")] == [
            key_prefix + "x/v",
            key_prefix + "x/y/w",
            key_prefix + "x/y/z",
        ]
        assert [i.key for i in object_store.list(key_prefix + "x/y/")] == [
            key_prefix + "x/y/w",
            key_prefix + "x/y/z",
        ]

    def test_list_partial_segment_prefix(self, object_store: ObjectStore, key_prefix: str) -> None:
        for k in ["a/b", "a/bc", "a/b/c", "a/c", "ab"]:
            object_store.put(key_prefix + k, b"1")
        assert [i.key for i in object_store.list(key_prefix + "a/b")] == [
            key_prefix + "a/b",
            key_prefix + "a/b/c",
            key_prefix + "a/bc",
        ]
        assert [i.key for i in object_store.list(key_prefix + "a")] == [
            key_prefix + k for k in ["a/b", "a/b/c", "a/bc", "a/c", "ab"]
        ]

    def test_list_unknown_prefix_is_empty(self, object_store: ObjectStore, key_prefix: str) -> None:
        object_store.put(key_prefix + "present", b"1")
        assert list(object_store.list(key_prefix + "absent")) == []
        assert list(object_store.list(key_prefix + "absent/deeper/")) == []
        assert list(object_store.list(key_prefix + "present/")) == []

    def test_list_excludes_deleted(self, object_store: ObjectStore, key_prefix: str) -> None:
        for k in ["one", "two", "sub/three"]:
            object_store.put(key_prefix + k, b"1")
        object_store.delete(key_prefix + "two")
        object_store.delete(key_prefix + "sub/three")
        assert [i.key for i in object_store.list(key_prefix)] == [key_prefix + "one"]

    # ------------------------------------------------------------------ delete and missing keys

    def test_delete_then_get_raises(self, object_store: ObjectStore, key_prefix: str) -> None:
        key = key_prefix + "gone"
        object_store.put(key, b"1")
        object_store.delete(key)
        with pytest.raises(NotFoundError):
            object_store.get(key)
        assert not object_store.exists(key)

    @pytest.mark.parametrize("operation", ["get", "head", "delete"])
    def test_missing_key_raises_not_found(
        self, object_store: ObjectStore, key_prefix: str, operation: str
    ) -> None:
        key = key_prefix + "missing/object"
        with pytest.raises(NotFoundError) as excinfo:
            getattr(object_store, operation)(key)
        assert isinstance(excinfo.value, LookupError)
        assert key in str(excinfo.value), "the error message must name the key"
        assert excinfo.value.provider == type(object_store).name

    # ------------------------------------------------------------------ key validation

    @pytest.mark.parametrize("bad_key", INVALID_KEYS)
    def test_invalid_keys_rejected(
        self, object_store: ObjectStore, key_prefix: str, bad_key: str
    ) -> None:
        candidates = [bad_key, key_prefix + bad_key]
        for key in candidates:
            with pytest.raises(InvalidKeyError):
                object_store.put(key, b"must not be written")
            with pytest.raises(InvalidKeyError):
                object_store.put(key, b"must not be written", if_absent=True)
            with pytest.raises(InvalidKeyError):
                object_store.get(key)
            with pytest.raises(InvalidKeyError):
                object_store.head(key)
            with pytest.raises(InvalidKeyError):
                object_store.delete(key)
        assert list(object_store.list(key_prefix)) == []

    def test_unicode_and_spaces_in_keys(self, object_store: ObjectStore, key_prefix: str) -> None:
        keys = [key_prefix + "dir with spaces/naïve файл 数据 🎉.bin", key_prefix + "é/ü"]
        for i, key in enumerate(keys):
            object_store.put(key, f"payload {i}".encode())
        for i, key in enumerate(keys):
            assert object_store.get(key) == f"payload {i}".encode()
            assert object_store.head(key).key == key
        assert [i.key for i in object_store.list(key_prefix)] == sorted(keys)

    # ------------------------------------------------------------------ conditional put

    def test_if_absent(self, object_store: ObjectStore, key_prefix: str) -> None:
        key = key_prefix + "once"
        object_store.put(key, b"first", if_absent=True)
        with pytest.raises(AlreadyExistsError):
            object_store.put(key, b"second", if_absent=True)
        assert object_store.get(key) == b"first"

    def test_if_absent_race_has_one_winner(
        self, object_store: ObjectStore, key_prefix: str
    ) -> None:
        key = key_prefix + "race"
        winners: list[int] = []
        losers: list[int] = []

        def write(i: int) -> None:
            try:
                object_store.put(key, f"writer {i}".encode(), if_absent=True)
                winners.append(i)
            except AlreadyExistsError:
                losers.append(i)

        _run_threads(8, write)
        if not object_store.supports_conditional_put:
            # Check-then-put backends (documented as such) keep the weaker guarantees: every
            # writer wins or is refused, someone wins, the object is a winner's, later ones lose.
            assert winners and len(winners) + len(losers) == 8
            assert object_store.get(key) in {f"writer {i}".encode() for i in winners}
            with pytest.raises(AlreadyExistsError):
                object_store.put(key, b"late", if_absent=True)
            return
        assert len(winners) == 1, f"winners: {winners}"
        assert len(losers) == 7
        assert object_store.get(key) == f"writer {winners[0]}".encode()

    def test_concurrent_overwrites_are_atomic(
        self, object_store: ObjectStore, key_prefix: str
    ) -> None:
        key = key_prefix + "contended"
        size = 256 * 1024
        payloads = [bytes([i]) * size for i in range(8)]
        initial = b"\xff" * size
        object_store.put(key, initial)
        valid = set(payloads) | {initial}
        done = threading.Event()
        torn: list[int] = []

        def read_until_done() -> None:
            while not done.is_set():
                data = object_store.get(key)
                if data not in valid:
                    torn.append(len(data))

        reader = threading.Thread(target=read_until_done)
        reader.start()
        try:
            _run_threads(8, lambda i: object_store.put(key, payloads[i]))
        finally:
            done.set()
            reader.join(timeout=60)
        assert object_store.get(key) in payloads
        assert not torn, f"a reader saw a partially written object (sizes {torn[:5]})"

    # ------------------------------------------------------------------ derived operations

    def test_exists(self, object_store: ObjectStore, key_prefix: str) -> None:
        key = key_prefix + "e"
        assert not object_store.exists(key)
        object_store.put(key, b"1")
        assert object_store.exists(key)
        assert not object_store.exists(key_prefix + "e/child")

    def test_delete_prefix_counts(self, object_store: ObjectStore, key_prefix: str) -> None:
        for k in ["sub/1", "sub/2", "sub/deep/3", "subway", "other"]:
            object_store.put(key_prefix + k, b"1")
        assert object_store.delete_prefix(key_prefix + "sub/") == 3
        assert [i.key for i in object_store.list(key_prefix)] == [
            key_prefix + "other",
            key_prefix + "subway",
        ]
        assert object_store.delete_prefix(key_prefix + "sub/") == 0

    def test_get_many(self, object_store: ObjectStore, key_prefix: str) -> None:
        object_store.put(key_prefix + "1", b"one")
        object_store.put(key_prefix + "2", b"two")
        keys = [key_prefix + "2", key_prefix + "1"]
        assert object_store.get_many(keys) == [b"two", b"one"]

    def test_large_object(self, object_store: ObjectStore, key_prefix: str) -> None:
        size = 5 * 1024 * 1024
        data = bytes(range(251)) * (size // 251 + 1)
        data = data[:size]
        key = key_prefix + "large"
        object_store.put(key, data)
        assert object_store.head(key).size == size
        assert object_store.get(key) == data
        middle = size // 2
        assert (
            object_store.get(key, middle - 1000, middle + 4000)
            == data[middle - 1000 : middle + 4000]
        )

    # ------------------------------------------------------------------ rebuilding

    def test_to_config_is_json_serializable(self, object_store: ObjectStore) -> None:
        config = object_store.to_config()
        assert isinstance(config, dict)
        assert json.loads(json.dumps(config)) == config

    def test_rebuilt_in_child_process_shares_objects(
        self, object_store: ObjectStore, key_prefix: str, supports_cross_process: bool
    ) -> None:
        if not supports_cross_process:
            pytest.skip(f"{type(object_store).__name__} declares it cannot cross processes")
        parent_key = key_prefix + "from-parent"
        child_key = key_prefix + "from-child"
        object_store.put(parent_key, b"parent data \x00\xff")
        config_json = json.dumps(object_store.to_config())
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        child = ctx.Process(
            target=_child_round_trip,
            args=(type(object_store), config_json, parent_key, child_key, sender),
        )
        child.start()
        sender.close()
        try:
            if not receiver.poll(_CHILD_TIMEOUT):
                raise AssertionError(f"the child process did not answer in {_CHILD_TIMEOUT}s")
            status, value = receiver.recv()
        finally:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
                child.join()
            receiver.close()
        assert status == "ok", f"the child process failed:\n{value}"
        assert value == b"parent data \x00\xff"
        assert child.exitcode == 0
        assert object_store.get(child_key) == b"from child: parent data \x00\xff"

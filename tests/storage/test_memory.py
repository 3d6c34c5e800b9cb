"""MemoryObjectStore: the conformance suite (owner and client modes) and its socket server."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import stat
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from faasml.errors import AlreadyExistsError, NotFoundError, ServiceUnavailableError
from faasml.storage import memory as memory_module
from faasml.storage.memory import MemoryObjectStore
from faasml.testing.conformance.object_store import ObjectStoreTests


class TestMemoryObjectStore(ObjectStoreTests):
    @pytest.fixture
    def object_store(self) -> Iterator[MemoryObjectStore]:
        store = MemoryObjectStore()
        yield store
        store.close()


class TestMemoryObjectStoreClient(ObjectStoreTests):
    """The same suite through the socket: every operation is forwarded to the owner."""

    @pytest.fixture
    def object_store(self) -> Iterator[MemoryObjectStore]:
        owner = MemoryObjectStore()
        client = MemoryObjectStore(**owner.to_config())
        yield client
        client.close()
        owner.close()


@pytest.fixture
def owner() -> Iterator[MemoryObjectStore]:
    store = MemoryObjectStore()
    yield store
    store.close()


def _errors_in_child(config: dict[str, str], conn: Connection) -> None:
    """Spawned child: report the type and attributes of the errors the client raises."""
    store = MemoryObjectStore(**config)
    report: dict[str, object] = {}
    try:
        store.get("no/such/key")
    except NotFoundError as exc:
        report["not_found"] = (type(exc).__name__, isinstance(exc, LookupError), exc.provider)
        report["not_found_message"] = str(exc)
    try:
        store.put("taken", b"again", if_absent=True)
    except AlreadyExistsError as exc:
        report["already_exists"] = type(exc).__name__
    store.close()
    conn.send(report)
    conn.close()


def test_client_in_another_process_gets_typed_errors(owner: MemoryObjectStore) -> None:
    owner.put("taken", b"first")
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_errors_in_child, args=(owner.to_config(), sender))
    child.start()
    sender.close()
    assert receiver.poll(120), "the child process did not report"
    report = receiver.recv()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert report["not_found"] == ("NotFoundError", True, "memory")
    assert "no/such/key" in report["not_found_message"]
    assert report["already_exists"] == "AlreadyExistsError"
    assert owner.get("taken") == b"first"


def test_config_holds_only_the_socket_path(owner: MemoryObjectStore) -> None:
    config = owner.to_config()
    assert set(config) == {"address"}
    directory = os.path.dirname(config["address"])
    key_files = [n for n in os.listdir(directory) if n != os.path.basename(config["address"])]
    assert len(key_files) == 1
    key_path = os.path.join(directory, key_files[0])
    with open(key_path, "rb") as f:
        authkey = f.read()
    assert len(authkey) == 32
    dumped = json.dumps(config)
    assert authkey.hex() not in dumped
    assert authkey not in dumped.encode("utf-8", "surrogateescape")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(config["address"]).st_mode)
    # The server starts once: later calls return the same address.
    assert owner.to_config() == config


def test_owner_close_makes_clients_fail_clearly(owner: MemoryObjectStore) -> None:
    config = owner.to_config()
    client = MemoryObjectStore(**config)
    client.put("k", b"v")
    assert owner.get("k") == b"v"
    owner.close()
    assert not os.path.exists(os.path.dirname(config["address"]))
    for operation in (lambda: client.get("k"), lambda: client.delete("k")):
        with pytest.raises(ServiceUnavailableError) as excinfo:
            operation()
        assert config["address"] in str(excinfo.value)
        assert excinfo.value.retriable
    late = MemoryObjectStore(**config)
    with pytest.raises(ServiceUnavailableError):
        late.head("k")
    client.close()
    late.close()


def test_close_is_idempotent_and_final(owner: MemoryObjectStore) -> None:
    client = MemoryObjectStore(**owner.to_config())
    client.put("k", b"v")
    client.close()
    client.close()
    with pytest.raises(ServiceUnavailableError):
        client.get("k")
    assert owner.get("k") == b"v"
    owner.close()
    owner.close()
    with pytest.raises(ServiceUnavailableError):
        owner.get("k")
    with pytest.raises(ServiceUnavailableError):
        owner.to_config()


def test_owner_without_config_starts_no_server() -> None:
    store = MemoryObjectStore()
    store.put("k", b"v")
    assert store._server is None  # no socket, no thread until a worker needs one
    store.close()


def test_client_reconnects_after_a_broken_connection(owner: MemoryObjectStore) -> None:
    client = MemoryObjectStore(**owner.to_config())
    client.put("k", b"v")
    assert client._client is not None
    client._client._local.conn.close()  # as if the socket had been torn down under us
    assert client.get("k") == b"v"
    client.delete("k")
    assert not owner.exists("k")
    client.close()


def test_clients_on_many_threads_use_separate_connections(owner: MemoryObjectStore) -> None:
    client = MemoryObjectStore(**owner.to_config())
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(50):
                client.put(f"t{i}/{j}", bytes([i]) * (j + 1))
                assert client.get(f"t{i}/{j}") == bytes([i]) * (j + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert client._client is not None
    assert len(client._client._conns) == 6
    assert len(list(owner.list())) == 300
    client.close()


def test_large_object_through_the_socket(owner: MemoryObjectStore) -> None:
    client = MemoryObjectStore(**owner.to_config())
    data = os.urandom(32 * 1024 * 1024 + 3)
    client.put("big", memoryview(data))
    assert owner.head("big").size == len(data)
    assert client.get("big") == data
    assert client.get("big", 10, 20) == data[10:20]
    client.close()


def test_unclosed_owner_stops_its_server_when_collected() -> None:
    store = MemoryObjectStore()
    address = store.to_config()["address"]
    assert os.path.exists(address)
    del store
    gc.collect()
    assert not os.path.exists(os.path.dirname(address))


def test_interrupted_read_does_not_desynchronise_the_connection(
    owner: MemoryObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MemoryObjectStore(**owner.to_config())
    client.put("first", b"first payload")
    client.put("second", b"second payload")

    def interrupted(conn: Connection) -> bytearray:
        raise KeyboardInterrupt

    # Only the client reads a raw payload during get(): the server's side of get only sends.
    monkeypatch.setattr(memory_module, "_recv_payload", interrupted)
    with pytest.raises(KeyboardInterrupt):
        client.get("first")
    monkeypatch.undo()
    assert client.get("second") == b"second payload"
    client.close()

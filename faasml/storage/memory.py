"""An in-memory :class:`~faasml.interfaces.ObjectStore` shared with local worker processes.

The store that creates the data (the *owner*) keeps it in a thread-safe dict. Worker processes of
the ``local`` provider are started with ``spawn`` and cannot see that dict, so the first call to
:meth:`MemoryObjectStore.to_config` starts a small server in a daemon thread: it listens on a Unix
socket inside a private (``0700``) temporary directory, authenticated with a random key kept in a
``0600`` file next to the socket. ``MemoryObjectStore(address=...)`` is the *client* mode that
forwards every operation to that server.

Wire protocol, over :mod:`multiprocessing.connection` framing: a request is a pickled
``(op, args)`` tuple, followed for ``put`` by the raw object bytes (``send_bytes``). A reply is a
pickled ``("ok", value)``, ``("error", exception)``, or ``("raw", None)`` followed by raw bytes
(``get``). Raw payloads are received straight into a preallocated buffer so that large objects
are not copied more than necessary.
"""

from __future__ import annotations

import builtins
import multiprocessing
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, ClassVar

from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    FaaSMLError,
    NotFoundError,
    ProviderError,
    ServiceUnavailableError,
)
from faasml.interfaces import ObjectInfo, ObjectStore, validate_key
from faasml.storage._common import byte_view

__all__ = ["MemoryObjectStore"]

_PROVIDER = "memory"
_SOCKET_NAME = "store.sock"
_AUTHKEY_NAME = "authkey"
# Unix socket paths are limited to 108 bytes on Linux (104 on macOS); keep a margin.
_MAX_SOCKET_PATH = 100
_IDEMPOTENT_OPS = frozenset({"get", "head", "list", "put"})

_Value = bytes | bytearray


def _read_exact(fd: int, size: int) -> bytearray:
    """Read exactly ``size`` bytes from ``fd`` into one preallocated buffer.

    :raises EOFError: the peer closed the connection before ``size`` bytes arrived.
    """
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("connection closed in the middle of a message")
        got += n
    return buf


def _recv_payload(conn: Connection) -> bytearray:
    """Receive one ``send_bytes`` message, reading its body directly into a bytearray.

    ``Connection.recv_bytes`` accumulates chunks in a BytesIO and copies the result; for the
    32 MiB+ objects this store is used for that halves the throughput.
    """
    fd = conn.fileno()
    (size,) = struct.unpack("!i", _read_exact(fd, 4))
    if size == -1:  # multiprocessing's marker for messages over 2 GiB
        (size,) = struct.unpack("!Q", _read_exact(fd, 8))
    return _read_exact(fd, size)


class _Table:
    """The owner's objects: a dict guarded by one lock, raising the contract's errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[_Value, float]] = {}

    def put(self, key: str, data: _Value, if_absent: bool) -> None:
        entry = (data, time.time())
        with self._lock:
            if if_absent and key in self._objects:
                raise AlreadyExistsError(f"object {key!r} already exists", provider=_PROVIDER)
            self._objects[key] = entry

    def get(self, key: str, start: int | None, end: int | None) -> _Value | memoryview:
        with self._lock:
            entry = self._objects.get(key)
        if entry is None:
            raise NotFoundError(f"object {key!r} does not exist", provider=_PROVIDER)
        data = entry[0]
        if start is None and end is None:
            return data
        # Values are never mutated once stored, so a view outside the lock is safe.
        return memoryview(data)[start:end]

    def head(self, key: str) -> ObjectInfo:
        with self._lock:
            entry = self._objects.get(key)
        if entry is None:
            raise NotFoundError(f"object {key!r} does not exist", provider=_PROVIDER)
        return ObjectInfo(key=key, size=len(entry[0]), last_modified=entry[1])

    def delete(self, key: str) -> None:
        with self._lock:
            if self._objects.pop(key, None) is None:
                raise NotFoundError(f"object {key!r} does not exist", provider=_PROVIDER)

    def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        with self._lock:
            found = [
                ObjectInfo(key=key, size=len(data), last_modified=mtime)
                for key, (data, mtime) in self._objects.items()
                if key.startswith(prefix)
            ]
        found.sort(key=lambda info: info.key)
        return found

    def clear(self) -> None:
        with self._lock:
            self._objects.clear()


class _Server:
    """Serves a :class:`_Table` to other processes over an authenticated Unix socket."""

    def __init__(self, table: _Table) -> None:
        self._table = table
        self._dir = tempfile.mkdtemp(prefix="faasml-mem-")  # mkdtemp creates it 0700
        if len(os.path.join(self._dir, _SOCKET_NAME)) > _MAX_SOCKET_PATH:
            # A long $TMPDIR (macOS) would not fit in sockaddr_un; /tmp always does.
            os.rmdir(self._dir)
            self._dir = tempfile.mkdtemp(prefix="faasml-mem-", dir="/tmp")
        self.address = os.path.join(self._dir, _SOCKET_NAME)
        self._pid = os.getpid()
        authkey = os.urandom(32)
        try:
            fd = os.open(
                os.path.join(self._dir, _AUTHKEY_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
            )
            with os.fdopen(fd, "wb") as f:
                f.write(authkey)
            self._listener = Listener(self.address, family="AF_UNIX", authkey=authkey)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._lock = threading.Lock()
        self._conns: set[Connection] = set()
        self._handlers: set[threading.Thread] = set()
        self._stopping = False
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="faasml-memory-store-accept", daemon=True
        )
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError):
                if self._stopping:
                    return
                continue  # one client failed to connect or authenticate: keep serving others
            with self._lock:
                if self._stopping:
                    conn.close()
                    return
                self._conns.add(conn)
                handler = threading.Thread(
                    target=self._serve, args=(conn,), name="faasml-memory-store-conn", daemon=True
                )
                self._handlers.add(handler)
            handler.start()

    def _serve(self, conn: Connection) -> None:
        try:
            while True:
                try:
                    op, args = conn.recv()
                    payload = _recv_payload(conn) if op == "put" else None
                except (OSError, EOFError):
                    return  # the client went away (or stop() shut the socket down)
                except Exception:
                    return  # a malformed request: the stream cannot be trusted any more
                try:
                    self._reply(conn, op, args, payload)
                except (OSError, EOFError):
                    return
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._handlers.discard(threading.current_thread())
                conn.close()

    def _reply(
        self, conn: Connection, op: str, args: tuple[Any, ...], payload: bytearray | None
    ) -> None:
        raw: _Value | memoryview | None = None
        result: Any = None
        try:
            if op == "put":
                key, if_absent = args
                assert payload is not None
                # The payload buffer was allocated for this request alone: store it without a copy.
                self._table.put(validate_key(key), payload, bool(if_absent))
            elif op == "get":
                key, start, end = args
                ObjectStore._check_range(start, end)
                raw = self._table.get(validate_key(key), start, end)
            elif op == "head":
                result = self._table.head(validate_key(args[0]))
            elif op == "delete":
                self._table.delete(validate_key(args[0]))
            elif op == "list":
                result = self._table.list(str(args[0]))
            else:
                raise ProviderError(f"unknown memory store operation {op!r}", provider=_PROVIDER)
        except FaaSMLError as exc:
            conn.send(("error", exc))
            return
        except Exception as exc:  # a server bug must reach the caller, not kill the connection
            failure = ProviderError(
                f"memory store server failed on {op}: {exc!r}", provider=_PROVIDER
            )
            conn.send(("error", failure))
            return
        if raw is not None:
            conn.send(("raw", None))
            conn.send_bytes(raw)
        else:
            conn.send(("ok", result))

    def stop(self) -> None:
        """Stop accepting, disconnect every client and remove the socket directory."""
        if os.getpid() != self._pid:
            return  # a forked copy must not unlink the socket its parent is still serving
        with self._lock:
            self._stopping = True
        # Closing a listening socket does not wake a thread blocked in accept(); a throwaway
        # connection does (its failed handshake makes accept() raise, and the loop sees the flag).
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:
                wake.settimeout(2.0)
                wake.connect(self.address)
        except OSError:
            pass
        self._accept_thread.join(timeout=5.0)
        self._listener.close()  # also unlinks the socket file
        with self._lock:
            conns = builtins.list(self._conns)
            handlers = builtins.list(self._handlers)
            # shutdown() wakes handler threads blocked in recv() and makes clients see EOF; it is
            # done under the lock so a handler cannot close (and the fd be reused) meanwhile.
            for conn in conns:
                try:
                    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for handler in handlers:
            handler.join(timeout=5.0)
        shutil.rmtree(self._dir, ignore_errors=True)


class _Client:
    """Forwards operations to a :class:`_Server`; one connection per thread."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._authkey: bytes | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: set[Connection] = set()
        self._pid = os.getpid()

    def _unavailable(self, detail: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"memory object store server at {self.address} is unreachable ({detail}); "
            "the owning MemoryObjectStore was closed or its process exited",
            provider=_PROVIDER,
        )

    def _read_authkey(self) -> bytes:
        if self._authkey is None:
            path = os.path.join(os.path.dirname(self.address), _AUTHKEY_NAME)
            try:
                with open(path, "rb") as f:
                    self._authkey = f.read()
            except OSError as exc:
                raise self._unavailable(f"cannot read {path}: {exc.strerror}") from exc
        return self._authkey

    def _connection(self) -> Connection:
        if os.getpid() != self._pid:
            # A forked child must not share its parent's sockets: start afresh.
            self._pid = os.getpid()
            self._local = threading.local()
            self._conns = set()
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            authkey = self._read_authkey()
            try:
                conn = Client(self.address, family="AF_UNIX", authkey=authkey)
            except multiprocessing.AuthenticationError as exc:
                raise AuthenticationError(
                    f"memory object store at {self.address} rejected our key: {exc}",
                    provider=_PROVIDER,
                ) from exc
            except (OSError, EOFError) as exc:
                raise self._unavailable(f"{type(exc).__name__}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._conns.add(conn)
        return conn

    def _drop(self, conn: Connection) -> None:
        self._local.conn = None
        with self._lock:
            self._conns.discard(conn)
        try:
            conn.close()
        except OSError:
            pass

    def call(self, op: str, args: tuple[Any, ...], payload: memoryview | None = None) -> Any:
        """Send one request and return its result, re-raising the server's error.

        A request that could not be sent was not applied, so it is retried once on a new
        connection. A request whose reply was lost is retried only when repeating it is harmless.
        """
        idempotent = op in _IDEMPOTENT_OPS and not (op == "put" and args[1])
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.send((op, args))
                if payload is not None:
                    conn.send_bytes(payload)
            except (OSError, EOFError) as exc:
                self._drop(conn)
                if attempt == 0:
                    continue
                raise self._unavailable(f"{type(exc).__name__}: {exc}") from exc
            except BaseException:
                # Interrupted mid-message (KeyboardInterrupt...): the stream is out of step.
                self._drop(conn)
                raise
            try:
                status, value = conn.recv()
                if status == "raw":
                    value = bytes(_recv_payload(conn))
            except (OSError, EOFError) as exc:
                self._drop(conn)
                if attempt == 0 and idempotent:
                    continue
                detail = f"{type(exc).__name__}: {exc}"
                if not idempotent:
                    detail += f"; whether the {op} was applied is unknown"
                raise self._unavailable(detail) from exc
            except BaseException:
                # An unread reply would otherwise be taken as the answer to the next request.
                self._drop(conn)
                raise
            if status == "error":
                assert isinstance(value, BaseException)
                raise value
            return value
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.close()
            except OSError:
                pass
        self._local = threading.local()


class MemoryObjectStore(ObjectStore):
    """In-memory object store; worker processes reach it through :meth:`to_config`.

    Without ``address`` the store owns its data. With ``address`` (what :meth:`to_config`
    returns) it is a client of the owner's server and forwards every operation to it, so an
    object put by any process is visible to all of them.

    :param address: path of the owner's Unix socket; ``None`` creates an owning store.
    """

    name: ClassVar[str] = "memory"
    same_host = True

    def __init__(self, address: str | None = None) -> None:
        self._closed = False
        self._lock = threading.Lock()
        self._table: _Table | None = None
        self._server: _Server | None = None
        self._stop_server: weakref.finalize[[], MemoryObjectStore] | None = None
        self._client: _Client | None = None
        if address is None:
            self._table = _Table()
        else:
            self._client = _Client(os.fspath(address))

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceUnavailableError("this MemoryObjectStore was closed", provider=_PROVIDER)

    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically.

        :param key: the object key.
        :param data: the bytes to store (bytes, bytearray or memoryview); they are copied.
        :param if_absent: write only if no object has that key.
        :raises InvalidKeyError: ``key`` is not a valid key.
        :raises AlreadyExistsError: ``if_absent`` is true and the key exists.
        :raises ServiceUnavailableError: the store (or its owner, for a client) is closed.
        """
        key = validate_key(key)
        view = byte_view(data)
        self._check_open()
        if self._client is not None:
            self._client.call("put", (key, if_absent), view)
            return
        assert self._table is not None
        # Copy: the caller may mutate a bytearray after put() returns.
        self._table.put(key, view.tobytes(), if_absent)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Return the object's bytes, or ``data[start:end]``.

        :param key: the object key.
        :param start: first byte (inclusive), ``None`` for the beginning.
        :param end: end byte (exclusive, clamped to the size), ``None`` for the end.
        :raises InvalidKeyError: ``key`` is not a valid key.
        :raises ValueError: a bound is negative.
        :raises NotFoundError: the key does not exist.
        :raises ServiceUnavailableError: the store (or its owner, for a client) is closed.
        """
        key = validate_key(key)
        self._check_range(start, end)
        self._check_open()
        if self._client is not None:
            result: bytes = self._client.call("get", (key, start, end))
            return result
        assert self._table is not None
        data = self._table.get(key, start, end)
        return data if isinstance(data, bytes) else bytes(data)

    def head(self, key: str) -> ObjectInfo:
        """Return the object's size and modification time.

        :param key: the object key.
        :raises InvalidKeyError: ``key`` is not a valid key.
        :raises NotFoundError: the key does not exist.
        :raises ServiceUnavailableError: the store (or its owner, for a client) is closed.
        """
        key = validate_key(key)
        self._check_open()
        if self._client is not None:
            info: ObjectInfo = self._client.call("head", (key,))
            return info
        assert self._table is not None
        return self._table.head(key)

    def delete(self, key: str) -> None:
        """Delete the object.

        :param key: the object key.
        :raises InvalidKeyError: ``key`` is not a valid key.
        :raises NotFoundError: the key does not exist.
        :raises ServiceUnavailableError: the store (or its owner, for a client) is closed.
        """
        key = validate_key(key)
        self._check_open()
        if self._client is not None:
            self._client.call("delete", (key,))
            return
        assert self._table is not None
        self._table.delete(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, sorted by key.

        The listing is a snapshot taken when iteration starts.

        :param prefix: a plain string prefix (``"a/b"`` matches ``"a/bc"``).
        :raises ServiceUnavailableError: the store (or its owner, for a client) is closed.
        """
        self._check_open()
        if self._client is not None:
            found: builtins.list[ObjectInfo] = self._client.call("list", (str(prefix),))
        else:
            assert self._table is not None
            found = self._table.list(str(prefix))
        yield from found

    def to_config(self) -> dict[str, Any]:
        """Return ``{"address": <socket path>}``, starting the owner's server on first use.

        The dict holds no secret: the authentication key stays in a ``0600`` file that only
        processes of the same user can read.

        :raises ServiceUnavailableError: the store is closed.
        """
        if self._client is not None:
            return {"address": self._client.address}
        with self._lock:
            self._check_open()
            if self._server is None:
                assert self._table is not None
                self._server = _Server(self._table)
                # Like TemporaryDirectory: an owner that is garbage-collected or still open at
                # interpreter exit does not leave its socket directory and threads behind.
                self._stop_server = weakref.finalize(self, self._server.stop)
            return {"address": self._server.address}

    def close(self) -> None:
        """Release the store. Idempotent.

        On the owner this stops the server (clients then get :class:`ServiceUnavailableError`),
        removes its socket directory and drops the data; on a client it closes its connections.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            stop_server, self._stop_server = self._stop_server, None
            self._server = None
        if stop_server is not None:
            stop_server()
        if self._table is not None:
            self._table.clear()
        if self._client is not None:
            self._client.close()

    def __repr__(self) -> str:
        if self._client is not None:
            return f"MemoryObjectStore(address={self._client.address!r})"
        return "MemoryObjectStore()"

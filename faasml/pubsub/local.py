"""The ``local`` PubSub backend: cross-process queues in one SQLite file, no service needed.

Everything lives in one directory (``path``)::

    queue.sqlite3        groups(topic, grp, ...) and messages(id, topic, grp, data, ...), WAL mode
    wake/<topic>.<rand>  one Unix datagram socket per open subscription

A publish inserts one ``messages`` row per group that exists on the topic, in one transaction,
so fan-out and "only groups existing at publish time" both fall out of a single
``INSERT ... SELECT``. A consumer claims rows by pushing their ``visible_at`` one visibility
timeout into the future under a fresh random claim token; ``ack`` deletes the row only if the
token still matches, so an ack that arrives after the lease was lost (and the message was claimed
again) is a harmless no-op.

Waiting does not poll the database in a tight loop: after a publish commits, the publisher sends
one byte to each wake socket of the topic, and a waiting consumer sleeps in ``poll()`` on its own
socket. It still wakes up every :data:`_MAX_WAIT` seconds, so expired leases and the rare missed
wake-up (the publisher caches the socket listing briefly) cost at most that much latency.

Every process that shares ``path`` must run on the same host (SQLite's WAL needs shared memory,
and stale private groups are detected through process ids). Wall-clock time (``time.time()``) is
used for leases because several processes compare them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import secrets
import select
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache, partial
from typing import Any, ClassVar

import psutil

from faasml.errors import ConfigurationError, PayloadTooLargeError
from faasml.interfaces import Message, PubSub, Subscription, validate_topic
from faasml.pubsub._common import message_bytes, own_receipts

__all__ = ["LocalPubSub", "LocalSubscription"]

_log = logging.getLogger(__name__)

_DB_NAME = "queue.sqlite3"
_WAKE_DIR = "wake"
#: longest sleep of a waiting consumer between two looks at the database, in seconds.
_MAX_WAIT = 0.05
#: how long a writer waits for SQLite's write lock before giving up, in seconds.
_BUSY_TIMEOUT = 30.0
# SQLite's own busy handler sleeps 1 ms, then 2, 5 ... ms on the first conflict, while our write
# transactions hold the lock for tens of microseconds: with several processes that sleep
# dominated every publish and claim. We retry ourselves, starting far shorter.
_BUSY_FIRST_SLEEP = 20e-6
_BUSY_MAX_SLEEP = 2e-3


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


class _RetryingConnection:
    """A sqlite3 connection whose statements retry on SQLITE_BUSY with short, growing sleeps.

    A statement that fails with SQLITE_BUSY did nothing, so running it again is safe; this also
    holds for ``COMMIT``, which leaves the transaction open when it is busy.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _retry(self, call: Any, *args: Any) -> Any:
        delay = _BUSY_FIRST_SLEEP
        deadline: float | None = None
        while True:
            try:
                return call(*args)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + _BUSY_TIMEOUT
                elif now >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _BUSY_MAX_SLEEP)

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        cursor: sqlite3.Cursor = self._retry(self._conn.execute, sql, params)
        return cursor

    def executemany(self, sql: str, seq: Any) -> sqlite3.Cursor:
        cursor: sqlite3.Cursor = self._retry(self._conn.executemany, sql, seq)
        return cursor

    def executescript(self, script: str) -> sqlite3.Cursor:
        cursor: sqlite3.Cursor = self._retry(self._conn.executescript, script)
        return cursor

    def close(self) -> None:
        self._conn.close()


#: how often (at most) publish and subscribe look for private groups of dead processes.
_GC_INTERVAL = 10.0
#: how long a publisher trusts its cached listing of the wake directory, in seconds.
_LISTING_TTL = 0.25
#: socket paths longer than this go through /proc/self/fd (sun_path is 104-108 bytes).
_SUN_PATH_MAX = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    ephemeral INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    started REAL,
    wake TEXT,
    PRIMARY KEY (topic, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    data BLOB NOT NULL,
    visible_at REAL NOT NULL,
    claim INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_queue ON messages (topic, grp, id, visible_at);
"""

# Claims walk the group's rows in id order (FIFO, and a redelivered message goes first instead of
# starving behind a backlog) and skip the in-flight ones; the index carries visible_at so that
# skipping them never touches the table.
_SQL_PUBLISH = (
    "INSERT INTO messages (topic, grp, data, visible_at, claim, deliveries) "
    "SELECT topic, grp, ?, 0, 0, 0 FROM groups WHERE topic = ?"
)
_SQL_ANY_VISIBLE = (
    "SELECT 1 FROM messages WHERE topic = ? AND grp = ? AND visible_at <= ? ORDER BY id LIMIT 1"
)
_SQL_NEXT_VISIBLE = "SELECT MIN(visible_at) FROM messages WHERE topic = ? AND grp = ?"
_SQL_SELECT_VISIBLE = (
    "SELECT id, data, deliveries FROM messages "
    "WHERE topic = ? AND grp = ? AND visible_at <= ? ORDER BY id LIMIT ?"
)

# Connections opened before a fork: the child must neither use nor close them (closing a SQLite
# file descriptor would drop the POSIX locks the child's own connections hold on that file).
_INHERITED: list[object] = []
# Live instances, so that a forked child can reset their per-process state.
_INSTANCES: weakref.WeakSet[LocalPubSub] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for instance in list(_INSTANCES):
        instance._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@lru_cache(maxsize=8)
def _process_start_time(pid: int) -> float:
    """Start time of process ``pid``; with the pid it identifies a process despite pid reuse."""
    return float(psutil.Process(pid).create_time())


def _process_alive(pid: int | None, started: float | None) -> bool:
    """Whether the process that recorded ``(pid, started)`` still runs."""
    if pid is None:
        return True  # nothing to judge by: keep the group rather than lose messages
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists but we may not inspect it: assume it is alive


def _default_base_dir() -> str | None:
    # /dev/shm keeps the queue in RAM: commits never wait for a disk.
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


def _remove_owned_dir(path: str, owner_pid: int) -> None:
    # A forked child inherits this finalizer; only the creating process may delete the queues.
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


class LocalPubSub(PubSub):
    """Topics with consumer groups in a SQLite file, shared by every process on this host.

    :param path: directory holding ``queue.sqlite3`` and the wake-up sockets; created if missing
        and never deleted by this class. ``None`` makes a private temporary directory (in
        ``/dev/shm`` when writable) that :meth:`close` of this instance deletes.
    :param visibility_timeout: default lease, in seconds, of subscriptions that give none.
    :raises ConfigurationError: ``visibility_timeout`` is not positive.

    The instance is thread-safe and can be rebuilt in another process from :meth:`to_config` (or
    by pickling it); a rebuilt instance shares the queues and never deletes the directory.
    """

    name: ClassVar[str] = "local"
    max_message_bytes: int = 1024 * 1024

    def __init__(
        self, path: str | os.PathLike[str] | None = None, visibility_timeout: float = 30.0
    ) -> None:
        if not visibility_timeout > 0:
            raise ConfigurationError(
                "visibility_timeout must be a positive number of seconds, "
                f"got {visibility_timeout!r}"
            )
        self.visibility_timeout = float(visibility_timeout)
        self._dir_finalizer: weakref.finalize[Any, Any] | None = None
        if path is None:
            self._path = tempfile.mkdtemp(prefix="faasml-pubsub-", dir=_default_base_dir())
            self._dir_finalizer = weakref.finalize(self, _remove_owned_dir, self._path, os.getpid())
        else:
            self._path = os.path.abspath(os.fspath(path))
        self._db_path = os.path.join(self._path, _DB_NAME)
        self._wake_dir = os.path.join(self._path, _WAKE_DIR)
        os.makedirs(self._wake_dir, exist_ok=True)

        self._closed = False
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[tuple[threading.Thread, _RetryingConnection]] = []
        self._sender: socket.socket | None = None
        self._wake_fd: int | None = None
        self._listing: tuple[int, float, dict[str, list[str]]] | None = None
        self._next_gc = 0.0
        self._subscriptions: weakref.WeakSet[LocalSubscription] = weakref.WeakSet()
        _INSTANCES.add(self)

        conn = self._conn()
        # WAL lets readers proceed while one writer commits; the mode is stored in the file.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        self._maybe_collect_garbage()

    # ------------------------------------------------------------------ configuration

    @property
    def path(self) -> str:
        """The absolute directory holding the queues."""
        return self._path

    def to_config(self) -> dict[str, Any]:
        """Return ``{"path": ..., "visibility_timeout": ...}``; a rebuilt instance shares queues."""
        return {"path": self._path, "visibility_timeout": self.visibility_timeout}

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (multiprocessing arguments) rebuilds a non-owning instance on the same queues.
        return (type(self), (self._path, self.visibility_timeout))

    def __repr__(self) -> str:
        return f"LocalPubSub(path={self._path!r}, visibility_timeout={self.visibility_timeout})"

    # ------------------------------------------------------------------ connections

    def _conn(self) -> _RetryingConnection:
        """Return this thread's connection, opening one (again, after a fork) when needed."""
        pid = os.getpid()
        held: tuple[int, _RetryingConnection] | None = getattr(self._local, "conn", None)
        if held is not None and held[0] == pid:
            return held[1]
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        if held is not None:
            _INHERITED.append(held[1])
        # check_same_thread=False only so that close() can close every thread's connection; each
        # connection is otherwise used by the thread that opened it.
        conn = _RetryingConnection(
            sqlite3.connect(self._db_path, timeout=0, isolation_level=None, check_same_thread=False)
        )
        # NORMAL in WAL mode skips the fsync per commit; a power cut may lose the last commits
        # but never corrupts the file, which is the right trade for a work queue.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA journal_size_limit=67108864")
        self._local.conn = (pid, conn)
        with self._lock:
            keep = []
            for thread, other in self._conns:
                if thread.is_alive():
                    keep.append((thread, other))
                else:
                    other.close()
            keep.append((threading.current_thread(), conn))
            self._conns = keep
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[_RetryingConnection]:
        """A write transaction that takes the lock up front (no deadlock on lock upgrade)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _after_fork(self) -> None:
        # The lock may have been held by a thread that does not exist in the child.
        self._lock = threading.Lock()
        _INHERITED.extend(conn for _, conn in self._conns)
        self._conns = []

    # ------------------------------------------------------------------ publishing

    def _body(self, data: object) -> bytes:
        body = message_bytes(data)
        if len(body) > self.max_message_bytes:
            raise PayloadTooLargeError(
                f"message of {len(body)} bytes is over the local PubSub limit of "
                f"{self.max_message_bytes} bytes (1 MiB); store large data in the object store "
                "and publish its key",
                provider=self.name,
            )
        return body

    def publish(self, topic: str, data: bytes | bytearray | memoryview) -> None:
        """Publish ``data`` to every group of ``topic`` (nothing is kept if it has none).

        :raises PayloadTooLargeError: ``data`` is over 1 MiB.
        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        body = self._body(data)
        cursor = self._conn().execute(_SQL_PUBLISH, (body, topic))
        if cursor.rowcount > 0:
            self._wake(topic)
        self._maybe_collect_garbage()

    def publish_many(self, topic: str, items: Sequence[bytes | bytearray | memoryview]) -> None:
        """Publish several messages in one transaction: all of them or, on error, none.

        :raises PayloadTooLargeError: an item is over 1 MiB (nothing is published).
        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        bodies = [self._body(data) for data in items]
        if not bodies:
            return
        with self._write() as conn:
            cursor = conn.executemany(_SQL_PUBLISH, [(body, topic) for body in bodies])
        if cursor.rowcount > 0:
            self._wake(topic)
        self._maybe_collect_garbage()

    # ------------------------------------------------------------------ groups

    def ensure_group(self, topic: str, group: str) -> None:
        """Create ``group`` on ``topic`` if missing; messages published from now on wait for it.

        :raises InvalidTopicError: ``topic`` or ``group`` is not a portable name.
        """
        validate_topic(topic)
        validate_topic(group)
        self._conn().execute(
            "INSERT OR IGNORE INTO groups (topic, grp, ephemeral) VALUES (?, ?, 0)", (topic, group)
        )

    def delete_topic(self, topic: str) -> None:
        """Delete every group of ``topic`` (private ones too) with its messages; idempotent.

        Waiting subscribers of the topic are woken; they find nothing, and messages published
        from now on reach only groups created again.

        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        # One transaction, like _drop_group: a concurrent publish lands before (and is deleted)
        # or after (and finds no group).
        with self._write() as conn:
            conn.execute("DELETE FROM groups WHERE topic = ?", (topic,))
            conn.execute("DELETE FROM messages WHERE topic = ?", (topic,))
        self._wake(topic)

    def subscribe(
        self, topic: str, group: str | None = None, *, visibility_timeout: float | None = None
    ) -> LocalSubscription:
        """Join ``group`` on ``topic`` (creating it if needed) and return a subscription.

        :param group: ``None`` makes a private group that is deleted, with its messages, when
            the subscription closes (or, if its process dies, by a later garbage collection).
        :param visibility_timeout: lease of received messages in seconds; ``None`` takes the
            instance's default.
        :raises InvalidTopicError: ``topic`` or ``group`` is not a portable name.
        """
        validate_topic(topic)
        if group is not None:
            validate_topic(group)
        vt = self.visibility_timeout if visibility_timeout is None else float(visibility_timeout)
        if not vt > 0:
            raise ValueError(f"visibility_timeout must be positive, got {visibility_timeout!r}")
        self._maybe_collect_garbage()
        sub = LocalSubscription(self, topic, group, vt)
        self._subscriptions.add(sub)
        return sub

    def _add_private_group(self, topic: str, grp: str, wake: str | None) -> None:
        pid = os.getpid()
        self._conn().execute(
            "INSERT INTO groups (topic, grp, ephemeral, pid, started, wake) "
            "VALUES (?, ?, 1, ?, ?, ?)",
            (topic, grp, pid, _process_start_time(pid), wake),
        )

    def _drop_group(self, topic: str, grp: str) -> None:
        # One transaction, so a concurrent publish either lands before (and is deleted) or after
        # (and finds no group): no orphan message rows.
        with self._write() as conn:
            conn.execute("DELETE FROM groups WHERE topic = ? AND grp = ?", (topic, grp))
            conn.execute("DELETE FROM messages WHERE topic = ? AND grp = ?", (topic, grp))

    def collect_garbage(self) -> int:
        """Delete the private groups, and their messages, of subscriber processes that died.

        Runs on its own now and then (on publish and subscribe, and at once when a publisher
        finds a dead subscriber's wake socket); call it to force a pass.

        :return: how many groups were deleted.
        """
        self._next_gc = time.monotonic() + _GC_INTERVAL
        rows = (
            self._conn()
            .execute("SELECT topic, grp, pid, started, wake FROM groups WHERE ephemeral = 1")
            .fetchall()
        )
        dropped = 0
        for topic, grp, pid, started, wake in rows:
            if _process_alive(pid, started):
                continue
            # A pid we cannot see may live in another pid namespace: a socket that still answers
            # proves its subscriber alive.
            if wake is not None and self._socket_alive(wake):
                continue
            self._drop_group(topic, grp)
            if wake is not None:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._wake_dir, wake))
            dropped += 1
        return dropped

    def _maybe_collect_garbage(self, force: bool = False) -> None:
        if force or time.monotonic() >= self._next_gc:
            try:
                self.collect_garbage()
            except sqlite3.Error as exc:  # housekeeping must never fail a publish
                _log.debug("local pubsub garbage collection failed: %s", exc)

    # ------------------------------------------------------------------ consuming

    def _claim(
        self, topic: str, grp: str, max_messages: int, visibility_timeout: float
    ) -> tuple[list[Message], float | None]:
        """Lease up to ``max_messages`` visible messages of the group.

        :return: the messages and, when there are none, the time (``time.time()``) at which the
            next in-flight message becomes visible again, or ``None``.
        """
        conn = self._conn()
        # A read without the write lock first: idle consumers must not contend with publishers.
        # (fetchall, not fetchone: a statement left mid-way would pin its read snapshot.)
        if not conn.execute(_SQL_ANY_VISIBLE, (topic, grp, time.time())).fetchall():
            rows = conn.execute(_SQL_NEXT_VISIBLE, (topic, grp)).fetchall()
            return [], (rows[0][0] if rows else None)
        token = secrets.randbits(62) + 1
        with self._write() as conn:
            now = time.time()
            rows = conn.execute(_SQL_SELECT_VISIBLE, (topic, grp, now, max_messages)).fetchall()
            if rows:
                marks = ",".join("?" * len(rows))
                conn.execute(
                    "UPDATE messages SET visible_at = ?, claim = ?, deliveries = deliveries + 1 "
                    f"WHERE id IN ({marks})",
                    (now + visibility_timeout, token, *(row[0] for row in rows)),
                )
        return [
            Message(
                data,
                topic=topic,
                id=str(msg_id),
                deliveries=deliveries + 1,
                ack=partial(self._ack, msg_id, token),
                nack=partial(self._nack, topic, msg_id, token),
                touch=partial(self._touch, msg_id, token, visibility_timeout),
                receipt=(self, (msg_id, token)),
            )
            for msg_id, data, deliveries in rows
        ], None

    def _ack(self, msg_id: int, token: int) -> None:
        self._conn().execute("DELETE FROM messages WHERE id = ? AND claim = ?", (msg_id, token))

    def _ack_many(self, receipts: list[tuple[int, int]]) -> None:
        with self._write() as conn:
            conn.executemany("DELETE FROM messages WHERE id = ? AND claim = ?", receipts)

    def _nack(self, topic: str, msg_id: int, token: int) -> None:
        cursor = self._conn().execute(
            "UPDATE messages SET visible_at = 0, claim = 0 WHERE id = ? AND claim = ?",
            (msg_id, token),
        )
        if cursor.rowcount > 0:
            self._wake(topic)

    def _touch(self, msg_id: int, token: int, visibility_timeout: float) -> None:
        # A lease that was already lost (token changed) stays lost: renewing it would let two
        # consumers hold the same message.
        self._conn().execute(
            "UPDATE messages SET visible_at = ? WHERE id = ? AND claim = ?",
            (time.time() + visibility_timeout, msg_id, token),
        )

    # ------------------------------------------------------------------ wake-up sockets

    def _wake_address(self, name: str) -> str | None:
        """The address to bind or send to for socket file ``name``; ``None`` if it has none."""
        full = os.path.join(self._wake_dir, name)
        if len(os.fsencode(full)) <= _SUN_PATH_MAX:
            return full
        # Too long for sun_path: address the directory through an open descriptor instead.
        if not os.path.isdir("/proc/self/fd"):
            return None
        if self._wake_fd is None:
            with self._lock:
                if self._wake_fd is None:
                    self._wake_fd = os.open(self._wake_dir, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._wake_fd}/{name}"

    def _bind_wake_socket(self, topic: str) -> tuple[socket.socket, str] | None:
        """Bind a non-blocking datagram socket ``wake/<topic>.<random>``; ``None`` if impossible.

        Without a socket the subscription still works: it looks every :data:`_MAX_WAIT` seconds.
        """
        if not hasattr(socket, "AF_UNIX") or not hasattr(select, "poll"):
            return None
        for _ in range(5):
            name = f"{topic}.{secrets.token_hex(6)}"
            address = self._wake_address(name)
            if address is None:
                return None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(address)
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EEXIST):  # name taken: draw another
                    continue
                _log.warning("local pubsub: no wake-up socket (%s); falling back to polling", exc)
                return None
            sock.setblocking(False)
            return sock, name
        return None

    def _wake_targets(self, topic: str) -> list[str]:
        try:
            mtime = os.stat(self._wake_dir).st_mtime_ns
        except OSError:
            return []
        listing = self._listing
        now = time.monotonic()
        # The directory's mtime changes whenever a subscriber comes or goes, but its clock is
        # coarse, so the listing is also refreshed after a short TTL.
        if listing is None or listing[0] != mtime or now - listing[1] > _LISTING_TTL:
            by_topic: dict[str, list[str]] = {}
            with contextlib.suppress(OSError):
                for entry in os.listdir(self._wake_dir):
                    prefix, dot, _ = entry.partition(".")
                    if dot:
                        by_topic.setdefault(prefix, []).append(entry)
            listing = (mtime, now, by_topic)
            self._listing = listing
        return listing[2].get(topic, [])

    def _sender_socket(self) -> socket.socket:
        sender = self._sender
        if sender is None:
            with self._lock:
                if self._sender is None:
                    created = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    created.setblocking(False)
                    self._sender = created
                sender = self._sender
        return sender

    def _wake(self, topic: str) -> None:
        """Send one byte to every subscription of ``topic``; never blocks, never fails."""
        if not hasattr(socket, "AF_UNIX"):
            return
        names = self._wake_targets(topic)
        if not names:
            return
        sender = self._sender_socket()
        found_dead = False
        for name in names:
            address = self._wake_address(name)
            if address is None:
                continue
            try:
                sender.sendto(b"\0", address)
            except BlockingIOError:
                pass  # its queue is full: it has wake-ups pending already
            except ConnectionRefusedError:
                # Nobody is bound to the file any more: its process died without cleaning up.
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._wake_dir, name))
                found_dead = True
            except OSError:
                self._listing = None  # vanished (closed meanwhile) or odd: re-list next time
        if found_dead:
            self._listing = None
            self._maybe_collect_garbage(force=True)

    def _socket_alive(self, name: str) -> bool:
        address = self._wake_address(name)
        if address is None:
            return False
        try:
            self._sender_socket().sendto(b"\0", address)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return True

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close every subscription and connection; delete the directory if this instance made it.

        Idempotent. Subscriptions opened on this instance are closed first (their private groups
        are deleted; un-acked messages of named groups will be redelivered).
        """
        if self._closed:
            return
        for sub in list(self._subscriptions):
            with contextlib.suppress(Exception):  # one broken subscription must not block close
                sub.close()
        self._closed = True
        _INSTANCES.discard(self)
        with self._lock:
            conns, self._conns = self._conns, []
        for _, conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._wake_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._wake_fd)
            self._wake_fd = None
        if self._dir_finalizer is not None:
            self._dir_finalizer()


def _release_subscription(
    pubsub: LocalPubSub,
    topic: str,
    grp: str,
    private: bool,
    sock: socket.socket | None,
    sock_path: str | None,
    owner_pid: int,
) -> None:
    """Tear down a subscription; runs once, from close() or when it is garbage-collected."""
    if os.getpid() != owner_pid:
        return  # a forked copy: the subscription belongs to the parent
    if sock is not None:
        sock.close()
    if sock_path is not None:
        with contextlib.suppress(OSError):
            os.unlink(sock_path)
    if private and not pubsub._closed:
        try:
            pubsub._drop_group(topic, grp)
        except (sqlite3.Error, ValueError) as exc:
            # Left behind, the group is collected later because its process is gone.
            _log.debug("local pubsub: could not drop private group %s/%s: %s", topic, grp, exc)


class LocalSubscription(Subscription):
    """A consumer of one topic within one group of a :class:`LocalPubSub`.

    Create it with :meth:`LocalPubSub.subscribe`. It can be used from any thread, but it belongs
    to the process that created it.

    :ivar topic: the topic.
    :ivar group: the group name, or ``None`` for a private group.
    :ivar visibility_timeout: lease of received messages, in seconds.
    """

    def __init__(
        self, pubsub: LocalPubSub, topic: str, group: str | None, visibility_timeout: float
    ) -> None:
        self.topic = topic
        self.group = group
        self.visibility_timeout = visibility_timeout
        self._pubsub = pubsub
        self._closed = False
        # The socket goes first: a private group row never names a socket that is not bound yet.
        bound = pubsub._bind_wake_socket(topic)
        self._sock = None if bound is None else bound[0]
        wake_name = None if bound is None else bound[1]
        self._poller: Any = None
        if self._sock is not None:
            self._poller = select.poll()
            self._poller.register(self._sock, select.POLLIN)
        sock_path = None if wake_name is None else os.path.join(pubsub._wake_dir, wake_name)
        if group is None:
            # "~" is outside the portable alphabet, so no user group can collide with it.
            self._grp = f"~{os.getpid()}-{secrets.token_hex(8)}"
        else:
            self._grp = group
        try:
            if group is None:
                pubsub._add_private_group(topic, self._grp, wake_name)
            else:
                pubsub.ensure_group(topic, group)
        except BaseException:
            if self._sock is not None:
                self._sock.close()
            if sock_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(sock_path)
            raise
        self._finalizer = weakref.finalize(
            self,
            _release_subscription,
            pubsub,
            topic,
            self._grp,
            group is None,
            self._sock,
            sock_path,
            os.getpid(),
        )

    def get_many(self, max_messages: int = 10, timeout: float | None = None) -> list[Message]:
        """Wait up to ``timeout`` seconds for messages and return 1..``max_messages`` of them.

        :param timeout: ``None`` waits forever, ``0`` only looks; on timeout ``[]`` is returned.
        :raises ValueError: the subscription is closed, or ``max_messages < 1``.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self._closed:
                raise ValueError(f"subscription to topic {self.topic!r} is closed")
            messages, next_visible = self._pubsub._claim(
                self.topic, self._grp, max_messages, self.visibility_timeout
            )
            if messages:
                return messages
            wait = _MAX_WAIT
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = min(wait, remaining)
            if next_visible is not None:
                # An in-flight lease expires soon: look again right then, not up to _MAX_WAIT late.
                wait = min(wait, max(0.001, next_visible - time.time()))
            self._wait(wait)

    def ack_many(self, messages: Iterable[Message]) -> None:
        """Acknowledge several messages in one transaction (others' messages one by one)."""
        mine = own_receipts(messages, self._pubsub)
        if mine:
            self._pubsub._ack_many([handle for _, handle in mine])
            for message, _ in mine:
                message.acked = True

    def _wait(self, seconds: float) -> None:
        """Sleep until a publisher wakes us or ``seconds`` pass, then drain pending wake-ups."""
        if self._sock is None:
            time.sleep(seconds)
            return
        try:
            if self._poller.poll(math.ceil(seconds * 1000)):
                while True:
                    self._sock.recv(256)
        except BlockingIOError:
            pass  # drained
        except (OSError, ValueError):
            pass  # closed by another thread meanwhile; get_many's loop notices

    def close(self) -> None:
        """Stop consuming; a private group is deleted with its messages. Idempotent.

        Un-acked messages of a named group are redelivered to its other members once their
        visibility timeout expires. A ``get_many`` blocked in another thread raises
        :class:`ValueError` within :data:`_MAX_WAIT` seconds.
        """
        self._closed = True
        self._finalizer()
        self._pubsub._subscriptions.discard(self)

    def __repr__(self) -> str:
        return f"LocalSubscription(topic={self.topic!r}, group={self.group!r})"

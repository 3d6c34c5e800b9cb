"""The ``local`` Function backend: a FaaS platform emulated by a pool of warm worker processes.

Each worker is a fresh Python interpreter that imports the handler once and then serves one
payload at a time over a socket pair, like a warm Lambda container. One dispatcher thread per
pool owns every worker: it waits on all worker sockets, process sentinels and a wake-up pipe at
once, hands queued payloads to idle workers, enforces the per-invocation time limit, replaces
workers that die, and updates :class:`LocalInvocation` objects in place.

Workers are started with :class:`subprocess.Popen` running ``python -c`` rather than through
:mod:`multiprocessing`'s spawn or forkserver start methods, for three reasons:

* the worker environment (``OMP_NUM_THREADS``, user variables) is in place before the interpreter
  starts, so BLAS libraries read it when they load; a spawn child only gets it after it has
  re-imported the driver's ``__main__``, which may already have imported numpy;
* the driver's ``__main__`` is never re-executed in workers, so scripts without an
  ``if __name__ == "__main__"`` guard, notebooks and ``python -`` work, as on a real platform;
* nothing is forked from the (multi-threaded) driver: ``Popen`` uses ``vfork``/``exec``.

The socket pair is a :class:`multiprocessing.connection.Connection` on both ends, and a pidfd
(Linux >= 5.3) or an inherited pipe serves as the process sentinel, as multiprocessing does.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any, ClassVar, Literal

from faasml.errors import (
    ConfigurationError,
    FunctionError,
    InvocationTimeoutError,
    PayloadTooLargeError,
    ProviderError,
    ServiceUnavailableError,
    WorkerDiedError,
)
from faasml.interfaces import Function, Invocation

__all__ = ["LocalFunction", "LocalInvocation"]

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
_HANDLER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# Worker -> driver message tags (first byte of every message).
_READY = b"R"
_OK = b"O"
_ERR = b"E"

# Seconds workers get to exit after close() asks them to, before they are killed.
_CLOSE_GRACE = 1.0
# Seconds a worker that closed its socket but is still alive may linger before it is killed.
_LOST_GRACE = 2.0


def _pidfd_supported() -> bool:
    """Whether this kernel and Python provide ``pidfd_open`` (exact, fork-proof sentinels)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


_HAVE_PIDFD = _pidfd_supported()


# --------------------------------------------------------------------------- invocations


@dataclass(eq=False)
class LocalInvocation(Invocation):
    """An invocation of a :class:`LocalFunction`, updated in place by the pool's dispatcher.

    :attr:`status` is ``"running"`` from submission (queued or executing) until it becomes
    ``"succeeded"`` or ``"failed"``; :meth:`poll` only reads it. :meth:`wait` blocks without
    polling.

    :param result: the handler's return value, once ``status == "succeeded"``.
    :param started_at: ``time.monotonic()`` when a worker started running it.
    :param finished_at: ``time.monotonic()`` when it completed or failed.
    """

    result: bytes | None = field(default=None, repr=False)  # may be megabytes: keep logs short
    started_at: float | None = None
    finished_at: float | None = None
    _payload: bytes = field(default=b"", repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def done(self) -> bool:
        """Return whether the invocation has finished, successfully or not."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the invocation finishes or ``timeout`` seconds pass.

        :returns: whether it finished.
        """
        return self._done.wait(timeout)

    def _finish(self, result: bytes | None, error: BaseException | None) -> None:
        # Fields are written before ``status`` so that anyone who sees the final status (poll()
        # from another thread) also sees the result or error.
        self._payload = b""
        self.result = result
        self.error = error
        self.finished_at = time.monotonic()
        self.status = "failed" if error is not None else "succeeded"
        self._done.set()

    # Invocations are mutable handles: identity semantics let callers keep them in sets/dicts.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


# --------------------------------------------------------------------------- the function


class LocalFunction(Function):
    """A pool of warm worker processes on this machine, each running ``handler``.

    :param workers: number of worker processes, which is also :attr:`concurrency`; defaults to
        ``os.cpu_count()``.
    :param timeout: per-invocation time limit in seconds; a worker running past it is killed and
        replaced, and the invocation fails with :class:`~faasml.errors.InvocationTimeoutError`.
    :param memory_mb: address-space limit of each worker (``RLIMIT_AS``), at least 64; allocating
        beyond it raises ``MemoryError`` inside the handler.
    :param handler: ``"module:function"`` import path of ``handler(payload: bytes) -> bytes``,
        imported once in each worker.
    :param environment: extra environment variables for the workers; values may be secrets and
        are never logged or shown (:meth:`environment` redacts them).
    :param threads_per_worker: value of ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
        ``MKL_NUM_THREADS`` in the workers, so that numeric libraries in ``workers`` processes do
        not oversubscribe the cores; defaults to ``max(1, os.cpu_count() // workers)``.
    :raises ConfigurationError: an argument is out of range, naming it.

    Workers start on the first invocation and stay warm until :meth:`close` (also called when the
    object is garbage-collected or the interpreter exits).
    """

    name: ClassVar[str] = "local"
    #: like AWS Lambda's synchronous invocation limit.
    max_payload_bytes: ClassVar[int] = 6 * _MIB
    #: seconds a new worker may take to start and import the handler before it counts as failed.
    init_timeout: ClassVar[float] = 60.0

    def __init__(
        self,
        workers: int | None = None,
        timeout: float = 900.0,
        memory_mb: int | None = None,
        handler: str = "faasml.runtime:handle",
        environment: dict[str, str] | None = None,
        threads_per_worker: int | None = None,
    ) -> None:
        cpus = os.cpu_count() or 1
        if workers is None:
            workers = cpus
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigurationError(f"workers must be an integer >= 1, got {workers!r}")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not timeout > 0  # also rejects NaN
        ):
            raise ConfigurationError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if memory_mb is not None and (
            isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 64
        ):
            raise ConfigurationError(
                f"memory_mb must be an integer >= 64 (or None for no limit), got {memory_mb!r}"
            )
        if not isinstance(handler, str) or not _HANDLER_RE.match(handler):
            raise ConfigurationError(
                f"handler must be a 'module:function' import path, got {handler!r}"
            )
        env = dict(environment or {})
        for key, value in env.items():
            # Name the key only: the value may be a secret.
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ConfigurationError(f"environment variable name {key!r} is not valid")
            if not isinstance(value, str) or "\0" in value:
                raise ConfigurationError(
                    f"environment variable {key!r} must have a string value without NUL bytes"
                )
        if threads_per_worker is None:
            threads_per_worker = max(1, cpus // workers)
        if (
            isinstance(threads_per_worker, bool)
            or not isinstance(threads_per_worker, int)
            or threads_per_worker < 1
        ):
            raise ConfigurationError(
                f"threads_per_worker must be an integer >= 1, got {threads_per_worker!r}"
            )
        if not sys.executable:
            raise ConfigurationError(
                "the local function needs sys.executable to start workers, but it is empty"
            )

        self.concurrency = workers
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.handler = handler
        self.threads_per_worker = threads_per_worker
        self._environment = env

        worker_env = dict(os.environ)
        worker_env.update({var: str(threads_per_worker) for var in _THREAD_VARS})
        worker_env.update(env)
        self._pool = _Pool(
            size=workers,
            timeout=self.timeout,
            init_timeout=self.init_timeout,
            argv_factory=_worker_argv(handler, memory_mb),
            env=worker_env,
        )
        # Closes the pool when this object is collected or at interpreter exit; the finalizer
        # holds the pool, never ``self``, so it does not keep the function alive.
        self._finalizer = weakref.finalize(self, self._pool.close)

    # ---- Function primitives

    def invoke_async(self, payload: bytes) -> LocalInvocation:
        """Queue ``payload`` for the next idle worker and return at once.

        The returned invocation is updated in place; use :meth:`LocalInvocation.wait` to block.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`.
        :raises ServiceUnavailableError: the function has been closed.
        """
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        if len(payload) > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"payload of {len(payload)} bytes exceeds the local function's limit of "
                f"{self.max_payload_bytes} bytes",
                provider=self.name,
            )
        return self._pool.submit(payload)

    def invoke(self, payload: bytes) -> bytes:
        """Run the handler on ``payload`` in a worker and return its result.

        :raises InvocationTimeoutError: the handler ran past :attr:`timeout`.
        :raises WorkerDiedError: the worker process died (crash, signal, ``os._exit``).
        :raises FunctionError: the handler raised; carries ``remote_type`` and
            ``remote_traceback``.
        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`.
        :raises ServiceUnavailableError: the function is or was closed meanwhile.
        """
        invocation = self.invoke_async(payload)
        # The dispatcher completes every invocation (result, error, timeout or close), so an
        # unbounded wait always returns.
        invocation.wait()
        if invocation.error is not None:
            raise invocation.error
        assert invocation.result is not None
        return invocation.result

    # ---- lifecycle and introspection

    def __enter__(self) -> LocalFunction:
        return self

    def close(self) -> None:
        """Stop the dispatcher and the workers; fail queued and running invocations. Idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called (or the pool shut down after an internal error)."""
        return self._pool.closed

    def environment(self) -> Mapping[str, str]:
        """The extra environment of the workers, with every value redacted as ``"***"``."""
        return {key: "***" for key in self._environment}

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers, including ones still starting."""
        return list(self._pool.pids)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(workers={self.concurrency}, timeout={self.timeout:g}, "
            f"memory_mb={self.memory_mb}, handler={self.handler!r}, "
            f"environment={dict(self.environment())!r})"
        )


# --------------------------------------------------------------------------- the pool

_State = Literal["starting", "idle", "busy"]


class _Worker:
    """One worker process as seen by the dispatcher."""

    __slots__ = ("conn", "deadline", "invocation", "lost", "pid", "proc", "sentinel", "state")

    def __init__(self, proc: subprocess.Popen[bytes], conn: Connection, sentinel: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.conn = conn
        self.sentinel = sentinel
        self.state: _State = "starting"
        self.invocation: LocalInvocation | None = None
        self.deadline = math.inf
        #: the socket hit EOF; the process is exiting or must be killed.
        self.lost = False


def _worker_argv(handler: str, memory_mb: int | None) -> Callable[[int, int], list[str]]:
    """Return a builder of the worker command line for a given socket fd and parent pid."""

    def build(fd: int, parent_pid: int) -> list[str]:
        # The driver's sys.path is replayed so handlers importable here (test directories,
        # script directories) are importable in the worker too.
        code = (
            f"import sys; sys.path[:] = {sys.path!r}; "
            "from faasml.providers.local.function import _worker_main; "
            f"_worker_main({fd}, {handler!r}, {memory_mb!r}, {parent_pid})"
        )
        return [sys.executable, "-c", code]

    return build


class _Pool:
    """Workers, the FIFO of pending invocations and the dispatcher thread that connects them.

    Only the dispatcher thread touches workers and the selector. Other threads share only the
    queue, the ``closed`` flag and the wake-up pipe, under ``_lock``.
    """

    def __init__(
        self,
        *,
        size: int,
        timeout: float,
        init_timeout: float,
        argv_factory: Callable[[int, int], list[str]],
        env: dict[str, str],
    ) -> None:
        self._size = size
        self._timeout = timeout
        self._init_timeout = init_timeout
        self._argv = argv_factory
        self._env = env
        self._ids = itertools.count(1)
        self._owner_pid = os.getpid()

        self._lock = threading.Lock()
        self._queue: collections.deque[LocalInvocation] = collections.deque()
        self._closed = False
        self._close_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = -1
        self._wake_w = -1
        self._wake_pending = False

        # Dispatcher-thread state.
        self._selector: selectors.BaseSelector | None = None
        self._workers: dict[int, _Worker] = {}
        self._idle: list[_Worker] = []
        self._dying: dict[int, subprocess.Popen[bytes]] = {}  # sentinel fd -> killed process
        self._start_failing = False
        #: pids of the current workers; replaced (never mutated) so readers need no lock.
        self.pids: tuple[int, ...] = ()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- called from user threads

    def submit(self, payload: bytes) -> LocalInvocation:
        invocation = LocalInvocation(
            id=f"local-{next(self._ids)}", status="running", _payload=payload
        )
        if os.getpid() != self._owner_pid:
            # A forked copy has the pool's state but neither its thread nor its workers.
            raise ServiceUnavailableError(
                "this local function belongs to the process that created it; a forked child "
                "must create its own LocalFunction",
                provider="local",
            )
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._thread is None:
                self._start_dispatcher()
            self._queue.append(invocation)
            # One wake-up byte per dispatcher cycle is enough: a burst of submissions costs one
            # write, not one per payload.
            if not self._wake_pending:
                self._wake_pending = True
                self._wake()
        return invocation

    def close(self) -> None:
        if os.getpid() != self._owner_pid:
            return  # a forked child must not touch the parent's workers or wake-up pipe
        with self._lock:
            self._closed = True
            thread = self._thread
            self._wake()
        if thread is None or thread is threading.current_thread():
            return  # from the dispatcher itself (a finalizer run by GC there): it is exiting
        # The dispatcher fails pending work first, then gives workers _CLOSE_GRACE seconds.
        thread.join(_CLOSE_GRACE + 10.0)
        if thread.is_alive():
            logger.warning("faasml local function dispatcher did not stop within its grace time")

    def _closed_error(self) -> ServiceUnavailableError:
        reason = f": {self._close_error}" if self._close_error is not None else ""
        return ServiceUnavailableError(f"the local function is closed{reason}", provider="local")

    def _start_dispatcher(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        # Daemon: a non-daemon thread would make interpreter exit wait before the atexit hook
        # (weakref.finalize) that closes the pool could run.
        self._thread = threading.Thread(
            target=self._run, name="faasml-local-dispatcher", daemon=True
        )
        self._thread.start()

    def _wake(self) -> None:
        # Called with _lock held: _shutdown closes the pipe under the same lock, so this never
        # writes to a closed (or reused) descriptor.
        if self._wake_w < 0:
            return
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-up bytes already

    # ---- dispatcher thread

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            logger.exception("faasml local function dispatcher failed; closing the pool")
            with self._lock:
                self._closed = True
                self._close_error = exc
        finally:
            self._shutdown()

    def _loop(self) -> None:
        selector = self._selector
        assert selector is not None
        while not self._closed:
            self._fill_pool()
            self._assign()
            timeout = self._next_timeout()
            events = selector.select(timeout)
            deaths: list[_Worker] = []
            for key, _mask in events:
                data = key.data
                if data is None:
                    self._drain_wake_pipe()
                elif isinstance(data, _Worker):
                    if self._workers.get(data.pid) is not data:
                        continue  # replaced earlier in this batch
                    if key.fd == data.sentinel:
                        deaths.append(data)  # after messages: a final result may be pending
                    else:
                        self._on_message(data)
                else:
                    self._reap_killed(key.fd)
            for worker in deaths:
                if self._workers.get(worker.pid) is worker:
                    self._on_exit(worker)
            self._enforce_deadlines()

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            self._wake_pending = False

    def _next_timeout(self) -> float | None:
        deadline = min((w.deadline for w in self._workers.values()), default=math.inf)
        if deadline == math.inf:
            return None
        return max(0.0, deadline - time.monotonic())

    def _fill_pool(self) -> None:
        while len(self._workers) < self._size and not self._closed:
            if self._start_failing:
                # Workers are failing to start: retry one at a time and only while there is work,
                # which each failure consumes, so a broken setup cannot spin forever.
                starting = sum(w.state == "starting" for w in self._workers.values())
                with self._lock:
                    waiting = len(self._queue)
                if starting or not waiting:
                    return
            try:
                self._spawn()
            except OSError as exc:
                logger.warning("faasml local function could not start a worker: %s", exc)
                self._start_failed(f"could not start a worker process: {exc}")

    def _spawn(self) -> None:
        parent, child = Pipe(duplex=True)
        pass_fds = [child.fileno()]
        sentinel_r = sentinel_w = -1
        if not _HAVE_PIDFD:
            # The worker holds the write end; EOF on the read end means it exited.
            sentinel_r, sentinel_w = os.pipe()
            pass_fds.append(sentinel_w)
        try:
            proc = subprocess.Popen(
                self._argv(child.fileno(), os.getpid()),
                env=self._env,
                pass_fds=pass_fds,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            if sentinel_r >= 0:
                os.close(sentinel_r)
            raise
        finally:
            child.close()
            if sentinel_w >= 0:
                os.close(sentinel_w)
        if _HAVE_PIDFD:
            try:
                sentinel = os.pidfd_open(proc.pid)
            except OSError:
                parent.close()
                proc.kill()
                proc.wait()
                raise
        else:
            sentinel = sentinel_r
        worker = _Worker(proc, parent, sentinel)
        worker.deadline = time.monotonic() + self._init_timeout
        self._workers[worker.pid] = worker
        assert self._selector is not None
        self._selector.register(parent.fileno(), selectors.EVENT_READ, worker)
        self._selector.register(sentinel, selectors.EVENT_READ, worker)
        self.pids = tuple(self._workers)

    def _assign(self) -> None:
        while self._idle:
            with self._lock:
                if not self._queue:
                    return
                invocation = self._queue.popleft()
            worker = self._idle.pop()
            payload = invocation._payload
            invocation._payload = b""  # the worker has it now; do not keep big payloads twice
            now = time.monotonic()
            invocation.started_at = now
            worker.invocation = invocation
            worker.state = "busy"
            worker.deadline = now + self._timeout
            try:
                worker.conn.send_bytes(payload)
            except OSError:
                # The idle worker died before we noticed: the payload never ran, so requeue it.
                invocation._payload = payload
                invocation.started_at = None
                worker.invocation = None
                with self._lock:
                    self._queue.appendleft(invocation)
                self._on_exit(worker)

    def _on_message(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._on_lost(worker)
            return
        tag = message[:1]
        if tag == _READY and worker.state == "starting":
            self._start_failing = False
            self._make_idle(worker)
            return
        invocation = worker.invocation
        if invocation is None or tag not in (_OK, _ERR):
            # Only something writing to our socket from inside the handler can cause this.
            logger.warning("faasml local worker %d broke the protocol; killing it", worker.pid)
            self._kill(worker, None)
            return
        worker.invocation = None
        self._make_idle(worker)
        if tag == _OK:
            invocation._finish(message[1:], None)
        else:
            invocation._finish(None, _decode_error(message[1:]))

    def _make_idle(self, worker: _Worker) -> None:
        worker.state = "idle"
        worker.deadline = math.inf
        self._idle.append(worker)

    def _on_lost(self, worker: _Worker) -> None:
        """The worker's socket hit EOF: it is exiting, or closed the socket and must be killed."""
        assert self._selector is not None
        if worker.lost:
            return
        self._selector.unregister(worker.conn.fileno())
        if worker in self._idle:
            self._idle.remove(worker)
        worker.lost = True
        # The sentinel reports the exit with the real exit status; this deadline only covers a
        # process that stays alive without its socket.
        worker.deadline = time.monotonic() + _LOST_GRACE

    def _on_exit(self, worker: _Worker) -> None:
        """The worker process exited on its own: report it, replace it, fail its invocation."""
        if not worker.lost and worker.conn.poll(0):
            self._on_message(worker)  # a result written just before exiting still counts
            if self._workers.get(worker.pid) is not worker:
                return  # the message handling already retired it
        try:
            returncode = worker.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            # Pipe sentinel closed by the process but it lives on: finish it.
            worker.proc.kill()
            returncode = worker.proc.wait()
        how = _describe_exit(returncode)
        was_starting = worker.state == "starting"
        invocation = worker.invocation
        self._forget(worker)
        self._close_sentinel(worker)
        logger.warning("faasml local worker %d %s", worker.pid, how)
        if was_starting:
            self._start_failed(f"a worker process {how} while starting")
        self._fill_pool()
        if invocation is not None:
            invocation._finish(
                None,
                WorkerDiedError(
                    f"the worker process (pid {worker.pid}) running invocation {invocation.id} "
                    f"{how}",
                    exit_code=returncode,
                ),
            )

    def _start_failed(self, reason: str) -> None:
        """A worker never became ready: fail the oldest queued invocation so work drains."""
        self._start_failing = True
        with self._lock:
            invocation = self._queue.popleft() if self._queue else None
        if invocation is not None:
            invocation._finish(
                None, WorkerDiedError(f"invocation {invocation.id} failed: {reason}")
            )

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for worker in [w for w in self._workers.values() if w.deadline <= now]:
            if worker.lost:
                if worker.state == "starting":
                    self._start_failed("a worker process closed its connection while starting")
                self._kill(worker, None)
            elif worker.state == "busy":
                invocation = worker.invocation
                assert invocation is not None
                error: ProviderError = InvocationTimeoutError(
                    f"invocation {invocation.id} ran past the {self._timeout:g} s time limit; "
                    f"its worker (pid {worker.pid}) was killed",
                    provider="local",
                )
                self._kill(worker, error)
            elif worker.state == "starting":
                # Marked failing first so that _kill does not respawn while nothing is queued.
                self._start_failed(
                    f"a worker process did not start within {self._init_timeout:g} s"
                )
                self._kill(worker, None)
        self._fill_pool()

    def _kill(self, worker: _Worker, error: BaseException | None) -> None:
        """SIGKILL ``worker``, replace it, and fail its invocation with ``error``."""
        try:
            worker.proc.kill()
        except OSError:
            pass  # already gone
        invocation = worker.invocation
        self._forget(worker)
        # Reaped when its sentinel fires, so the dispatcher never blocks on a dying process.
        assert self._selector is not None
        self._selector.register(worker.sentinel, selectors.EVENT_READ, "dying")
        self._dying[worker.sentinel] = worker.proc
        self._fill_pool()
        if invocation is not None:
            invocation._finish(
                None,
                error
                or WorkerDiedError(f"invocation {invocation.id} failed: its worker was killed"),
            )

    def _forget(self, worker: _Worker) -> None:
        """Remove ``worker`` from the pool's bookkeeping and close its socket."""
        assert self._selector is not None
        self._workers.pop(worker.pid, None)
        self.pids = tuple(self._workers)
        if worker in self._idle:
            self._idle.remove(worker)
        worker.invocation = None
        for fd in (worker.conn.fileno(), worker.sentinel):
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass  # a lost worker's socket is already unregistered
        worker.conn.close()

    def _close_sentinel(self, worker: _Worker) -> None:
        try:
            os.close(worker.sentinel)
        except OSError:
            pass

    def _reap_killed(self, sentinel: int) -> None:
        proc = self._dying.pop(sentinel, None)
        assert self._selector is not None
        self._selector.unregister(sentinel)
        os.close(sentinel)
        if proc is not None:
            proc.wait()

    def _shutdown(self) -> None:
        """Fail all pending work, stop every worker and release the pool's descriptors."""
        error = self._closed_error()
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
        running = [w.invocation for w in self._workers.values() if w.invocation is not None]
        for invocation in running + queued:
            invocation._finish(
                None,
                ServiceUnavailableError(
                    f"invocation {invocation.id} was abandoned: {error}", provider="local"
                ),
            )
        workers = list(self._workers.values())
        for worker in workers:
            worker.invocation = None
            worker.conn.close()  # idle workers exit on EOF
            if worker.state != "idle":
                try:
                    worker.proc.terminate()
                except OSError:
                    pass
        procs = [w.proc for w in workers] + list(self._dying.values())
        deadline = time.monotonic() + _CLOSE_GRACE
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fd in [w.sentinel for w in workers] + list(self._dying):
            os.close(fd)
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        self._workers.clear()
        self._idle.clear()
        self._dying.clear()
        self.pids = ()
        if self._selector is not None:
            self._selector.close()


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {name} ({-returncode})"
    return f"exited with code {returncode}"


def _decode_error(body: bytes) -> FunctionError:
    try:
        remote_type, message, remote_traceback = json.loads(body)
    except (ValueError, TypeError):
        return FunctionError(
            "the worker sent a malformed error report",
            remote_type="faasml.errors.FunctionError",
            remote_traceback="",
        )
    text = f"{remote_type}: {message}" if message else str(remote_type)
    return FunctionError(text, remote_type=remote_type, remote_traceback=remote_traceback)


# --------------------------------------------------------------------------- worker side


def _worker_main(fd: int, handler_path: str, memory_mb: int | None, parent_pid: int) -> None:
    """Entry point of a worker process: import the handler, then serve payloads until EOF."""
    # Ctrl-C in a terminal reaches the whole process group; the driver decides what to do, so
    # workers keep going (a Python-level no-op handler, unlike SIG_IGN, is not inherited by
    # programs the handler executes).
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    _die_with_parent(parent_pid)
    os.set_inheritable(fd, False)
    conn = Connection(fd)
    if memory_mb is not None:
        _limit_memory(memory_mb)
    handler, init_error = _load_handler(handler_path)
    conn.send_bytes(_READY)
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the driver closed the pool or went away
        if init_error is not None:
            reply = init_error
        else:
            reply = _call(handler, handler_path, payload)
        try:
            conn.send_bytes(reply)
        except MemoryError as exc:
            conn.send_bytes(_encode_error(exc))
        except OSError:
            return


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this worker when its parent goes, so no orphan outlives the driver.

    The "parent" is the thread that spawned the worker: the dispatcher, which lives as long as the
    pool. Other platforms rely on the socket's EOF when the driver exits.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _limit_memory(memory_mb: int) -> None:
    import resource

    limit = memory_mb * _MIB
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _load_handler(path: str) -> tuple[Callable[[bytes], Any], bytes | None]:
    """Import ``module:attr``; on failure return the error every invocation will report."""
    import importlib

    module_name, _, attr_path = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            target = getattr(target, attr)
        if not callable(target):
            raise TypeError(f"handler {path!r} is not callable")
    except BaseException as exc:
        return _not_loaded, _encode_error(exc, f"could not load handler {path!r}: ")
    return target, None


def _not_loaded(payload: bytes) -> bytes:
    raise AssertionError("unreachable: invocations report the load error instead")


def _call(handler: Callable[[bytes], Any], path: str, payload: bytes) -> bytes:
    try:
        result = handler(payload)
        if isinstance(result, bytes):
            return _OK + result
        if isinstance(result, (bytearray, memoryview)):
            return _OK + bytes(result)
        raise TypeError(f"handler {path!r} returned {type(result).__name__}, expected bytes")
    except BaseException as exc:  # SystemExit too: the platform reports it, the worker lives
        return _encode_error(exc)


def _encode_error(exc: BaseException, prefix: str = "") -> bytes:
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        message = prefix + str(exc)
    except Exception:
        message = prefix + f"<unprintable {name}>"
    try:
        formatted = "".join(traceback.format_exception(exc))
    except Exception:  # e.g. MemoryError while formatting under a tight memory limit
        formatted = f"{name}: {message}\n"
    return _ERR + json.dumps([name, message, formatted]).encode()

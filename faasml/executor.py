"""The executor: :class:`Cloud`, a :class:`concurrent.futures.Executor` over any FaaS provider.

How a task runs (design.md §4): the driver serializes ``(fn, args)``, signs it, and invokes the
provider with a small payload (inline data when small, store keys otherwise). The runtime inside
the function runs it and announces completion on a PubSub topic that a collector thread here
listens to. The collector resolves futures, retries retriable failures with exponential backoff
and jitter, treats attempts that outlive ``task_timeout`` as lost, and, when completion messages
stop arriving, lists the store for completions that could not be published. The first finished
attempt of a task wins; later ones are ignored, so duplicate invocations never yield two results.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
import itertools
import logging
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faasml import serialization
from faasml._progress import interactive
from faasml.config import CloudConfig, backend_options, constructor_parameters, resolve_secret
from faasml.errors import (
    ConfigurationError,
    FaaSMLError,
    FunctionError,
    InvocationTimeoutError,
    NotFoundError,
    SerializationError,
    SignatureError,
    UnknownBackendError,
)
from faasml.interfaces import Function, Invocation, Message, ObjectStore, PubSub
from faasml.registry import backend_class, backend_record
from faasml.runtime import register_in_process_secret
from faasml.runtime.protocol import Completion, TaskSpec, args_key, func_key, job_prefix

__all__ = ["Cloud", "ObjectChunk", "connect", "gather", "wait"]

log = logging.getLogger("faasml.executor")
T = TypeVar("T")

_GRACE_SECONDS = 30.0
_FALLBACK_AFTER = 5.0  # seconds without messages before the store is listed for completions
_MAX_BACKOFF = 30.0


@dataclass(eq=False)
class _Task:
    job: _Job
    index: int
    future: cf.Future[Any]
    args_blob: bytes | None = None
    args_key: str | None = None
    attempts: int = 0  # attempts launched so far
    invocations: dict[int, Invocation] = field(default_factory=dict)
    started: dict[int, float] = field(default_factory=dict)
    failed_attempts: set[int] = field(default_factory=set)
    retry_pending: bool = False
    done: bool = False


@dataclass(eq=False)
class _Job:
    id: str
    func_blob: bytes | None
    func_key: str | None
    tasks: list[_Task] = field(default_factory=list)
    remaining: int = 0
    stored: bool = False  # whether anything of this job may be in the store


@dataclass(frozen=True)
class ObjectChunk:
    """A byte range of a stored object, handed to the function of :meth:`Cloud.map_objects`.

    :param key: the object key.
    :param start: first byte of the chunk.
    :param end: one past the last byte of the chunk.
    :param size: the whole object's size.
    :param lines: whether chunks are aligned to lines: a line belongs to the chunk its first
        byte falls in, so every line is read exactly once.
    """

    key: str
    start: int
    end: int
    size: int
    lines: bool = False

    def read(self, storage: ObjectStore | None = None) -> bytes:
        """Return the chunk's bytes (inside a task the task's store is used by default)."""
        if storage is None:
            from faasml.runtime import context

            storage = context().storage
        if not self.lines:
            return storage.get(self.key, self.start, self.end)
        return _read_lines(storage, self.key, self.start, self.end, self.size)


def _read_lines(storage: ObjectStore, key: str, start: int, end: int, size: int) -> bytes:
    """Bytes of the whole lines that start in ``[start, end)``."""
    begin = start
    if start > 0:
        head = storage.get(key, start - 1, min(end, size))
        nl = head.find(b"\n")
        if nl < 0:
            return b""  # no line starts inside this chunk
        begin = start + nl  # (start - 1) + nl + 1
    stop = end
    if end < size:
        step = 4096
        while stop < size:
            tail = storage.get(key, end - 1, min(stop + step, size))
            nl = tail.find(b"\n")
            if nl >= 0:
                stop = end + nl  # one past the newline at (end - 1) + nl
                break
            stop = min(stop + step, size)
            step *= 2
    if begin >= stop:
        return b""
    return storage.get(key, begin, stop)


class Cloud(cf.Executor):
    """A :class:`concurrent.futures.Executor` that runs tasks as FaaS invocations.

    Build one with :func:`connect`. Code written for ``ProcessPoolExecutor`` runs unchanged.

    :param function: the Function backend that runs tasks.
    :param storage: the ObjectStore that carries tasks, results and user data.
    :param pubsub: the PubSub that carries completion messages.
    :param config: executor options.
    :param owned: backends this Cloud created and must close on shutdown.
    """

    def __init__(
        self,
        function: Function,
        storage: ObjectStore,
        pubsub: PubSub,
        config: CloudConfig | None = None,
        *,
        owned: Iterable[Any] = (),
    ) -> None:
        self.function = function
        self.storage = storage
        self.pubsub = pubsub
        self.config = config or CloudConfig()
        self._owned = list(owned)
        secret = resolve_secret(self.config.secret, "the cloud secret")
        if not secret:
            raise ConfigurationError(
                "no signing secret: pass secret=... or {'$env': 'FAASML_SECRET'} to connect()"
            )
        self._secret = secret.encode()
        register_in_process_secret(self._secret)
        self.id = uuid.uuid4().hex[:12]
        self._topic = f"faasml-done-{self.id}"
        self._storage_ref = (storage.name, storage.to_config())
        compression = self.config.compression
        self._compress = (not storage.same_host) if compression is None else compression
        self._pubsub_ref = (pubsub.name, pubsub.to_config())
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._inflight: set[_Task] = set()
        self._retry_heap: list[tuple[float, int, _Task]] = []
        self._seq = itertools.count()
        self._shutdown = False
        self._stop = threading.Event()
        self._last_message = time.monotonic()
        self._last_fallback = time.monotonic()
        self._subscription = pubsub.subscribe(self._topic, visibility_timeout=60.0)
        self._collector = threading.Thread(
            target=self._collect, name=f"faasml-collector-{self.id}", daemon=True
        )
        self._collector.start()

    def __repr__(self) -> str:
        return (
            f"Cloud(function={self.function.name!r}, storage={self.storage.name!r}, "
            f"pubsub={self.pubsub.name!r}, id={self.id!r})"
        )

    @property
    def task_timeout(self) -> float:
        """Seconds after which an attempt without result counts as lost."""
        if self.config.task_timeout is not None:
            return self.config.task_timeout
        return float(self.function.timeout) + _GRACE_SECONDS

    # ------------------------------------------------------------------ public API

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> cf.Future[T]:
        """Run ``fn(*args, **kwargs)`` in a function; return a future of its result.

        :raises SerializationError: ``fn`` or the arguments cannot be serialized (nothing is
            invoked then).
        """
        return self._start_job(fn, [(args, kwargs)], progress=False)[0]

    def map_futures(self, fn: Callable[..., T], *iterables: Iterable[Any]) -> list[cf.Future[T]]:
        """Start ``fn`` on each item (zipping several iterables like :func:`map`); return futures.

        :raises SerializationError: before anything is invoked, when ``fn`` or an item cannot be
            serialized.
        """
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            (tuple(items), {}) for items in zip(*iterables, strict=False)
        ]
        return self._start_job(fn, calls, progress=True)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """Like :meth:`concurrent.futures.Executor.map`: ordered results, first error raised.

        All tasks start at once; ``timeout`` counts from this call; ``chunksize`` and
        ``buffersize`` are accepted for compatibility (every item is its own invocation).
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        end = None if timeout is None else time.monotonic() + timeout
        futures = self.map_futures(fn, *iterables)

        def results() -> Iterator[T]:
            try:
                for fut in futures:
                    left = None if end is None else end - time.monotonic()
                    yield fut.result(left)
            finally:
                for fut in futures:
                    fut.cancel()

        return results()

    def map_reduce(
        self,
        map_fn: Callable[..., Any],
        iterable: Iterable[Any],
        reduce_fn: Callable[[list[Any]], T],
    ) -> cf.Future[T]:
        """Map ``map_fn`` over ``iterable``, then run ``reduce_fn(results)`` in one function.

        The reducer starts as soon as the last map task finishes; if a map task fails, the
        returned future fails with that error and the reducer never runs.
        """
        futures = self.map_futures(map_fn, iterable)
        outer: cf.Future[T] = cf.Future()
        outer.set_running_or_notify_cancel()
        remaining = [len(futures)]
        lock = threading.Lock()

        def start_reduce() -> None:
            for fut in futures:
                if fut.exception() is not None:
                    outer.set_exception(fut.exception())
                    return
            try:
                inner = self.submit(reduce_fn, [f.result() for f in futures])
            except BaseException as exc:
                outer.set_exception(exc)
                return
            inner.add_done_callback(lambda f: _chain(f, outer))

        def on_done(_: cf.Future[Any]) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                start_reduce()

        if not futures:
            start_reduce()
        for fut in futures:
            fut.add_done_callback(on_done)
        return outer

    def map_objects(
        self,
        fn: Callable[[ObjectChunk], T],
        source: str | Iterable[str],
        *,
        chunk_size: int | None = None,
        lines: bool = False,
    ) -> list[cf.Future[T]]:
        """Run ``fn(chunk)`` on every object under a prefix, or on byte-range chunks of them.

        Like Lithops' ``obj_chunk_size``: with ``chunk_size`` each object is split into ranges
        of that many bytes; ``lines=True`` aligns the ranges to whole lines.

        :param source: a key prefix (str) or an iterable of keys.
        :returns: one future per chunk, in key then offset order.
        """
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
        if isinstance(source, str):
            infos = list(self.storage.list(source))
        else:
            infos = [self.storage.head(k) for k in source]
        chunks: list[ObjectChunk] = []
        for info in infos:
            step = chunk_size or max(info.size, 1)
            for start in range(0, max(info.size, 1), step):
                chunks.append(
                    ObjectChunk(info.key, start, min(start + step, info.size), info.size, lines)
                )
        return self.map_futures(fn, chunks)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work, optionally wait for running tasks, then release everything."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            tasks = list(self._inflight) + [t for _, _, t in self._retry_heap]
        if cancel_futures:
            for task in tasks:
                task.future.cancel()
        if wait:
            cf.wait([t.future for t in tasks])
        self._stop.set()
        self._collector.join(timeout=10)
        with self._lock:
            leftovers = list(self._inflight)
            self._inflight.clear()
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for task in leftovers:
            _fail(task.future, FaaSMLError("the Cloud was shut down before this task finished"))
        self._subscription.close()
        try:
            # The completion topic is this Cloud's alone: brokers would keep it forever.
            self.pubsub.delete_topic(self._topic)
        except Exception:  # shutting down must never mask the user's own error
            log.warning("deleting the completion topic %s failed", self._topic, exc_info=True)
        if self.config.cleanup:
            for job in jobs:
                if job.stored:
                    self._cleanup_job(job)
        for backend in reversed(self._owned):  # the function first: its workers use the others
            try:
                backend.close()
            except Exception:  # closing must never mask the user's own error
                log.warning("closing %r failed", backend, exc_info=True)

    # ------------------------------------------------------------------ submission

    def _start_job(
        self,
        fn: Callable[..., Any],
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        progress: bool,
    ) -> list[cf.Future[Any]]:
        if self._shutdown:
            raise RuntimeError("cannot submit to a Cloud after shutdown")
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        serialization.register_local_modules(fn)
        name = getattr(fn, "__qualname__", repr(fn))
        func_blob = serialization.dumps(fn, what=f"function {name!r}")
        # Serialize every argument before invoking anything, so a bad item fails the whole call
        # up front instead of half-way through a running job.
        arg_blobs = [
            serialization.dumps(call, what=f"the arguments of call {i} to {name!r}")
            for i, call in enumerate(calls)
        ]
        job = _Job(id=uuid.uuid4().hex[:16], func_blob=None, func_key=None)
        limit = min(self.config.inline_bytes, self.function.max_payload_bytes // 2)
        if len(func_blob) <= limit:
            job.func_blob = func_blob
        else:
            job.func_key = func_key(self.config.prefix, job.id)
            self.storage.put(
                job.func_key, serialization.seal(func_blob, self._secret, compress=self._compress)
            )
            job.stored = True
        for index, blob in enumerate(arg_blobs):
            task = _Task(job, index, cf.Future())
            if len(blob) <= limit - len(job.func_blob or b""):
                task.args_blob = blob
            else:
                task.args_key = args_key(self.config.prefix, job.id, index)
                self.storage.put(
                    task.args_key, serialization.seal(blob, self._secret, compress=self._compress)
                )
                job.stored = True
            job.tasks.append(task)
        job.remaining = len(job.tasks)
        with self._lock:
            self._jobs[job.id] = job
        futures = [t.future for t in job.tasks]
        if progress:
            self._attach_progress(futures, name)
        for task in job.tasks:
            task.future.set_running_or_notify_cancel()
            self._launch(task)
        return futures

    def _attach_progress(self, futures: list[cf.Future[Any]], name: str) -> None:
        show = self.config.progress
        if show is None:
            show = interactive()
        if not show or not futures:
            return
        from tqdm.auto import tqdm

        bar = tqdm(total=len(futures), desc=name, unit="task", leave=False)
        lock = threading.Lock()
        left = [len(futures)]

        def tick(_: cf.Future[Any]) -> None:
            with lock:
                bar.update(1)
                left[0] -= 1
                if left[0] == 0:
                    bar.close()

        for fut in futures:
            fut.add_done_callback(tick)

    def _launch(self, task: _Task) -> None:
        """Start the next attempt of ``task``."""
        with self._lock:
            if task.done:
                return
            attempt = task.attempts
            task.attempts += 1
            task.retry_pending = False
            self._inflight.add(task)
        job = task.job
        spec = TaskSpec(
            job=job.id,
            task=task.index,
            attempt=attempt,
            prefix=self.config.prefix,
            storage=self._storage_ref,
            pubsub=self._pubsub_ref,
            topic=self._topic,
            inline_bytes=min(self.config.inline_bytes, self.pubsub.max_message_bytes // 2),
            func=job.func_blob,
            func_key=job.func_key,
            args=task.args_blob,
            args_key=task.args_key,
            time_budget=float(self.function.timeout),
            compress=self._compress,
        )
        payload = serialization.seal(spec.encode(), self._secret, compress=False)
        task.started[attempt] = time.monotonic()
        try:
            task.invocations[attempt] = self.function.invoke_async(payload)
        except Exception as exc:
            self._attempt_failed(task, attempt, exc)

    # ------------------------------------------------------------------ collection

    def _collect(self) -> None:
        next_check = 0.0
        while not self._stop.is_set():
            try:
                messages = self._subscription.get_many(256, timeout=0.05)
            except Exception:
                log.exception("receiving completion messages failed; retrying")
                self._stop.wait(0.5)
                messages = []
            for message in messages:
                self._on_message(message)
            now = time.monotonic()
            if messages:
                self._last_message = now
            if now >= next_check:
                next_check = now + 0.1
                try:
                    self._check_inflight(now)
                    self._launch_due_retries(now)
                except Exception:  # the collector must survive anything to never hang users
                    log.exception("faasml collector check failed")

    def _on_message(self, message: Message) -> None:
        try:
            body = serialization.unseal(message.data, self._secret, what="completion message")
            completion = Completion.decode(body)
        except (SignatureError, Exception) as exc:
            log.warning("dropping an invalid completion message: %s", exc)
            message.ack()
            return
        self._on_completion(completion)
        message.ack()

    def _on_completion(self, completion: Completion) -> None:
        with self._lock:
            job = self._jobs.get(completion.job)
            if job is None or completion.task >= len(job.tasks):
                return
            task = job.tasks[completion.task]
            if task.done:
                return  # a duplicate or slower attempt: the first finished attempt already won
        try:
            if completion.value is not None:
                value = completion.value
            else:
                assert completion.value_key is not None
                job.stored = True
                value = serialization.unseal(
                    self.storage.get(completion.value_key),
                    self._secret,
                    what=completion.value_key,
                )
            decoded = serialization.loads(value, what="the task result")
        except Exception as exc:
            self._finish(task, error=exc)
            return
        if completion.ok:
            self._finish(task, result=decoded)
            return
        error = _rebuild_remote_error(decoded)
        if isinstance(error, FaaSMLError) and error.retriable:
            self._attempt_failed(task, completion.attempt, error)
        else:
            self._finish(task, error=error)

    def _check_inflight(self, now: float) -> None:
        with self._lock:
            tasks = list(self._inflight)
        timeout = self.task_timeout
        for task in tasks:
            if task.done or task.retry_pending:
                continue
            attempt = task.attempts - 1
            invocation = task.invocations.get(attempt)
            if invocation is not None and invocation.poll() == "failed":
                error = invocation.error or FaaSMLError("the invocation failed")
                self._attempt_failed(task, attempt, error)
            elif now - task.started.get(attempt, now) > timeout:
                self._attempt_failed(
                    task,
                    attempt,
                    InvocationTimeoutError(
                        f"task {task.index} of job {task.job.id} reported no result within "
                        f"{timeout:.0f} s (task_timeout); the attempt is considered lost",
                        provider=self.function.name,
                    ),
                )
        if (
            tasks
            and now - self._last_message > _FALLBACK_AFTER
            and (now - self._last_fallback > _FALLBACK_AFTER)
        ):
            self._last_fallback = now
            self._scan_store_for_completions({t.job for t in tasks if not t.done})

    def _scan_store_for_completions(self, jobs: set[_Job]) -> None:
        """Find completions that were written to the store because publishing them failed."""
        for job in jobs:
            try:
                infos = list(self.storage.list(job_prefix(self.config.prefix, job.id)))
            except Exception:
                log.warning("listing job %s for completions failed", job.id, exc_info=True)
                continue
            for info in infos:
                if not info.key.endswith("/result.done"):
                    continue
                try:
                    body = serialization.unseal(
                        self.storage.get(info.key), self._secret, what=info.key
                    )
                except (NotFoundError, SignatureError):
                    continue
                job.stored = True
                self._on_completion(Completion.decode(body))

    def _attempt_failed(self, task: _Task, attempt: int, error: BaseException) -> None:
        with self._lock:
            if task.done or attempt in task.failed_attempts:
                return
            task.failed_attempts.add(attempt)
            if attempt != task.attempts - 1:
                return  # a newer attempt is already running; let it decide
            retriable = isinstance(error, FaaSMLError) and error.retriable
            if not retriable or task.attempts > self.config.retries or self._shutdown:
                pass
            else:
                delay = self.config.retry_backoff * (2 ** (task.attempts - 1))
                delay = min(delay, _MAX_BACKOFF) * (0.5 + random.random())
                retry_after = getattr(error, "retry_after", None)
                if retry_after:
                    delay = max(delay, float(retry_after))
                task.retry_pending = True
                heapq.heappush(self._retry_heap, (time.monotonic() + delay, next(self._seq), task))
                log.info(
                    "retrying task %s/%s in %.2f s after %r", task.job.id, task.index, delay, error
                )
                return
        self._finish(task, error=error)

    def _launch_due_retries(self, now: float) -> None:
        due: list[_Task] = []
        with self._lock:
            while self._retry_heap and self._retry_heap[0][0] <= now:
                due.append(heapq.heappop(self._retry_heap)[2])
        for task in due:
            self._launch(task)

    def _finish(
        self, task: _Task, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        with self._lock:
            if task.done:
                return
            task.done = True
            self._inflight.discard(task)
            job = task.job
            job.remaining -= 1
            job_done = job.remaining == 0
            if job_done:
                self._jobs.pop(job.id, None)
        if error is None:
            _resolve(task.future, result)
        else:
            _fail(task.future, error)
        if job_done and job.stored and self.config.cleanup:
            self._cleanup_job(job)

    def _cleanup_job(self, job: _Job) -> None:
        try:
            self.storage.delete_prefix(job_prefix(self.config.prefix, job.id))
        except Exception:
            log.warning("cleaning up job %s failed", job.id, exc_info=True)


def _resolve(future: cf.Future[Any], value: Any) -> None:
    if not future.done():
        try:
            future.set_result(value)
        except cf.InvalidStateError:
            pass  # cancelled meanwhile


def _fail(future: cf.Future[Any], error: BaseException) -> None:
    if not future.done():
        try:
            future.set_exception(error)
        except cf.InvalidStateError:
            pass


def _chain(source: cf.Future[Any], target: cf.Future[Any]) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        _fail(target, source.exception())  # type: ignore[arg-type]
    else:
        _resolve(target, source.result())


def _rebuild_remote_error(info: dict[str, Any]) -> BaseException:
    """The remote exception as its own type when it unpickles here, else a FunctionError."""
    traceback_text = info.get("traceback", "")
    error: BaseException | None = None
    if info.get("exception") is not None:
        try:
            error = serialization.loads(info["exception"])
        except SerializationError:
            error = None
    if not isinstance(error, BaseException):
        error = FunctionError(
            f"{info.get('type')}: {info.get('message')}",
            remote_type=info.get("type"),
            remote_traceback=traceback_text,
        )
    else:
        try:
            error.remote_traceback = traceback_text  # type: ignore[attr-defined]
        except AttributeError:
            pass
        error.add_note(f"Remote traceback (from the function):\n{traceback_text}")
    return error


def wait(
    futures: Iterable[cf.Future[Any]],
    timeout: float | None = None,
    return_when: str = cf.ALL_COMPLETED,
) -> tuple[set[cf.Future[Any]], set[cf.Future[Any]]]:
    """Wait for futures like :func:`concurrent.futures.wait`; returns ``(done, not_done)``."""
    done, pending = cf.wait(list(futures), timeout=timeout, return_when=return_when)
    return set(done), set(pending)


def gather(futures: Iterable[cf.Future[T]], timeout: float | None = None) -> list[T]:
    """Return every future's result in order; raise the first remote error (in order).

    :raises TimeoutError: not all results arrived within ``timeout`` seconds.
    """
    futures = list(futures)
    end = None if timeout is None else time.monotonic() + timeout
    results: list[T] = []
    for fut in futures:
        left = None if end is None else max(0.0, end - time.monotonic())
        results.append(fut.result(left))
    return results


_ROUTED = ("function", "storage", "pubsub")


def connect(
    provider: str | Function | None = None,
    *,
    storage: str | ObjectStore | None = None,
    pubsub: str | PubSub | None = None,
    function_options: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    pubsub_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Cloud:
    """Return a :class:`Cloud` for ``provider`` (default ``"local"``).

    Backends are chosen by name (or passed as ready instances). Other keyword arguments are
    executor options (see :class:`~faasml.config.CloudConfig`) or backend options, routed to
    every chosen backend whose constructor accepts them: ``connect("local", workers=4)``.
    When two backends take an option of the same name with different meanings, give it to one
    of them through ``storage_options``/``pubsub_options``/``function_options``:
    ``connect(storage="redis", pubsub="nats", storage_options={"url": "redis://..."},
    pubsub_options={"url": "nats://..."})``. Values not given come from ``FAASML_*``
    environment variables, then the config file.

    :raises UnknownBackendError: no backend of that name; the message lists the choices.
    :raises MissingDependencyError: the backend's extra is missing; the message has the
        ``pip install`` command.
    :raises ConfigurationError: an option no chosen backend accepts, or a bad value.
    """
    cloud_names = set(CloudConfig.field_names()) - {"provider", "storage", "pubsub"}
    explicit = {k: options.pop(k) for k in list(options) if k in cloud_names}
    if isinstance(provider, str):
        explicit["provider"] = provider
    if isinstance(storage, str):
        explicit["storage"] = storage
    if isinstance(pubsub, str):
        explicit["pubsub"] = pubsub
    config = CloudConfig.load(explicit)
    owned: list[Any] = []

    function_name = provider.name if isinstance(provider, Function) else config.provider
    try:
        record: Any = backend_record("function", function_name)
    except UnknownBackendError:
        if not isinstance(provider, Function):
            raise
        record = None  # an injected, unregistered backend: take the generic defaults
    defaults = {
        "storage": getattr(record, "default_storage", "file"),
        "pubsub": getattr(record, "default_pubsub", "local"),
    }
    chosen: dict[str, tuple[str, Any]] = {
        "function": (function_name, provider if isinstance(provider, Function) else None),
        "storage": (
            storage.name
            if isinstance(storage, ObjectStore)
            else config.storage or defaults["storage"],
            storage if isinstance(storage, ObjectStore) else None,
        ),
        "pubsub": (
            pubsub.name if isinstance(pubsub, PubSub) else config.pubsub or defaults["pubsub"],
            pubsub if isinstance(pubsub, PubSub) else None,
        ),
    }
    classes = {
        kind: (type(inst) if inst is not None else backend_class(kind, name))  # type: ignore[arg-type]
        for kind, (name, inst) in chosen.items()
    }
    routed: dict[str, dict[str, Any]] = {kind: {} for kind in _ROUTED}
    for key, value in options.items():
        takers = [
            kind
            for kind in _ROUTED
            if chosen[kind][1] is None and key in constructor_parameters(classes[kind])
        ]
        if not takers:
            valid = sorted(
                set(cloud_names).union(
                    *(constructor_parameters(classes[k]) for k in _ROUTED if chosen[k][1] is None)
                )
            )
            raise ConfigurationError(
                f"unknown option {key!r} for provider {chosen['function'][0]!r}, storage "
                f"{chosen['storage'][0]!r}, pubsub {chosen['pubsub'][0]!r}; valid options: {valid}"
            )
        for kind in takers:
            routed[kind][key] = value
    for kind, given in (
        ("function", function_options),
        ("storage", storage_options),
        ("pubsub", pubsub_options),
    ):
        if given and chosen[kind][1] is not None:
            raise ConfigurationError(f"{kind}_options given for a {kind} passed as an instance")
        routed[kind].update(given or {})

    secret = config.secret
    if secret is None:
        if chosen["function"][1] is None and "environment" in constructor_parameters(
            classes["function"]
        ):
            secret = secrets.token_hex(32)
        elif chosen["function"][1] is not None:
            secret = secrets.token_hex(32)  # an injected in-process backend verifies in-process
        else:
            raise ConfigurationError(
                f"provider {function_name!r} runs functions this process does not start, so the "
                "driver and the functions must share a signing secret: set FAASML_SECRET in both "
                "places and pass secret={'$env': 'FAASML_SECRET'} (or set it in config.toml)"
            )
        config = _replace(config, secret=secret)

    instances: dict[str, Any] = {}
    try:
        for kind in ("storage", "pubsub", "function"):
            name, inst = chosen[kind]
            if inst is not None:
                instances[kind] = inst
                continue
            kwargs = backend_options(name, classes[kind], routed[kind])
            if kind == "function" and "environment" in constructor_parameters(classes[kind]):
                env = dict(kwargs.get("environment") or {})
                env["FAASML_SECRET"] = resolve_secret(secret) or ""
                kwargs["environment"] = env
            instances[kind] = classes[kind](**kwargs)
            owned.append(instances[kind])
        return Cloud(
            instances["function"], instances["storage"], instances["pubsub"], config, owned=owned
        )
    except BaseException:
        for backend in reversed(owned):
            try:
                backend.close()
            except Exception:
                log.warning("closing %r after a failed connect failed", backend, exc_info=True)
        raise


def _replace(config: CloudConfig, **changes: Any) -> CloudConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)

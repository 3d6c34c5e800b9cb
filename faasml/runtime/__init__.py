"""The code that runs inside a function, on every provider.

A platform's handler shim calls :func:`handle` with the invocation payload. ``handle`` verifies
the payload's signature, rebuilds the object store and PubSub from their serialized configs
(cached across warm invocations), runs the task, stores or inlines the result, and announces
completion on the PubSub topic the driver listens to.

Inside a task, :func:`context` gives the user code the same storage and PubSub the driver uses.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import hashlib
import json
import os
import socket
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from faasml import serialization
from faasml.errors import FaaSMLError, SignatureError
from faasml.interfaces import ObjectStore, PubSub
from faasml.runtime.protocol import Completion, TaskSpec, result_key

__all__ = ["TaskContext", "context", "handle", "register_in_process_secret"]

SECRET_ENV = "FAASML_SECRET"

_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "faasml_task", default=None
)
_backends: dict[str, Any] = {}
_functions: OrderedDict[str, Any] = OrderedDict()
_FUNCTION_CACHE_SIZE = 64
# Secrets of Clouds living in this very process, for backends that run the runtime in-process
# (threads) where the environment variable is not set.
_in_process_secrets: list[bytes] = []


@dataclass(frozen=True)
class TaskContext:
    """What a running task knows about where it runs.

    :param storage: the job's object store (same data the driver sees).
    :param pubsub: the job's PubSub.
    :param job: the job id.
    :param task: the task index within the job.
    :param attempt: 0 for the first attempt, then 1, 2 ... for retries.
    :param deadline: ``time.monotonic()`` value by which the task should finish, if known.
    """

    storage: ObjectStore
    pubsub: PubSub
    job: str
    task: int
    attempt: int
    deadline: float | None

    def time_left(self) -> float | None:
        """Seconds until :attr:`deadline` (``None`` when unknown)."""
        return None if self.deadline is None else self.deadline - time.monotonic()


def context() -> TaskContext:
    """Return the context of the task running in this thread.

    :raises RuntimeError: called outside a faasml task.
    """
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("faasml.runtime.context() is only available inside a running task")
    return ctx


def register_in_process_secret(secret: bytes) -> None:
    """Let in-process function backends verify payloads signed with ``secret``."""
    if secret not in _in_process_secrets:
        _in_process_secrets.append(secret)


def _verify(payload: bytes | memoryview) -> tuple[bytes, bytes]:
    """Return (secret, body) for the first known secret that verifies ``payload``."""
    candidates: list[bytes] = []
    env = os.environ.get(SECRET_ENV)
    if env:
        candidates.append(env.encode())
    candidates.extend(_in_process_secrets)
    if not candidates:
        raise SignatureError(
            f"no signing secret in this function: set {SECRET_ENV} in the function's environment "
            "to the driver's secret (faasml deploy does this)"
        )
    error: SignatureError | None = None
    for secret in candidates:
        try:
            return secret, serialization.unseal(payload, secret, what="task payload")
        except SignatureError as exc:
            error = exc
    assert error is not None
    raise error


@atexit.register
def _close_cached_backends() -> None:
    """Close backends rebuilt for tasks (warm workers keep them open across invocations)."""
    while _backends:
        _, backend = _backends.popitem()
        with contextlib.suppress(Exception):
            backend.close()


def _backend(kind: str, name: str, config: dict[str, Any]) -> Any:
    cache_key = json.dumps([kind, name, config], sort_keys=True, default=str)
    backend = _backends.get(cache_key)
    if backend is None:
        from faasml.registry import backend_class

        cls = backend_class(kind, name)  # type: ignore[arg-type]
        backend = cls(**config)
        _backends[cache_key] = backend
    return backend


def _load_function(spec: TaskSpec, storage: ObjectStore, secret: bytes) -> Any:
    if spec.func is not None:
        blob = spec.func
    else:
        assert spec.func_key is not None
        blob = serialization.unseal(storage.get(spec.func_key), secret, what=spec.func_key)
    digest = hashlib.blake2b(blob, digest_size=16).hexdigest()
    fn = _functions.get(digest)
    if fn is None:
        fn = serialization.loads(blob, what="the task function")
        _functions[digest] = fn
        if len(_functions) > _FUNCTION_CACHE_SIZE:
            _functions.popitem(last=False)
    else:
        _functions.move_to_end(digest)
    return fn


def _error_info(exc: BaseException) -> bytes:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    pickled: bytes | None
    try:
        pickled = serialization.dumps(exc, what="the exception")
        serialization.loads(pickled)  # an exception that pickles but cannot unpickle is useless
    except Exception:
        pickled = None
    info = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": tb,
        "exception": pickled,
    }
    return serialization.dumps(info, what="the error report")


def handle(payload: bytes) -> bytes:
    """Run one task: the entry point every provider's handler shim calls.

    :param payload: the sealed invocation payload written by the driver.
    :returns: the sealed completion record (also published on the job's completion topic).
    :raises SignatureError: the payload is unsigned, tampered with, or signed with another secret.
    """
    started = time.monotonic()
    secret, body = _verify(payload)
    spec = TaskSpec.decode(body)
    storage: ObjectStore = _backend("storage", spec.storage[0], spec.storage[1])
    pubsub: PubSub = _backend("pubsub", spec.pubsub[0], spec.pubsub[1])
    deadline = None if spec.time_budget is None else started + spec.time_budget
    token = _current.set(TaskContext(storage, pubsub, spec.job, spec.task, spec.attempt, deadline))
    ok = True
    try:
        fn = _load_function(spec, storage, secret)
        if spec.args is not None:
            args_blob = spec.args
        else:
            assert spec.args_key is not None
            args_blob = serialization.unseal(storage.get(spec.args_key), secret, what=spec.args_key)
        args, kwargs = serialization.loads(args_blob, what="the task arguments")
        result = fn(*args, **kwargs)
        value = serialization.dumps(result, what="the task result")
    except (Exception, SystemExit) as exc:  # user code may raise anything; report it all
        ok = False
        value = _error_info(exc)
    finally:
        _current.reset(token)
    completion = Completion(
        job=spec.job,
        task=spec.task,
        attempt=spec.attempt,
        ok=ok,
        duration=time.monotonic() - started,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    if len(value) <= spec.inline_bytes:
        completion.value = value
    else:
        key = result_key(spec.prefix, spec.job, spec.task, spec.attempt)
        storage.put(key, serialization.seal(value, secret, compress=spec.compress))
        completion.value_key = key
    sealed = serialization.seal(completion.encode(), secret, compress=spec.compress)
    _announce(spec, storage, pubsub, completion, sealed, secret, value)
    return sealed


def _announce(
    spec: TaskSpec,
    storage: ObjectStore,
    pubsub: PubSub,
    completion: Completion,
    sealed: bytes,
    secret: bytes,
    value: bytes,
) -> None:
    """Publish the completion; if that fails, leave it in the store for the driver to find."""
    try:
        pubsub.publish(spec.topic, sealed)
    except FaaSMLError:
        # The driver lists the job prefix when messages stop arriving; make sure it finds this.
        if completion.value_key is None:
            key = result_key(spec.prefix, spec.job, spec.task, spec.attempt)
            storage.put(key, serialization.seal(value, secret, compress=spec.compress))
            completion.value_key = key
            completion.value = None
        storage.put(
            result_key(spec.prefix, spec.job, spec.task, spec.attempt) + ".done",
            serialization.seal(completion.encode(), secret),
        )

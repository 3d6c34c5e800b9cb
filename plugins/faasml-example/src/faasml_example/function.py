"""``ThreadFunction``: a Function backend that runs the handler on a thread pool in this process.

It is the smallest real backend: no service, no credentials, no subprocess. It shows what every
Function backend does — validate its configuration, refuse payloads over its limit, run
``handler(payload: bytes) -> bytes``, turn a handler exception into
:class:`~faasml.errors.FunctionError`, enforce a time limit, report asynchronous invocations
through :class:`~faasml.interfaces.Invocation` — with a
:class:`concurrent.futures.ThreadPoolExecutor` standing in for the platform.

Limits that come from running in threads, not processes (use the ``local`` provider when they
matter):

* **Timeouts cannot stop the handler.** An invocation that runs past ``timeout`` is reported as
  :class:`~faasml.errors.InvocationTimeoutError` (``invoke`` raises it, an asynchronous
  invocation turns ``"failed"``), but Python cannot kill a thread: the handler keeps running
  and keeps its pool slot until it returns, so a stuck handler lowers the usable concurrency,
  and a handler that never returns keeps the interpreter from exiting, because
  :mod:`concurrent.futures` joins its threads at exit.
* **Crashes are not contained.** ``os._exit``, a segfault or running out of memory ends the whole
  process, the caller included; there is nobody left to report a
  :class:`~faasml.errors.WorkerDiedError`.
* **One environment.** ``environment`` is applied to ``os.environ`` while the backend is open and
  restored by :meth:`ThreadFunction.close`; two open backends cannot give one variable two
  values (the second raises :class:`~faasml.errors.ConfigurationError`).
* **One GIL.** CPU-bound pure-Python handlers do not run in parallel; I/O and numpy do.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import math
import os
import re
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from faasml.errors import (
    ConfigurationError,
    FunctionError,
    InvocationTimeoutError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from faasml.interfaces import Function, Invocation
from faasml.runtime import SECRET_ENV

__all__ = ["ThreadFunction"]

Handler = Callable[[bytes], bytes]

_HANDLER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# The faasml driver hands its signing secret to in-process backends directly
# (faasml.runtime.register_in_process_secret). Exporting it as well would show it to every thread
# of the process and make two open clouds, each with its own secret, clash over one variable.
_NOT_EXPORTED = frozenset({SECRET_ENV})


class ThreadFunction(Function):
    """Runs ``handler`` on up to ``concurrency`` threads of this process.

    :param handler: ``"module:function"`` import path of ``handler(payload: bytes) -> bytes``;
        the default is faasml's runtime, which is what :func:`faasml.connect` needs.
    :param concurrency: how many invocations run at once; more wait in a queue (the wait does
        not count against ``timeout``). Default: ``min(32, cpu_count + 4)``, as
        :class:`~concurrent.futures.ThreadPoolExecutor` picks.
    :param timeout: seconds an invocation may run before it is reported as timed out.
    :param environment: variables the handler sees in ``os.environ`` (see the module docstring).
    :raises ConfigurationError: a value is out of range or the handler cannot be imported.
    """

    name: ClassVar[str] = "example"
    #: the synchronous payload limit of AWS Lambda: code tested here fits there.
    max_payload_bytes: ClassVar[int] = 6 * 1024 * 1024

    def __init__(
        self,
        handler: str = "faasml.runtime:handle",
        *,
        concurrency: int | None = None,
        timeout: float = 900.0,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        if concurrency is None:
            concurrency = min(32, (os.cpu_count() or 1) + 4)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (0 < timeout < math.inf)  # also rejects NaN
        ):
            raise ConfigurationError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        env = dict(environment or {})
        for key, value in env.items():
            # Name the key only: the value may be a secret.
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ConfigurationError(f"environment variable name {key!r} is not valid")
            if not isinstance(value, str) or "\0" in value:
                raise ConfigurationError(
                    f"environment variable {key!r} must have a string value without NUL bytes"
                )
        self.handler = handler
        self._handler = _import_handler(handler)
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self._exported = {k: v for k, v in env.items() if k not in _NOT_EXPORTED}
        _ENVIRONMENT.acquire(self._exported)
        self._lock = threading.Lock()
        self._closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"faasml-example-{id(self):x}"
        )
        # Releases the pool and the environment when the backend is collected without close();
        # it holds the pool and the variable names, never ``self``.
        self._finalizer = weakref.finalize(self, _release, self._pool, dict(self._exported))

    # ---- Function primitives

    def invoke(self, payload: bytes) -> bytes:
        """Run the handler on ``payload`` and return its result.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`.
        :raises FunctionError: the handler raised, or returned something other than bytes.
        :raises InvocationTimeoutError: the handler ran past :attr:`timeout` (it keeps running).
        :raises ServiceUnavailableError: the backend is closed, or was closed while this
            invocation waited in the queue.
        """
        call = self._submit(payload)
        call.settled.wait()  # started or cancelled; queue time is not counted against timeout
        if call.started_at is None:
            raise self._closed_error()
        remaining = call.started_at + self.timeout - time.monotonic()
        try:
            outcome = call.future.result(timeout=max(remaining, 0.0))
        except concurrent.futures.TimeoutError:
            raise self._timeout_error() from None
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

    def invoke_async(self, payload: bytes) -> Invocation:
        """Queue ``payload`` and return at once.

        The invocation turns ``"succeeded"`` or ``"failed"`` (with :attr:`Invocation.error` set)
        when the handler returns; a timeout is noticed by :meth:`Invocation.poll`.

        :raises PayloadTooLargeError: ``payload`` is over :attr:`max_payload_bytes`.
        :raises ServiceUnavailableError: the backend is closed.
        """
        call = self._submit(payload)
        invocation = Invocation(
            id=call.id, status="running", _poll=lambda inv: self._poll(inv, call)
        )
        call.future.add_done_callback(lambda _: self._settle(invocation, call))
        return invocation

    # ---- lifecycle and introspection

    def close(self) -> None:
        """Cancel queued invocations, stop accepting new ones and restore the environment.

        Running handlers cannot be stopped; they finish in the background. Idempotent.
        """
        with self._lock:
            self._closed = True
        self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def environment(self) -> Mapping[str, str]:
        """Return the variables this backend exports to ``os.environ``, values shown as ``***``."""
        return {key: "***" for key in self._exported}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(handler={self.handler!r}, concurrency={self.concurrency}, "
            f"timeout={self.timeout:g}, environment={dict(self.environment())!r})"
        )

    # ---- internals

    def _submit(self, payload: bytes) -> _Call:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        data = bytes(payload)
        if len(data) > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"payload of {len(data)} bytes exceeds the {self.name} function's limit of "
                f"{self.max_payload_bytes} bytes",
                provider=self.name,
            )
        call = _Call(uuid.uuid4().hex, data)
        with self._lock:  # so close() cannot shut the pool down between the check and submit
            if self._closed:
                raise self._closed_error()
            call.future = self._pool.submit(self._run, call)
        # A call cancelled by close() never starts; waking its waiter here lets invoke() see it.
        call.future.add_done_callback(lambda _: call.settled.set())
        return call

    def _run(self, call: _Call) -> _Outcome:
        call.started_at = time.monotonic()
        call.settled.set()
        try:
            result = self._handler(call.payload)
        except BaseException as exc:  # SystemExit too: a platform reports it and lives on
            return _Outcome(error=_function_error(exc))
        if isinstance(result, (bytearray, memoryview)):
            result = bytes(result)
        if not isinstance(result, bytes):
            return _Outcome(
                error=FunctionError(
                    f"TypeError: handler {self.handler!r} returned {type(result).__name__}, "
                    "expected bytes",
                    remote_type="TypeError",
                    remote_traceback="",
                )
            )
        return _Outcome(result=result)

    def _poll(self, invocation: Invocation, call: _Call) -> None:
        with self._lock:
            if (
                invocation.status == "running"
                and call.started_at is not None
                and not call.future.done()
                and time.monotonic() - call.started_at > self.timeout
            ):
                invocation.status = "failed"
                invocation.error = self._timeout_error()

    def _settle(self, invocation: Invocation, call: _Call) -> None:
        with self._lock:
            if invocation.status != "running":  # poll() already reported a timeout: it stands
                return
            invocation.status = "failed"
            if call.future.cancelled() or call.started_at is None:
                invocation.error = self._closed_error()
                return
            outcome = call.future.result()
            if time.monotonic() - call.started_at > self.timeout:
                invocation.error = self._timeout_error()
            elif outcome.error is not None:
                invocation.error = outcome.error
            else:
                invocation.status = "succeeded"

    def _timeout_error(self) -> InvocationTimeoutError:
        return InvocationTimeoutError(
            f"handler {self.handler!r} ran past the {self.name} function's timeout of "
            f"{self.timeout:g} s; its thread cannot be stopped and runs on until the handler "
            "returns",
            provider=self.name,
        )

    def _closed_error(self) -> ServiceUnavailableError:
        return ServiceUnavailableError(f"the {self.name} function is closed", provider=self.name)


@dataclass
class _Call:
    """One invocation on its way through the pool."""

    id: str
    payload: bytes
    #: set when the handler starts, or when the call is cancelled before it could start.
    settled: threading.Event = field(default_factory=threading.Event)
    started_at: float | None = None
    future: concurrent.futures.Future[_Outcome] = field(default_factory=concurrent.futures.Future)


@dataclass(frozen=True)
class _Outcome:
    """What the handler produced.

    Errors are values so that ``future.result(timeout)`` raising means only one thing: the wait
    timed out (a handler may raise ``TimeoutError`` itself).
    """

    result: bytes | None = None
    error: FunctionError | None = None


def _import_handler(path: object) -> Handler:
    if not isinstance(path, str) or not _HANDLER_RE.match(path):
        raise ConfigurationError(f"handler must be a 'module:function' import path, got {path!r}")
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"handler {path!r}: cannot import {module_name}: {exc}") from exc
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise ConfigurationError(f"handler {path!r}: {module_name} has no function {attr!r}")
    return handler  # type: ignore[no-any-return]


def _function_error(exc: BaseException) -> FunctionError:
    """Report a handler exception the way the ``local`` provider does, type name included."""
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    text = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    message = str(exc)
    return FunctionError(
        f"{name}: {message}" if message else name, remote_type=name, remote_traceback=text
    )


class _ProcessEnvironment:
    """Variables that open backends put into ``os.environ``, counted so they can be restored.

    Threads share one environment, so a variable can only have one value at a time: a second
    backend may reuse a variable with the same value, never give it another one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: name -> (value, number of open backends using it, value before the first one)
        self._held: dict[str, tuple[str, int, str | None]] = {}

    def acquire(self, env: Mapping[str, str]) -> None:
        """Export ``env``, or change nothing if a variable is held with another value.

        :raises ConfigurationError: naming the variable (never its value).
        """
        with self._lock:
            for name, value in env.items():
                held = self._held.get(name)
                if held is not None and held[0] != value:
                    raise ConfigurationError(
                        f"environment variable {name!r} is already set to another value by an "
                        "open example function; threads share one process environment, so close "
                        "that function first or use the local provider"
                    )
            for name, value in env.items():
                held = self._held.get(name)
                if held is None:
                    self._held[name] = (value, 1, os.environ.get(name))
                    os.environ[name] = value
                else:
                    self._held[name] = (value, held[1] + 1, held[2])

    def release(self, env: Mapping[str, str]) -> None:
        """Undo one :meth:`acquire` of ``env``; the last user restores the previous values."""
        with self._lock:
            for name in env:
                value, users, previous = self._held[name]
                if users > 1:
                    self._held[name] = (value, users - 1, previous)
                    continue
                del self._held[name]
                if previous is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = previous


_ENVIRONMENT = _ProcessEnvironment()


def _release(pool: concurrent.futures.ThreadPoolExecutor, env: dict[str, str]) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
    _ENVIRONMENT.release(env)

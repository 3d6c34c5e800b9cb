"""Run a platform-shaped handler the way a FaaS platform would, for provider emulators in tests.

A cloud platform cannot run here, so each provider's tests emulate its REST contract (status
codes, headers, bodies) and let the emulator execute faasml's real handler shim. The part every
emulator shares is *running* that shim: in a separate, warm process, with the function's
environment, a time limit that kills it, and notice of a crash. :class:`HandlerHost` does that on
top of the ``local`` provider's worker pool and reports a :class:`HostOutcome` the emulator turns
into the platform's response (Lambda's ``X-Amz-Function-Error``, OpenWhisk's 502 activation,
...)::

    host = HandlerHost("faasml.providers.aws.handler:lambda_handler",
                       environment={"FAASML_SECRET": secret}, timeout=3.0)
    outcome = host.call(event, {"aws_request_id": "..."}, remaining_ms=3000)
    if outcome.timed_out: ...
    elif outcome.crashed: ...
    elif outcome.error is not None: ...   # FunctionError with remote_type/remote_traceback
    else: outcome.value                   # what the handler returned
"""

from __future__ import annotations

import importlib
import pickle
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faasml.errors import FunctionError, InvocationTimeoutError, WorkerDiedError

__all__ = ["HandlerHost", "HostOutcome", "run_platform_handler"]


@dataclass
class HostOutcome:
    """What one call of a platform handler came to.

    :param value: the handler's return value (when it returned).
    :param error: the handler raised: type name, message and traceback.
    :param timed_out: it ran past the time limit and was killed.
    :param crashed: its process died (``os._exit``, a signal, out of memory).
    :param duration: seconds the call took, queueing excluded.
    """

    value: Any = None
    error: FunctionError | None = None
    timed_out: bool = False
    crashed: bool = False
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the handler returned normally."""
        return self.error is None and not self.timed_out and not self.crashed


def run_platform_handler(payload: bytes) -> bytes:
    """Worker side of :class:`HandlerHost`: call ``handler(*args)`` and pickle what it returns.

    The context argument becomes an object with the given attributes, plus Lambda's
    ``get_remaining_time_in_millis()`` when a remaining time was given.
    """
    request = pickle.loads(payload)
    module, _, attr = request["handler"].partition(":")
    handler = getattr(importlib.import_module(module), attr)
    args = list(request["args"])
    if request.get("context") is not None:
        context = types.SimpleNamespace(**request["context"])
        remaining_ms = request.get("remaining_ms")
        if remaining_ms is not None:
            deadline = time.monotonic() + remaining_ms / 1000.0

            def remaining() -> int:
                return max(0, int((deadline - time.monotonic()) * 1000))

            context.get_remaining_time_in_millis = remaining
        args.append(context)
    return pickle.dumps(handler(*args))


class HandlerHost:
    """Warm processes that run ``handler(event[, context])`` like a platform's containers.

    :param handler: ``"module:function"`` of the platform entry point (the provider's shim).
    :param environment: the function's environment variables (as deployed).
    :param timeout: the platform's time limit in seconds; a call past it is killed.
    :param concurrency: how many calls run at once.
    """

    def __init__(
        self,
        handler: str,
        *,
        environment: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        concurrency: int = 2,
    ) -> None:
        from faasml.providers.local.function import LocalFunction

        self.handler = handler
        self.timeout = float(timeout)
        self._pool = LocalFunction(
            workers=concurrency,
            timeout=timeout,
            handler="faasml.testing.platform:run_platform_handler",
            environment=dict(environment or {}),
        )

    def call(
        self,
        *args: Any,
        context: Mapping[str, Any] | None = None,
        remaining_ms: int | None = None,
    ) -> HostOutcome:
        """Run the handler on ``args`` (and a context object built from ``context``)."""
        request = {
            "handler": self.handler,
            "args": args,
            "context": None if context is None else dict(context),
            "remaining_ms": remaining_ms,
        }
        started = time.monotonic()
        try:
            raw = self._pool.invoke(pickle.dumps(request))
        except InvocationTimeoutError:
            return HostOutcome(timed_out=True, duration=time.monotonic() - started)
        except WorkerDiedError:
            return HostOutcome(crashed=True, duration=time.monotonic() - started)
        except FunctionError as exc:
            return HostOutcome(error=exc, duration=time.monotonic() - started)
        return HostOutcome(value=pickle.loads(raw), duration=time.monotonic() - started)

    def close(self) -> None:
        """Stop the worker processes. Idempotent."""
        self._pool.close()

    def __enter__(self) -> HandlerHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Small importable handlers for testing Function backends.

Every handler has the platform signature ``handler(payload: bytes) -> bytes``. A platform
deploys one handler, so :func:`dispatch` routes a payload ``b"<name>:<arg>"`` to the handler
called ``<name>`` with ``<arg>`` as its payload; the conformance suite deploys
``faasml.testing.handlers:dispatch``.

Some handlers misbehave on purpose (crash, exit, exhaust memory): only run them in a worker
process, never in the test process itself.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable

__all__ = [
    "HANDLERS",
    "allocate",
    "dispatch",
    "echo",
    "env_value",
    "exit_process",
    "pid",
    "raise_value_error",
    "segfault",
    "sleep_then_echo",
]


def echo(payload: bytes) -> bytes:
    """Return ``payload`` unchanged."""
    return payload


def sleep_then_echo(payload: bytes) -> bytes:
    """Sleep for ``float(payload)`` seconds, then return ``payload``."""
    time.sleep(float(payload))
    return payload


def raise_value_error(payload: bytes) -> bytes:
    """Raise ``ValueError`` whose message is the payload (or a default when it is empty)."""
    message = payload.decode("utf-8", errors="replace") or "raise_value_error was asked to fail"
    raise ValueError(message)


def exit_process(payload: bytes) -> bytes:
    """End the process at once with exit code 3, skipping all cleanup (a crashing runtime)."""
    os._exit(3)


def segfault(payload: bytes) -> bytes:
    """Crash the process with SIGSEGV by reading address 0."""
    ctypes.string_at(0)
    return b""  # not reached


def allocate(payload: bytes) -> bytes:
    """Allocate ``int(payload)`` MiB, touch every page, and return the size in bytes as text."""
    size = int(payload) * 1024 * 1024
    block = bytearray(size)
    # Writing one byte per page makes the memory resident, not only reserved.
    for offset in range(0, size, 4096):
        block[offset] = 1
    return str(len(block)).encode()


def env_value(payload: bytes) -> bytes:
    """Return the value of the environment variable named by the payload.

    :raises KeyError: the variable is not set.
    """
    return os.environ[payload.decode()].encode()


def pid(payload: bytes) -> bytes:
    """Return the process id of the worker as text (tells workers apart)."""
    return str(os.getpid()).encode()


#: the handlers :func:`dispatch` can route to, by name.
HANDLERS: dict[str, Callable[[bytes], bytes]] = {
    "allocate": allocate,
    "echo": echo,
    "env_value": env_value,
    "exit_process": exit_process,
    "pid": pid,
    "raise_value_error": raise_value_error,
    "segfault": segfault,
    "sleep_then_echo": sleep_then_echo,
}


def dispatch(payload: bytes) -> bytes:
    """Call the handler named before the first ``:`` with the rest of the payload.

    ``dispatch(b"echo:hi")`` returns ``b"hi"``; the argument may contain any bytes, colons too.

    :raises ValueError: the payload has no ``:`` or names no known handler.
    """
    name, sep, arg = payload.partition(b":")
    handler = HANDLERS.get(name.decode("ascii", errors="replace")) if sep else None
    if handler is None:
        raise ValueError(
            f"dispatch payload must be b'<handler>:<arg>' with a handler among {sorted(HANDLERS)}"
            f", got {payload[:40]!r}"
        )
    return handler(arg)

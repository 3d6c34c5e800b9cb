"""The wire format between the driver (executor) and the runtime inside a function.

Kept in one module so both sides cannot drift apart. Everything here is plain data; the
envelopes around it are made by :mod:`faasml.serialization`.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

from faasml.errors import SerializationError

__all__ = ["Completion", "TaskSpec", "args_key", "func_key", "job_prefix", "result_key"]

PROTOCOL_VERSION = 1


def job_prefix(prefix: str, job: str) -> str:
    """Store prefix holding everything of one job."""
    return f"{prefix}/{job}/"


def func_key(prefix: str, job: str) -> str:
    """Key of a job's serialized function when it is too large to inline."""
    return f"{prefix}/{job}/func"


def args_key(prefix: str, job: str, task: int) -> str:
    """Key of one task's serialized arguments when they are too large to inline."""
    return f"{prefix}/{job}/{task:06d}/input"


def result_key(prefix: str, job: str, task: int, attempt: int) -> str:
    """Key of one attempt's completion record (large results, or when publishing failed)."""
    return f"{prefix}/{job}/{task:06d}/{attempt:03d}/result"


@dataclass
class TaskSpec:
    """One invocation's instructions, sealed into the invocation payload."""

    job: str
    task: int
    attempt: int
    prefix: str
    storage: tuple[str, dict[str, Any]]
    pubsub: tuple[str, dict[str, Any]]
    topic: str
    inline_bytes: int
    func: bytes | None = None
    func_key: str | None = None
    args: bytes | None = None
    args_key: str | None = None
    time_budget: float | None = None
    compress: bool = True  # whether results are worth compressing (not for same-host stores)
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        """Plain-pickle the spec (its fields are builtins only)."""
        return pickle.dumps(self.__dict__, protocol=5)

    @classmethod
    def decode(cls, body: bytes) -> TaskSpec:
        """Rebuild a spec from :meth:`encode`'s output (already verified by its envelope)."""
        fields = pickle.loads(body)
        if fields.get("version") != PROTOCOL_VERSION:
            raise SerializationError(
                f"task protocol version {fields.get('version')} is not supported by this runtime "
                f"(expects {PROTOCOL_VERSION}); deploy the same faasml version as the driver"
            )
        return cls(**fields)


@dataclass
class Completion:
    """What an attempt reports: a result or an error, inline or by store key."""

    job: str
    task: int
    attempt: int
    ok: bool
    value: bytes | None = None  # pickled result, or pickled error info when not ok
    value_key: str | None = None
    duration: float = 0.0
    worker: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Plain-pickle the completion record."""
        return pickle.dumps(self.__dict__, protocol=5)

    @classmethod
    def decode(cls, body: bytes) -> Completion:
        """Rebuild a completion from :meth:`encode`'s output (already verified)."""
        return cls(**pickle.loads(body))

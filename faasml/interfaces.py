"""The three interfaces every backend implements: Function, ObjectStore and PubSub.

Each is an ABC with a handful of abstract primitives; everything else is derived from them, so a
backend that forgets a primitive fails when it is instantiated, not deep inside a cloud job.
Capabilities are class variables (``max_payload_bytes``, ``supports_range_get`` ...).

Backends are rebuilt inside cloud functions from :meth:`to_config`: a JSON-serializable dict of
constructor keyword arguments in which secrets stay ``{"$env": "VAR"}`` references.
"""

from __future__ import annotations

import abc
import builtins
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from faasml.errors import ConfigurationError, InvalidKeyError, InvalidTopicError, NotFoundError

__all__ = [
    "Function",
    "Invocation",
    "InvocationStatus",
    "Message",
    "ObjectInfo",
    "ObjectStore",
    "PubSub",
    "Subscription",
    "validate_key",
    "validate_topic",
]

_TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNSAFE_KEY_CHAR = re.compile(r"[\\\x00-\x1f]")


def validate_key(key: object) -> str:
    """Check that ``key`` is a portable object key that cannot escape its store.

    Keys are ``/``-separated, non-empty, relative, with no empty, ``.`` or ``..`` segment, no
    backslash and no control character, and at most 1024 bytes of UTF-8.

    :raises InvalidKeyError: naming the key and the rule it breaks.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"object key must be a non-empty string, got {key!r}")
    if len(key.encode("utf-8")) > 1024:
        raise InvalidKeyError(f"object key is longer than 1024 bytes: {key[:60]!r}...")
    if key.startswith("/"):
        raise InvalidKeyError(f"object key {key!r} is absolute; use a relative key like 'a/b'")
    if _UNSAFE_KEY_CHAR.search(key):
        raise InvalidKeyError(f"object key {key!r} contains a backslash or control character")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKeyError(
                f"object key {key!r} has an empty, '.' or '..' segment; keys cannot leave the store"
            )
    return key


def validate_topic(topic: object) -> str:
    """Check that ``topic`` (or a group name) is portable: 1-64 of ``[A-Za-z0-9_-]``.

    The rule is the intersection of what SQS, MNS, NATS and Redis accept.

    :raises InvalidTopicError: naming the topic.
    """
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise InvalidTopicError(
            f"topic/group name {topic!r} is not portable: use 1-64 characters of A-Z a-z 0-9 _ -"
        )
    return topic


class _Configurable(abc.ABC):
    """Mixin for backends that can be rebuilt in another process from a config dict."""

    #: registry name of the backend (``"file"``, ``"redis"`` ...); set by each backend class.
    name: ClassVar[str] = ""

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]:
        """Return constructor kwargs that rebuild an equivalent backend in another process.

        The dict must be JSON-serializable and must not contain secret values: secrets stay as
        ``{"$env": "VAR"}`` references and are resolved where the backend is rebuilt.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections and background resources. Idempotent."""

    def __enter__(self) -> _Configurable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- ObjectStore


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of one stored object.

    :param key: the object key.
    :param size: size in bytes.
    :param last_modified: POSIX timestamp, when the backend knows it.
    :param etag: backend-specific content tag, when the backend has one.
    """

    key: str
    size: int
    last_modified: float | None = None
    etag: str | None = None


class ObjectStore(_Configurable):
    """A flat key -> bytes store (S3-like). Keys are validated by :func:`validate_key`.

    Primitives: :meth:`put`, :meth:`get`, :meth:`head`, :meth:`delete`, :meth:`list`,
    :meth:`to_config`. Derived: :meth:`exists`, :meth:`delete_prefix`, :meth:`get_many`.
    """

    #: whether :meth:`get` serves byte ranges natively (otherwise it may fetch and slice).
    supports_range_get: bool = True
    #: whether ``put(..., if_absent=True)`` is atomic on this backend.
    supports_conditional_put: bool = True
    #: whether the data stays on this machine (memory, file): copying then beats compressing.
    same_host: bool = False

    @abc.abstractmethod
    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically.

        :param if_absent: write only if no object has that key (write-once objects).
        :raises AlreadyExistsError: when ``if_absent`` and the key exists.
        """

    @abc.abstractmethod
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Return the object's bytes, or the range ``[start, end)`` as ``data[start:end]`` would.

        Negative bounds are not supported (they are not portable); ``end`` past the object is
        clamped as slicing does.

        :raises NotFoundError: the key does not exist.
        """

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Return the object's metadata.

        :raises NotFoundError: the key does not exist.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object.

        :raises NotFoundError: the key does not exist.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix`` (a plain string), sorted by key."""

    # ---- derived
    def exists(self, key: str) -> bool:
        """Return whether ``key`` exists."""
        try:
            self.head(key)
        except NotFoundError:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many were deleted."""
        count = 0
        for info in list(self.list(prefix)):
            try:
                self.delete(info.key)
                count += 1
            except NotFoundError:
                pass  # someone else deleted it meanwhile: the goal is reached either way
        return count

    def get_many(self, keys: builtins.list[str]) -> builtins.list[bytes]:
        """Return the contents of several objects, in order."""
        return [self.get(k) for k in keys]

    @staticmethod
    def _check_range(start: int | None, end: int | None) -> None:
        if (start is not None and start < 0) or (end is not None and end < 0):
            raise ValueError(f"byte range bounds must be >= 0, got start={start} end={end}")


# --------------------------------------------------------------------------- PubSub


class Message:
    """A received message. Call :meth:`ack` once processed; un-acked messages are redelivered.

    :param data: the message body.
    :param topic: the topic it was published to.
    :param id: a backend-specific message id.
    :param deliveries: how many times this message has been delivered (1 on first delivery).
    :param receipt: backend-specific handle for batch acknowledgement (see ``receipt``).
    """

    __slots__ = (
        "_ack",
        "_nack",
        "_touch",
        "acked",
        "data",
        "deliveries",
        "id",
        "receipt",
        "topic",
    )

    def __init__(
        self,
        data: bytes,
        *,
        topic: str,
        id: str,
        deliveries: int = 1,
        ack: Callable[[], None] | None = None,
        nack: Callable[[], None] | None = None,
        touch: Callable[[], None] | None = None,
        receipt: object = None,
    ) -> None:
        self.data = data
        self.topic = topic
        self.id = id
        self.deliveries = deliveries
        self.acked = False
        self._ack = ack
        self._nack = nack
        self._touch = touch
        #: what the backend that delivered the message needs to settle it in a batch
        #: (:meth:`Subscription.ack_many`); opaque to everyone else.
        self.receipt = receipt

    def ack(self) -> None:
        """Confirm processing; the message will not be delivered again. Idempotent."""
        if not self.acked and self._ack is not None:
            self._ack()
        self.acked = True

    def touch(self) -> None:
        """Renew the lease: restart this message's visibility timeout (long-running work)."""
        if not self.acked and self._touch is not None:
            self._touch()

    def nack(self) -> None:
        """Give the message back for immediate redelivery (to this or another group member)."""
        if not self.acked and self._nack is not None:
            self._nack()
        self.acked = True

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, id={self.id!r}, size={len(self.data)})"


class Subscription(abc.ABC):
    """A consumer of one topic within one group. Primitives: :meth:`get_many`, :meth:`close`."""

    topic: str
    group: str | None

    @abc.abstractmethod
    def get_many(self, max_messages: int = 10, timeout: float | None = None) -> list[Message]:
        """Wait up to ``timeout`` seconds (``None``: forever); return up to ``max_messages``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop consuming. Un-acked messages will be redelivered. Idempotent."""

    def ack_many(self, messages: Iterable[Message]) -> None:
        """Acknowledge several received messages; like calling :meth:`Message.ack` on each.

        Backends override it to settle the batch in one round trip (one transaction, one
        ``XACK``...); the default acks them one by one.
        """
        for message in messages:
            message.ack()

    def get(self, timeout: float | None = None) -> Message | None:
        """Return one message, or ``None`` when ``timeout`` seconds pass without one."""
        got = self.get_many(1, timeout)
        return got[0] if got else None

    def __iter__(self) -> Iterator[Message]:
        while True:
            yield from self.get_many(10, None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PubSub(_Configurable):
    """Topics with consumer groups.

    A message published to a topic is delivered once to **each group** that exists on the topic
    when it is published: subscribers sharing a group split the messages (work queue), distinct
    groups each get every message (fan-out). ``subscribe(topic)`` without a group makes a private
    group that lives as long as the subscription. A message not acked within the subscription's
    ``visibility_timeout`` is redelivered to a member of its group.

    Primitives: :meth:`publish`, :meth:`subscribe`, :meth:`ensure_group`, :meth:`delete_topic`,
    :meth:`to_config`.
    """

    #: the largest message body the backend accepts; larger publishes raise PayloadTooLargeError.
    #: An instance may lower it (a backend paired with a smaller queue).
    max_message_bytes: int = 256 * 1024
    #: whether one consumer receives a group's messages in publish order. Where it is False
    #: (SQS without ``ordered=True``), order is best effort and code must not rely on it.
    preserves_order: bool = True

    @abc.abstractmethod
    def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` to every group of ``topic``.

        :raises PayloadTooLargeError: ``data`` is over :attr:`max_message_bytes`.
        """

    @abc.abstractmethod
    def subscribe(
        self, topic: str, group: str | None = None, *, visibility_timeout: float | None = None
    ) -> Subscription:
        """Join ``group`` on ``topic`` (creating the group if needed) and return a subscription.

        :param visibility_timeout: seconds a received message stays invisible to the group
            before it is redelivered unless acked; ``None`` uses the backend's default.
        """

    @abc.abstractmethod
    def ensure_group(self, topic: str, group: str) -> None:
        """Create ``group`` on ``topic`` if missing; messages published from now on wait for it."""

    @abc.abstractmethod
    def delete_topic(self, topic: str) -> None:
        """Delete the topic with all its groups and pending messages; idempotent.

        A missing topic is not an error. Afterwards the topic has no group, so a publish reaches
        nobody until :meth:`ensure_group` or :meth:`subscribe` creates one again. Subscriptions
        still open on the topic stop receiving (some backends raise
        :class:`~faasml.errors.NotFoundError` from them); closing them is harmless.

        :raises InvalidTopicError: ``topic`` is not a portable name.
        """

    def publish_many(self, topic: str, items: list[bytes]) -> None:
        """Publish several messages; backends may batch them."""
        for data in items:
            self.publish(topic, data)


# --------------------------------------------------------------------------- Function

InvocationStatus = Literal["running", "succeeded", "failed", "unknown"]


@dataclass
class Invocation:
    """Handle on an asynchronous invocation.

    Platforms that cannot report on an invocation leave ``status`` as ``"unknown"``; the executor
    then relies on completion messages and timeouts.

    :param id: the platform's invocation or request id.
    :param status: last known status.
    :param error: the platform-level failure (crash, timeout), when ``status == "failed"``.
    :param submitted_at: ``time.monotonic()`` at submission.
    """

    id: str
    status: InvocationStatus = "unknown"
    error: BaseException | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    _poll: Callable[[Invocation], None] | None = field(default=None, repr=False)

    def poll(self) -> InvocationStatus:
        """Refresh and return :attr:`status` (cheap; never blocks)."""
        if self._poll is not None and self.status in ("running", "unknown"):
            self._poll(self)
        return self.status


class Function(abc.ABC):
    """A FaaS platform able to run faasml's handler on a bytes payload.

    The handler on the platform is ``handler(payload: bytes) -> bytes``; for faasml's executor it
    is :func:`faasml.runtime.handle`. Primitives: :meth:`invoke`, :meth:`invoke_async`.
    """

    name: ClassVar[str] = ""
    #: the largest invocation payload the platform accepts.
    max_payload_bytes: ClassVar[int] = 256 * 1024
    #: how many invocations the backend runs at once (the executor sizes its windows by it).
    concurrency: int = 1
    #: the per-invocation time limit in seconds that the platform enforces.
    timeout: float = 900.0

    @abc.abstractmethod
    def invoke(self, payload: bytes) -> bytes:
        """Run the handler on ``payload`` and wait for its return value.

        :raises InvocationTimeoutError: the handler ran past :attr:`timeout`.
        :raises WorkerDiedError: the process running it died.
        :raises FunctionError: the handler raised (platform-level error).
        """

    @abc.abstractmethod
    def invoke_async(self, payload: bytes) -> Invocation:
        """Start the handler on ``payload`` and return at once."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers and connections. Idempotent."""

    #: whether :meth:`deploy` creates the platform function (cloud providers); ``False`` for
    #: backends that run the handler themselves (``local``).
    deployable: ClassVar[bool] = False

    def deploy(
        self,
        *,
        secret: str,
        environment: Mapping[str, str] | None = None,
        dependencies: bool = True,
    ) -> str:
        """Create or update the platform function this backend invokes (``faasml deploy``).

        :param secret: the signing secret the driver uses; the function gets it as
            ``FAASML_SECRET`` and it never appears in logs, reprs or errors.
        :param environment: more variables for the function (``FAASML_HANDLER`` selects another
            bytes handler than :func:`faasml.runtime.handle`).
        :param dependencies: bundle faasml's dependencies for the platform (pip, binary wheels);
            ``False`` when the platform provides them (a layer, an image).
        :returns: one line saying what was deployed where.
        :raises ConfigurationError: the backend runs functions itself, or lacks a deploy option.
        """
        raise ConfigurationError(
            f"the {self.name or type(self).__name__} provider runs functions itself; "
            "there is nothing to deploy"
        )

    def environment(self) -> Mapping[str, str]:
        """Environment the handler sees beyond the platform's own (secret values redacted)."""
        return {}

    def __enter__(self) -> Function:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

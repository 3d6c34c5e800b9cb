"""NATS JetStream PubSub: one stream per topic, one pull consumer per faasml group.

Mapping onto JetStream:

* topic ``t`` is the stream ``<stream_prefix>_t`` bound to the subject
  ``faasml.<stream_prefix>.t``. The prefix is in the subject too, so two deployments with
  different prefixes on one server never collide on "subjects overlap";
* streams use **file** storage (messages survive a server restart) and **interest** retention:
  a message is kept until every consumer that existed when it was published has acked it, and a
  message published while no consumer exists is dropped at once, which is exactly the faasml
  contract. :data:`MAX_AGE` caps how long an un-acked message is kept;
* a group is a durable pull consumer (``deliver_policy=new``, explicit acks,
  ``ack_wait`` = visibility timeout) created by :meth:`NATSPubSub.ensure_group` or
  :meth:`NATSPubSub.subscribe`. ``ack_wait`` belongs to the consumer, so it is shared by the
  group: subscribing with another ``visibility_timeout`` updates it for every member;
* :meth:`NATSPubSub.delete_topic` deletes the topic's stream, with its consumers and messages;
* ``subscribe(topic)`` without a group creates an ephemeral pull consumer, deleted on close (or
  by the server after :data:`ANON_INACTIVE_THRESHOLD` seconds without a pull, if the process
  died);
* ``deliveries`` is JetStream's ``num_delivered``; ack / nack / touch are ``+ACK`` / ``-NAK`` /
  ``+WPI``; publishes wait for the stream's acknowledgement and carry a ``Nats-Msg-Id`` so a
  publish retried after a connection error is de-duplicated by the server.

Leases: JetStream acks by stream sequence and does not check which delivery an ack belongs to, so
a late ack from a consumer whose lease ran out would delete the copy another member is now
processing. Each subscription therefore records when every message arrived, and ack, nack and
touch become no-ops once the lease (``ack_wait`` minus a safety margin covering the network
round trip) has expired: the message is redelivered and processed again, never lost.

nats-py is asyncio-only: each :class:`NATSPubSub` runs one private event loop in a daemon thread
and the synchronous methods submit coroutines to it with ``run_coroutine_threadsafe``. Acks, naks
and in-progress signals are queued to the loop without waiting (JetStream does not answer them
anyway); they go out in order and close() flushes them. Publishes take a shorter path than
``run_coroutine_threadsafe``: the caller registers one ``concurrent.futures.Future`` per message
under a reply subject of a private PubAck inbox, one ``call_soon_threadsafe`` queues the PUBs
(no task, no ``wait_for``), and the inbox callback completes the future when the stream's PubAck
arrives; the caller still returns only after that acknowledgement. Pulls are issued directly
(``$JS.API.CONSUMER.MSG.NEXT``) on a private inbox rather than through nats-py's ``fetch``,
because the lease bookkeeping needs every message's arrival time, including messages that arrive
after a pull call has already returned.

Core-NATS mode is not implemented: queue groups would give work sharing and fan-out, but no
persistence, acks or redelivery, so every lease test of the contract would fail by design.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import json
import logging
import re
import threading
import time
import types
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

from faasml.config import resolve_secret
from faasml.errors import (
    AuthenticationError,
    ConfigurationError,
    FaaSMLError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
)
from faasml.interfaces import Message, PubSub, Subscription, validate_topic
from faasml.storage._common import exportable_secret

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription
    from nats.js import JetStreamContext

__all__ = ["NATSPubSub", "NATSSubscription"]

T = TypeVar("T")

#: delays (seconds) before the retries of an idempotent call after a connection error.
RETRY_DELAYS: tuple[float, ...] = (0.1, 0.2, 0.4)
#: seconds one JetStream API request or publish may take before it counts as failed.
REQUEST_TIMEOUT = 5.0
#: longest single pull request; ``timeout=None`` waits in slices of this length.
PULL_SLICE = 5.0
#: seconds to wait for the answer to a ``no_wait`` pull (normally a round trip).
NO_WAIT_PATIENCE = 1.0
#: seconds a waiting pull request outlives the call that sent it (see ``_request``).
LINGER_EXTRA = 0.1
#: streams drop messages older than this even if a consumer has not acked them (seconds).
MAX_AGE = 7 * 24 * 3600.0
#: the server deletes an anonymous subscription's consumer after this long without pulls.
ANON_INACTIVE_THRESHOLD = 3600.0
#: bytes of ``max_payload`` kept for the ``Nats-Msg-Id`` header of each publish.
HEADER_RESERVE = 128
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_log = logging.getLogger(__name__)


def redact_nats_url(url: str) -> str:
    """Return ``url`` with any user info (user/password or token) replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.username and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = "***@" + host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _Loop:
    """A private asyncio event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for its result.

        :raises TimeoutError: it took longer (the coroutine is cancelled).
        """
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:.1f} s") from None

    def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and join its thread. Idempotent."""
        if self.loop.is_closed():
            return
        if self.thread.is_alive():
            # Tasks left pending on a closed loop complain when they are garbage collected.
            with contextlib.suppress(Exception):
                self.run(_cancel_tasks(), 5.0)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


async def _cancel_tasks() -> None:
    """Cancel and await every other task of the running loop."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


def _shutdown(loop: _Loop, holder: dict[str, Any]) -> None:
    """Close the connection and stop the loop; also run by a finalizer if close() was forgotten."""
    nc = holder.pop("nc", None)
    if nc is not None and not loop.loop.is_closed() and loop.thread.is_alive():
        with contextlib.suppress(Exception):
            loop.run(_close_connection(nc, holder.get("tasks", set())), REQUEST_TIMEOUT + 1)
    loop.stop()


async def _close_connection(nc: Client, settling: set[asyncio.Task[None]]) -> None:
    """Send queued acks, flush, then close; a dead server must not block close()."""
    if settling:
        await asyncio.wait(list(settling), timeout=2.0)
    if nc.is_connected:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.flush(), 2.0)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2.0)


@types.coroutine
def _finish(coro: Coroutine[Any, Any, None], pending: Any) -> Generator[Any, Any, None]:
    """Run the rest of ``coro``, already stepped once and suspended on ``pending``.

    The same as ``yield from`` on a coroutine that was started outside a task: what the task
    sends or throws goes to ``coro``, what ``coro`` waits on goes to the task.
    """
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation: pass it on
            try:
                pending = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                pending = coro.send(sent)
            except StopIteration:
                return


def _check_pub_ack(msg: Msg) -> None:
    """Raise what nats-py's ``js.publish`` raises for a PubAck reporting a failure."""
    if msg.data.startswith(b'{"stream":'):
        return  # the usual PubAck, {"stream":...,"seq":...}: stored (an error starts {"error":)
    import nats.js.errors

    if not msg.data and msg.headers and msg.headers.get("Status") == "503":
        raise nats.js.errors.NoStreamResponseError
    resp = json.loads(msg.data)
    if "error" in resp:
        raise nats.js.errors.APIError.from_error(resp["error"])


class NATSPubSub(PubSub):
    """PubSub on NATS JetStream (server >= 2.9, started with ``-js``); see the module docstring.

    :param url: ``nats://[user:password@|token@]host[:port]``; credentials in the URL are
        redacted in messages but make :meth:`to_config` refuse.
    :param stream_prefix: namespace of the streams and subjects (1-32 of ``[A-Za-z0-9_-]``).
    :param visibility_timeout: ``ack_wait`` of groups created by :meth:`ensure_group`, and the
        default for :meth:`subscribe`.
    :param user: user name for user/password authentication.
    :param password: the password, as a string or ``{"$env": "VAR"}``.
    :param token: an authentication token, as a string or ``{"$env": "VAR"}``.
    :param connect_timeout: seconds one connection attempt may take; three attempts are made.
    :raises ServiceUnavailableError: the server cannot be reached (names the URL).
    :raises AuthenticationError: the server refused the credentials.
    """

    name: ClassVar[str] = "nats"
    #: NATS's default ``max_payload`` (1 MiB) minus :data:`HEADER_RESERVE`; replaced per instance
    #: by the connected server's own limit.
    max_message_bytes: int = 1024 * 1024 - HEADER_RESERVE

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        stream_prefix: str = "FAASML",
        visibility_timeout: float = 30.0,
        user: str | None = None,
        password: str | dict[str, str] | None = None,
        token: str | dict[str, str] | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if not isinstance(stream_prefix, str) or not _PREFIX_RE.match(stream_prefix):
            raise ConfigurationError(
                f"stream_prefix {stream_prefix!r} must be 1-32 characters of A-Z a-z 0-9 _ -"
            )
        if visibility_timeout <= 0:
            raise ConfigurationError(f"visibility_timeout must be > 0, got {visibility_timeout}")
        if connect_timeout <= 0:
            raise ConfigurationError(f"connect_timeout must be > 0, got {connect_timeout}")
        if urlsplit(url).scheme not in ("nats", "tls", "ws", "wss"):
            raise ConfigurationError(f"NATS URL {redact_nats_url(url)!r} must start with nats://")
        self.url = url
        self.stream_prefix = stream_prefix
        self.visibility_timeout = visibility_timeout
        self.connect_timeout = connect_timeout
        self.user = user
        self._password = password
        self._token = token
        self._endpoint = redact_nats_url(url)
        self._streams: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._pending_lock = threading.Lock()
        self._drain_scheduled = False
        self._subs: weakref.WeakSet[NATSSubscription] = weakref.WeakSet()
        self._closed = False
        self._holder: dict[str, Any] = {}
        # PubAcks: reply subject -> the future its publisher waits on (see _publish_batch).
        self._acks: dict[str, concurrent.futures.Future[Msg]] = {}
        self._ack_prefix = ""
        self._ack_seq = itertools.count()
        # Nats-Msg-Id values: unique per instance (random prefix) and per message (counter).
        self._id_prefix = uuid.uuid4().hex + "-"
        self._id_seq = itertools.count()
        self._loop = _Loop(f"faasml-nats-{stream_prefix}")
        # Stops the loop thread even if the user never calls close().
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._holder)
        try:
            self._nc: Client = self._call("connect", self._connect, idempotent=False)
        except BaseException:
            self._finalizer()
            raise
        self._holder["nc"] = self._nc
        self._holder["tasks"] = self._tasks
        self._ack_prefix = self._holder["ack_prefix"] + "."
        self._js: JetStreamContext = self._nc.jetstream(timeout=REQUEST_TIMEOUT)
        # The limit is the server's, minus room for the de-duplication header.
        self.max_message_bytes = self._nc.max_payload - HEADER_RESERVE

    # ---- plumbing
    async def _connect(self) -> Client:
        import nats
        import nats.errors

        holder = self._holder  # not self: the connection must not keep this object alive

        async def on_error(exc: Exception) -> None:
            # nats-py reports connection problems here; kept to explain a later NoServersError.
            # A refused login is remembered separately: the server closes the socket right after
            # its "-ERR", so a later attempt may only see "connection reset".
            holder["last_error"] = exc
            if isinstance(exc, nats.errors.AuthorizationError) or (
                "authorization violation" in str(exc).lower()
            ):
                holder["auth_error"] = exc

        options: dict[str, Any] = {
            "servers": [self.url],
            "connect_timeout": self.connect_timeout,
            "error_cb": on_error,
            "name": "faasml",
            # Bounded attempts for the first connection only; raised to "forever" below.
            "max_reconnect_attempts": len(RETRY_DELAYS),
            "reconnect_time_wait": RETRY_DELAYS[0],
        }
        if self.user is not None:
            options["user"] = self.user
        secret = resolve_secret(self._password, "NATS password")
        if secret is not None:
            options["password"] = secret
        token = resolve_secret(self._token, "NATS token")
        if token is not None:
            options["token"] = token
        nc = await nats.connect(**options)
        # Once connected, a lost connection is retried until the server is back: operations
        # fail on their own timeouts meanwhile, and resume when it reconnects.
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 0.5
        # One wildcard inbox receives the PubAcks of all publishes. Its callback completes the
        # publisher's concurrent future directly, so a publish costs one hand-over to the loop
        # and one back, with no task or asyncio future waiting for the answer.
        acks = self._acks  # not self: the subscription must not keep this object alive
        prefix = nc.new_inbox()

        async def on_ack(msg: Msg) -> None:
            future = acks.pop(msg.subject, None)
            if future is not None and not future.done():
                future.set_result(msg)

        await nc.subscribe(prefix + ".*", cb=on_ack)
        holder["ack_prefix"] = prefix
        return nc

    def _call(
        self,
        action: str,
        make: Callable[[], Awaitable[T]],
        *,
        timeout: float = REQUEST_TIMEOUT,
        idempotent: bool = True,
    ) -> T:
        """Run ``make()`` on the loop with faasml's error mapping and bounded retries."""
        self._check_open(action)

        return self._retrying(
            action, lambda: self._loop.run(self._connected(make), timeout + 1.0), idempotent
        )

    async def _connected(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()``, unless the connection is down (then fail this attempt at once)."""
        nc = self._holder.get("nc")
        if nc is not None and not nc.is_connected:
            # Reconnecting: fail this attempt now instead of waiting for a reply that cannot
            # come; the bounded retries give a short outage time to heal.
            import nats.errors

            raise nats.errors.ConnectionReconnectingError()
        return await make()

    def _check_open(self, action: str) -> None:
        if self._closed:
            raise ServiceUnavailableError(
                f"NATS PubSub for {self._endpoint} is closed (could not {action})",
                provider=self.name,
            )

    def _retrying(self, action: str, attempt_once: Callable[[], T], idempotent: bool) -> T:
        """Call ``attempt_once()`` with faasml's error mapping and bounded retries."""
        for attempt in range(len(RETRY_DELAYS) + 1):
            try:
                return attempt_once()
            except Exception as exc:
                mapped = self._map_error(exc, action)
                retry = (
                    idempotent
                    and isinstance(mapped, ServiceUnavailableError)
                    and attempt < len(RETRY_DELAYS)
                )
                if not retry:
                    raise mapped from exc
                time.sleep(RETRY_DELAYS[attempt] * (1.0 + 0.5 * (time.monotonic() % 1.0)))
                self._check_open(action)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _submit(self, action: str, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Queue ``make()`` for the loop without waiting for it (acks, naks, in-progress).

        JetStream does not answer acks, so waiting for the loop thread would only add two thread
        hand-overs per message; and settlements submitted in a burst share one wake-up of the
        loop. They run in submission order, before anything submitted later, and close()
        flushes them. A failure is logged: the message is then simply redelivered.
        """
        if self._closed:
            raise ServiceUnavailableError(
                f"NATS PubSub for {self._endpoint} is closed (could not {action})",
                provider=self.name,
            )
        with self._pending_lock:
            self._pending.append((action, make))
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        self._loop.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """On the loop: start one task that sends the queued settlements in order."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
            self._drain_scheduled = False
        task = self._loop.loop.create_task(self._settle_all(batch))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _settle_all(
        self, batch: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]
    ) -> None:
        for action, make in batch:
            try:
                await make()
            except Exception as exc:
                _log.warning("NATS at %s: could not %s: %s", self._endpoint, action, exc)

    def _map_error(self, exc: BaseException, action: str) -> FaaSMLError:
        """The single table mapping nats-py errors to faasml errors."""
        import nats.errors as ne
        import nats.js.errors as je

        if isinstance(exc, FaaSMLError):
            return exc
        if isinstance(exc, ne.NoServersError):
            # The reason the attempts failed says more than "no servers".
            last = self._holder.get("auth_error") or self._holder.get("last_error")
            if isinstance(last, BaseException):
                exc = last
        text = str(exc) or type(exc).__name__
        low = text.lower()
        where = f"NATS at {self._endpoint}"
        kw: dict[str, Any] = {"provider": self.name}
        if isinstance(exc, je.APIError):
            kw.update(code=str(exc.err_code) if exc.err_code else None, status=exc.code)
        if isinstance(exc, (ne.AuthorizationError, ne.InvalidUserCredentialsError)) or (
            "authorization violation" in low or "authentication" in low
        ):
            return AuthenticationError(
                f"{where} rejected the credentials while trying to {action}: {text}. Check "
                'user=, password= and token= (pass secrets as {"$env": "VAR"})',
                **kw,
            )
        if "permissions violation" in low:
            return PermissionDeniedError(f"{where}: not allowed to {action}: {text}", **kw)
        if isinstance(exc, ne.MaxPayloadError):
            return PayloadTooLargeError(
                f"{where}: message over the server's max_payload of {self._nc.max_payload} bytes",
                **kw,
            )
        if isinstance(exc, je.NotFoundError):
            return NotFoundError(f"{where}: {text} (while trying to {action})", **kw)
        if isinstance(exc, (je.ServiceUnavailableError, ne.NoRespondersError)):
            return ServiceUnavailableError(
                f"{where} did not answer a JetStream request (could not {action}): {text}. "
                "Is JetStream enabled? Start the server with `nats-server -js`",
                **kw,
            )
        if isinstance(
            exc,
            (
                ne.NoServersError,
                ne.ConnectionClosedError,
                ne.StaleConnectionError,
                ne.ConnectionReconnectingError,
                ne.OutboundBufferLimitError,
                ne.TimeoutError,
                je.NoStreamResponseError,
                asyncio.TimeoutError,
                TimeoutError,
                OSError,
            ),
        ):
            return ServiceUnavailableError(
                f"{where} is unavailable (could not {action}: {text}). Start it with "
                "`nats-server -js` or check that it listens there",
                **kw,
            )
        return ProviderError(f"{where} failed to {action}: {text}", **kw)

    def _stream_name(self, topic: str) -> str:
        return f"{self.stream_prefix}_{topic}"

    def _subject(self, topic: str) -> str:
        return f"faasml.{self.stream_prefix}.{topic}"

    async def _ensure_stream(self, topic: str) -> str:
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError
        from nats.js.errors import NotFoundError as JSNotFound

        name = self._stream_name(topic)
        if topic in self._streams:
            return name
        try:
            await self._js.stream_info(name)
        except JSNotFound:
            config = StreamConfig(
                name=name,
                subjects=[self._subject(topic)],
                retention=RetentionPolicy.INTEREST,
                storage=StorageType.FILE,
                discard=DiscardPolicy.OLD,
                max_age=MAX_AGE,
            )
            try:
                await self._js.add_stream(config)
            except BadRequestError:
                await self._js.stream_info(name)  # created concurrently by another client
        self._streams.add(topic)
        return name

    # ---- PubSub primitives
    def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` and wait until the stream has stored it.

        :raises PayloadTooLargeError: ``data`` is over :attr:`max_message_bytes`.
        """
        self.publish_many(topic, [data])

    def publish_many(self, topic: str, items: list[bytes]) -> None:
        """Publish several messages concurrently and wait until the stream stored all of them."""
        validate_topic(topic)
        for data in items:
            if len(data) > self.max_message_bytes:
                raise PayloadTooLargeError(
                    f"message of {len(data)} bytes is over the NATS limit of "
                    f"{self.max_message_bytes} bytes (max_message_bytes: the server's "
                    f"max_payload minus {HEADER_RESERVE} for headers); put large payloads in the "
                    "object store and publish their key",
                    provider=self.name,
                )
        if not items:
            return
        # One id per message for all attempts: the server drops a retried duplicate.
        ids = [self._id_prefix + str(next(self._id_seq)) for _ in items]
        action = f"publish to topic {topic!r}"
        self._check_open(action)

        def attempt() -> None:
            if topic not in self._streams:
                self._loop.run(
                    self._connected(lambda: self._ensure_stream(topic)), REQUEST_TIMEOUT + 1.0
                )
            try:
                self._publish_batch(topic, items, ids)
            except Exception:
                self._streams.discard(topic)  # maybe deleted: look it up again next time
                raise

        self._retrying(action, attempt, idempotent=True)

    def _publish_batch(self, topic: str, items: list[bytes], ids: list[str]) -> None:
        """Publish ``items`` in one hand-over to the loop and wait for all their PubAcks.

        Each message is a plain NATS publish whose reply subject is under the PubAck inbox
        (``$JS.API`` is not involved: the stream answers on the reply subject once it has stored
        the message). The publishes are pipelined; the caller waits on one concurrent future per
        message, completed by the inbox callback, and raises the first failure.
        """
        subject = self._subject(topic)
        stream = self._stream_name(topic)
        acks = self._acks
        prefix = self._ack_prefix
        sends: list[tuple[bytes, str, dict[str, str]]] = []
        futures: list[tuple[str, concurrent.futures.Future[Msg]]] = []
        for data, mid in zip(items, ids, strict=True):
            reply = prefix + str(next(self._ack_seq))
            future: concurrent.futures.Future[Msg] = concurrent.futures.Future()
            acks[reply] = future
            futures.append((reply, future))
            sends.append((data, reply, {"Nats-Msg-Id": mid, "Nats-Expected-Stream": stream}))
        deadline = time.monotonic() + REQUEST_TIMEOUT * 2
        try:
            self._loop.loop.call_soon_threadsafe(self._start_publishes, subject, sends, futures)
            for _, future in futures:
                try:
                    msg = future.result(max(deadline - time.monotonic(), 0.0))
                except concurrent.futures.TimeoutError:
                    raise TimeoutError(f"no PubAck within {REQUEST_TIMEOUT * 2:.1f} s") from None
                _check_pub_ack(msg)
        finally:
            for reply, _ in futures:
                acks.pop(reply, None)

    def _start_publishes(
        self,
        subject: str,
        sends: list[tuple[bytes, str, dict[str, str]]],
        futures: list[tuple[str, concurrent.futures.Future[Msg]]],
    ) -> None:
        """On the loop: send a batch of publishes (see _publish_batch).

        ``nc.publish`` only queues the command for nats-py's flusher and normally completes
        without suspending, so the coroutine is stepped right here instead of in a new task (one
        task and one loop iteration less per publish); a task takes over only if it suspends
        (outbound buffer full).
        """
        coro = self._send_publishes(subject, sends, futures)
        try:
            pending = coro.send(None)
        except StopIteration:
            return
        task = self._loop.loop.create_task(_finish(coro, pending))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _send_publishes(
        self,
        subject: str,
        sends: list[tuple[bytes, str, dict[str, str]]],
        futures: list[tuple[str, concurrent.futures.Future[Msg]]],
    ) -> None:
        nc = self._nc
        try:
            if not nc.is_connected:
                # Reconnecting: fail now instead of waiting for an answer that cannot come.
                import nats.errors

                raise nats.errors.ConnectionReconnectingError()
            for data, reply, headers in sends:
                await nc.publish(subject, data, reply=reply, headers=headers)
        except BaseException as exc:
            for _, future in futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _ensure_consumer(
        self, topic: str, group: str, ack_wait: float | None
    ) -> tuple[str, str]:
        """Create the durable consumer of ``group``; with ``ack_wait``, also make it current."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError as JSNotFound

        stream = await self._ensure_stream(topic)
        try:
            info = await self._js.consumer_info(stream, group)
        except JSNotFound:
            info = None
        wanted = self.visibility_timeout if ack_wait is None else ack_wait
        if info is None or (ack_wait is not None and info.config.ack_wait != ack_wait):
            config = ConsumerConfig(
                durable_name=group,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=wanted,
                max_deliver=-1,
                filter_subject=self._subject(topic),
            )
            # Creating an existing durable with a changed ack_wait updates it in place.
            await self._js.add_consumer(stream, config)
        return stream, group

    def ensure_group(self, topic: str, group: str) -> None:
        """Create the durable consumer ``group`` on ``topic`` if missing (idempotent)."""
        validate_topic(topic)
        validate_topic(group)
        self._call(
            f"create group {group!r} on topic {topic!r}",
            lambda: self._ensure_consumer(topic, group, None),
        )

    def delete_topic(self, topic: str) -> None:
        """Delete the topic's stream with its consumers (groups) and messages; idempotent.

        A publish afterwards creates the stream again, with no consumer, so its message is
        dropped at once (interest retention) until a group is created again.

        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)

        async def delete() -> None:
            from nats.js.errors import NotFoundError as JSNotFound

            self._streams.discard(topic)
            with contextlib.suppress(JSNotFound):
                await self._js.delete_stream(self._stream_name(topic))

        self._call(f"delete topic {topic!r}", delete)

    def subscribe(
        self, topic: str, group: str | None = None, *, visibility_timeout: float | None = None
    ) -> NATSSubscription:
        """Join ``group`` on ``topic`` (creating it if needed) and return a subscription.

        :param group: the group; ``None`` makes an ephemeral consumer deleted on close.
        :param visibility_timeout: the group's ``ack_wait``; ``None`` keeps an existing group's
            and uses the PubSub's default for a new one.
        """
        validate_topic(topic)
        if group is not None:
            validate_topic(group)
        if visibility_timeout is not None and visibility_timeout <= 0:
            raise ConfigurationError(f"visibility_timeout must be > 0, got {visibility_timeout}")

        async def create() -> tuple[str, str, float]:
            from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

            if group is not None:
                stream, name = await self._ensure_consumer(topic, group, visibility_timeout)
                info = await self._js.consumer_info(stream, name)
                return stream, name, float(info.config.ack_wait or self.visibility_timeout)
            stream = await self._ensure_stream(topic)
            vt = self.visibility_timeout if visibility_timeout is None else visibility_timeout
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=vt,
                max_deliver=-1,
                filter_subject=self._subject(topic),
                inactive_threshold=ANON_INACTIVE_THRESHOLD,
            )
            info = await self._js.add_consumer(stream, config)
            return stream, info.name, vt

        stream, consumer, ack_wait = self._call(f"subscribe to topic {topic!r}", create)
        sub = NATSSubscription(self, topic, group, stream, consumer, ack_wait)
        try:
            self._call(f"subscribe to topic {topic!r}", sub._start)
        except BaseException:
            sub.close()
            raise
        self._subs.add(sub)
        return sub

    def to_config(self) -> dict[str, Any]:
        """Return constructor kwargs that rebuild this PubSub elsewhere.

        :raises ConfigurationError: a password or token was given literally (as an argument or in
            the URL); only ``{"$env": "VAR"}`` references may travel to workers.
        """
        parts = urlsplit(self.url)
        if parts.username or parts.password is not None:
            raise ConfigurationError(
                f"the NATS URL {self._endpoint!r} embeds credentials, which cannot be put in a "
                'config that travels to workers; pass user= and password={"$env": "VAR"} or '
                'token={"$env": "VAR"} instead'
            )
        config: dict[str, Any] = {
            "url": self.url,
            "stream_prefix": self.stream_prefix,
            "visibility_timeout": self.visibility_timeout,
            "connect_timeout": self.connect_timeout,
        }
        if self.user is not None:
            config["user"] = self.user
        for option, value in (("password", self._password), ("token", self._token)):
            reference = exportable_secret(value, option, what=f"the NATS {option}")
            if reference is not None:
                config[option] = reference
        return config

    def close(self) -> None:
        """Close the subscriptions, flush pending acks, disconnect and stop the loop thread.

        Idempotent.
        """
        if self._closed:
            return
        for sub in list(self._subs):
            with contextlib.suppress(FaaSMLError):
                sub.close()
        self._closed = True
        self._finalizer()

    def __repr__(self) -> str:
        return f"NATSPubSub(url={self._endpoint!r}, stream_prefix={self.stream_prefix!r})"


class _Lease:
    """Client-side view of one delivery's lease, so stale acks can be recognised."""

    __slots__ = ("expires", "msg")

    def __init__(self, msg: Msg, expires: float) -> None:
        self.msg = msg
        self.expires = expires


class NATSSubscription(Subscription):
    """A pull subscription on one JetStream consumer.

    Pull requests are published to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with a
    reply subject under a private inbox; a callback time-stamps every arriving message. Messages
    that arrive after a pull call returned wait in a local queue for the next call, unless their
    lease expired meanwhile (then the server redelivers them and the local copy is dropped).
    """

    def __init__(
        self,
        pubsub: NATSPubSub,
        topic: str,
        group: str | None,
        stream: str,
        consumer: str,
        ack_wait: float,
    ) -> None:
        self.topic = topic
        self.group = group
        self.visibility_timeout = ack_wait
        self._ps = pubsub
        self._stream = stream
        self._consumer = consumer
        # Covers the one-way trip of the delivery and of the ack: an ack sent later than this
        # before the server's deadline might arrive after the message was handed to someone else.
        self._margin = min(0.25, ack_wait * 0.1)
        self._inbox = ""
        self._requests = 0
        self._sub: NatsSubscription | None = None
        self._queue: asyncio.Queue[tuple[float, Msg]] | None = None
        self._closed = False

    async def _start(self) -> None:
        nc = self._ps._nc
        self._queue = asyncio.Queue()
        self._inbox = nc.new_inbox()
        queue = self._queue

        async def arrived(msg: Msg) -> None:
            queue.put_nowait((time.monotonic(), msg))

        # Each pull gets its own reply subject under the inbox, so a status message ("no
        # messages", "request expired") can be matched to the request it ends.
        self._sub = await nc.subscribe(self._inbox + ".*", cb=arrived)

    def get_many(self, max_messages: int = 10, timeout: float | None = None) -> list[Message]:
        """Wait up to ``timeout`` seconds (``None``: forever) and return 0..``max_messages``.

        :raises NotFoundError: the consumer was deleted under this subscription.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while not self._closed:
            remaining = PULL_SLICE if deadline is None else deadline - time.monotonic()
            wait = min(max(remaining, 0.0), PULL_SLICE)
            got = self._ps._call(
                f"receive from topic {self.topic!r}",
                functools.partial(self._pull, max_messages, wait),
                timeout=wait + REQUEST_TIMEOUT,
            )
            if got or (deadline is not None and time.monotonic() >= deadline):
                return got
        return []

    async def _pull(self, count: int, wait: float) -> list[Message]:
        """Serve queued messages, else ask for what is available, else wait for one message.

        The waiting request asks for a single message on purpose: once one message arrived the
        call returns, and a request for ``count`` would go on collecting messages nobody waits
        for, hiding them from the other members of the group until their leases ran out.
        """
        out = self._take_ready(count)
        if out or self._closed:
            return out
        out = await self._request(count, None)
        if out or wait < 0.01:
            return out
        out = await self._request(1, wait)
        if out and count > 1:
            # No second round trip for a top-up: that would delay the message just received.
            # Whatever else already arrived is taken; the next call asks for the rest.
            await asyncio.sleep(0)
            out.extend(self._take_ready(count - len(out)))
        return out

    async def _request(self, batch: int, wait: float | None) -> list[Message]:
        """Send one pull request (``wait=None``: answer at once) and collect its messages."""
        assert self._queue is not None
        request: dict[str, Any] = {"batch": batch}
        if wait is None:
            request["no_wait"] = True
            limit = NO_WAIT_PATIENCE
        else:
            # The request outlives this call by LINGER_EXTRA on purpose. nats-server 2.9 counts
            # a delivery, without sending it, when a redelivery falls due at the very moment
            # the only waiting request expires; the copy then comes back one ack_wait later
            # with an inflated count. Outliving the call means the caller's next request is
            # already waiting at that moment, and it breaks the alignment between "lease
            # expires" and "request expires" that a receive loop with timeout == ack_wait
            # would otherwise produce. A message delivered to the request after this call
            # returned waits in the local queue for the next call.
            request["expires"] = int((wait + LINGER_EXTRA) * 1e9)
            limit = wait
        self._requests += 1
        reply = f"{self._inbox}.{self._requests}"
        await self._ps._nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer}",
            json.dumps(request).encode(),
            reply=reply,
        )
        out: list[Message] = []
        deadline = time.monotonic() + limit
        while len(out) < batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                arrival, msg = await asyncio.wait_for(self._queue.get(), left)
            except asyncio.TimeoutError:
                if wait is None and not out:
                    # JetStream answers a no_wait pull at once, if only with "no messages":
                    # silence means the consumer is gone (pulls to a missing consumer are dropped
                    # silently) or the server is unreachable.
                    await self._check_consumer()
                break
            status = self._status(msg)
            if status is None:
                lease = _Lease(msg, arrival + self.visibility_timeout - self._margin)
                out.append(self._message(lease))
            elif msg.subject != reply:
                continue  # the end of an earlier request that outlived its call
            elif status == "503":
                # No responders: the consumer is gone, or JetStream is still starting up after a
                # server restart. Only the first is an error.
                await self._check_consumer()
                await asyncio.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))
                break
            elif status != "100":
                break  # 404 no messages, 408 request over, 409 limits: this request is done
        return out

    async def _check_consumer(self) -> None:
        """Raise NotFoundError if this subscription's consumer no longer exists."""
        from nats.js.errors import NotFoundError as JSNotFound

        try:
            await asyncio.wait_for(self._ps._js.consumer_info(self._stream, self._consumer), 1.0)
        except JSNotFound as exc:
            raise self._gone() from exc
        except Exception:
            pass  # JetStream not answering yet: a temporary condition, the caller polls again

    def _status(self, msg: Msg) -> str | None:
        """Return a status message's code (after handling the fatal ones), ``None`` for data."""
        if not msg.headers or msg.data:
            return None
        status = msg.headers.get("Status")
        if status is None:
            return None
        if status == "100":
            return status  # idle heartbeat
        if status == "409" and "deleted" in msg.headers.get("Description", "").lower():
            raise self._gone()
        return status

    def _gone(self) -> NotFoundError:
        return NotFoundError(
            f"the consumer {self._consumer!r} of topic {self.topic!r} on NATS at "
            f"{self._ps._endpoint} was deleted (an anonymous subscription idle for "
            f"{ANON_INACTIVE_THRESHOLD:.0f} s, or removed by an administrator)",
            provider=self._ps.name,
        )

    def _take_ready(self, count: int) -> list[Message]:
        """Take up to ``count`` queued messages whose lease is still valid."""
        assert self._queue is not None
        out: list[Message] = []
        now = time.monotonic()
        while len(out) < count and not self._queue.empty():
            arrival, msg = self._queue.get_nowait()
            if self._status(msg) is not None:
                continue
            lease = _Lease(msg, arrival + self.visibility_timeout - self._margin)
            if lease.expires <= now:
                continue  # its lease ran out while queued: the server redelivers it
            out.append(self._message(lease))
        return out

    def _message(self, lease: _Lease) -> Message:
        meta = lease.msg.metadata
        return Message(
            lease.msg.data,
            topic=self.topic,
            id=str(meta.sequence.stream),
            deliveries=int(meta.num_delivered),
            ack=lambda: self._settle(lease, "ack"),
            nack=lambda: self._settle(lease, "nack"),
            touch=lambda: self._settle(lease, "touch"),
        )

    def _settle(self, lease: _Lease, what: str) -> None:
        """Send ack / nak / in-progress, unless the lease already ran out (then it is stale)."""
        sent_at = time.monotonic()
        if sent_at >= lease.expires:
            return
        msg = lease.msg

        async def send() -> None:
            if what == "ack":
                await msg.ack()
            elif what == "nack":
                await msg.nak()
            else:
                await msg.in_progress()

        self._ps._submit(f"{what} message {msg.metadata.sequence.stream}", send)
        if what == "touch":
            lease.expires = sent_at + self.visibility_timeout - self._margin

    def close(self) -> None:
        """Stop consuming; an anonymous subscription's consumer is deleted. Idempotent.

        Messages held but not acked are redelivered after the visibility timeout.
        """
        if self._closed:
            return
        self._closed = True
        if self._ps._closed:
            return

        async def stop() -> None:
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
            if self.group is None:
                with contextlib.suppress(Exception):
                    await self._ps._js.delete_consumer(self._stream, self._consumer)

        with contextlib.suppress(FaaSMLError):
            self._ps._call(f"close subscription to topic {self.topic!r}", stop, idempotent=False)

    def __repr__(self) -> str:
        return (
            f"NATSSubscription(topic={self.topic!r}, group={self.group!r}, "
            f"consumer={self._consumer!r})"
        )

"""Redis Streams PubSub: one stream per topic, one consumer group per faasml group.

Mapping onto Redis (under ``prefix``, default ``"faasml:"``):

* topic ``t`` is the stream ``<prefix>topic:t``; a message is one entry with a single field ``d``;
* a group is a consumer group created at ``$`` (so it receives only what is published after it
  exists); every :class:`RedisSubscription` is its own consumer in it;
* ``subscribe(topic)`` without a group creates a private group ``~anon:<hex>`` (``~`` is not
  allowed in user group names, so it cannot clash) and destroys it on close;
* publishes use ``XADD NOMKSTREAM``: a topic without a stream has no group, so nothing is
  written, and :meth:`RedisPubSub.delete_topic` (``DEL`` of the stream) leaves no key behind;
* delivery is ``XREADGROUP``; an entry left un-acked for longer than the visibility timeout is
  taken over with ``XAUTOCLAIM`` (checked before every blocking read, and reads block in slices of
  at most 100 ms so an idle subscriber notices expired entries promptly);
* ``deliveries`` is the pending-entry delivery counter;
* :meth:`Message.ack` is ``XACK``; :meth:`Message.nack` ``XCLAIM``-s the entry to itself with an
  idle time of ten years, which makes it immediately claimable by any member of the group,
  including this one (no re-``XADD``, which would reach every group again), and
  :meth:`Message.touch` ``XCLAIM``-s it with idle time 0. Nack, touch, and an ack sent after the
  lease ran out (by the client's clock) first check, in the same Lua script, that the entry is
  still pending for this consumer with the same delivery count, so a late settlement of a copy
  whose lease ran out is a no-op and cannot delete or steal the copy handed out since. An ack
  within the lease is a plain ``XACK``: nobody else can hold the entry then.

Stream trimming: acked entries are not deleted one by one. Instead publishers and subscribers
run, at most once a second per topic, a Lua script that finds the oldest entry any group still
needs (its oldest pending entry, or the entry after its last-delivered one) and ``XTRIM MINID``-s
everything older; with no group at all the stream is emptied, since a group created later would
start at ``$`` anyway. The same script destroys private groups whose consumers have all been idle
for a day (their process died without closing) and deletes long-idle consumers with nothing
pending, so crashed workers do not pin the stream forever. ``maxlen`` adds a hard cap
(``XADD MAXLEN ~``): it bounds memory even when a group stops consuming, at the price of dropping
the oldest entries whether or not every group has read them.

Visibility timeout: it is per subscription, and a member claims entries idle for longer than
its own timeout. Members of one group should therefore use the same value; otherwise the member
with the shortest timeout takes over the others' messages early.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, ClassVar

from faasml.errors import ConfigurationError, NotFoundError, PayloadTooLargeError
from faasml.interfaces import Message, PubSub, Subscription, validate_topic
from faasml.pubsub._common import own_receipts
from faasml.storage.redis import RedisConnection, command, redact_url, redis_config

__all__ = ["RedisPubSub", "RedisSubscription"]

#: longest a single blocking XREADGROUP waits, so expired entries are claimed without delay.
BLOCK_SLICE = 0.1
#: how often (seconds) one client trims a topic's stream at most.
TRIM_INTERVAL = 1.0
#: private groups whose consumers are all idle this long (ms) are considered abandoned.
STALE_MS = 24 * 3600 * 1000
#: idle time (ms) a nack gives an entry: larger than any visibility timeout, smaller than "now".
NACK_IDLE_MS = 10 * 365 * 24 * 3600 * 1000
#: how many XAUTOCLAIM pages one fetch scans at most before reading new entries.
CLAIM_PAGES = 4
_ANON = "~anon:"
_FIELD = b"d"

# KEYS[1] stream. ARGV: group, consumer, min_idle_ms, cursor, count, pages.
# Claims entries idle longer than the visibility timeout, then reads new ones, in one round trip.
# Returns {next_cursor, {{id, deliveries, {field, value, ...}}, ...}}.
_FETCH = """
local group, consumer, want = ARGV[1], ARGV[2], tonumber(ARGV[5])
local cursor = ARGV[4]
local out = {}
for _ = 1, tonumber(ARGV[6]) do
  local r = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[3], cursor,
                       'COUNT', want - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e[2] then
      local p = redis.call('XPENDING', KEYS[1], group, e[1], e[1], 1)
      local n = 1
      if p[1] then n = p[1][4] end
      out[#out + 1] = {e[1], n, e[2]}
    end
  end
  if #out >= want or cursor == '0-0' then break end
end
if #out < want then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want - #out,
                       'STREAMS', KEYS[1], '>')
  if r then
    for _, e in ipairs(r[1][2]) do out[#out + 1] = {e[1], 1, e[2]} end
  end
end
return {cursor, out}
"""

# KEYS[1] stream. ARGV: group, consumer, id, deliveries, action ('ack' or an idle time in ms).
# Acts only while the entry is still pending for this consumer *and* for this delivery (the
# delivery counter grows on every claim): a late ack, nack or touch of a copy whose lease ran
# out must not touch the copy another member, or this one, received since. Returns 1 if done.
_SETTLE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] or p[1][4] ~= tonumber(ARGV[4]) then return 0 end
if ARGV[5] == 'ack' then return redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[5], 'JUSTID')
return 1
"""

# KEYS[1] stream. ARGV: group, consumer. Removes the consumer if it holds no pending entry (a
# consumer's pending entries become unclaimable when it is deleted).
_RETIRE = """
local ok, cs = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
for _, c in ipairs(cs) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] == ARGV[2] and info['pending'] == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
    return 1
  end
end
return 0
"""

# KEYS[1] stream. ARGV: stale_ms, anonymous-group prefix. See the module docstring.
_TRIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local stale = tonumber(ARGV[1])
local minid = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local name = info['name']
  local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], name)
  local live = false
  for _, c in ipairs(consumers) do
    local ci = {}
    for i = 1, #c, 2 do ci[c[i]] = c[i + 1] end
    if ci['idle'] < stale then
      live = true
    elseif ci['pending'] == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], name, ci['name'])
    end
  end
  if string.sub(name, 1, #ARGV[2]) == ARGV[2] and not live then
    redis.call('XGROUP', 'DESTROY', KEYS[1], name)
  else
    local need
    local pel = redis.call('XPENDING', KEYS[1], name)
    if pel[1] > 0 then
      need = pel[2]
    else
      local ms, seq = parse(info['last-delivered-id'])
      need = string.format('%.0f-%.0f', ms, seq + 1)
    end
    if minid == nil or less(need, minid) then minid = need end
  end
end
if minid == nil then return redis.call('XTRIM', KEYS[1], 'MAXLEN', 0) end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
"""


class RedisPubSub(PubSub):
    """PubSub on Redis Streams (Redis >= 6.2 for ``XAUTOCLAIM``); see the module docstring.

    :param url: ``redis://[[user]:password@]host[:port][/db]``; a password in the URL is redacted
        in messages but makes :meth:`to_config` refuse.
    :param prefix: namespace of every key this PubSub writes.
    :param password: the password, as a string or ``{"$env": "VAR"}``; only the reference form
        can be exported by :meth:`to_config`.
    :param visibility_timeout: default seconds before an un-acked message is redelivered, for
        subscriptions that do not pass their own.
    :param maxlen: optional hard cap on each topic's stream length (approximate, ``XADD MAXLEN
        ~``); the oldest entries are dropped past it even if a group has not read them.
    """

    name: ClassVar[str] = "redis"
    #: Redis accepts values up to 512 MiB, but a message that big would stall the server for every
    #: other client while it is copied; large payloads belong in the object store.
    max_message_bytes: int = 64 * 1024 * 1024

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "faasml:",
        password: str | dict[str, str] | None = None,
        visibility_timeout: float = 30.0,
        maxlen: int | None = None,
    ) -> None:
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix must be a string, got {prefix!r}")
        if visibility_timeout <= 0:
            raise ConfigurationError(f"visibility_timeout must be > 0, got {visibility_timeout}")
        if maxlen is not None and maxlen < 1:
            raise ConfigurationError(f"maxlen must be >= 1 or None, got {maxlen}")
        self.url = url
        self.prefix = prefix
        self.visibility_timeout = visibility_timeout
        self.maxlen = maxlen
        self._password = password
        self._conn = RedisConnection(url, password, 10.0, self.name)
        self._redis = self._conn.client
        self._fetch = self._redis.register_script(_FETCH)
        self._settle = self._redis.register_script(_SETTLE)
        self._retire = self._redis.register_script(_RETIRE)
        self._trim_script = self._redis.register_script(_TRIM)
        self._last_trim: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _stream(self, topic: str) -> bytes:
        return f"{self.prefix}topic:{topic}".encode()

    # ---- PubSub primitives
    def publish(self, topic: str, data: bytes) -> None:
        """Append ``data`` to the topic's stream; every group existing now will receive it.

        Not retried after a connection error: the entry may have been written already.

        :raises PayloadTooLargeError: ``data`` is over :attr:`max_message_bytes`.
        """
        validate_topic(topic)
        self._check_size(data)
        args = self._xadd(self._stream(topic), data)
        self._conn.call(
            f"publish to topic {topic!r}", lambda: command(self._redis, *args), idempotent=False
        )
        self.trim(topic, force=False)

    def publish_many(self, topic: str, items: list[bytes]) -> None:
        """Publish several messages in one round trip (a pipeline of ``XADD``)."""
        validate_topic(topic)
        for data in items:
            self._check_size(data)
        if not items:
            return
        stream = self._stream(topic)

        def send() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for data in items:
                command(pipe, *self._xadd(stream, data))
            return pipe.execute()

        self._conn.call(f"publish to topic {topic!r}", send, idempotent=False)
        self.trim(topic, force=False)

    def _xadd(self, stream: bytes, data: bytes) -> tuple[Any, ...]:
        # NOMKSTREAM: a topic without a stream has no group, so nobody would read the entry; not
        # creating the stream keeps a deleted topic deleted.
        if self.maxlen is None:
            return ("XADD", stream, "NOMKSTREAM", "*", _FIELD, data)
        return ("XADD", stream, "NOMKSTREAM", "MAXLEN", "~", self.maxlen, "*", _FIELD, data)

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_message_bytes:
            raise PayloadTooLargeError(
                f"message of {len(data)} bytes is over the Redis PubSub limit of "
                f"{self.max_message_bytes} bytes (max_message_bytes); put large payloads in the "
                "object store and publish their key",
                provider=self.name,
            )

    def ensure_group(self, topic: str, group: str) -> None:
        """Create ``group`` on ``topic`` at the stream's end if missing (idempotent)."""
        validate_topic(topic)
        validate_topic(group)
        self._create_group(topic, group)

    def _create_group(self, topic: str, group: str, consumer: str | None = None) -> None:
        import redis

        stream = self._stream(topic)

        def create() -> None:
            try:
                command(self._redis, "XGROUP", "CREATE", stream, group, "$", "MKSTREAM")
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise
            if consumer is not None:
                command(self._redis, "XGROUP", "CREATECONSUMER", stream, group, consumer)

        self._conn.call(f"create group {group!r} on topic {topic!r}", create)

    def subscribe(
        self, topic: str, group: str | None = None, *, visibility_timeout: float | None = None
    ) -> RedisSubscription:
        """Join ``group`` on ``topic`` (creating it if needed) and return a subscription.

        :param group: the group; ``None`` makes a private group destroyed on close.
        :param visibility_timeout: seconds before an un-acked message goes to another member;
            ``None`` takes the PubSub's default.
        """
        validate_topic(topic)
        vt = self.visibility_timeout if visibility_timeout is None else visibility_timeout
        if vt <= 0:
            raise ConfigurationError(f"visibility_timeout must be > 0, got {vt}")
        consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        if group is None:
            internal = f"{_ANON}{uuid.uuid4().hex}"
            stream = self._stream(topic)

            def create() -> None:
                # One transaction, so a concurrent trim never sees the group without a consumer
                # and takes it for abandoned.
                pipe = self._redis.pipeline(transaction=True)
                command(pipe, "XGROUP", "CREATE", stream, internal, "$", "MKSTREAM")
                command(pipe, "XGROUP", "CREATECONSUMER", stream, internal, consumer)
                pipe.execute()

            self._conn.call(f"subscribe to topic {topic!r}", create)
        else:
            validate_topic(group)
            internal = group
            self._create_group(topic, group, consumer)
        return RedisSubscription(self, topic, group, internal, consumer, vt)

    def delete_topic(self, topic: str) -> None:
        """Delete the topic's stream, with every group and pending entry in it; idempotent.

        A deleted topic leaves no key behind: publishing to it writes nothing until a group is
        created again (``XADD NOMKSTREAM``).

        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        stream = self._stream(topic)
        self._conn.call(f"delete topic {topic!r}", lambda: command(self._redis, "DEL", stream))
        with self._lock:
            self._last_trim.pop(stream, None)

    def trim(self, topic: str, *, force: bool = True) -> int:
        """Drop the entries of ``topic`` that no group still needs; return how many.

        Called automatically (at most once a second per topic); ``force=False`` honours that
        interval.
        """
        stream = self._stream(topic)
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_trim.get(stream, 0.0) < TRIM_INTERVAL:
                return 0
            self._last_trim[stream] = now
        removed: int = self._conn.call(
            f"trim topic {topic!r}",
            lambda: self._trim_script(keys=[stream], args=[STALE_MS, _ANON]),
        )
        return removed

    def to_config(self) -> dict[str, Any]:
        """Return constructor kwargs that rebuild this PubSub elsewhere.

        :raises ConfigurationError: the password was given literally (in ``password=`` or in the
            URL); only ``{"$env": "VAR"}`` references may travel to workers.
        """
        return redis_config(
            self.url,
            self._password,
            prefix=self.prefix,
            visibility_timeout=self.visibility_timeout,
            maxlen=self.maxlen,
        )

    def close(self) -> None:
        """Release the connection pool. Idempotent."""
        self._conn.close()

    def __repr__(self) -> str:
        return f"RedisPubSub(url={redact_url(self.url)!r}, prefix={self.prefix!r})"


class RedisSubscription(Subscription):
    """One consumer in one consumer group of one topic's stream.

    Thread-safe: several threads may call :meth:`get_many` and ack messages concurrently.
    """

    def __init__(
        self,
        pubsub: RedisPubSub,
        topic: str,
        group: str | None,
        internal_group: str,
        consumer: str,
        visibility_timeout: float,
    ) -> None:
        self.topic = topic
        self.group = group
        self.visibility_timeout = visibility_timeout
        self._ps = pubsub
        self._conn = pubsub._conn
        self._redis = pubsub._redis
        self._stream = pubsub._stream(topic)
        self._group = internal_group
        self._consumer = consumer
        self._cursor = "0-0"
        self._closed = False
        # Covers the one-way trip of an ack: one sent later than this before the lease ends
        # might arrive after another member took the entry over.
        self._margin = min(0.25, visibility_timeout * 0.1)

    def get_many(self, max_messages: int = 10, timeout: float | None = None) -> list[Message]:
        """Wait up to ``timeout`` seconds (``None``: forever) and return 0..``max_messages``.

        Expired entries of the group (un-acked past the visibility timeout, or nacked) are served
        before new ones.

        :raises NotFoundError: the group was destroyed under this subscription.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while not self._closed:
            got = self._fetch(max_messages)
            if got:
                return got
            remaining = 0.1 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return []
            got = self._block(max_messages, min(BLOCK_SLICE, remaining))
            if got:
                return got
            self._ps.trim(self.topic, force=False)
        return []

    def _fetch(self, count: int) -> list[Message]:
        action = f"receive from topic {self.topic!r}"
        asked_at = time.monotonic()
        cursor, entries = self._conn.call(
            action,
            lambda: self._ps._fetch(
                keys=[self._stream],
                args=[
                    self._group,
                    self._consumer,
                    int(self.visibility_timeout * 1000),
                    self._cursor,
                    count,
                    CLAIM_PAGES,
                ],
            ),
        )
        self._cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        return [self._message(eid, int(n), fields, asked_at) for eid, n, fields in entries]

    def _block(self, count: int, seconds: float) -> list[Message]:
        asked_at = time.monotonic()
        reply = self._conn.call(
            f"receive from topic {self.topic!r}",
            lambda: command(
                self._redis,
                "XREADGROUP",
                "GROUP",
                self._group,
                self._consumer,
                "COUNT",
                count,
                "BLOCK",
                max(1, int(seconds * 1000)),
                "STREAMS",
                self._stream,
                ">",
            ),
        )
        if not reply:
            return []
        # RESP2 answers [[stream, entries]], RESP3 (``?protocol=3`` in the URL) {stream: entries}.
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return [self._message(eid, 1, fields, asked_at) for eid, fields in entries]

    def _message(self, eid: bytes, deliveries: int, fields: Any, asked_at: float) -> Message:
        if isinstance(fields, dict):
            data = fields.get(_FIELD, b"")
        else:
            pairs = list(fields)
            data = next((pairs[i + 1] for i in range(0, len(pairs), 2) if pairs[i] == _FIELD), b"")
        mid = eid.decode()
        # The server stamped the delivery after we asked, so the lease certainly lasts until
        # asked_at + visibility_timeout; the margin covers the ack's own trip to the server.
        lease = [asked_at + self.visibility_timeout - self._margin]
        return Message(
            data,
            topic=self.topic,
            id=mid,
            deliveries=deliveries,
            ack=lambda: self._settle(mid, deliveries, "ack", lease),
            nack=lambda: self._settle(mid, deliveries, "nack", lease),
            touch=lambda: self._settle(mid, deliveries, "touch", lease),
            receipt=(self, (mid, lease)),
        )

    def ack_many(self, messages: Iterable[Message]) -> None:
        """Acknowledge several messages: one ``XACK`` for all those still within their lease.

        A message whose lease may have run out goes through the checked, one-by-one path.
        """
        now = time.monotonic()
        batch: list[Message] = []
        ids: list[str] = []
        for message, (mid, lease) in own_receipts(messages, self):
            if now < lease[0]:
                batch.append(message)
                ids.append(mid)
            else:
                message.ack()
        if not ids:
            return
        self._conn.call(
            f"ack {len(ids)} messages",
            lambda: command(self._redis, "XACK", self._stream, self._group, *ids),
        )
        for message in batch:
            message.acked = True

    def _settle(self, mid: str, deliveries: int, what: str, lease: list[float]) -> None:
        sent_at = time.monotonic()
        if what == "ack" and sent_at < lease[0]:
            # Within the lease nobody else can hold this entry (members share the visibility
            # timeout), so a plain XACK is safe and saves a Lua call on the hot path.
            self._conn.call(
                "ack message",
                lambda: command(self._redis, "XACK", self._stream, self._group, mid),
            )
            return
        action = {"ack": "ack", "nack": str(NACK_IDLE_MS), "touch": "0"}[what]
        if what == "nack":
            # A nacked entry sits anywhere in the pending list: rescan it from the start.
            self._cursor = "0-0"
        done = self._conn.call(
            f"{what} message {mid} on topic {self.topic!r}",
            lambda: self._ps._settle(
                keys=[self._stream],
                args=[self._group, self._consumer, mid, deliveries, action],
            ),
        )
        if what == "touch" and done:
            lease[0] = sent_at + self.visibility_timeout - self._margin

    def close(self) -> None:
        """Leave the group; a private group is destroyed. Un-acked messages will be redelivered.

        Idempotent. A consumer that still holds pending entries is kept (deleting it would make
        them unclaimable); the periodic trim removes it once they have been taken over.
        """
        if self._closed:
            return
        self._closed = True
        if self.group is None:
            try:
                self._conn.call(
                    f"destroy the private group of topic {self.topic!r}",
                    lambda: command(self._redis, "XGROUP", "DESTROY", self._stream, self._group),
                )
            except NotFoundError:
                return  # the topic was deleted: its groups went with it
            self._ps.trim(self.topic)
        else:
            try:
                self._conn.call(
                    f"leave group {self.group!r} of topic {self.topic!r}",
                    lambda: self._ps._retire(
                        keys=[self._stream], args=[self._group, self._consumer]
                    ),
                )
            except NotFoundError:
                pass  # the group is gone already: nothing to leave

    def __repr__(self) -> str:
        return (
            f"RedisSubscription(topic={self.topic!r}, group={self.group!r}, "
            f"consumer={self._consumer!r})"
        )

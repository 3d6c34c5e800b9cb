"""Redis object store: objects as Redis strings, big ones split into chunks.

Layout under ``prefix`` (default ``"faasml:"``)::

    <prefix>obj:<key>                  STRING  the bytes of an object up to ``chunk_size``
    <prefix>meta:<key>                 HASH    size, mtime, gen, chunks, csize (every object)
    <prefix>chunk:<key>:<gen>:<i>      STRING  chunk i of a chunked object of generation gen
    <prefix>index                      ZSET    every key, score 0, for ``list`` by lexical range

The metadata hash exists exactly when the object exists and is only ever written in one
MULTI/EXEC (or Lua script) together with the data key and the index, so readers see one write or
the other, never a mix. Chunks are written first under a fresh generation id (with an expiry,
so a writer that dies mid-upload leaves nothing behind), then a Lua script checks they are all
there, makes them persistent and flips the metadata; the previous generation's chunks are
unlinked afterwards. A reader that loses that race notices a missing chunk and starts over.

The module also holds the Redis plumbing shared with :mod:`faasml.pubsub.redis`: URL parsing
and redaction, secret handling, bounded retries and the one table that maps redis-py errors to
faasml errors.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from faasml.config import resolve_secret
from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    FaaSMLError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
)
from faasml.interfaces import ObjectInfo, ObjectStore, validate_key
from faasml.storage._common import SecretValue, clamp_range, exportable_secret

if TYPE_CHECKING:
    import redis

__all__ = ["RedisObjectStore"]

T = TypeVar("T")

#: delays (seconds) before the retries of an idempotent call after a connection error.
RETRY_DELAYS: tuple[float, ...] = (0.1, 0.2, 0.4)
#: uncommitted chunks expire after this long, so an interrupted upload cleans itself up.
CHUNK_TTL_SECONDS = 24 * 3600
#: how many keys ``list`` fetches per round trip.
LIST_BATCH = 500
#: how many times a reader starts over after losing a race with a concurrent writer.
READ_ATTEMPTS = 20


# --------------------------------------------------------------------------- shared plumbing


def command(target: Any, *args: Any) -> Any:
    """Send one raw command on a client or pipeline.

    redis-py leaves ``execute_command`` untyped; raw commands are used where the typed helpers
    would cost measurable time (``put``) or do not exist (``XGROUP CREATECONSUMER``).
    """
    return target.execute_command(*args)


def redact_url(url: str) -> str:
    """Return ``url`` with any embedded password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{userinfo}@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redis_config(url: str, password: SecretValue, **options: Any) -> dict[str, Any]:
    """The ``to_config()`` of a Redis backend: ``url``, ``options``, the password's reference.

    :raises ConfigurationError: the password was given literally, in ``password=`` or in the
        URL; only ``{"$env": "VAR"}`` references may travel to workers.
    """
    if urlsplit(url).password is not None:
        raise ConfigurationError(
            f"the Redis URL {redact_url(url)!r} embeds a password, which cannot be put in a "
            'config that travels to workers; remove it and pass password={"$env": "VAR"}'
        )
    reference = exportable_secret(password, "password", what="the Redis password")
    config: dict[str, Any] = {"url": url, **options}
    if reference is not None:
        config["password"] = reference
    return config


class RedisConnection:
    """One redis-py client plus the retry policy and the error table faasml's Redis backends share.

    redis-py's own retries are disabled: which calls are safe to repeat is decided here, per call,
    so that a non-idempotent command such as ``XADD`` is never silently sent twice.

    :param url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` or ``unix://``.
    :param password: overrides the URL's; a string or ``{"$env": "VAR"}``.
    :param socket_timeout: seconds before a stalled command fails.
    :param provider: the backend name put on errors.
    """

    def __init__(
        self, url: str, password: SecretValue, socket_timeout: float, provider: str
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.provider = provider
        #: how the retry loop waits; replaceable so tests can record the backoff delays.
        self.sleep: Callable[[float], None] = time.sleep
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"Redis URL {redact_url(url)!r} must start with redis://, rediss:// or unix://"
            )
        if parts.password is not None and password is not None:
            raise ConfigurationError(
                f"Redis URL {redact_url(url)!r} embeds a password and password= is also given; "
                "keep only password="
            )
        kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": min(socket_timeout, 5.0),
            "retry": Retry(NoBackoff(), 0),
        }
        secret = resolve_secret(password, "Redis password")
        if secret is not None:
            kwargs["password"] = secret
        try:
            self.client: redis.Redis = redis.Redis.from_url(url, **kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from exc
        options = self.client.connection_pool.connection_kwargs
        if "path" in options:
            self.endpoint = str(options["path"])
            self._start_hint = f"redis-server --unixsocket {self.endpoint}"
            self._check_hint = f"redis-cli -s {self.endpoint} ping"
        else:
            host = str(options.get("host", "localhost"))
            port = int(options.get("port", 6379))
            self.endpoint = f"{host}:{port}"
            self._start_hint = f'redis-server --daemonize yes --port {port} --save ""'
            self._check_hint = f"redis-cli -h {host} -p {port} ping"

    def map_error(self, exc: BaseException, action: str) -> FaaSMLError:
        """Translate a redis-py exception raised while doing ``action`` into a faasml error.

        This is the single error table of the Redis backends; the order of the checks matters
        because redis-py derives its authentication errors from ``ConnectionError``.
        """
        import redis.exceptions as rx

        where = f"Redis at {self.endpoint}"
        text = str(exc)
        code = text.split(" ", 1)[0] if text[:1].isupper() else None
        kw: dict[str, Any] = {"provider": self.provider, "code": code}
        if isinstance(exc, rx.AuthenticationError) or code in ("WRONGPASS", "NOAUTH"):
            return AuthenticationError(
                f"{where} rejected the credentials while trying to {action}: {text}. Check the "
                'user in the URL and the password (pass password={"$env": "VAR"})',
                **kw,
            )
        if isinstance(exc, (rx.AuthorizationError, rx.NoPermissionError)) or code == "NOPERM":
            return PermissionDeniedError(
                f"{where}: the Redis user may not {action}: {text}. Grant the command and key "
                "pattern with ACL SETUSER",
                **kw,
            )
        if isinstance(exc, (rx.ConnectionError, rx.TimeoutError)):
            return ServiceUnavailableError(
                f"{where} is unavailable (could not {action}: {text}). Start it with "
                f"`{self._start_hint}` or check it with `{self._check_hint}`",
                **kw,
            )
        if code == "NOGROUP" or "requires the key to exist" in text:
            # A missing group, or (XGROUP on a missing key) a missing stream: a deleted topic.
            return NotFoundError(f"{where}: {text} (while trying to {action})", **kw)
        if code in ("LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN"):
            return ServiceUnavailableError(
                f"{where} is temporarily unable to {action}: {text}", **kw
            )
        return ProviderError(f"{where} failed to {action}: {text}", **kw)

    @contextlib.contextmanager
    def map_errors(self, action: str) -> Iterator[None]:
        """Context manager form of :meth:`map_error` (no retries)."""
        import redis

        try:
            yield
        except redis.RedisError as exc:
            raise self.map_error(exc, action) from exc

    def call(self, action: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run ``fn`` with faasml's error mapping, retrying idempotent calls on connection errors.

        Up to ``len(RETRY_DELAYS)`` retries with jittered exponential backoff; authentication and
        permission errors are never retried, they will not fix themselves.
        """
        import redis
        import redis.exceptions as rx

        for attempt in range(len(RETRY_DELAYS) + 1):
            try:
                return fn()
            except (rx.AuthenticationError, rx.AuthorizationError) as exc:
                raise self.map_error(exc, action) from exc
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not idempotent or attempt == len(RETRY_DELAYS):
                    raise self.map_error(exc, action) from exc
                delay = RETRY_DELAYS[attempt]
                self.sleep(delay + random.uniform(0, delay / 2))
            except redis.RedisError as exc:
                raise self.map_error(exc, action) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        """Disconnect every pooled connection."""
        with contextlib.suppress(Exception):
            self.client.close()


# --------------------------------------------------------------------------- Lua scripts

# KEYS: obj, meta, index, staging. ARGV: size, mtime, gen, key.
# The data was uploaded to the staging key first: handing megabytes to Lua as an argument copies
# them into an interned Lua string, which measured 4x slower than SET. Returns 1 done, 0 exists,
# -1 the staging key expired.
_COMMIT_IF_ABSENT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
redis.call('RENAME', KEYS[4], KEYS[1])
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[2], 'size', ARGV[1], 'mtime', ARGV[2], 'gen', ARGV[3],
           'chunks', 0, 'csize', 0)
redis.call('ZADD', KEYS[3], 0, ARGV[4])
return 1
"""

# KEYS: obj, meta, index, chunk_1..chunk_n. ARGV: if_absent, size, mtime, gen, chunks, csize, key.
# Returns {status, old_gen, old_chunks}: status 1 done, 0 exists (if_absent), -1 a chunk expired.
_COMMIT_CHUNKS = """
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return {0, false, false} end
for i = 4, #KEYS do
  if redis.call('PERSIST', KEYS[i]) == 0 and redis.call('EXISTS', KEYS[i]) == 0 then
    return {-1, false, false}
  end
end
local old = redis.call('HMGET', KEYS[2], 'gen', 'chunks')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'size', ARGV[2], 'mtime', ARGV[3], 'gen', ARGV[4],
           'chunks', ARGV[5], 'csize', ARGV[6])
redis.call('ZADD', KEYS[3], 0, ARGV[7])
return {1, old[1], old[2]}
"""

_META_FIELDS = ("size", "mtime", "gen", "chunks", "csize")


class _Meta:
    """Decoded metadata hash of one object."""

    __slots__ = ("chunks", "csize", "gen", "mtime", "size")

    def __init__(self, raw: list[bytes | None]) -> None:
        size, mtime, gen, chunks, csize = raw
        self.size = int(size or 0)
        self.mtime = float(mtime) if mtime else None
        self.gen = (gen or b"").decode()
        self.chunks = int(chunks or 0)
        self.csize = int(csize or 0)

    @staticmethod
    def parse(raw: list[bytes | None]) -> _Meta | None:
        """Return the metadata, or ``None`` when the hash does not exist (all fields nil)."""
        return None if raw[0] is None else _Meta(raw)


class RedisObjectStore(ObjectStore):
    """Object store on a Redis server (or anything speaking its protocol: Valkey, KeyDB ...).

    Every write is atomic: readers see the old or the new object, never a mix. Objects larger
    than ``chunk_size`` are stored as several keys so no single Redis value grows past it; ranged
    reads fetch only the chunks (and the bytes) they need. Not for Redis Cluster: one object's
    keys live in different hash slots.

    :param url: ``redis://[[user]:password@]host[:port][/db]``; a password in the URL is redacted
        in messages but makes :meth:`to_config` refuse (secrets never travel in configs).
    :param prefix: namespace of every key this store writes.
    :param password: the password, as a string or ``{"$env": "VAR"}``; only the reference form
        can be exported by :meth:`to_config`.
    :param chunk_size: objects larger than this many bytes are split into chunks of this size.
    :param socket_timeout: seconds before a stalled Redis command fails.
    """

    name: ClassVar[str] = "redis"
    supports_range_get: bool = True
    supports_conditional_put: bool = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "faasml:",
        password: str | dict[str, str] | None = None,
        chunk_size: int = 8 * 1024 * 1024,
        socket_timeout: float = 10.0,
    ) -> None:
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix must be a string, got {prefix!r}")
        if chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be >= 1, got {chunk_size}")
        if socket_timeout <= 0:
            raise ConfigurationError(f"socket_timeout must be > 0, got {socket_timeout}")
        self.url = url
        self.prefix = prefix
        self.chunk_size = chunk_size
        self.socket_timeout = socket_timeout
        self._password = password
        self._conn = RedisConnection(url, password, socket_timeout, self.name)
        self._redis = self._conn.client
        self._pfx = prefix.encode()
        self._index = self._pfx + b"index"
        self._commit_if_absent = self._redis.register_script(_COMMIT_IF_ABSENT)
        self._commit_chunks = self._redis.register_script(_COMMIT_CHUNKS)

    # ---- key names
    def _obj(self, key: str) -> bytes:
        return self._pfx + b"obj:" + key.encode()

    def _meta(self, key: str) -> bytes:
        return self._pfx + b"meta:" + key.encode()

    def _chunk(self, key: str, gen: str, i: int) -> bytes:
        return self._pfx + b"chunk:" + key.encode() + f":{gen}:{i}".encode()

    # ---- ObjectStore primitives
    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        """Store ``data`` under ``key``, atomically replacing any previous object.

        :param if_absent: write only if ``key`` does not exist (checked atomically on the server).
        :raises AlreadyExistsError: ``if_absent`` and the key exists.
        :raises ServiceUnavailableError: Redis cannot be reached (after bounded retries).
        """
        validate_key(key)
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        size = len(view)
        gen = uuid.uuid4().hex
        mtime = repr(time.time())
        if size > self.chunk_size:
            self._put_chunked(key, view, size, gen, mtime, if_absent)
            return
        if if_absent:
            self._put_small_if_absent(key, view, size, gen, mtime)
            return
        obj, meta = self._obj(key), self._meta(key)

        def write() -> list[Any]:
            # Plain execute_command keeps redis-py's per-call overhead low: at 1 MiB this path is
            # measured against a bare SET.
            pipe = self._redis.pipeline(transaction=True)
            command(pipe, "HMGET", meta, "gen", "chunks")
            command(pipe, "SET", obj, view)
            command(
                pipe,
                "HSET",
                meta,
                "size",
                size,
                "mtime",
                mtime,
                "gen",
                gen,
                "chunks",
                0,
                "csize",
                0,
            )
            command(pipe, "ZADD", self._index, 0, key)
            return pipe.execute()

        old_gen, old_chunks = self._conn.call(f"put {key!r}", write)[0]
        self._drop_chunks(key, old_gen, old_chunks)

    def _put_small_if_absent(
        self, key: str, view: bytes | memoryview, size: int, gen: str, mtime: str
    ) -> None:
        staging = self._chunk(key, gen, 0)
        self._conn.call(
            f"put {key!r}", lambda: self._redis.set(staging, view, ex=CHUNK_TTL_SECONDS)
        )
        try:
            # A retry after a lost reply would wrongly report the key as existing: not retried.
            status = self._conn.call(
                f"put {key!r}",
                lambda: self._commit_if_absent(
                    keys=[self._obj(key), self._meta(key), self._index, staging],
                    args=[size, mtime, gen, key],
                ),
                idempotent=False,
            )
        except BaseException:
            self._drop_chunks(key, gen.encode(), 1)
            raise
        self._check_commit(key, status, gen, 1)

    def _put_chunked(
        self, key: str, view: bytes | memoryview, size: int, gen: str, mtime: str, if_absent: bool
    ) -> None:
        cs = self.chunk_size
        n = -(-size // cs)
        names = [self._chunk(key, gen, i) for i in range(n)]
        memo = memoryview(view)

        def upload() -> None:
            # Chunks are a few MiB each: send a handful per round trip, not the whole object.
            for first in range(0, n, 8):
                pipe = self._redis.pipeline(transaction=False)
                for i in range(first, min(first + 8, n)):
                    pipe.set(names[i], memo[i * cs : (i + 1) * cs], ex=CHUNK_TTL_SECONDS)
                pipe.execute()

        self._conn.call(f"put {key!r}", upload)
        try:
            status, old_gen, old_chunks = self._conn.call(
                f"put {key!r}",
                lambda: self._commit_chunks(
                    keys=[self._obj(key), self._meta(key), self._index, *names],
                    args=["1" if if_absent else "0", size, mtime, gen, n, cs, key],
                ),
                idempotent=not if_absent,
            )
        except BaseException:
            self._drop_chunks(key, gen.encode(), n)
            raise
        self._check_commit(key, status, gen, n)
        self._drop_chunks(key, old_gen, old_chunks)

    def _check_commit(self, key: str, status: int, gen: str, chunks: int) -> None:
        """Raise for a commit script's failure status, after removing the uploaded chunks."""
        if status == 1:
            return
        self._drop_chunks(key, gen.encode(), chunks)
        if status == 0:
            raise AlreadyExistsError(f"object {key!r} already exists", provider=self.name)
        raise ProviderError(
            f"object {key!r}: the upload took longer than {CHUNK_TTL_SECONDS} s and its chunks "
            "expired; nothing was written",
            provider=self.name,
        )

    def _drop_chunks(self, key: str, gen: bytes | None, chunks: bytes | int | None) -> None:
        """Unlink the chunks of a replaced generation; best effort, they are unreachable already."""
        count = int(chunks or 0)
        if not gen or count <= 0:
            return
        names = [self._chunk(key, gen.decode(), i) for i in range(count)]
        with contextlib.suppress(FaaSMLError):
            self._conn.call("delete old chunks", lambda: self._redis.unlink(*names))

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Return the object's bytes, or ``data[start:end]``, fetching only the needed bytes.

        :raises NotFoundError: the key does not exist.
        """
        validate_key(key)
        self._check_range(start, end)
        whole = start in (None, 0) and end is None
        for _ in range(READ_ATTEMPTS):
            if whole:
                # The common case costs one GET: a string at obj:<key> is a complete small object.
                data = cast(
                    "bytes | None",
                    self._conn.call(f"get {key!r}", lambda: self._redis.get(self._obj(key))),
                )
                if data is not None:
                    return data
                meta = self._read_meta(key)
                if meta is None:
                    raise self._missing(key)
                if meta.chunks == 0:
                    continue  # replaced by a small object between the two reads
                got = self._read_chunks(key, meta, 0, meta.size)
            else:
                lo = start or 0
                got = self._get_range(key, lo, end)
            if got is not None:
                return got
        raise ProviderError(
            f"object {key!r} kept changing while being read ({READ_ATTEMPTS} attempts)",
            provider=self.name,
        )

    def _get_range(self, key: str, lo: int, end: int | None) -> bytes | None:
        """One attempt at a ranged read; ``None`` means a concurrent write interfered."""

        def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hmget(self._meta(key), list(_META_FIELDS))
            if end is None:
                pipe.getrange(self._obj(key), lo, -1)
            elif end > lo:
                pipe.getrange(self._obj(key), lo, end - 1)
            return pipe.execute()

        replies = self._conn.call(f"get {key!r}", read)
        meta = _Meta.parse(replies[0])
        if meta is None:
            raise self._missing(key)
        lo, hi = clamp_range(lo, end, meta.size)
        if hi <= lo:
            return b""
        if meta.chunks == 0:
            data: bytes = replies[1]
            return data
        return self._read_chunks(key, meta, lo, hi)

    def _read_chunks(self, key: str, meta: _Meta, lo: int, hi: int) -> bytes | None:
        """Read ``[lo, hi)`` of a chunked object; ``None`` when a chunk vanished (replaced)."""
        cs = meta.csize
        spans = []
        for i in range(lo // cs, (hi - 1) // cs + 1):
            a = max(lo, i * cs) - i * cs
            b = min(hi, (i + 1) * cs) - i * cs
            spans.append((i, a, b))

        def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for i, a, b in spans:
                pipe.getrange(self._chunk(key, meta.gen, i), a, b - 1)
            return pipe.execute()

        parts: list[bytes] = self._conn.call(f"get {key!r}", read)
        for (_, a, b), part in zip(spans, parts, strict=True):
            if len(part) != b - a:
                return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_meta(self, key: str) -> _Meta | None:
        raw = self._conn.call(
            f"read metadata of {key!r}", lambda: self._redis.hmget(self._meta(key), _META_FIELDS)
        )
        return _Meta.parse(cast("list[bytes | None]", raw))

    def _missing(self, key: str) -> NotFoundError:
        return NotFoundError(
            f"object {key!r} not found in Redis store {self.prefix!r} at {self._conn.endpoint}",
            provider=self.name,
        )

    def head(self, key: str) -> ObjectInfo:
        """Return size, modification time and etag (the write's generation id) of ``key``.

        :raises NotFoundError: the key does not exist.
        """
        validate_key(key)
        meta = self._read_meta(key)
        if meta is None:
            raise self._missing(key)
        return ObjectInfo(key=key, size=meta.size, last_modified=meta.mtime, etag=meta.gen)

    def delete(self, key: str) -> None:
        """Delete ``key`` and its chunks.

        :raises NotFoundError: the key does not exist.
        """
        validate_key(key)

        def remove() -> list[Any]:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hmget(self._meta(key), ["gen", "chunks"])
            pipe.delete(self._obj(key), self._meta(key))
            pipe.zrem(self._index, key)
            return pipe.execute()

        old_gen, old_chunks = self._conn.call(f"delete {key!r}", remove)[0]
        if old_gen is None:
            raise self._missing(key)
        self._drop_chunks(key, old_gen, old_chunks)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, sorted by key.

        Walks the index with ZRANGEBYLEX in pages of :data:`LIST_BATCH`, so the cost follows the
        number of matching keys, not the size of the database.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {prefix!r}")
        raw = prefix.encode()
        # UTF-8 never contains 0xff, so every key starting with the prefix sorts below prefix+0xff.
        low: bytes = b"[" + raw if raw else b"-"
        high: bytes = b"[" + raw + b"\xff" if raw else b"+"
        while True:
            keys = cast(
                "list[bytes]",
                self._conn.call(
                    "list objects",
                    functools.partial(
                        self._redis.zrangebylex, self._index, low, high, 0, LIST_BATCH
                    ),
                ),
            )
            if not keys:
                return
            names = [k.decode() for k in keys]

            def heads(names: builtins.list[str] = names) -> builtins.list[Any]:
                pipe = self._redis.pipeline(transaction=False)
                for name in names:
                    pipe.hmget(self._meta(name), ["size", "mtime", "gen"])
                return pipe.execute()

            for name, (size, mtime, gen) in zip(
                names, self._conn.call("list objects", heads), strict=True
            ):
                if size is None:
                    continue  # deleted since the index page was read
                yield ObjectInfo(
                    key=name,
                    size=int(size),
                    last_modified=float(mtime) if mtime else None,
                    etag=gen.decode() if gen else None,
                )
            if len(keys) < LIST_BATCH:
                return
            low = b"(" + keys[-1]

    # ---- lifecycle
    def to_config(self) -> dict[str, Any]:
        """Return constructor kwargs that rebuild this store elsewhere.

        :raises ConfigurationError: the password was given literally (in ``password=`` or in the
            URL); only ``{"$env": "VAR"}`` references may travel to workers.
        """
        return redis_config(
            self.url,
            self._password,
            prefix=self.prefix,
            chunk_size=self.chunk_size,
            socket_timeout=self.socket_timeout,
        )

    def close(self) -> None:
        """Release the connection pool. Idempotent."""
        self._conn.close()

    def __repr__(self) -> str:
        return f"RedisObjectStore(url={redact_url(self.url)!r}, prefix={self.prefix!r})"

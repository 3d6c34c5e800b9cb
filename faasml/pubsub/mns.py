"""Alibaba Cloud MNS (Simple Message Queue) PubSub: an MNS topic per topic, an MNS queue per group.

Mapping onto MNS (every name starts with ``prefix``, default ``"faasml-"``):

* a faasml topic is an MNS topic; a group is an MNS queue subscribed to that topic through a
  subscription named like the queue, with the queue endpoint
  ``acs:mns:<region>:<account>:queues/<queue>`` and NotifyContentFormat ``SIMPLIFIED``, so that
  the queue receives the published body unchanged. MNS pushes a published message to the
  subscriptions that exist at that moment, which is the PubSub contract: a group created later
  does not get it, and a topic that never had a group (no MNS topic yet) drops it;
* :meth:`MNSPubSub.delete_topic` deletes the MNS topic, its subscriptions and every group's
  queue; a publish afterwards finds no MNS topic and is dropped, as for a topic never used;
* ``subscribe(topic)`` without a group makes a private queue and subscription that
  :meth:`MNSSubscription.close` deletes. A process that dies without closing leaves them behind;
  their names contain ``-anon-`` so they can be found and removed;
* names: MNS allows letters, digits and ``-`` (queue names: at most 120 characters) while faasml
  names also use ``_`` and reach 64 + 64 characters, and ``<topic>-<group>`` would let topic
  ``a-b`` group ``c`` collide with topic ``a`` group ``b-c``. Every MNS name is therefore
  ``<prefix><readable part>-<digest>``: the readable part is the faasml name(s) with ``_`` turned
  into ``-`` (cut to fit), the digest the first 10 hex digits of the SHA-256 of the exact faasml
  name(s). :meth:`MNSPubSub.ex_topic_name` and :meth:`MNSPubSub.ex_queue_name` compute them;
* bodies are bytes sent as standard base64 (the MNS docs advise base64 for anything that is not
  plain text), and the empty payload, which MNS refuses, as ``"="`` (no base64 encoding of data
  is a lone ``=``). The body limit is 64 KiB (65536 bytes) of base64, which carries 48 KiB, so
  :attr:`MNSPubSub.max_message_bytes` is 49152. A body that is not valid base64 (a message some
  other MNS client put on the queue) is delivered as its UTF-8 bytes;
* leases: MNS counts visibility timeouts in whole seconds from 1 to 43200, so a
  ``visibility_timeout`` is rounded up to whole seconds. A queue's VisibilityTimeout is set when
  it is created (from the instance's ``visibility_timeout``); a subscription that asks for another
  lease changes each message's visibility right after receiving it (one more request per message).
  :meth:`~faasml.interfaces.Message.ack` is DeleteMessage.
  :meth:`~faasml.interfaces.Message.touch` and :meth:`~faasml.interfaces.Message.nack` are
  ChangeMessageVisibility, to the lease and to **1 s** (the MNS minimum: a nacked message comes
  back after about a second, not at once). ChangeMessageVisibility hands out a new receipt handle
  and retires the old one, so each message keeps its newest handle for the later ack. Once a lease
  is lost (the message became visible and was received again), its handle answers
  MessageNotExist and ack, nack and touch do nothing, so they cannot delete or steal the copy
  another consumer holds;
* ``deliveries`` is the message's DequeueCount;
* waiting: MNS long polling waits whole seconds, at most ``wait_seconds`` per request (30 at
  most). What is left of a ``timeout`` under a second is spent in short polls, one every 0.1 s.

Credentials: ``access_key_id``, ``access_key_secret`` and ``security_token`` take a string or
``{"$env": "VAR"}``; ``None`` reads the AccessKey from ``ALIYUN_ACCESS_KEY_ID`` and
``ALIYUN_ACCESS_KEY_SECRET`` (and uses no STS token).

Threads: the SDK's ``Account`` holds a single ``http.client`` connection and is not thread-safe,
so every thread (and every forked process) makes its own on first use.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from mns.account import Account
from mns.mns_exception import MNSClientNetworkException, MNSExceptionBase, MNSServerException
from mns.mns_request import GetQueueAttributesRequest, GetQueueAttributesResponse
from mns.queue import QueueMeta
from mns.subscription import SubscriptionMeta
from mns.topic import TopicMessage, TopicMeta

from faasml.config import resolve_secret
from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    FaaSMLError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ThrottledError,
)
from faasml.interfaces import Message, PubSub, Subscription, validate_topic
from faasml.pubsub._common import decode_body, encode_body, message_bytes, name_digest
from faasml.storage._common import exportable_secret

__all__ = ["ERROR_CODES", "MNSPubSub", "MNSSubscription", "translate_error"]

_log = logging.getLogger(__name__)

#: environment variables read when no AccessKey is given.
ENV_ACCESS_KEY_ID = "ALIYUN_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "ALIYUN_ACCESS_KEY_SECRET"

#: MNS error code -> (faasml error, the HTTP status MNS documents for the code). The one place
#: where MNS errors become faasml errors; a code not listed becomes a plain ProviderError.
ERROR_CODES: dict[str, tuple[type[ProviderError], int]] = {
    "AccessDenied": (PermissionDeniedError, 403),
    "InvalidAccessKeyId": (AuthenticationError, 403),
    "SignatureDoesNotMatch": (AuthenticationError, 403),
    "InvalidAuthorizationHeader": (AuthenticationError, 400),
    "MissingAuthorizationHeader": (AuthenticationError, 400),
    "TimeExpired": (AuthenticationError, 408),
    "MessageNotExist": (NotFoundError, 404),
    "QueueNotExist": (NotFoundError, 404),
    "TopicNotExist": (NotFoundError, 404),
    "SubscriptionNotExist": (NotFoundError, 404),
    "QueueAlreadyExist": (AlreadyExistsError, 409),
    "TopicAlreadyExist": (AlreadyExistsError, 409),
    "SubscriptionAlreadyExist": (AlreadyExistsError, 409),
    "QpsLimitExceeded": (ThrottledError, 400),
    "InternalError": (ServiceUnavailableError, 500),
    "InternalServerError": (ServiceUnavailableError, 500),
}
_HINTS: dict[type[ProviderError], str] = {
    AuthenticationError: (
        f"; check the AccessKey (access_key_id/access_key_secret, or ${ENV_ACCESS_KEY_ID} and "
        f"${ENV_ACCESS_KEY_SECRET})"
    ),
    PermissionDeniedError: "; the AccessKey is valid but its RAM policy does not allow this",
    ThrottledError: "; MNS throttled the request, try again later",
}
_CODE_HINTS: dict[str, str] = {
    "TimeExpired": "; the request's Date was more than 15 minutes off: check this machine's clock",
}
#: error codes of a receipt handle whose lease is gone: ack, nack and touch then do nothing.
_LEASE_LOST = frozenset({"MessageNotExist", "ReceiptHandleError"})

#: the MNS body limit in bytes, and the largest payload whose base64 fits in it.
MNS_BODY_LIMIT = 65536
_MAX_PAYLOAD = MNS_BODY_LIMIT // 4 * 3
_QUEUE_NAME_MAX = 120
_DIGEST_LEN = 10
_ANON_MARK = "-anon-"
_ANON_ID_LEN = 16
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
_ENDPOINT_RE = re.compile(r"^https?://[^/\s]+/?$")
# <account>.mns.<region>[-internal[-vpc]].aliyuncs.com, the documented endpoint forms.
_ALIYUN_HOST_RE = re.compile(
    r"^(?P<account>\d+)\.mns\.(?P<region>[a-z0-9-]+?)(?:-internal(?:-vpc)?)?\.aliyuncs\.com"
    r"(?::\d+)?$"
)
#: queue endpoints of hosts that are not ``<account>.mns.<region>.aliyuncs.com`` (an emulator such
#: as :class:`faasml.testing.mns_stub.MNSStub`) use this region and account.
OTHER_HOST_REGION, OTHER_HOST_ACCOUNT = "local", "0"
_MAX_BATCH = 16
_MAX_WAIT_SECONDS = 30
_MAX_LEASE = 43200
_NACK_LEASE = 1
_SHORT_POLL = 0.1
#: seconds a socket may wait beyond the longest long poll before the call fails.
_SOCKET_MARGIN = 15


def translate_error(exc: MNSExceptionBase, *, endpoint: str, doing: str) -> FaaSMLError:
    """Turn an aliyun-mns-sdk exception into the faasml error :data:`ERROR_CODES` names.

    :param exc: ``MNSServerException`` (an error response), ``MNSClientNetworkException`` (the
        endpoint could not be reached, or answered something that is not MNS XML) or
        ``MNSClientParameterException`` (the SDK refused the request before sending it).
    :param endpoint: the MNS endpoint, named in connection errors.
    :param doing: what was being done, for the message (``"publishing to topic t"``).
    """
    code = str(exc.type)
    detail = str(exc.message)
    if isinstance(exc, MNSServerException):
        cls, status = ERROR_CODES.get(code, (ProviderError, None))
        return cls(
            f"MNS refused {doing}: {code}: {detail}{_CODE_HINTS.get(code, _HINTS.get(cls, ''))}",
            provider="mns",
            code=code,
            status=status,
            request_id=exc.request_id,
        )
    if isinstance(exc, MNSClientNetworkException) and code == "NetWorkException":
        return ServiceUnavailableError(
            f"MNS endpoint {endpoint} is unreachable ({doing}): {detail}",
            provider="mns",
            code=code,
        )
    return ProviderError(
        f"MNS client error while {doing}: {code}: {detail}", provider="mns", code=code
    )


@contextlib.contextmanager
def _mns_errors(endpoint: str, doing: str) -> Iterator[None]:
    """Translate the SDK exceptions raised inside the block (the module's one error boundary)."""
    try:
        yield
    except MNSExceptionBase as exc:
        raise translate_error(exc, endpoint=endpoint, doing=doing) from exc


def _lease_seconds(seconds: float, what: str) -> int:
    """Whole seconds of a lease, as MNS counts them (rounded up, 1 to 43200)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {seconds!r}")
    whole = math.ceil(seconds)
    if whole > _MAX_LEASE:
        raise ValueError(f"{what} is at most {_MAX_LEASE} s (12 hours) on MNS, got {seconds!r}")
    return whole


def _readable(name: str) -> str:
    return name.replace("_", "-")


def _encode(data: object, limit: int) -> str:
    raw = message_bytes(data)
    if len(raw) > limit:
        raise PayloadTooLargeError(
            f"message of {len(raw)} bytes is over the MNS PubSub limit of {limit} bytes "
            f"(an MNS body is at most {MNS_BODY_LIMIT} bytes and carries the payload as base64); "
            "store large data in the object store and publish its key",
            provider="mns",
        )
    return encode_body(raw)


def _queue_endpoint_parts(endpoint: str) -> tuple[str, str]:
    host = endpoint.split("://", 1)[1].rstrip("/")
    match = _ALIYUN_HOST_RE.match(host)
    if match is None:
        return OTHER_HOST_REGION, OTHER_HOST_ACCOUNT
    return match["region"], match["account"]


def _set_socket_timeout(account: Any, seconds: float) -> None:
    """Bound every socket operation of ``account``'s connection to ``seconds``.

    The SDK gives plain-HTTP connections a 60 s timeout (``set_connection_timeout``) and HTTPS
    connections none at all, so a dead peer would hang an HTTPS call forever; ``http.client``
    applies a connection's ``timeout`` attribute when it connects.
    """
    client = account.get_client()
    client.set_connection_timeout(seconds)
    connection = getattr(getattr(client, "http", None), "conn", None)
    if connection is not None:
        connection.timeout = seconds


class _Lease:
    """The newest receipt handle of one received message (ChangeMessageVisibility replaces it)."""

    __slots__ = ("handle", "lock")

    def __init__(self, handle: str) -> None:
        self.handle = handle
        self.lock = threading.Lock()


class MNSPubSub(PubSub):
    """Topics with consumer groups on Alibaba Cloud MNS (see the module docstring for the mapping).

    :param endpoint: the MNS endpoint, ``http(s)://<account-id>.mns.<region>.aliyuncs.com``
        (``-internal`` and ``-internal-vpc`` forms work too). For any other host (an emulator),
        queue endpoints use region ``local`` and account ``0``, the
        :class:`~faasml.testing.mns_stub.MNSStub` defaults.
    :param access_key_id: AccessKey ID; a string or ``{"$env": "VAR"}``; ``None`` reads
        ``$ALIYUN_ACCESS_KEY_ID``.
    :param access_key_secret: AccessKey secret; ``{"$env": "VAR"}`` (a literal string works but
        then :meth:`to_config` refuses); ``None`` reads ``$ALIYUN_ACCESS_KEY_SECRET``.
    :param security_token: an STS token, as ``{"$env": "VAR"}``; ``None`` uses none.
    :param prefix: start of every MNS name: 1-32 letters, digits or ``-``, starting with a letter
        or digit.
    :param visibility_timeout: default lease in seconds (rounded up to whole seconds, 1-43200);
        also the VisibilityTimeout of the queues this instance creates.
    :param wait_seconds: longest MNS long poll per request, 0-30 seconds (0: short polling).
    :param account: a ready ``mns.account.Account`` (or an object with the same methods) to use
        for every call instead of making one per thread; it must then be safe to share between
        the threads that use this instance. Credentials are not read when it is given.
    :raises ConfigurationError: an option is out of range, or no AccessKey can be found.
    """

    name: ClassVar[str] = "mns"
    #: 48 KiB: the largest payload whose base64 fits in the 64 KiB MNS body.
    max_message_bytes: int = _MAX_PAYLOAD

    def __init__(
        self,
        endpoint: str,
        *,
        access_key_id: str | dict[str, str] | None = None,
        access_key_secret: str | dict[str, str] | None = None,
        security_token: str | dict[str, str] | None = None,
        prefix: str = "faasml-",
        visibility_timeout: float = 30.0,
        wait_seconds: int = 10,
        account: Any = None,
    ) -> None:
        if not isinstance(endpoint, str) or not _ENDPOINT_RE.match(endpoint):
            raise ConfigurationError(
                f"MNS endpoint must look like http(s)://<account-id>.mns.<region>.aliyuncs.com, "
                f"got {endpoint!r}"
            )
        if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
            raise ConfigurationError(
                f"MNS prefix must be 1-32 letters, digits or '-' starting with a letter or digit "
                f"(MNS names allow nothing else), got {prefix!r}"
            )
        try:
            self._lease = _lease_seconds(visibility_timeout, "visibility_timeout")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        if (
            not isinstance(wait_seconds, int)
            or isinstance(wait_seconds, bool)
            or not 0 <= wait_seconds <= _MAX_WAIT_SECONDS
        ):
            raise ConfigurationError(
                f"wait_seconds must be a whole number of seconds from 0 to {_MAX_WAIT_SECONDS} "
                f"(the MNS long-polling range), got {wait_seconds!r}"
            )
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix
        self.visibility_timeout = float(visibility_timeout)
        self.wait_seconds = wait_seconds
        self._access_key_id = access_key_id
        self._access_key_secret = access_key_secret
        self._security_token = security_token
        self._shared_account = account
        self._credentials = ("", "", "")
        if account is None:
            self._credentials = self._resolve_credentials()
        self._region, self._account_id = _queue_endpoint_parts(self.endpoint)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._accounts: list[Any] = []
        self._ensured: dict[tuple[str, str], int] = {}
        self._subscriptions: weakref.WeakSet[MNSSubscription] = weakref.WeakSet()
        self._closed = False

    def _resolve_credentials(self) -> tuple[str, str, str]:
        key_id = resolve_secret(self._access_key_id, "MNS access_key_id") or os.environ.get(
            ENV_ACCESS_KEY_ID
        )
        secret = resolve_secret(self._access_key_secret, "MNS access_key_secret") or os.environ.get(
            ENV_ACCESS_KEY_SECRET
        )
        if not key_id or not secret:
            missing = ENV_ACCESS_KEY_ID if not key_id else ENV_ACCESS_KEY_SECRET
            raise ConfigurationError(
                f"no MNS AccessKey: pass access_key_id= and access_key_secret= (a string or "
                f'{{"$env": "VAR"}}) or export {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET} '
                f"(${missing} is not set)"
            )
        token = resolve_secret(self._security_token, "MNS security_token") or ""
        return key_id, secret, token

    # ------------------------------------------------------------------ configuration

    def to_config(self) -> dict[str, Any]:
        """Return constructor kwargs that rebuild this PubSub in another process.

        The AccessKey ID is an identifier and travels as given; the secret and the STS token
        travel only as ``{"$env": "VAR"}`` references (or ``None``, read from the environment
        where the backend is rebuilt). An injected ``account`` does not travel: the rebuilt
        instance makes its own from the endpoint and the credentials.

        :raises ConfigurationError: the secret or the token was given as a literal string.
        """
        key_id = self._access_key_id
        return {
            "endpoint": self.endpoint,
            "access_key_id": dict(key_id) if isinstance(key_id, dict) else key_id,
            "access_key_secret": exportable_secret(self._access_key_secret, "access_key_secret"),
            "security_token": exportable_secret(self._security_token, "security_token"),
            "prefix": self.prefix,
            "visibility_timeout": self.visibility_timeout,
            "wait_seconds": self.wait_seconds,
        }

    def __repr__(self) -> str:
        return f"MNSPubSub(endpoint={self.endpoint!r}, prefix={self.prefix!r})"

    # ------------------------------------------------------------------ names

    def ex_topic_name(self, topic: str) -> str:
        """The MNS topic that carries faasml topic ``topic``."""
        validate_topic(topic)
        return f"{self.prefix}{_readable(topic)}-{name_digest(topic, length=_DIGEST_LEN)}"

    def ex_queue_name(self, topic: str, group: str) -> str:
        """The MNS queue (and subscription) of ``group`` on ``topic``; at most 120 characters."""
        validate_topic(topic)
        validate_topic(group)
        budget = _QUEUE_NAME_MAX - len(self.prefix) - 1 - _DIGEST_LEN
        readable = _readable(f"{topic}-{group}")[:budget]
        return f"{self.prefix}{readable}-{name_digest(topic, group, length=_DIGEST_LEN)}"

    def _anonymous_queue_name(self, topic: str) -> str:
        # The random part is longer than a digest, so it never equals a named group's queue.
        budget = _QUEUE_NAME_MAX - len(self.prefix) - len(_ANON_MARK) - _ANON_ID_LEN
        readable = _readable(topic)[:budget]
        return f"{self.prefix}{readable}{_ANON_MARK}{uuid.uuid4().hex[:_ANON_ID_LEN]}"

    def _queue_endpoint(self, queue: str) -> str:
        return f"acs:mns:{self._region}:{self._account_id}:queues/{queue}"

    # ------------------------------------------------------------------ SDK access

    def _account(self) -> Any:
        """This thread's ``Account`` (a new one after a fork: connections must not be shared)."""
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        if self._shared_account is not None:
            return self._shared_account
        held: tuple[int, Any] | None = getattr(self._local, "account", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        key_id, secret, token = self._credentials
        account = Account(self.endpoint, key_id, secret, token)
        _set_socket_timeout(account, self.wait_seconds + _SOCKET_MARGIN)
        self._local.account = (os.getpid(), account)
        with self._lock:
            self._accounts.append(account)
        return account

    def _errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return _mns_errors(self.endpoint, doing)

    def _queue(self, name: str) -> Any:
        queue = self._account().get_queue(name)
        queue.set_encoding(False)  # bodies are base64 already; faasml decodes them itself
        return queue

    # ------------------------------------------------------------------ publishing

    def publish(self, topic: str, data: bytes | bytearray | memoryview) -> None:
        """Publish ``data`` to every group of ``topic`` (nothing is kept if it has none).

        :raises PayloadTooLargeError: ``data`` is over 49152 bytes (48 KiB).
        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        self._publish(topic, _encode(data, self.max_message_bytes))

    def publish_many(self, topic: str, items: Sequence[bytes | bytearray | memoryview]) -> None:
        """Publish several messages in order; MNS topics have no batch publish.

        Every item is checked before the first is sent.

        :raises PayloadTooLargeError: an item is over 49152 bytes (nothing is published).
        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        bodies = [_encode(data, self.max_message_bytes) for data in items]
        for body in bodies:
            self._publish(topic, body)

    def _publish(self, topic: str, body: str) -> None:
        name = self.ex_topic_name(topic)
        with self._errors(f"publishing to topic {name}"):
            try:
                self._account().get_topic(name).publish_message(TopicMessage(body))
            except MNSServerException as exc:
                if exc.type == "TopicNotExist":
                    return  # no group ever existed on the topic: nobody is waiting for it
                raise

    # ------------------------------------------------------------------ groups

    def ensure_group(self, topic: str, group: str) -> None:
        """Create ``group`` on ``topic`` if missing: the MNS topic, queue and subscription.

        Idempotent: resources that already exist are kept.

        :raises InvalidTopicError: ``topic`` or ``group`` is not a portable name.
        :raises AlreadyExistsError: a subscription of that name exists but pushes elsewhere or
            in another format.
        """
        validate_topic(topic)
        validate_topic(group)
        self._ensure_group(topic, group)

    def _ensure_group(self, topic: str, group: str) -> int:
        """Create the group if this instance has not yet; return its queue's lease in seconds."""
        lease = self._ensured.get((topic, group))
        if lease is None:
            lease = self._attach(topic, self.ex_queue_name(topic, group))
            with self._lock:
                self._ensured[(topic, group)] = lease
        return lease

    def _attach(self, topic: str, queue: str) -> int:
        """Create the MNS topic and ``queue``, subscribe the queue to the topic.

        :returns: the queue's VisibilityTimeout in seconds.
        """
        account = self._account()
        mns_topic = self.ex_topic_name(topic)
        with self._errors(f"creating topic {mns_topic}"):
            try:
                account.get_topic(mns_topic).create(TopicMeta())
            except MNSServerException as exc:
                if exc.type != "TopicAlreadyExist":
                    raise
        queue_lease = self._lease
        with self._errors(f"creating queue {queue}"):
            try:
                # 201 (created) or 204 (exists with these very attributes): the lease is ours.
                account.get_queue(queue).create(QueueMeta(vis_timeout=self._lease))
            except MNSServerException as exc:
                if exc.type != "QueueAlreadyExist":
                    raise
                # It exists with other attributes and serves as well; only its lease matters.
                # The SDK's Queue.get_attributes() warns about deprecated counters on every call,
                # so the request is made one level down.
                response = GetQueueAttributesResponse()
                account.get_client().get_queue_attributes(
                    GetQueueAttributesRequest(queue), response
                )
                queue_lease = int(response.visibility_timeout)
        endpoint = self._queue_endpoint(queue)
        subscription = account.get_subscription(mns_topic, queue)
        with self._errors(f"subscribing queue {queue} to topic {mns_topic}"):
            try:
                subscription.subscribe(SubscriptionMeta(endpoint, "BACKOFF_RETRY", "SIMPLIFIED"))
            except MNSServerException as exc:
                if exc.type != "SubscriptionAlreadyExist":
                    raise
                existing = subscription.get_attributes()
                if (existing.endpoint, existing.notify_content_format) != (endpoint, "SIMPLIFIED"):
                    raise AlreadyExistsError(
                        f"MNS subscription {queue} on topic {mns_topic} already exists but pushes "
                        f"to {existing.endpoint} as {existing.notify_content_format}, not to "
                        f"{endpoint} as SIMPLIFIED; delete it or use another prefix",
                        provider="mns",
                        code=exc.type,
                    ) from exc
        return queue_lease

    def _detach(self, topic: str, queue: str) -> None:
        """Delete ``queue`` and its subscription; resources already gone are fine."""
        account = self._account()
        mns_topic = self.ex_topic_name(topic)
        with self._errors(f"unsubscribing queue {queue} from topic {mns_topic}"):
            try:
                account.get_subscription(mns_topic, queue).unsubscribe()
            except MNSServerException as exc:
                if exc.type not in ("TopicNotExist", "SubscriptionNotExist"):
                    raise
        with self._errors(f"deleting queue {queue}"):
            try:
                account.get_queue(queue).delete()
            except MNSServerException as exc:
                if exc.type != "QueueNotExist":
                    raise

    def delete_topic(self, topic: str) -> None:
        """Delete the MNS topic, its subscriptions and the queue of every group; idempotent.

        Private groups' queues go too. A subscription that does not push to a queue of this
        instance's region and account under its own name (one added outside faasml) loses only
        the subscription, with the topic.

        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        account = self._account()
        mns_topic = self.ex_topic_name(topic)
        names: list[str] = []
        with self._errors(f"listing the subscriptions of topic {mns_topic}"):
            try:
                marker = ""
                while True:
                    urls, marker = account.get_topic(mns_topic).list_subscription(marker=marker)
                    names.extend(str(url).rstrip("/").rsplit("/", 1)[-1] for url in urls)
                    if not marker:
                        break
            except MNSServerException as exc:
                if exc.type != "TopicNotExist":
                    raise
        queues = [name for name in names if self._pushes_to_own_queue(mns_topic, name)]
        with self._errors(f"deleting topic {mns_topic}"):
            account.get_topic(mns_topic).delete()  # takes its subscriptions along
        for queue in queues:
            self._detach(topic, queue)
        with self._lock:
            for key in [key for key in self._ensured if key[0] == topic]:
                del self._ensured[key]

    def _pushes_to_own_queue(self, mns_topic: str, subscription: str) -> bool:
        """Whether the subscription pushes to the queue of its own name (as faasml makes them)."""
        with self._errors(f"reading subscription {subscription} of topic {mns_topic}"):
            try:
                meta = self._account().get_subscription(mns_topic, subscription).get_attributes()
            except MNSServerException as exc:
                if exc.type in ("TopicNotExist", "SubscriptionNotExist"):
                    return False
                raise
        return bool(meta.endpoint == self._queue_endpoint(subscription))

    def subscribe(
        self, topic: str, group: str | None = None, *, visibility_timeout: float | None = None
    ) -> MNSSubscription:
        """Join ``group`` on ``topic`` (creating it if needed) and return a subscription.

        :param group: ``None`` makes a private queue, deleted when the subscription closes.
        :param visibility_timeout: lease in seconds, rounded up to whole seconds (1-43200);
            ``None`` takes the instance's.
        :raises InvalidTopicError: ``topic`` or ``group`` is not a portable name.
        :raises ValueError: ``visibility_timeout`` is out of range.
        """
        validate_topic(topic)
        if group is not None:
            validate_topic(group)
        lease = (
            self._lease
            if visibility_timeout is None
            else _lease_seconds(visibility_timeout, "visibility_timeout")
        )
        if group is None:
            queue = self._anonymous_queue_name(topic)
            try:
                queue_lease = self._attach(topic, queue)
            except BaseException:
                with contextlib.suppress(FaaSMLError):
                    self._detach(topic, queue)
                raise
        else:
            queue_lease = self._ensure_group(topic, group)
            queue = self.ex_queue_name(topic, group)
        sub = MNSSubscription(self, topic, group, queue, lease, queue_lease)
        self._subscriptions.add(sub)
        return sub

    def close(self) -> None:
        """Close every subscription (deleting private queues) and the connections. Idempotent."""
        if self._closed:
            return
        for sub in list(self._subscriptions):
            sub.close()
        self._closed = True
        with self._lock:
            accounts, self._accounts = self._accounts, []
        for account in accounts:
            with contextlib.suppress(Exception):  # closing a socket that is already gone
                account.get_client().close_connection()


class MNSSubscription(Subscription):
    """A consumer of one MNS queue; made by :meth:`MNSPubSub.subscribe`.

    :ivar queue_name: the MNS queue it reads.
    :ivar visibility_timeout: its lease in whole seconds.
    """

    def __init__(
        self,
        pubsub: MNSPubSub,
        topic: str,
        group: str | None,
        queue_name: str,
        lease: int,
        queue_lease: int,
    ) -> None:
        self.topic = topic
        self.group = group
        self.queue_name = queue_name
        self.visibility_timeout = lease
        self._pubsub = pubsub
        self._queue_lease = queue_lease
        self._closed = False

    def get_many(self, max_messages: int = 10, timeout: float | None = None) -> list[Message]:
        """Wait up to ``timeout`` seconds (``None``: forever) and return up to ``max_messages``.

        One request takes at most 16 messages (the MNS batch limit).

        :raises ValueError: ``max_messages`` is below 1, or the subscription is closed.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            wait = self._pubsub.wait_seconds
            if deadline is not None:
                wait = min(wait, max(0, int(deadline - time.monotonic())))
            received = self._receive(min(max_messages, _MAX_BATCH), wait)
            if received:
                return received
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                if wait == 0:
                    time.sleep(min(_SHORT_POLL, left))
            elif wait == 0:
                time.sleep(_SHORT_POLL)  # wait_seconds=0: short polling

    def _receive(self, count: int, wait: int) -> list[Message]:
        queue = self._pubsub._queue(self.queue_name)
        with self._pubsub._errors(f"receiving from queue {self.queue_name}"):
            try:
                items = queue.batch_receive_message(count, wait)
            except MNSServerException as exc:
                if exc.type == "MessageNotExist":
                    return []
                raise
        if self._closed:
            # Closed while the request was in flight: these come back once their lease ends.
            raise ValueError(f"{self!r} is closed")
        messages = []
        for item in items:
            lease = _Lease(str(item.receipt_handle))
            if self.visibility_timeout != self._queue_lease and not self._change(
                lease, self.visibility_timeout
            ):
                continue  # the lease is already lost: another receive has the message now
            messages.append(
                Message(
                    decode_body(item.message_body),
                    topic=self.topic,
                    id=str(item.message_id),
                    deliveries=int(item.dequeue_count),
                    ack=functools.partial(self._ack, lease),
                    nack=functools.partial(self._nack, lease),
                    touch=functools.partial(self._touch, lease),
                )
            )
        return messages

    def _ack(self, lease: _Lease) -> None:
        queue = self._pubsub._queue(self.queue_name)
        with lease.lock, self._pubsub._errors(f"deleting a message from queue {self.queue_name}"):
            try:
                queue.delete_message(lease.handle)
            except MNSServerException as exc:
                if exc.type not in _LEASE_LOST:
                    raise

    def _nack(self, lease: _Lease) -> None:
        self._change(lease, _NACK_LEASE)

    def _touch(self, lease: _Lease) -> None:
        self._change(lease, self.visibility_timeout)

    def _change(self, lease: _Lease, seconds: int) -> bool:
        """Set the message's visibility to ``seconds`` from now; False if the lease was lost."""
        queue = self._pubsub._queue(self.queue_name)
        doing = f"changing a message's visibility in queue {self.queue_name}"
        with lease.lock, self._pubsub._errors(doing):
            try:
                changed = queue.change_message_visibility(lease.handle, seconds)
            except MNSServerException as exc:
                if exc.type in _LEASE_LOST:
                    return False
                raise
            # The old handle is retired: only the new one can delete or change the message.
            lease.handle = str(changed.receipt_handle)
        return True

    def close(self) -> None:
        """Stop consuming; a private queue is deleted with its subscription. Idempotent.

        Un-acked messages of a named group come back to its other members when their lease
        ends. A ``get_many`` running in another thread raises :class:`ValueError` once its
        current request returns (within ``wait_seconds``).
        """
        if self._closed:
            return
        self._closed = True
        self._pubsub._subscriptions.discard(self)
        if self.group is None:
            try:
                self._pubsub._detach(self.topic, self.queue_name)
            except FaaSMLError:
                _log.warning(
                    "could not delete private MNS queue %s; delete it by hand",
                    self.queue_name,
                    exc_info=True,
                )

    def __repr__(self) -> str:
        return f"MNSSubscription(topic={self.topic!r}, group={self.group!r})"

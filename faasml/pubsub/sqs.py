"""The ``sqs`` :class:`~faasml.interfaces.PubSub`: SNS FIFO topics fanning out to SQS FIFO queues.

Layout (``prefix`` defaults to ``faasml-``)::

    topic t        SNS FIFO topic   <prefix>t.fifo
    group g of t   SQS FIFO queue   <prefix>t--g.fifo, subscribed to the topic with raw delivery

A queue name that would be ambiguous (the topic contains ``--`` or ends with ``-``) or longer than
SQS's 80 characters becomes ``<prefix><topic hint>_<sha256 of topic and group>.fifo``; such names
contain no ``-`` after the prefix, so they never collide with the readable ones. A private group
(``subscribe(topic)`` without a group) is a queue ``<prefix>t--_anon-<random>.fifo`` that is
unsubscribed and deleted when the subscription closes, when it is garbage-collected, or at
interpreter exit; a process that is killed leaves it behind (delete such queues by name).

How the contract maps onto SNS and SQS:

* ``publish`` is an SNS ``Publish``; ``publish_many`` a ``PublishBatch`` (at most 10 messages and
  256 KiB per call). SNS copies the message into every queue subscribed *at that moment*, which
  is exactly "delivered to each group that exists when it is published".
* ``ensure_group`` creates the topic, the queue (with a policy that lets the topic write to it)
  and the subscription; every step is idempotent. ``delete_topic`` unsubscribes and deletes the
  queue of every group (private ones included), then deletes the topic.
* Bodies are bytes, SNS/SQS bodies are text: bodies travel base64-encoded (the empty payload as
  ``"="``, because SNS refuses empty messages). SNS accepts 262,144 bytes per message, so
  :attr:`SQSPubSub.max_message_bytes` is 192 KiB (196,608 bytes), whose base64 form is exactly
  262,144 characters.
* ``get_many`` is ``ReceiveMessage`` with long polling (at most ``wait_seconds`` = 20 s per call;
  a remainder under one second is covered by short polls 0.1 s apart, because long polls last
  whole seconds). ``deliveries`` is SQS's ``ApproximateReceiveCount``. The subscription's
  visibility timeout is passed to every ``ReceiveMessage``, so members of one group may use
  different leases; SQS counts it in whole seconds (rounded up, at most 12 hours).
* ``ack`` queues the receipt handle for a background thread that deletes up to 10 messages per
  ``DeleteMessageBatch`` (an ack costs no round trip; :meth:`SQSSubscription.flush` and ``close``
  wait for them; a failed ack is logged and the message comes back). ``nack`` is
  ``ChangeMessageVisibility(0)`` and ``touch`` ``ChangeMessageVisibility(visibility_timeout)``,
  both sent at once; closing a subscription nacks the messages it still holds.
* Leases are also tracked locally, from the moment SQS answered the receive (0.25 s earlier, or
  when the request was sent if that is later); ``ack``, ``nack`` and ``touch`` after the lease
  ran out are dropped: the message has been or will be redelivered, which at-least-once delivery
  allows. Per its documentation SQS does not delete a message by an outdated receipt handle, but
  moto deletes it by any receipt handle it ever had; the local check makes both behave as the
  contract says. (An answer that took longer than 0.25 s to arrive leaves a window of that
  length in which moto could still be fooled.)

Message groups and order. Topics and queues are FIFO: every publish carries a unique
``MessageDeduplicationId`` (content-based deduplication is off, so equal payloads stay distinct
messages, while botocore's retries of one publish resend the same id and are dropped), and SQS
FIFO queues deliver each message once, where standard queues and topics may deliver twice. The
``MessageGroupId`` is chosen by ``ordered``:

* ``ordered=False`` (default): every message is its own message group. Members of a consumer
  group work on messages in parallel, and a consumer may hold messages un-acked while it
  receives more, as the contract requires. SQS promises no order *across* message groups, so
  the order a single consumer sees is best effort on AWS (moto serves them in publish order).
* ``ordered=True``: all messages published by one thread of one instance share a message group
  and arrive in publish order, guaranteed. The price: SQS hands a message group's messages to
  one receiver at a time, so while some are in flight (received, not acked or expired) no one
  receives later messages of that publisher, not even the consumer holding them. A consumer
  must ack before it reads on, and the members of a consumer group work in parallel only on
  messages from different publishers. This breaks the contract's "hold some, receive more"
  behaviour; use it only for strictly sequential consumers.

Both modes use the same topics and queues and can be mixed. Queues are created in SQS's
high-throughput FIFO mode (deduplication and throughput limits per message group), so
throughput grows with the number of message groups; SNS FIFO topics have a far lower publish
quota than standard topics (check the account's quota; ``PublishBatch`` sends 10 messages per
call).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeVar

from faasml.errors import (
    ConfigurationError,
    NotFoundError,
    PayloadTooLargeError,
    ProviderError,
)
from faasml.interfaces import Message, PubSub, Subscription, validate_topic
from faasml.pubsub._common import decode_body, encode_body, name_digest
from faasml.storage._aws_errors import (
    SecretValue,
    aws_clients,
    aws_credentials,
    error_from_code,
    has_error_code,
    map_aws_errors,
    secrets_for_config,
)

__all__ = ["SQSPubSub", "SQSSubscription", "queue_name", "topic_name"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_FIFO = ".fifo"
#: SQS queue names are at most 80 characters, ``.fifo`` included.
_QUEUE_NAME_MAX = 80
_HASH_CHARS = 32
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{0,32}$")
#: SNS takes at most 262,144 bytes per message and per PublishBatch call.
_SNS_MAX_BYTES = 262_144
_MAX_BATCH = 10
#: SQS caps long polls at 20 s and visibility timeouts at 12 hours.
_MAX_WAIT_SECONDS = 20
_WAIT_SLACK = 0.05  # seconds a long poll may run past the caller's timeout
_MAX_VISIBILITY = 43_200
#: pause between the short polls that cover the sub-second rest of a timeout.
_SHORT_POLL_INTERVAL = 0.1
#: how long an answer may take to travel back before the local lease clock runs late.
_RESPONSE_MARGIN = 0.25
#: how long closing a subscription waits for its pending acks, in seconds.
_CLOSE_TIMEOUT = 30.0
#: an ack-sending thread with nothing to send for this long ends (a new one starts on demand).
_ACK_IDLE = 5.0
_ANONYMOUS = "_anon-"
#: errors that mean the lease behind a receipt handle is gone (expired and received again).
_LEASE_LOST = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"})


def topic_name(prefix: str, topic: str) -> str:
    """Return the SNS topic name of ``topic``: ``<prefix><topic>.fifo``."""
    return f"{prefix}{topic}{_FIFO}"


def queue_name(prefix: str, topic: str, group: str) -> str:
    """Return the SQS queue name of ``group`` on ``topic`` (injective, at most 80 characters).

    ``<prefix><topic>--<group>.fifo`` when that is unambiguous and short enough: the topic has no
    ``--`` and does not end with ``-``, so the first ``--`` after the prefix separates topic and
    group. Otherwise ``<prefix><hint>_<hash>.fifo``, with no ``-`` after the prefix.
    """
    readable = f"{prefix}{topic}--{group}{_FIFO}"
    if "--" not in topic and not topic.endswith("-") and len(readable) <= _QUEUE_NAME_MAX:
        return readable
    digest = name_digest(topic, group, length=_HASH_CHARS)
    room = _QUEUE_NAME_MAX - len(_FIFO) - len(prefix) - 1 - _HASH_CHARS
    hint = topic.replace("-", "_")[: max(room, 0)]
    return f"{prefix}{hint}_{digest}{_FIFO}"


def _sibling_arn(topic_arn: str, service: str, name: str) -> str:
    """ARN of resource ``name`` of ``service`` in the topic's partition, region and account."""
    parts = topic_arn.split(":")
    if len(parts) < 6:
        raise ConfigurationError(f"unexpected SNS topic ARN {topic_arn!r}")
    return ":".join([parts[0], parts[1], service, parts[3], parts[4], name])


def _queue_policy(queue_arn: str, topic_arn: str) -> str:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "faasml-topic-delivery",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    # Deterministic text: CreateQueue is idempotent only for identical attributes.
    return json.dumps(policy, sort_keys=True, separators=(",", ":"))


@dataclass
class _Lease:
    """One received copy of a message: its receipt handle and when its lease ends (monotonic)."""

    receipt_handle: str
    deadline: float
    done: bool = False

    def live(self) -> bool:
        return not self.done and time.monotonic() < self.deadline


def _drop_private_queue(
    sns: Any, sqs: Any, subscription_arn: str, queue_url: str, pid: int
) -> None:
    """Unsubscribe and delete a private group's queue (finalizer; never raises)."""
    if os.getpid() != pid:
        return  # a forked child must not delete its parent's queue
    try:
        sns.unsubscribe(SubscriptionArn=subscription_arn)
    except Exception:
        _log.debug("unsubscribe %s failed", subscription_arn, exc_info=True)
    try:
        sqs.delete_queue(QueueUrl=queue_url)
    except Exception as exc:
        if has_error_code(exc, "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return  # deleted with its topic (delete_topic) or by hand: nothing left to do
        _log.warning("could not delete private queue %s; delete it by hand", queue_url)


class SQSPubSub(PubSub):
    """Topics with consumer groups on AWS: SNS FIFO topics, one SQS FIFO queue per group.

    :param region: AWS region; ``None`` uses the boto3 default (``AWS_DEFAULT_REGION``, profile).
        The resolved region is pinned in :meth:`to_config`, so a rebuilt instance uses the same
        topics and queues.
    :param endpoint_url: one endpoint for both SNS and SQS (LocalStack, moto); ``None`` is AWS.
    :param prefix: prepended to every topic and queue name (0-32 of ``A-Za-z0-9_-``).
    :param access_key_id: ``None`` uses the default credential chain (environment, profile,
        IAM role); otherwise a string or ``{"$env": "VAR"}``.
    :param secret_access_key: like ``access_key_id``.
    :param session_token: like ``access_key_id``, for temporary credentials.
    :param visibility_timeout: default lease of subscriptions that give none, in seconds.
    :param wait_seconds: longest single long poll, 1-20 seconds.
    :param ordered: guarantee publish order per publishing thread, at the price described in
        the module documentation (a consumer must ack before it receives later messages of the
        same publisher); ``False`` (default) delivers in parallel, in best-effort order.
    :param max_attempts: attempts per request, including the first (botocore adaptive retries).
    :param clients: prebuilt boto3 clients ``{"sns": ..., "sqs": ...}`` to use instead of
        building them (tests); they are not closed, and :meth:`to_config` does not describe them.
    :raises ConfigurationError: an invalid option, a missing region, or an ``$env`` credential
        that is not set.
    """

    name: ClassVar[str] = "sqs"
    #: 192 KiB: base64 turns it into SNS's 262,144-byte maximum.
    max_message_bytes: int = 192 * 1024

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        prefix: str = "faasml-",
        access_key_id: SecretValue = None,
        secret_access_key: SecretValue = None,
        session_token: SecretValue = None,
        visibility_timeout: float = 30.0,
        wait_seconds: int = 20,
        ordered: bool = False,
        max_attempts: int = 5,
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
            raise ConfigurationError(
                f"prefix {prefix!r} must be 0-32 characters of A-Z a-z 0-9 _ - "
                "(SNS and SQS names allow nothing else)"
            )
        self._check_visibility(visibility_timeout)
        if not 1 <= wait_seconds <= _MAX_WAIT_SECONDS:
            raise ConfigurationError(f"wait_seconds must be 1-20 (SQS), got {wait_seconds!r}")
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {max_attempts}")
        self.visibility_timeout = float(visibility_timeout)
        self._prefix = prefix
        self._endpoint_url = endpoint_url
        self._wait_seconds = int(wait_seconds)
        self._ordered = bool(ordered)
        self.preserves_order = self._ordered
        self._max_attempts = int(max_attempts)
        self._secrets = aws_credentials(access_key_id, secret_access_key, session_token)
        self._owns_clients = clients is None
        if clients is None:
            clients = aws_clients(
                self.name,
                "SNS/SQS clients",
                ("sns", "sqs"),
                region=region,
                endpoint_url=endpoint_url,
                credentials=self._secrets,
                max_attempts=self._max_attempts,
            )
        missing = {"sns", "sqs"} - set(clients)
        if missing:
            raise ConfigurationError(f"clients must have 'sns' and 'sqs', missing {missing}")
        self._sns: Any = clients["sns"]
        self._sqs: Any = clients["sqs"]
        self._region: str | None = region or self._sns.meta.region_name
        self._id = uuid.uuid4().hex[:16]
        self._lock = threading.Lock()
        self._topic_arns: dict[str, str] = {}
        self._subscriptions: weakref.WeakSet[SQSSubscription] = weakref.WeakSet()
        self._closed = False

    @staticmethod
    def _check_visibility(value: float) -> None:
        if not isinstance(value, (int, float)) or not 0 < value <= _MAX_VISIBILITY:
            raise ConfigurationError(
                f"visibility_timeout must be > 0 and <= {_MAX_VISIBILITY} seconds (SQS), "
                f"got {value!r}"
            )

    # ------------------------------------------------------------------ names and resources

    @property
    def prefix(self) -> str:
        """The prefix of every topic and queue name."""
        return self._prefix

    @property
    def ordered(self) -> bool:
        """Whether messages of one publishing thread keep their order (see the module notes)."""
        return self._ordered

    def _call(
        self, resource: str, call: Callable[[], _T], messages: Mapping[str, str] | None = None
    ) -> _T:
        with map_aws_errors(self.name, resource, messages=messages):
            return call()

    def _topic_arn(self, topic: str, *, refresh: bool = False) -> str:
        with self._lock:
            arn = None if refresh else self._topic_arns.get(topic)
        if arn is not None:
            return arn
        sns_name = topic_name(self._prefix, topic)
        # CreateTopic returns the existing topic's ARN, so it doubles as a lookup.
        response = self._call(
            f"topic {topic!r} (SNS {sns_name})",
            lambda: self._sns.create_topic(
                Name=sns_name,
                Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"},
            ),
        )
        arn = str(response["TopicArn"])
        with self._lock:
            self._topic_arns[topic] = arn
        return arn

    def _ensure(self, topic: str, group: str) -> tuple[str, str]:
        """Create topic, queue and subscription as needed; return (queue URL, subscription ARN)."""
        try:
            return self._ensure_on(self._topic_arn(topic), topic, group)
        except NotFoundError:
            # The cached topic was deleted meanwhile: create it again.
            return self._ensure_on(self._topic_arn(topic, refresh=True), topic, group)

    def _ensure_on(self, topic_arn: str, topic: str, group: str) -> tuple[str, str]:
        name = queue_name(self._prefix, topic, group)
        queue_arn = _sibling_arn(topic_arn, "sqs", name)
        policy = _queue_policy(queue_arn, topic_arn)
        resource = f"group {group!r} of topic {topic!r} (SQS {name})"
        try:
            created = self._call(
                resource,
                lambda: self._sqs.create_queue(
                    QueueName=name,
                    Attributes={
                        "FifoQueue": "true",
                        "ContentBasedDeduplication": "false",
                        # high-throughput FIFO: limits apply per message group, not per queue
                        "DeduplicationScope": "messageGroup",
                        "FifoThroughputLimit": "perMessageGroupId",
                        "Policy": policy,
                    },
                ),
            )
            queue_url = str(created["QueueUrl"])
        except ProviderError as exc:
            if exc.code not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            # It exists with other attributes (changed by hand?): make sure the topic may write.
            found = self._call(resource, lambda: self._sqs.get_queue_url(QueueName=name))
            queue_url = str(found["QueueUrl"])
            self._call(
                resource,
                lambda: self._sqs.set_queue_attributes(
                    QueueUrl=queue_url, Attributes={"Policy": policy}
                ),
            )
        subscribed = self._call(
            resource,
            lambda: self._sns.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true"},
                ReturnSubscriptionArn=True,
            ),
        )
        return queue_url, str(subscribed["SubscriptionArn"])

    # ------------------------------------------------------------------ PubSub

    def ensure_group(self, topic: str, group: str) -> None:
        """Create ``group`` on ``topic`` if missing (topic, queue, policy, subscription).

        :raises InvalidTopicError: ``topic`` or ``group`` is not a portable name.
        """
        validate_topic(topic)
        validate_topic(group)
        self._ensure(topic, group)

    def delete_topic(self, topic: str) -> None:
        """Delete the SNS topic, its subscriptions and the SQS queue of every group; idempotent.

        Private groups' queues go too. The topic is found with ``CreateTopic`` (which returns an
        existing topic's ARN), so deleting a missing topic creates and deletes it. On AWS a
        queue name can be used again only 60 seconds after its queue was deleted, so a group of
        the deleted topic cannot be recreated at once (``QueueDeletedRecently``).

        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        arn = self._topic_arn(topic)
        resource = f"topic {topic!r} (SNS {topic_name(self._prefix, topic)})"
        subscriptions: list[dict[str, Any]] = []
        token: str | None = None
        try:
            while True:
                extra = {"NextToken": token} if token else {}
                page = self._call(
                    resource,
                    partial(self._sns.list_subscriptions_by_topic, TopicArn=arn, **extra),
                )
                subscriptions.extend(page.get("Subscriptions") or [])
                token = page.get("NextToken")
                if not token:
                    break
        except NotFoundError:
            subscriptions = []  # deleted meanwhile: it took its subscriptions along
        for subscription in subscriptions:
            self._drop_subscription(arn, subscription)
        self._call(resource, lambda: self._sns.delete_topic(TopicArn=arn))
        with self._lock:
            self._topic_arns.pop(topic, None)

    def _drop_subscription(self, topic_arn: str, subscription: Mapping[str, Any]) -> None:
        """Unsubscribe one subscription of a topic being deleted, and delete its queue if ours."""
        subscription_arn = str(subscription.get("SubscriptionArn", ""))
        endpoint = str(subscription.get("Endpoint", ""))
        if subscription_arn.startswith("arn:"):  # "PendingConfirmation" has no ARN yet
            with contextlib.suppress(NotFoundError):
                self._call(
                    f"subscription {subscription_arn}",
                    lambda: self._sns.unsubscribe(SubscriptionArn=subscription_arn),
                )
        name = endpoint.rsplit(":", 1)[-1]
        # Only queues of this account and region, named by this backend's prefix, are deleted.
        if subscription.get("Protocol") != "sqs" or not name.startswith(self._prefix):
            return
        if endpoint != _sibling_arn(topic_arn, "sqs", name):
            return
        resource = f"queue {name} (SQS)"
        with contextlib.suppress(NotFoundError):
            found = self._call(resource, lambda: self._sqs.get_queue_url(QueueName=name))
            queue_url = str(found["QueueUrl"])
            self._call(resource, lambda: self._sqs.delete_queue(QueueUrl=queue_url))

    def subscribe(
        self, topic: str, group: str | None = None, *, visibility_timeout: float | None = None
    ) -> SQSSubscription:
        """Join ``group`` on ``topic`` (creating it if needed) and return a subscription.

        :param group: ``None`` makes a private queue deleted when the subscription closes.
        :param visibility_timeout: lease of received messages in seconds (SQS rounds up to whole
            seconds); ``None`` takes the instance's default.
        :raises InvalidTopicError: ``topic`` or ``group`` is not a portable name.
        """
        validate_topic(topic)
        if group is not None:
            validate_topic(group)
        lease = self.visibility_timeout if visibility_timeout is None else visibility_timeout
        self._check_visibility(lease)
        queue_group = group if group is not None else _ANONYMOUS + uuid.uuid4().hex
        queue_url, subscription_arn = self._ensure(topic, queue_group)
        sub = SQSSubscription(
            self,
            topic,
            group,
            queue_url=queue_url,
            queue=queue_name(self._prefix, topic, queue_group),
            subscription_arn=subscription_arn,
            visibility_timeout=lease,
        )
        self._subscriptions.add(sub)
        return sub

    def _group_id(self) -> str:
        if self._ordered:
            return f"{self._id}-{threading.get_ident()}"
        return uuid.uuid4().hex

    def _body(self, data: bytes) -> str:
        if len(data) > self.max_message_bytes:
            raise PayloadTooLargeError(
                f"message of {len(data)} bytes is over the {self.max_message_bytes}-byte limit of "
                f"the sqs backend (SNS takes {_SNS_MAX_BYTES} bytes, and bodies travel as base64)",
                provider=self.name,
            )
        return encode_body(bytes(data))

    def _with_topic(self, topic: str, send: Callable[[str], None]) -> None:
        """Run ``send(topic ARN)``; if a cached topic was deleted meanwhile, recreate it once."""
        try:
            send(self._topic_arn(topic))
        except NotFoundError:
            send(self._topic_arn(topic, refresh=True))

    def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` to every group of ``topic`` (SNS ``Publish``).

        :raises InvalidTopicError: ``topic`` is not a portable name.
        :raises PayloadTooLargeError: ``data`` is over :attr:`max_message_bytes`.
        """
        validate_topic(topic)
        body = self._body(data)
        group_id = self._group_id()
        # botocore's retries resend this same id, so SNS drops the duplicates they could make
        dedup_id = uuid.uuid4().hex

        def send(arn: str) -> None:
            self._call(
                f"publish to topic {topic!r}",
                lambda: self._sns.publish(
                    TopicArn=arn,
                    Message=body,
                    MessageGroupId=group_id,
                    MessageDeduplicationId=dedup_id,
                ),
            )

        self._with_topic(topic, send)

    def publish_many(self, topic: str, items: list[bytes]) -> None:
        """Publish several messages in order with ``PublishBatch`` (10 or 256 KiB per call).

        Every item is checked before anything is sent.

        :raises InvalidTopicError: ``topic`` is not a portable name.
        :raises PayloadTooLargeError: an item is over :attr:`max_message_bytes`.
        """
        validate_topic(topic)
        bodies = [self._body(data) for data in items]
        batches: list[list[str]] = []
        size = 0
        for body in bodies:
            if not batches or len(batches[-1]) == _MAX_BATCH or size + len(body) > _SNS_MAX_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(body)
            size += len(body)
        group_id = self._group_id()
        for batch in batches:
            entries = [
                {
                    "Id": str(i),
                    "Message": body,
                    "MessageGroupId": group_id if self._ordered else uuid.uuid4().hex,
                    "MessageDeduplicationId": uuid.uuid4().hex,
                }
                for i, body in enumerate(batch)
            ]
            self._with_topic(topic, partial(self._send_batch, topic, entries=entries))

    def _send_batch(self, topic: str, arn: str, entries: list[dict[str, str]]) -> None:
        resource = f"publish to topic {topic!r}"
        response = self._call(
            resource,
            lambda: self._sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries),
        )
        failed = response.get("Failed") or []
        if failed:
            first = failed[0]
            raise error_from_code(
                self.name,
                f"{resource} ({len(failed)} of {len(entries)} batch entries failed)",
                str(first.get("Code", "")),
                str(first.get("Message", "")),
            )

    # ------------------------------------------------------------------ lifecycle

    def to_config(self) -> dict[str, Any]:
        """Return JSON constructor kwargs that rebuild an instance sharing the topics and queues.

        :raises ConfigurationError: a credential was given as a literal value.
        """
        config: dict[str, Any] = {
            "region": self._region,
            "endpoint_url": self._endpoint_url,
            "prefix": self._prefix,
            "visibility_timeout": self.visibility_timeout,
            "wait_seconds": self._wait_seconds,
            "ordered": self._ordered,
            "max_attempts": self._max_attempts,
        }
        config.update(secrets_for_config(self.name, self._secrets))
        return config

    def close(self) -> None:
        """Close every subscription (private queues are deleted) and the clients. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscriptions):
            with contextlib.suppress(Exception):  # one broken subscription must not block close
                sub.close()
        if self._owns_clients:
            self._sns.close()
            self._sqs.close()

    def __repr__(self) -> str:
        return f"SQSPubSub(region={self._region!r}, prefix={self._prefix!r})"


class _AckSender:
    """Sends the acks of one subscription in the background, up to 10 per ``DeleteMessageBatch``.

    An ack then costs the consumer no round trip, and a burst of acks costs one request per ten.
    Acks queue up while a batch is in flight, so batches form without any added delay.
    """

    def __init__(self, subscription: SQSSubscription) -> None:
        # Weak: a private subscription dropped without close() must stay collectable (its
        # finalizer deletes the queue) even while this sender's thread waits for work.
        self._sub = weakref.ref(subscription)
        self._cond = threading.Condition()
        self._pending: list[_Lease] = []
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    def add(self, lease: _Lease) -> None:
        with self._cond:
            self._pending.append(lease)
            # A forked child inherits a Thread object whose thread does not exist there.
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._run, name="faasml-sqs-acks", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                ready = self._cond.wait_for(
                    lambda: bool(self._pending) or self._stopping, timeout=_ACK_IDLE
                )
                if not self._pending:
                    if not ready or self._stopping:
                        self._thread = None  # idle or stopped: add() starts a new thread
                        return
                batch = self._pending[:_MAX_BATCH]
                del self._pending[:_MAX_BATCH]
                self._in_flight += 1
            sub = self._sub()
            try:
                if sub is not None:
                    sub._delete(batch)
            except Exception:  # the thread must survive; the messages are simply redelivered
                _log.warning("acks on %s failed", sub._resource() if sub else "?", exc_info=True)
            finally:
                del sub
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued ack was sent; return whether that happened in time."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and not self._in_flight, timeout=timeout
            )

    def stop(self, timeout: float) -> None:
        """Send what is queued, then end the thread."""
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


class SQSSubscription(Subscription):
    """A consumer of one SQS queue (one group of one topic); made by :meth:`SQSPubSub.subscribe`.

    Thread-safe: several threads may receive, ack and touch concurrently. Acks are sent in the
    background, batched (see :meth:`flush`); nack and touch are sent at once.
    """

    def __init__(
        self,
        pubsub: SQSPubSub,
        topic: str,
        group: str | None,
        *,
        queue_url: str,
        queue: str,
        subscription_arn: str,
        visibility_timeout: float,
    ) -> None:
        self.topic = topic
        self.group = group
        self._pubsub = pubsub
        self._sqs: Any = pubsub._sqs
        self._queue_url = queue_url
        self._queue = queue
        self._lease_seconds = min(_MAX_VISIBILITY, max(1, math.ceil(visibility_timeout)))
        self._lock = threading.Lock()
        self._held: dict[int, _Lease] = {}
        self._acks = _AckSender(self)
        self._closed = False
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if group is None:
            self._finalizer = weakref.finalize(
                self,
                _drop_private_queue,
                pubsub._sns,
                pubsub._sqs,
                subscription_arn,
                queue_url,
                os.getpid(),
            )

    @property
    def queue_url(self) -> str:
        """URL of the SQS queue this subscription reads."""
        return self._queue_url

    @property
    def visibility_timeout(self) -> int:
        """The lease of received messages, in whole seconds."""
        return self._lease_seconds

    def _resource(self) -> str:
        group = "a private group" if self.group is None else f"group {self.group!r}"
        return f"{group} of topic {self.topic!r} (SQS {self._queue})"

    def get_many(self, max_messages: int = 10, timeout: float | None = None) -> list[Message]:
        """Wait up to ``timeout`` seconds (``None``: forever); return up to ``max_messages``.

        At most 10 messages come back per call (the SQS limit).

        :raises ValueError: ``max_messages`` is below 1, or the subscription is (or, while this
            call waited, was) closed.
        :raises NotFoundError: the group's queue was deleted.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        count = min(max_messages, _MAX_BATCH)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        missing = {
            "AWS.SimpleQueueService.NonExistentQueue": (
                f"the queue of {self._resource()} no longer exists; subscribe again to recreate it"
            )
        }
        while True:
            if self._closed:
                raise ValueError(f"{self!r} is closed; subscribe again to receive")
            if deadline is None:
                wait = self._pubsub._wait_seconds
            else:
                # SQS waits in whole seconds; without the slack, timeout=1.0 (0.9999 s left by
                # now) would round down to a busy series of short polls.
                left = deadline - time.monotonic() + _WAIT_SLACK
                wait = max(0, min(self._pubsub._wait_seconds, int(left)))
            sent = time.monotonic()
            try:
                response = self._pubsub._call(
                    f"receive from {self._resource()}",
                    partial(
                        self._sqs.receive_message,
                        QueueUrl=self._queue_url,
                        MaxNumberOfMessages=count,
                        WaitTimeSeconds=wait,
                        VisibilityTimeout=self._lease_seconds,
                        # AttributeNames (deprecated for MessageSystemAttributeNames) also
                        # works with the older botocore releases faasml[aws] allows
                        AttributeNames=["ApproximateReceiveCount"],
                        # FIFO: a retried receive returns the same messages, not new leases
                        ReceiveRequestAttemptId=uuid.uuid4().hex,
                    ),
                    missing,
                )
            except NotFoundError:
                if self._closed:  # closed, and its private queue deleted, while we waited
                    raise ValueError(f"{self!r} was closed while receiving") from None
                raise
            received = response.get("Messages") or []
            if received:
                # SQS started the lease somewhere between sending and answering; a long poll
                # answers as soon as messages arrive, so the answer time is the closer bound.
                start = max(sent, time.monotonic() - _RESPONSE_MARGIN)
                return [self._message(item, start) for item in received]
            if deadline is None:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            if wait == 0:
                time.sleep(min(_SHORT_POLL_INTERVAL, left))

    def _message(self, item: Mapping[str, Any], start: float) -> Message:
        lease = _Lease(str(item["ReceiptHandle"]), start + self._lease_seconds)
        with self._lock:
            # Forget leases that ran out: those messages are back in the queue anyway.
            for key in [k for k, held in self._held.items() if not held.live()]:
                del self._held[key]
            self._held[id(lease)] = lease
        attributes = item.get("Attributes") or {}
        return Message(
            decode_body(str(item.get("Body", ""))),
            topic=self.topic,
            id=str(item.get("MessageId", "")),
            deliveries=int(attributes.get("ApproximateReceiveCount", 1)),
            ack=lambda: self._ack(lease),
            nack=lambda: self._change(lease, "nack"),
            touch=lambda: self._change(lease, "touch"),
        )

    def _release(self, lease: _Lease) -> bool:
        """Mark the lease settled; return whether it was still live (worth telling SQS)."""
        with self._lock:
            live = lease.live()
            lease.done = True
            self._held.pop(id(lease), None)
        return live

    def _ack(self, lease: _Lease) -> None:
        with self._lock:
            self._held.pop(id(lease), None)
            if not lease.live() or (self._closed and self.group is None):
                lease.done = True  # ran out, or its private queue is gone with the subscription
                return
        self._acks.add(lease)

    def _delete(self, leases: list[_Lease]) -> None:
        """Delete the messages of ``leases`` that are still live (called by :class:`_AckSender`)."""
        live = [lease for lease in leases if self._release(lease)]
        if not live:
            return
        response = self._pubsub._call(
            f"ack on {self._resource()}",
            lambda: self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": lease.receipt_handle}
                    for i, lease in enumerate(live)
                ],
            ),
        )
        for failure in response.get("Failed") or []:
            if failure.get("Code") not in _LEASE_LOST:
                _log.warning(
                    "ack on %s failed (%s: %s); the message will be redelivered",
                    self._resource(),
                    failure.get("Code"),
                    failure.get("Message"),
                )

    def _change(self, lease: _Lease, action: str) -> None:
        """Nack (visibility 0) or touch (visibility = lease) one message, if its lease is live."""
        if action == "nack":
            if not self._release(lease):
                return
        else:
            with self._lock:
                if not lease.live():
                    return
        seconds = 0 if action == "nack" else self._lease_seconds
        sent = time.monotonic()
        try:
            self._pubsub._call(
                f"{action} on {self._resource()}",
                lambda: self._sqs.change_message_visibility(
                    QueueUrl=self._queue_url,
                    ReceiptHandle=lease.receipt_handle,
                    VisibilityTimeout=seconds,
                ),
            )
        except ProviderError as exc:
            if exc.code in _LEASE_LOST or (self._closed and isinstance(exc, NotFoundError)):
                # Lost meanwhile (or, for touch, past SQS's 12-hour total): the message will be
                # redelivered; a later ack of this copy is dropped.
                self._release(lease)
                _log.info("%s of a message on %s refused: %s", action, self._resource(), exc)
                return
            raise
        if action == "touch":
            with self._lock:
                lease.deadline = sent + self._lease_seconds

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the acks made so far reached SQS; return whether that happened in time.

        :param timeout: longest wait, in seconds.
        """
        return self._acks.flush(timeout)

    def close(self) -> None:
        """Stop consuming: send pending acks, give held messages back at once. Idempotent.

        A private group's queue is unsubscribed and deleted (with its messages).
        """
        if self._closed:
            return
        self._closed = True
        self._acks.stop(_CLOSE_TIMEOUT)
        with self._lock:
            held = [lease for lease in self._held.values() if lease.live()]
            for lease in self._held.values():
                lease.done = True
            self._held.clear()
        if self._finalizer is not None:
            self._finalizer()
            return
        for start in range(0, len(held), _MAX_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": lease.receipt_handle, "VisibilityTimeout": 0}
                for i, lease in enumerate(held[start : start + _MAX_BATCH])
            ]
            try:
                self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
            except Exception:  # best effort: the leases run out by themselves anyway
                _log.debug("releasing held messages of %s failed", self._resource(), exc_info=True)

    def __repr__(self) -> str:
        return f"SQSSubscription(topic={self.topic!r}, group={self.group!r})"

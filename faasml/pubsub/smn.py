"""Huawei Cloud SMN (Simple Message Notification) PubSub, paired with a pull-capable queue.

**SMN only pushes.** It delivers a published message to its subscribers (HTTP(S) endpoints,
FunctionGraph functions, email, SMS, chat bots) and has no API to pull a message, to acknowledge
one or to redeliver one whose consumer died. A PubSub needs all three, so SMN cannot be one on its
own, and its HTTP(S) subscriptions cannot reach a private or loopback address either.

The design is therefore an explicit pairing:

* :meth:`SMNPubSub.publish` sends the message to the SMN topic ``<prefix><topic>`` (created on
  first use; ``create_topic`` is idempotent) **and** to the paired queue backend given as
  ``queue=`` (``"redis"``, ``"nats"``, ``"local"``, ``"mns"`` ... or a configured instance). SMN
  fans the message out to whatever subscribes to the topic outside faasml (audit, alerting, a
  FunctionGraph trigger); the paired queue gives faasml's consumers groups, leases and acks;
* :meth:`SMNPubSub.delete_topic` deletes the SMN topic (and with it every SMN subscription to it)
  and then the topic in the paired queue;
* :meth:`SMNPubSub.subscribe` and :meth:`SMNPubSub.ensure_group` are the paired queue's, so
  groups, visibility timeouts, ``ack``/``nack``/``touch`` and ``deliveries`` behave exactly as that
  backend documents. Without ``queue=`` they raise :class:`~faasml.errors.ConfigurationError`.

Forwarding SMN's pushes into the queue (an SMN HTTP(S) or FunctionGraph subscription that writes
to the queue) would also work in production, but it needs a public endpoint, adds SMN's push
latency and retries to every message, and cannot run offline; publishing to both directly keeps
the contract testable and leaves SMN subscriptions free for other consumers.

Messages go to SMN as standard base64 in the ``message`` field (the SMN body must be a UTF-8
string of at most 256 KB; 192 KiB of payload fills it), and the empty payload as ``"="``, the
same encoding as the ``mns`` backend. :attr:`SMNPubSub.max_message_bytes` is the smaller of
192 KiB and the paired queue's limit. A publish sends to SMN first, then to the queue: if SMN
fails nothing is queued; if the queue fails the SMN copy is already out, and a retry sends it to
SMN again.

Credentials: ``access_key_id``/``secret_access_key``/``security_token`` take a string or
``{"$env": "VAR"}``; ``None`` reads ``HUAWEICLOUD_SDK_AK``/``HUAWEICLOUD_SDK_SK`` (and
``HUAWEICLOUD_SDK_SECURITY_TOKEN`` if set). ``project_id`` is required (``None`` reads
``HUAWEICLOUD_SDK_PROJECT_ID``): without it the SDK would ask IAM for it on every client build.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from faasml.config import backend_options, resolve_secret
from faasml.errors import (
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
from faasml.interfaces import PubSub, Subscription, validate_topic
from faasml.pubsub._common import encode_body, message_bytes
from faasml.storage._common import exportable_secret

__all__ = ["ERROR_STATUSES", "SMNPubSub", "translate_error"]

_log = logging.getLogger(__name__)

ENV_AK = "HUAWEICLOUD_SDK_AK"
ENV_SK = "HUAWEICLOUD_SDK_SK"
ENV_SECURITY_TOKEN = "HUAWEICLOUD_SDK_SECURITY_TOKEN"
ENV_PROJECT_ID = "HUAWEICLOUD_SDK_PROJECT_ID"

#: HTTP status of an SMN error response -> faasml error. Other 4xx statuses become a plain
#: ProviderError and every 5xx a ServiceUnavailableError; connection failures and timeouts are
#: ServiceUnavailableError too. The one place where SMN errors become faasml errors.
ERROR_STATUSES: dict[int, type[ProviderError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: ThrottledError,
}
_HINTS: dict[type[ProviderError], str] = {
    AuthenticationError: (
        f"; check the AK/SK (access_key_id/secret_access_key, or ${ENV_AK} and ${ENV_SK})"
    ),
    PermissionDeniedError: "; the AK/SK is valid but its IAM policy does not allow this",
    ThrottledError: "; SMN throttled the request, try again later",
}
#: the SMN error code for a topic that does not exist (deleted behind this instance's back).
TOPIC_NOT_FOUND = "SMN.0006"
#: SMN's limit on the ``message`` string, and the largest payload whose base64 fits in it.
SMN_MESSAGE_LIMIT = 256 * 1024
_MAX_PAYLOAD = SMN_MESSAGE_LIMIT // 4 * 3
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_TIMEOUT = (10.0, 30.0)

_PUSH_ONLY = (
    "SMN only pushes (to HTTP(S) endpoints, FunctionGraph, email, SMS): it has no API to pull "
    "or acknowledge a message, so SMNPubSub cannot {what} on its own. Pair it with a "
    "pull-capable queue backend through queue=, for example SMNPubSub(..., queue='redis') or "
    "queue={{'backend': 'redis', 'options': {{'url': 'redis://...'}}}}: publish then goes to SMN "
    "and to that queue, and subscribe/ensure_group use the queue"
)


def translate_error(exc: Exception, *, endpoint: str, doing: str) -> FaaSMLError:
    """Turn a huaweicloudsdkcore exception into the faasml error :data:`ERROR_STATUSES` names.

    :param exc: ``ClientRequestException``/``ServerResponseException`` (an error response, with
        ``status_code``, ``error_code``, ``error_msg`` and ``request_id``), a
        ``ConnectionException`` or ``RequestTimeoutException`` (nothing answered), a raw
        ``requests`` exception (huaweicloudsdkcore 3.1 lets a read timeout of the request itself
        escape unwrapped), or another ``SdkException``.
    :param endpoint: the SMN endpoint or region, named in connection errors.
    :param doing: what was being done, for the message.
    """
    import requests
    from huaweicloudsdkcore.exceptions.exceptions import (
        ConnectionException,
        RequestTimeoutException,
        ServiceResponseException,
    )

    if isinstance(exc, ServiceResponseException):
        status = int(exc.status_code)
        cls = ERROR_STATUSES.get(
            status, ServiceUnavailableError if status >= 500 else ProviderError
        )
        return cls(
            f"SMN refused {doing}: HTTP {status} {exc.error_code}: {exc.error_msg}"
            f"{_HINTS.get(cls, '')}",
            provider="smn",
            code=exc.error_code,
            status=status,
            request_id=exc.request_id,
        )
    if isinstance(
        exc, (ConnectionException, RequestTimeoutException, requests.exceptions.RequestException)
    ):
        return ServiceUnavailableError(
            f"SMN endpoint {endpoint} is unreachable ({doing}): {exc}",
            provider="smn",
            code=type(exc).__name__,
        )
    return ProviderError(f"SMN client error while {doing}: {exc}", provider="smn")


def _encode(data: object, limit: int, queue_name: str | None) -> tuple[bytes, str]:
    raw = message_bytes(data)
    if len(raw) > limit:
        paired = f" and the paired {queue_name!r} queue's" if queue_name else ""
        raise PayloadTooLargeError(
            f"message of {len(raw)} bytes is over the SMN PubSub limit of {limit} bytes (the "
            f"smaller of SMN's {SMN_MESSAGE_LIMIT}-byte message, which carries the payload as "
            f"base64{paired}); store large data in the object store and publish its key",
            provider="smn",
        )
    return raw, encode_body(raw)


def _build_queue(queue: str | Mapping[str, Any] | PubSub) -> tuple[PubSub, bool]:
    """The paired queue backend, and whether this instance made it (and so must close it)."""
    if isinstance(queue, PubSub):
        if isinstance(queue, SMNPubSub):
            raise ConfigurationError(
                "SMNPubSub cannot pair with another SMNPubSub: SMN cannot pull"
            )
        return queue, False
    if isinstance(queue, str):
        name, options = queue, {}
    elif isinstance(queue, Mapping):
        unknown = sorted(set(queue) - {"backend", "options"})
        options_given = queue.get("options") or {}
        if (
            unknown
            or not isinstance(queue.get("backend"), str)
            or not isinstance(options_given, Mapping)
        ):
            raise ConfigurationError(
                "queue= as a mapping must be {'backend': <PubSub name>, 'options': {...}}, "
                f"got {dict(queue)!r}"
            )
        name, options = queue["backend"], dict(options_given)
    else:
        raise ConfigurationError(
            "queue= must be a PubSub backend name, {'backend': name, 'options': {...}} or a "
            f"PubSub instance, got {type(queue).__name__}"
        )
    if name == SMNPubSub.name:
        raise ConfigurationError("SMNPubSub cannot pair with another SMNPubSub: SMN cannot pull")
    from faasml import registry

    cls = registry.backend_class("pubsub", name)
    built = cls(**backend_options(name, cls, options))
    if not isinstance(built, PubSub):
        raise ConfigurationError(f"PubSub backend {name!r} built a {type(built).__name__}")
    return built, True


class SMNPubSub(PubSub):
    """Publishes to Huawei Cloud SMN and to a paired queue; consumes from the queue.

    SMN only pushes: it has no pull or acknowledge API, so subscribing goes through the paired
    queue given as ``queue=`` (see the module docstring for the design and its trade-offs).

    :param region: the SMN region id (``"cn-north-4"``); or give ``endpoint`` instead.
    :param project_id: the project id; ``None`` reads ``$HUAWEICLOUD_SDK_PROJECT_ID``.
    :param endpoint: the SMN endpoint URL, instead of ``region``.
    :param access_key_id: AK; a string or ``{"$env": "VAR"}``; ``None`` reads
        ``$HUAWEICLOUD_SDK_AK``.
    :param secret_access_key: SK; ``{"$env": "VAR"}`` (a literal string works but then
        :meth:`to_config` refuses); ``None`` reads ``$HUAWEICLOUD_SDK_SK``.
    :param security_token: a temporary security token, as ``{"$env": "VAR"}``; ``None`` reads
        ``$HUAWEICLOUD_SDK_SECURITY_TOKEN`` if it is set.
    :param queue: the pull-capable queue paired with SMN: a PubSub backend name (built from its
        configuration layers), ``{"backend": name, "options": {...}}``, or a PubSub instance
        (used as is and not closed by :meth:`close`). ``None`` allows publishing only.
    :param prefix: start of every SMN topic name: 1-64 letters, digits, ``_`` or ``-``, starting
        with a letter or digit.
    :param client: a ready ``huaweicloudsdksmn.v2.SmnClient`` to use instead of building one;
        it does not travel in :meth:`to_config`.
    :raises ConfigurationError: an option is invalid, or credentials or the project id are
        missing.
    """

    name: ClassVar[str] = "smn"
    #: 192 KiB, the largest payload whose base64 fits in SMN's 256 KB message; an instance lowers
    #: it to its paired queue's limit when that is smaller.
    max_message_bytes: int = _MAX_PAYLOAD

    def __init__(
        self,
        region: str | None = None,
        project_id: str | None = None,
        *,
        endpoint: str | None = None,
        access_key_id: str | dict[str, str] | None = None,
        secret_access_key: str | dict[str, str] | None = None,
        security_token: str | dict[str, str] | None = None,
        queue: str | Mapping[str, Any] | PubSub | None = None,
        prefix: str = "faasml-",
        client: Any = None,
    ) -> None:
        if (region is None) == (endpoint is None) and client is None:
            raise ConfigurationError(
                "SMNPubSub needs exactly one of region (e.g. 'cn-north-4') and endpoint "
                f"(e.g. 'https://smn.cn-north-4.myhuaweicloud.com'), got region={region!r} "
                f"endpoint={endpoint!r}"
            )
        if endpoint is not None and not re.match(r"^https?://[^/\s]+/?$", endpoint):
            raise ConfigurationError(f"SMN endpoint must be an http(s):// URL, got {endpoint!r}")
        if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
            raise ConfigurationError(
                "SMN prefix must be 1-64 letters, digits, '_' or '-' starting with a letter or "
                f"digit (SMN topic names allow nothing else), got {prefix!r}"
            )
        resolved_project = project_id or os.environ.get(ENV_PROJECT_ID)
        if not resolved_project:
            raise ConfigurationError(
                f"SMNPubSub needs project_id (or ${ENV_PROJECT_ID}): without it the Huawei SDK "
                "asks IAM for the project on every client build"
            )
        self.region = region
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.project_id = project_id
        self.prefix = prefix
        self._project_id = resolved_project
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._security_token = security_token
        self._client = client
        self._credentials = ("", "", "")
        if client is None:
            self._credentials = self._resolve_credentials()
            self._region_object()  # an unknown region fails here, not at the first publish
        self._lock = threading.Lock()
        self._urns: dict[str, str] = {}
        self._queue: PubSub | None = None
        self._owns_queue = False
        if queue is not None:
            self._queue, self._owns_queue = _build_queue(queue)
            # Instance attributes on purpose: the effective limit and order are the paired queue's.
            self.max_message_bytes = min(_MAX_PAYLOAD, self._queue.max_message_bytes)
            self.preserves_order = self._queue.preserves_order

    def _resolve_credentials(self) -> tuple[str, str, str]:
        ak = resolve_secret(self._access_key_id, "SMN access_key_id") or os.environ.get(ENV_AK)
        sk = resolve_secret(self._secret_access_key, "SMN secret_access_key") or os.environ.get(
            ENV_SK
        )
        if not ak or not sk:
            raise ConfigurationError(
                "no Huawei Cloud AK/SK for SMN: pass access_key_id= and secret_access_key= (a "
                f'string or {{"$env": "VAR"}}) or export {ENV_AK} and {ENV_SK}'
            )
        token = resolve_secret(self._security_token, "SMN security_token") or os.environ.get(
            ENV_SECURITY_TOKEN, ""
        )
        return ak, sk, token

    def _region_object(self) -> Any:
        from huaweicloudsdksmn.v2.region.smn_region import SmnRegion

        if self.region is None:
            return None
        try:
            return SmnRegion.value_of(self.region)
        except KeyError as exc:
            raise ConfigurationError(f"unknown SMN region: {exc.args[0]}") from exc

    # ------------------------------------------------------------------ configuration

    @property
    def queue(self) -> PubSub | None:
        """The paired queue backend, or ``None``."""
        return self._queue

    def to_config(self) -> dict[str, Any]:
        """Return constructor kwargs that rebuild this PubSub (and its queue) elsewhere.

        The AK is an identifier and travels as given; the SK and the token travel only as
        ``{"$env": "VAR"}`` references. The paired queue travels as
        ``{"backend": name, "options": queue.to_config()}``; an injected ``client`` does not
        travel.

        :raises ConfigurationError: the SK or the token was given as a literal string, or the
            paired queue cannot export its configuration.
        """
        key_id = self._access_key_id
        queue: dict[str, Any] | None = None
        if self._queue is not None:
            backend = type(self._queue).name
            if not backend:
                raise ConfigurationError(
                    f"the paired queue {self._queue!r} has no registry name, so it cannot be "
                    "rebuilt in a worker"
                )
            queue = {"backend": backend, "options": self._queue.to_config()}
        return {
            "region": self.region,
            "project_id": self.project_id,
            "endpoint": self.endpoint,
            "access_key_id": dict(key_id) if isinstance(key_id, dict) else key_id,
            "secret_access_key": exportable_secret(self._secret_access_key, "secret_access_key"),
            "security_token": exportable_secret(self._security_token, "security_token"),
            "queue": queue,
            "prefix": self.prefix,
        }

    def __repr__(self) -> str:
        where = self.endpoint or self.region
        return f"SMNPubSub({where!r}, queue={self._queue!r})"

    # ------------------------------------------------------------------ SMN access

    def _where(self) -> str:
        if self.endpoint is not None:
            return self.endpoint
        if self.region is not None:
            return f"https://smn.{self.region}.myhuaweicloud.com"
        return "(the injected SMN client's endpoint)"

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Translate the SDK exceptions raised inside the block (the module's error boundary)."""
        import requests
        from huaweicloudsdkcore.exceptions.exceptions import SdkException

        try:
            yield
        except (SdkException, requests.exceptions.RequestException) as exc:
            raise translate_error(exc, endpoint=self._where(), doing=doing) from exc

    def _smn(self) -> Any:
        """The SMN client, built on first use (a consumer-only worker never needs one)."""
        with self._lock:
            if self._client is None:
                from huaweicloudsdkcore.auth.credentials import BasicCredentials
                from huaweicloudsdkcore.http.http_config import HttpConfig
                from huaweicloudsdksmn.v2 import SmnClient

                ak, sk, token = self._credentials
                credentials = BasicCredentials(ak, sk, self._project_id)
                if token:
                    credentials = credentials.with_security_token(token)
                config = HttpConfig.get_default_config()
                config.retry_times = 0  # a publish is not idempotent: retrying is the caller's call
                config.timeout = _TIMEOUT
                builder = SmnClient.new_builder().with_credentials(credentials)
                builder = builder.with_http_config(config)
                if self.endpoint is not None:
                    builder = builder.with_endpoint(self.endpoint)
                else:
                    builder = builder.with_region(self._region_object())
                self._client = builder.build()
            return self._client

    def ex_topic_urn(self, topic: str) -> str:
        """The URN of ``topic``'s SMN topic, creating the topic if needed.

        Useful to add SMN subscriptions (FunctionGraph, HTTP(S), email) outside faasml.
        """
        validate_topic(topic)
        with self._lock:
            known = self._urns.get(topic)
        if known is not None:
            return known
        from huaweicloudsdksmn.v2 import CreateTopicRequest, CreateTopicRequestBody

        name = self.prefix + topic
        with self._errors(f"creating topic {name}"):
            response = self._smn().create_topic(
                CreateTopicRequest(body=CreateTopicRequestBody(name=name))
            )
        urn = str(response.topic_urn)
        with self._lock:
            self._urns[topic] = urn
        return urn

    def _send(self, topic: str, message: str) -> None:
        from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
        from huaweicloudsdksmn.v2 import PublishMessageRequest, PublishMessageRequestBody

        for attempt in (1, 2):
            urn = self.ex_topic_urn(topic)
            request = PublishMessageRequest(
                topic_urn=urn, body=PublishMessageRequestBody(message=message)
            )
            with self._errors(f"publishing to topic {urn}"):
                try:
                    self._smn().publish_message(request)
                    return
                except ClientRequestException as exc:
                    if exc.error_code != TOPIC_NOT_FOUND or attempt == 2:
                        raise
            # The topic was deleted since this instance created it: create it again, once.
            with self._lock:
                self._urns.pop(topic, None)

    # ------------------------------------------------------------------ PubSub

    def publish(self, topic: str, data: bytes | bytearray | memoryview) -> None:
        """Publish ``data`` to SMN and, when paired, to the queue's groups of ``topic``.

        :raises PayloadTooLargeError: ``data`` is over :attr:`max_message_bytes`.
        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        raw, message = _encode(data, self.max_message_bytes, self._queue_name())
        self._send(topic, message)
        if self._queue is not None:
            self._queue.publish(topic, raw)

    def publish_many(self, topic: str, items: Sequence[bytes | bytearray | memoryview]) -> None:
        """Publish several messages: each to SMN (no batch API), then all to the queue at once.

        Every item is checked before the first is sent.

        :raises PayloadTooLargeError: an item is over :attr:`max_message_bytes` (nothing is sent).
        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        encoded = [_encode(data, self.max_message_bytes, self._queue_name()) for data in items]
        for _, message in encoded:
            self._send(topic, message)
        if self._queue is not None and encoded:
            self._queue.publish_many(topic, [raw for raw, _ in encoded])

    def _queue_name(self) -> str | None:
        return None if self._queue is None else type(self._queue).name

    def _paired(self, what: str) -> PubSub:
        if self._queue is None:
            raise ConfigurationError(_PUSH_ONLY.format(what=what))
        return self._queue

    def subscribe(
        self, topic: str, group: str | None = None, *, visibility_timeout: float | None = None
    ) -> Subscription:
        """Subscribe through the paired queue (SMN itself cannot be pulled from).

        :param visibility_timeout: the lease; ``None`` takes the paired queue's default.
        :raises ConfigurationError: no queue is paired.
        :raises InvalidTopicError: ``topic`` or ``group`` is not a portable name.
        """
        validate_topic(topic)
        if group is not None:
            validate_topic(group)
        queue = self._paired("subscribe")
        if visibility_timeout is None:
            return queue.subscribe(topic, group)
        return queue.subscribe(topic, group, visibility_timeout=visibility_timeout)

    def ensure_group(self, topic: str, group: str) -> None:
        """Create ``group`` on ``topic`` in the paired queue.

        :raises ConfigurationError: no queue is paired.
        :raises InvalidTopicError: ``topic`` or ``group`` is not a portable name.
        """
        validate_topic(topic)
        validate_topic(group)
        self._paired("hold a consumer group").ensure_group(topic, group)

    def delete_topic(self, topic: str) -> None:
        """Delete the SMN topic, then the topic in the paired queue; idempotent.

        The SMN topic is looked up by name (``ListTopics``), so a topic that was never created is
        not created to be deleted. Deleting it removes **every** SMN subscription to it, those
        added outside faasml included. A later publish creates the SMN topic again.

        :raises InvalidTopicError: ``topic`` is not a portable name.
        """
        validate_topic(topic)
        from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
        from huaweicloudsdksmn.v2 import DeleteTopicRequest

        urn = self._find_topic_urn(topic)
        if urn is not None:
            with self._errors(f"deleting topic {urn}"):
                try:
                    self._smn().delete_topic(DeleteTopicRequest(topic_urn=urn))
                except ClientRequestException as exc:
                    if int(exc.status_code) != 404:
                        raise
        with self._lock:
            self._urns.pop(topic, None)
        if self._queue is not None:
            self._queue.delete_topic(topic)

    def _find_topic_urn(self, topic: str) -> str | None:
        """The URN of ``topic``'s SMN topic if it exists, without creating it."""
        from huaweicloudsdksmn.v2 import ListTopicsRequest

        name = self.prefix + topic
        with self._errors(f"looking up topic {name}"):
            response = self._smn().list_topics(ListTopicsRequest(name=name))
        for found in response.topics or []:
            if found.name == name:  # ``name`` is an exact filter; checked all the same
                return str(found.topic_urn)
        return None

    def close(self) -> None:
        """Close the paired queue if this instance built it. Idempotent."""
        if self._owns_queue and self._queue is not None:
            self._queue.close()

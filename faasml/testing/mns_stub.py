"""A loopback emulator of the Alibaba Cloud MNS (Simple Message Queue) REST API, for tests.

``aliyun-mns-sdk`` talks to MNS through :mod:`http.client`, so HTTP mocking libraries such as
``responses`` cannot intercept it. :class:`MNSStub` is instead a real HTTP server on 127.0.0.1
that speaks the subset of the MNS API (version ``2015-06-06``) that queue-and-topic messaging
needs, with the documented XML bodies, status codes, error codes and headers::

    from faasml.testing.mns_stub import MNSStub

    with MNSStub(access_key_id="id", access_key_secret="secret") as stub:
        account = mns.account.Account(stub.endpoint, "id", "secret")
        ...

What it implements (see https://www.alibabacloud.com/help/en/mns/developer-reference):

* **Authentication**: every request must carry ``Authorization: MNS <AccessKeyId>:<Signature>``
  (``MissingAuthorizationHeader``/``InvalidAuthorizationHeader``, 400), the configured AccessKeyId
  (``InvalidAccessKeyId``, 403) and the HMAC-SHA1 signature of the canonical string computed with
  the configured AccessKeySecret (``SignatureDoesNotMatch``, 403); a ``Date`` header within 15
  minutes of now (``MissingDateHeader``/``InvalidDateHeader``, 400; ``TimeExpired``, 408) and
  ``x-mns-version: 2015-06-06`` (``MissingVersionHeader``/``InvalidVersionHeader``, 400).
* **Queues**: CreateQueue (201, or 204 when it exists with the same attributes, 409
  ``QueueAlreadyExist`` otherwise; names of at most 120 characters of letters, digits and ``-``
  starting with a letter or digit), SetQueueAttributes, GetQueueAttributes, DeleteQueue;
  attributes VisibilityTimeout, MaximumMessageSize, MessageRetentionPeriod, DelaySeconds,
  PollingWaitSeconds, LoggingEnabled with their documented ranges (``InvalidArgument``, 400).
* **Messages**: SendMessage/BatchSendMessage, ReceiveMessage/BatchReceiveMessage (at most 16,
  long polling with ``waitseconds`` 0-30 or the queue's PollingWaitSeconds, ``MessageNotExist``
  404 when nothing is visible), DeleteMessage/BatchDeleteMessage and ChangeMessageVisibility
  (1-43200 s). A received message becomes invisible for the queue's VisibilityTimeout; every
  receive and every ChangeMessageVisibility hands out a **new** receipt handle and invalidates the
  previous one, so a late DeleteMessage or ChangeMessageVisibility answers 404
  ``MessageNotExist`` (a malformed handle answers 400 ``ReceiptHandleError``). ``DequeueCount``
  counts receives. Messages are served oldest first.
* **Topics**: CreateTopic (201/204/409 ``TopicAlreadyExist``), GetTopicAttributes, DeleteTopic,
  PublishMessage (404 ``TopicNotExist``; bodies over the topic's MaximumMessageSize, 65536 bytes
  by default, answer 400 ``InvalidArgument``), Subscribe (201/204/409
  ``SubscriptionAlreadyExist``), GetSubscriptionAttributes, ListSubscriptionByTopic (paged with
  the ``x-mns-prefix``, ``x-mns-ret-number`` (1-1000) and ``x-mns-marker`` headers) and
  Unsubscribe. A published message is pushed at once to every subscribed queue endpoint
  ``acs:mns:<region>:<account>:queues/<name>`` (the region and account must be the stub's, as
  MNS only pushes within one region and account) in the subscription's NotifyContentFormat:
  ``SIMPLIFIED`` (the raw body), ``XML`` or ``JSON`` (the documented notification envelopes).
  ``FilterTag`` is honoured. DeleteTopic deletes the topic's subscriptions with it.
* **Every response** carries ``x-mns-request-id`` and ``x-mns-version``; errors have the
  documented ``<Error><Code/><Message/><RequestId/><HostId/></Error>`` body.

What it leaves out: HTTP, mail and SMS endpoints (Subscribe refuses them with 400
``InvalidEndpoint`` instead of silently dropping pushes), push retries (a push to a missing queue
is dropped at once, where MNS would retry per NotifyStrategy), PeekMessage, message priorities,
FIFO message groups, message properties, ListQueue/ListTopic, account
attributes, logging, STS security tokens (any ``security-token`` header is accepted), quotas and
QPS limits (use :meth:`MNSStub.inject_error` to produce ``QpsLimitExceeded`` and the like). Pushes
are synchronous, so a message is in every queue when PublishMessage returns; on MNS the push is
asynchronous and takes a few milliseconds. What DeleteQueue, DeleteTopic and Unsubscribe answer
for a resource that does not exist is not documented; the stub answers 204.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.server
import itertools
import json
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

__all__ = ["API_VERSION", "MNSStub"]

#: the MNS API version the stub speaks (the ``x-mns-version`` header).
API_VERSION = "2015-06-06"
_XMLNS = "http://mns.aliyuncs.com/doc/v1/"
_MAX_WAIT_SECONDS = 30
_MAX_BATCH = 16
_MAX_CLOCK_SKEW = 15 * 60
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_QUEUE_NAME_MAX = 120
_TOPIC_NAME_MAX = 256
_QUEUE_ENDPOINT = re.compile(r"^acs:mns:(?P<region>[^:]+):(?P<account>[^:]+):queues/(?P<queue>.+)$")
_NOTIFY_STRATEGIES = ("BACKOFF_RETRY", "EXPONENTIAL_DECAY_RETRY")
_NOTIFY_FORMATS = ("XML", "JSON", "SIMPLIFIED")

# name: (low, high, default) of each queue attribute, from the CreateQueue reference.
_QUEUE_ATTRIBUTES: dict[str, tuple[int, int, int]] = {
    "DelaySeconds": (0, 604800, 0),
    "MaximumMessageSize": (1024, 65536, 65536),
    "MessageRetentionPeriod": (60, 604800, 345600),
    "VisibilityTimeout": (1, 43200, 30),
    "PollingWaitSeconds": (0, _MAX_WAIT_SECONDS, 0),
}

# API action -> the MNSStub method that serves it.
_ACTIONS: dict[str, str] = {
    "CreateQueue": "_create_queue",
    "SetQueueAttributes": "_set_queue_attributes",
    "GetQueueAttributes": "_get_queue_attributes",
    "DeleteQueue": "_delete_queue",
    "SendMessage": "_send_message",
    "BatchSendMessage": "_batch_send_message",
    "ReceiveMessage": "_receive_message",
    "BatchReceiveMessage": "_batch_receive_message",
    "DeleteMessage": "_delete_message",
    "BatchDeleteMessage": "_batch_delete_message",
    "ChangeMessageVisibility": "_change_message_visibility",
    "CreateTopic": "_create_topic",
    "GetTopicAttributes": "_get_topic_attributes",
    "DeleteTopic": "_delete_topic",
    "PublishMessage": "_publish_message",
    "Subscribe": "_subscribe",
    "GetSubscriptionAttributes": "_get_subscription_attributes",
    "ListSubscriptionByTopic": "_list_subscription_by_topic",
    "Unsubscribe": "_unsubscribe",
}
#: the paging headers of the List actions, handed to them as query parameters.
_LIST_HEADERS = ("x-mns-prefix", "x-mns-ret-number", "x-mns-marker")
_LIST_MAX = 1000


class _Fail(Exception):
    """An MNS error response: status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _invalid_value(name: str, low: int, high: int) -> _Fail:
    # The wording of the error-code table ("The value of Element should between Low and High").
    return _Fail(400, "InvalidArgument", f"The value of {name} should between {low} and {high}.")


@dataclass
class _Message:
    id: str
    body: str
    md5: str
    enqueue_ms: int
    visible_at: float
    first_dequeue_ms: int = 0
    dequeue_count: int = 0
    token: str = ""
    priority: int = 8


@dataclass
class _Queue:
    name: str
    attributes: dict[str, int | bool]
    created: int
    modified: int
    messages: OrderedDict[str, _Message] = field(default_factory=OrderedDict)


@dataclass
class _Subscription:
    name: str
    endpoint: str
    queue: str
    strategy: str
    content_format: str
    filter_tag: str
    created: int
    modified: int


@dataclass
class _Topic:
    name: str
    maximum_message_size: int
    logging_enabled: bool
    created: int
    modified: int
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)


@dataclass
class _Injected:
    code: str
    status: int
    message: str
    action: str | None
    remaining: int


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml(root: str, fields: list[tuple[str, object]]) -> bytes:
    inner = "".join(f"<{name}>{escape(str(value))}</{name}>" for name, value in fields)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{_XMLNS}">{inner}</{root}>'
    ).encode()


def _xml_list(root: str, item: str, rows: list[list[tuple[str, object]]]) -> bytes:
    inner = "".join(
        f"<{item}>" + "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in row) + f"</{item}>"
        for row in rows
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{_XMLNS}">{inner}</{root}>'
    ).encode()


def _parse(body: bytes, root: str) -> ElementTree.Element:
    try:
        element = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise _Fail(400, "MalformedXML", "The XML you provided was not well-formed.") from exc
    if _local(element.tag) != root:
        raise _Fail(
            400,
            "InvalidArgument",
            "The XML you provided did not validate against our published schema, "
            f"cause by {_local(element.tag)}.",
        )
    return element


def _fields(element: ElementTree.Element) -> dict[str, str]:
    return {_local(child.tag): (child.text or "") for child in element}


def _int_field(fields: dict[str, str], name: str, low: int, high: int, default: int) -> int:
    raw = fields.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise _invalid_value(name, low, high) from exc
    if not low <= value <= high:
        raise _invalid_value(name, low, high)
    return value


def _bool_field(fields: dict[str, str], name: str, default: bool) -> bool:
    raw = fields.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() not in ("true", "false"):
        raise _Fail(400, "InvalidArgument", f"The value of {name} should be True or False.")
    return raw.strip().lower() == "true"


def _md5(body: str) -> str:
    return hashlib.md5(body.encode("utf-8")).hexdigest().upper()


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Server(http.server.ThreadingHTTPServer):
    """A threaded HTTP server that remembers its open connections so that stop() can cut them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], stub: MNSStub) -> None:
        self.stub = stub
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive between requests, as the SDK expects.
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes; with Nagle's algorithm on, the body would wait for
    # the client's delayed ACK (40 ms on Linux) on every response.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: test output is not the place for an access log."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.stub._handle(self.command, self.path, self.headers, body)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)

    do_GET = do_PUT = do_POST = do_DELETE = _serve


class MNSStub:
    """An MNS REST API emulator on 127.0.0.1, for tests (see the module docstring for the scope).

    :param access_key_id: the only AccessKeyId the stub accepts.
    :param access_key_secret: the secret request signatures are checked with.
    :param region: the region in queue endpoints (``acs:mns:<region>:<account>:queues/<q>``).
    :param account_id: the account in queue endpoints, and the topics' owner.
    :param port: TCP port; 0 picks a free one.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. It is thread-safe and
    serves any number of clients, including other processes.
    """

    def __init__(
        self,
        access_key_id: str = "faasml-test-key-id",
        access_key_secret: str = "faasml-test-key-secret",
        *,
        region: str = "local",
        account_id: str = "0",
        port: int = 0,
    ) -> None:
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.region = region
        self.account_id = account_id
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._queues: dict[str, _Queue] = {}
        self._topics: dict[str, _Topic] = {}
        self._injected: list[_Injected] = []
        self._counter = itertools.count(1)
        self._actions: list[tuple[str, int]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> MNSStub:
        """Bind the port and serve in a background thread; return ``self``."""
        if self._server is not None:
            return self
        self._closing = False
        self._server = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mns-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: long polls return at once and open connections are closed. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        server.shutdown()
        with server.sockets_lock:
            for sock in list(server.open_sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # the client closed it meanwhile
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> MNSStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """The URL to give the SDK, ``http://127.0.0.1:<port>``.

        :raises RuntimeError: the stub is not started.
        """
        if self._server is None:
            raise RuntimeError("MNSStub is not started; call start() or use it in a with block")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ------------------------------------------------------------------ test helpers

    def inject_error(
        self,
        code: str,
        status: int,
        *,
        action: str | None = None,
        times: int = 1,
        message: str | None = None,
    ) -> None:
        """Make the next ``times`` authenticated requests (of ``action`` only, if given) fail.

        :param code: the MNS error code, e.g. ``"QpsLimitExceeded"``.
        :param status: the HTTP status, e.g. 400.
        :param action: an API action name (``"PublishMessage"``, ``"BatchReceiveMessage"``,
            ``"DeleteMessage"`` ...); ``None`` matches every request.
        """
        with self._cond:
            self._injected.append(
                _Injected(code, status, message or f"Injected {code}.", action, times)
            )

    def queue_names(self) -> list[str]:
        """The names of the existing queues, sorted."""
        with self._cond:
            return sorted(self._queues)

    def topic_names(self) -> list[str]:
        """The names of the existing topics, sorted."""
        with self._cond:
            return sorted(self._topics)

    def subscriptions(self, topic: str) -> dict[str, str]:
        """Subscription name -> endpoint of ``topic``'s subscriptions (empty if it is missing)."""
        with self._cond:
            found = self._topics.get(topic)
            return (
                {} if found is None else {s.name: s.endpoint for s in found.subscriptions.values()}
            )

    def queue_depth(self, queue: str) -> int:
        """How many messages (visible or not) ``queue`` holds.

        :raises KeyError: no such queue.
        """
        with self._cond:
            return len(self._queues[queue].messages)

    def actions(self) -> list[tuple[str, int]]:
        """Every request served so far as ``(action, HTTP status)``, oldest first."""
        with self._cond:
            return list(self._actions)

    # ------------------------------------------------------------------ request handling

    def _handle(self, method: str, target: str, headers: Any, body: bytes) -> _Reply:
        request_id = secrets.token_hex(12).upper()
        action = "Unknown"
        try:
            path, _, raw_query = target.partition("?")
            query = self._query(raw_query)
            action, params = self._route(method, path, query, body)
            for name in _LIST_HEADERS:
                if headers.get(name) is not None:
                    query[name] = str(headers.get(name))
            self._authenticate(method, target, headers)
            self._maybe_fail(action)
            serve: Callable[..., _Reply] = getattr(self, _ACTIONS[action])
            reply = serve(query, body, **params)
        except _Fail as failure:
            reply = _Reply(
                failure.status,
                _xml(
                    "Error",
                    [
                        ("Code", failure.code),
                        ("Message", failure.message),
                        ("RequestId", request_id),
                        ("HostId", self._host()),
                    ],
                ),
            )
        reply.headers.setdefault("Content-Type", "text/xml;charset=utf-8")
        reply.headers["x-mns-request-id"] = request_id
        reply.headers["x-mns-version"] = API_VERSION
        reply.headers["Date"] = email.utils.formatdate(usegmt=True)
        with self._cond:
            self._actions.append((action, reply.status))
        return reply

    def _host(self) -> str:
        return self.endpoint.split("://", 1)[1] if self._server is not None else "127.0.0.1"

    @staticmethod
    def _query(raw: str) -> dict[str, str]:
        # The SDK puts receipt handles into the URL unescaped; '+' must therefore stay a '+'
        # (unquote, not unquote_plus), and only the first '=' separates name and value.
        query: dict[str, str] = {}
        for part in raw.split("&"):
            if part:
                name, _, value = part.partition("=")
                query[unquote(name).lower()] = unquote(value)
        return query

    def _route(
        self, method: str, path: str, query: dict[str, str], body: bytes
    ) -> tuple[str, dict[str, str]]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        routes: dict[tuple[str, int, str], str] = {
            ("PUT", 2, "queues"): "SetQueueAttributes"
            if "metaoverride" in query
            else "CreateQueue",
            ("GET", 2, "queues"): "GetQueueAttributes",
            ("DELETE", 2, "queues"): "DeleteQueue",
            ("PUT", 2, "topics"): "CreateTopic",
            ("GET", 2, "topics"): "GetTopicAttributes",
            ("DELETE", 2, "topics"): "DeleteTopic",
        }
        if len(parts) == 2 and (method, 2, parts[0]) in routes:
            return routes[(method, 2, parts[0])], {"name": parts[1]}
        if len(parts) == 3 and parts[0] == "queues" and parts[2] == "messages":
            params = {"name": parts[1]}
            if method == "POST":
                return ("BatchSendMessage" if b"<Messages" in body else "SendMessage"), params
            if method == "GET" and "peekonly" not in query:
                return ("BatchReceiveMessage" if "numofmessages" in query else "ReceiveMessage"), (
                    params
                )
            if method == "DELETE":
                return ("DeleteMessage" if "receipthandle" in query else "BatchDeleteMessage"), (
                    params
                )
            if method == "PUT":
                return "ChangeMessageVisibility", params
        if len(parts) == 3 and parts[0] == "topics" and parts[2] == "messages" and method == "POST":
            return "PublishMessage", {"name": parts[1]}
        if len(parts) == 3 and parts[0] == "topics" and parts[2] == "subscriptions":
            if method == "GET":
                return "ListSubscriptionByTopic", {"topic": parts[1]}
        if len(parts) == 4 and parts[0] == "topics" and parts[2] == "subscriptions":
            subscription_routes = {
                "PUT": "Subscribe",
                "GET": "GetSubscriptionAttributes",
                "DELETE": "Unsubscribe",
            }
            if method in subscription_routes and "metaoverride" not in query:
                return subscription_routes[method], {"topic": parts[1], "name": parts[3]}
        raise _Fail(400, "InvalidRequestURL", "Http request URL format invalid.")

    def _authenticate(self, method: str, target: str, headers: Any) -> None:
        authorization = headers.get("Authorization")
        if not authorization:
            raise _Fail(400, "MissingAuthorizationHeader", "Authorization header is required.")
        match = re.fullmatch(r"MNS ([^:\s]+):(\S+)", authorization.strip())
        if match is None:
            raise _Fail(
                400, "InvalidAuthorizationHeader", "The Authorization header format is invalid."
            )
        version = headers.get("x-mns-version")
        if not version:
            raise _Fail(400, "MissingVersionHeader", "x-mns-version header is required.")
        if version != API_VERSION:
            raise _Fail(400, "InvalidVersionHeader", "The x-mns-version header is invalid.")
        date = headers.get("Date")
        if not date:
            raise _Fail(400, "MissingDateHeader", "Date header is required.")
        try:
            sent = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError) as exc:
            raise _Fail(400, "InvalidDateHeader", "The Date header format is invalid.") from exc
        if abs(time.time() - sent) > _MAX_CLOCK_SKEW:
            raise _Fail(408, "TimeExpired", "The http request you sent is expired.")
        key_id, signature = match.groups()
        if key_id != self.access_key_id:
            raise _Fail(403, "InvalidAccessKeyId", "The AccessKey Id you provided is not exist.")
        canonical_headers = "".join(
            f"{name}:{value}\n"
            for name, value in sorted(
                (name.lower(), value)
                for name, value in headers.items()
                if name.lower().startswith("x-mns-")
            )
        )
        string_to_sign = "\n".join(
            [
                method,
                headers.get("Content-MD5", ""),
                headers.get("Content-Type", ""),
                date,
                canonical_headers + target,
            ]
        )
        expected = base64.b64encode(
            hmac.new(
                self.access_key_secret.encode(), string_to_sign.encode("utf-8"), hashlib.sha1
            ).digest()
        ).decode()
        if not hmac.compare_digest(expected, signature):
            raise _Fail(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )

    def _maybe_fail(self, action: str) -> None:
        with self._cond:
            for injected in self._injected:
                if injected.action is None or injected.action == action:
                    injected.remaining -= 1
                    if injected.remaining <= 0:
                        self._injected.remove(injected)
                    raise _Fail(injected.status, injected.code, injected.message)

    # ------------------------------------------------------------------ helpers for actions

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            raise _Fail(404, "QueueNotExist", "The queue name you provided is not exist.")
        return queue

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise _Fail(404, "TopicNotExist", "The topic you provided does not exist.")
        return topic

    @staticmethod
    def _check_name(name: str, kind: str, longest: int) -> None:
        if len(name) > longest:
            raise _Fail(
                400,
                f"{kind}NameLengthError",
                f"{kind} name length should between 1 and {longest}.",
            )
        if not _QUEUE_NAME.match(name):
            raise _Fail(
                400,
                f"Invalid{kind}Name",
                f"The {kind.lower()} name you provided is invalid. {kind}Name should start with "
                "alpha or digit and contain only alpha, digit or -.",
            )

    def _message_id(self) -> str:
        return f"{secrets.token_hex(8).upper()}-1-{_now_ms():X}-{next(self._counter):09X}"

    def _enqueue(self, queue: _Queue, body: str, delay: int | None = None) -> _Message:
        now = time.time()
        seconds = int(queue.attributes["DelaySeconds"]) if delay is None else delay
        message = _Message(self._message_id(), body, _md5(body), _now_ms(), now + seconds)
        queue.messages[message.id] = message
        return message

    def _expire(self, queue: _Queue) -> None:
        oldest = _now_ms() - int(queue.attributes["MessageRetentionPeriod"]) * 1000
        for key in [k for k, m in queue.messages.items() if m.enqueue_ms < oldest]:
            del queue.messages[key]

    @staticmethod
    def _handle_of(queue: str, message: _Message) -> str:
        raw = f"{queue}\n{message.id}\n{message.token}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _message_for(self, queue: _Queue, handle: str) -> _Message:
        """The message ``handle`` leases now.

        :raises _Fail: 400 ReceiptHandleError for a malformed handle, 404 MessageNotExist for a
            handle that no longer leases its message (deleted, expired or superseded).
        """
        try:
            raw = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4)).decode()
            queue_name, message_id, token = raw.split("\n")
        except ValueError as exc:
            raise _Fail(
                400, "ReceiptHandleError", "The receipt handle you provide is not valid."
            ) from exc
        if queue_name != queue.name or not token:
            raise _Fail(400, "ReceiptHandleError", "The receipt handle you provide is not valid.")
        message = queue.messages.get(message_id)
        if message is None or message.token != token or message.visible_at <= time.time():
            raise _Fail(404, "MessageNotExist", "Message not exist.")
        return message

    def _queue_attributes(
        self, fields: dict[str, str], base: dict[str, int | bool]
    ) -> dict[str, int | bool]:
        attributes: dict[str, int | bool] = dict(base)
        for name, (low, high, _default) in _QUEUE_ATTRIBUTES.items():
            attributes[name] = _int_field(fields, name, low, high, int(base[name]))
        attributes["LoggingEnabled"] = _bool_field(
            fields, "LoggingEnabled", bool(base["LoggingEnabled"])
        )
        return attributes

    # ------------------------------------------------------------------ queue actions

    def _create_queue(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        self._check_name(name, "Queue", _QUEUE_NAME_MAX)
        fields = _fields(_parse(body, "Queue")) if body.strip() else {}
        defaults: dict[str, int | bool] = {k: v[2] for k, v in _QUEUE_ATTRIBUTES.items()}
        defaults["LoggingEnabled"] = False
        attributes = self._queue_attributes(fields, defaults)
        location = {"Location": f"{self.endpoint}/queues/{name}"}
        with self._cond:
            existing = self._queues.get(name)
            if existing is not None:
                if existing.attributes == attributes:
                    return _Reply(204, headers=location)
                raise _Fail(
                    409, "QueueAlreadyExist", "The queue you want to create is already exist."
                )
            now = int(time.time())
            self._queues[name] = _Queue(name, attributes, now, now)
        return _Reply(201, headers=location)

    def _set_queue_attributes(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        fields = _fields(_parse(body, "Queue")) if body.strip() else {}
        with self._cond:
            queue = self._queue(name)
            queue.attributes = self._queue_attributes(fields, queue.attributes)
            queue.modified = int(time.time())
            self._cond.notify_all()
        return _Reply(204)

    def _get_queue_attributes(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        with self._cond:
            queue = self._queue(name)
            now = time.time()
            self._expire(queue)
            active = sum(1 for m in queue.messages.values() if m.visible_at <= now)
            delayed = sum(1 for m in queue.messages.values() if m.visible_at > now and not m.token)
            inactive = len(queue.messages) - active - delayed
            fields: list[tuple[str, object]] = [
                ("QueueName", queue.name),
                ("CreateTime", queue.created),
                ("LastModifyTime", queue.modified),
            ]
            fields += [(k, queue.attributes[k]) for k in _QUEUE_ATTRIBUTES]
            fields += [
                ("ActiveMessages", active),
                ("InactiveMessages", inactive),
                ("DelayMessages", delayed),
                ("LoggingEnabled", "True" if queue.attributes["LoggingEnabled"] else "False"),
            ]
        return _Reply(200, _xml("Queue", fields))

    def _delete_queue(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        with self._cond:
            self._queues.pop(name, None)
            self._cond.notify_all()  # long polls on it must answer now
        return _Reply(204)

    def _send_fields(self, fields: dict[str, str], queue: _Queue) -> tuple[str, int | None]:
        message_body = fields.get("MessageBody", "")
        limit = int(queue.attributes["MaximumMessageSize"])
        if not message_body or len(message_body.encode("utf-8")) > limit:
            raise _invalid_value("MessageBody", 1, limit)
        delay = None
        if fields.get("DelaySeconds", "").strip():
            delay = _int_field(fields, "DelaySeconds", 0, 604800, 0)
        return message_body, delay

    def _send_message(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        fields = _fields(_parse(body, "Message"))
        with self._cond:
            queue = self._queue(name)
            message_body, delay = self._send_fields(fields, queue)
            message = self._enqueue(queue, message_body, delay)
            self._cond.notify_all()
        return _Reply(
            201, _xml("Message", [("MessageId", message.id), ("MessageBodyMD5", message.md5)])
        )

    def _batch_send_message(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        items = [_fields(child) for child in _parse(body, "Messages")]
        if not 1 <= len(items) <= _MAX_BATCH:
            raise _invalid_value("Messages", 1, _MAX_BATCH)
        with self._cond:
            queue = self._queue(name)
            checked = [self._send_fields(fields, queue) for fields in items]
            sent = [self._enqueue(queue, message_body, delay) for message_body, delay in checked]
            self._cond.notify_all()
        rows: list[list[tuple[str, object]]] = [
            [("MessageId", m.id), ("MessageBodyMD5", m.md5)] for m in sent
        ]
        return _Reply(201, _xml_list("Messages", "Message", rows))

    def _receive(
        self, queue_name: str, query: dict[str, str], batch: int
    ) -> list[list[tuple[str, object]]]:
        with self._cond:
            wait_default = int(self._queue(queue_name).attributes["PollingWaitSeconds"])
            wait = _int_field(query, "waitseconds", 0, _MAX_WAIT_SECONDS, wait_default)
            deadline = time.monotonic() + wait
            while True:
                queue = self._queue(queue_name)
                self._expire(queue)
                now = time.time()
                picked = [m for m in queue.messages.values() if m.visible_at <= now][:batch]
                if picked:
                    rows = []
                    for message in picked:
                        message.dequeue_count += 1
                        message.token = secrets.token_hex(8)
                        message.visible_at = now + int(queue.attributes["VisibilityTimeout"])
                        if not message.first_dequeue_ms:
                            message.first_dequeue_ms = _now_ms()
                        rows.append(
                            [
                                ("MessageId", message.id),
                                ("ReceiptHandle", self._handle_of(queue.name, message)),
                                ("MessageBodyMD5", message.md5),
                                ("MessageBody", message.body),
                                ("EnqueueTime", message.enqueue_ms),
                                ("NextVisibleTime", int(message.visible_at * 1000)),
                                ("FirstDequeueTime", message.first_dequeue_ms),
                                ("DequeueCount", message.dequeue_count),
                                ("Priority", message.priority),
                            ]
                        )
                    return rows
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing:
                    raise _Fail(404, "MessageNotExist", "Message not exist.")
                upcoming = [m.visible_at - now for m in queue.messages.values()]
                self._cond.wait(min([remaining, *(t for t in upcoming if t > 0)]))

    def _receive_message(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        rows = self._receive(name, query, 1)
        return _Reply(200, _xml("Message", rows[0]))

    def _batch_receive_message(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        batch = _int_field(query, "numofmessages", 1, _MAX_BATCH, 1)
        rows = self._receive(name, query, batch)
        return _Reply(200, _xml_list("Messages", "Message", rows))

    def _delete_message(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        handle = query.get("receipthandle", "")
        if not handle:
            raise _Fail(400, "MissingReceiptHandle", "ReceiptHandle is required.")
        with self._cond:
            queue = self._queue(name)
            message = self._message_for(queue, handle)
            del queue.messages[message.id]
        return _Reply(204)

    def _batch_delete_message(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        handles = [child.text or "" for child in _parse(body, "ReceiptHandles")]
        if not 1 <= len(handles) <= _MAX_BATCH:
            raise _invalid_value("ReceiptHandles", 1, _MAX_BATCH)
        errors: list[list[tuple[str, object]]] = []
        with self._cond:
            queue = self._queue(name)
            for handle in handles:
                try:
                    message = self._message_for(queue, handle)
                except _Fail as failure:
                    errors.append(
                        [
                            ("ErrorCode", failure.code),
                            ("ErrorMessage", failure.message),
                            ("ReceiptHandle", handle),
                        ]
                    )
                else:
                    del queue.messages[message.id]
        if errors:
            return _Reply(404, _xml_list("Errors", "Error", errors))
        return _Reply(204)

    def _change_message_visibility(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        handle = query.get("receipthandle", "")
        if not handle:
            raise _Fail(400, "MissingReceiptHandle", "ReceiptHandle is required.")
        if not query.get("visibilitytimeout", "").strip():
            raise _Fail(400, "MissingVisibilityTimeout", "VisibilityTimeout is required.")
        seconds = _int_field(query, "visibilitytimeout", 1, 43200, 0)
        with self._cond:
            queue = self._queue(name)
            message = self._message_for(queue, handle)
            message.token = secrets.token_hex(8)
            message.visible_at = time.time() + seconds
            self._cond.notify_all()  # a long poll may now have a sooner wake-up to plan
            fields: list[tuple[str, object]] = [
                ("ReceiptHandle", self._handle_of(queue.name, message)),
                ("NextVisibleTime", int(message.visible_at * 1000)),
            ]
        return _Reply(200, _xml("ChangeVisibility", fields))

    # ------------------------------------------------------------------ topic actions

    def _create_topic(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        self._check_name(name, "Topic", _TOPIC_NAME_MAX)
        fields = _fields(_parse(body, "Topic")) if body.strip() else {}
        size = _int_field(fields, "MaximumMessageSize", 1024, 65536, 65536)
        logging_enabled = _bool_field(fields, "LoggingEnabled", False)
        location = {"Location": f"{self.endpoint}/topics/{name}"}
        with self._cond:
            existing = self._topics.get(name)
            if existing is not None:
                if (existing.maximum_message_size, existing.logging_enabled) == (
                    size,
                    logging_enabled,
                ):
                    return _Reply(204, headers=location)
                raise _Fail(409, "TopicAlreadyExist", "The topic you want to create already exist.")
            now = int(time.time())
            self._topics[name] = _Topic(name, size, logging_enabled, now, now)
        return _Reply(201, headers=location)

    def _get_topic_attributes(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        with self._cond:
            topic = self._topic(name)
            fields: list[tuple[str, object]] = [
                ("TopicName", topic.name),
                ("CreateTime", topic.created),
                ("LastModifyTime", topic.modified),
                ("MaximumMessageSize", topic.maximum_message_size),
                ("MessageRetentionPeriod", 86400),
                ("MessageCount", 0),
                ("LoggingEnabled", "True" if topic.logging_enabled else "False"),
            ]
        return _Reply(200, _xml("Topic", fields))

    def _delete_topic(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        with self._cond:
            self._topics.pop(name, None)
        return _Reply(204)

    def _notification(
        self, topic: _Topic, sub: _Subscription, message_id: str, body: str, tag: str
    ) -> str:
        if sub.content_format == "SIMPLIFIED":
            return body
        fields: list[tuple[str, object]] = [
            ("TopicOwner", self.account_id),
            ("TopicName", topic.name),
            ("Subscriber", self.account_id),
            ("SubscriptionName", sub.name),
            ("MessageId", message_id),
            ("Message", body),
            ("MessageMD5", _md5(body)),
            ("MessageTag", tag),
            ("PublishTime", _now_ms()),
        ]
        if sub.content_format == "JSON":
            return json.dumps({k: str(v) for k, v in fields})
        return _xml("Notification", fields).decode()

    def _publish_message(self, query: dict[str, str], body: bytes, name: str) -> _Reply:
        fields = _fields(_parse(body, "Message"))
        message_body = fields.get("MessageBody", "")
        tag = fields.get("MessageTag", "")
        with self._cond:
            topic = self._topic(name)
            if not message_body or len(message_body.encode("utf-8")) > topic.maximum_message_size:
                raise _invalid_value("MessageBody", 1, topic.maximum_message_size)
            message_id = self._message_id()
            for sub in topic.subscriptions.values():
                if sub.filter_tag and sub.filter_tag != tag:
                    continue
                queue = self._queues.get(sub.queue)
                if queue is None:
                    continue  # MNS would retry per NotifyStrategy, then drop
                pushed = self._notification(topic, sub, message_id, message_body, tag)
                if len(pushed.encode("utf-8")) <= int(queue.attributes["MaximumMessageSize"]):
                    self._enqueue(queue, pushed)
            self._cond.notify_all()
        return _Reply(
            201,
            _xml("Message", [("MessageId", message_id), ("MessageBodyMD5", _md5(message_body))]),
        )

    def _subscribe(self, query: dict[str, str], body: bytes, topic: str, name: str) -> _Reply:
        self._check_name(name, "Subscription", _TOPIC_NAME_MAX)
        fields = _fields(_parse(body, "Subscription"))
        endpoint = fields.get("Endpoint", "")
        strategy = fields.get("NotifyStrategy") or "BACKOFF_RETRY"
        content_format = fields.get("NotifyContentFormat") or "XML"
        filter_tag = fields.get("FilterTag", "")
        if strategy not in _NOTIFY_STRATEGIES:
            raise _Fail(
                400, "InvalidArgument", f"The value of NotifyStrategy {strategy} is invalid."
            )
        if content_format not in _NOTIFY_FORMATS:
            raise _Fail(
                400,
                "InvalidArgument",
                f"The value of NotifyContentFormat {content_format} is invalid.",
            )
        if len(filter_tag) > 16:
            raise _invalid_value("FilterTag", 0, 16)
        match = _QUEUE_ENDPOINT.match(endpoint)
        if match is None:
            raise _Fail(
                400,
                "InvalidEndpoint",
                f"The endpoint {endpoint!r} is invalid; this emulator pushes to queue endpoints "
                "(acs:mns:<region>:<account>:queues/<name>) only.",
            )
        if (match["region"], match["account"]) != (self.region, self.account_id):
            raise _Fail(
                400,
                "InvalidEndpoint",
                "Messages can be pushed only to queues in the topic's region "
                f"({self.region}) and account ({self.account_id}).",
            )
        location = {"Location": f"{self.endpoint}/topics/{topic}/subscriptions/{name}"}
        with self._cond:
            owner = self._topic(topic)
            existing = owner.subscriptions.get(name)
            wanted = (endpoint, strategy, content_format, filter_tag)
            if existing is not None:
                have = (
                    existing.endpoint,
                    existing.strategy,
                    existing.content_format,
                    existing.filter_tag,
                )
                if have == wanted:
                    return _Reply(204, headers=location)
                raise _Fail(
                    409,
                    "SubscriptionAlreadyExist",
                    "The subscription you want to create already exist.",
                )
            now = int(time.time())
            owner.subscriptions[name] = _Subscription(
                name, endpoint, match["queue"], strategy, content_format, filter_tag, now, now
            )
        return _Reply(201, headers=location)

    def _get_subscription_attributes(
        self, query: dict[str, str], body: bytes, topic: str, name: str
    ) -> _Reply:
        with self._cond:
            sub = self._topic(topic).subscriptions.get(name)
            if sub is None:
                raise _Fail(
                    404, "SubscriptionNotExist", "The subscription you provided does not exist."
                )
            fields: list[tuple[str, object]] = [
                ("TopicOwner", self.account_id),
                ("TopicName", topic),
                ("SubscriptionName", sub.name),
                ("Endpoint", sub.endpoint),
                ("NotifyStrategy", sub.strategy),
                ("NotifyContentFormat", sub.content_format),
                ("FilterTag", sub.filter_tag),
                ("CreateTime", sub.created),
                ("LastModifyTime", sub.modified),
            ]
        return _Reply(200, _xml("Subscription", fields))

    def _list_subscription_by_topic(self, query: dict[str, str], body: bytes, topic: str) -> _Reply:
        prefix = query.get("x-mns-prefix", "")
        marker = query.get("x-mns-marker", "")
        try:
            limit = int(query.get("x-mns-ret-number", str(_LIST_MAX)))
        except ValueError:
            raise _invalid_value("x-mns-ret-number", 1, _LIST_MAX) from None
        if not 1 <= limit <= _LIST_MAX:
            raise _invalid_value("x-mns-ret-number", 1, _LIST_MAX)
        with self._cond:
            names = sorted(
                name
                for name in self._topic(topic).subscriptions
                if name.startswith(prefix) and name >= marker
            )
        page, rest = names[:limit], names[limit:]
        inner = "".join(
            "<Subscription><SubscriptionURL>"
            + escape(f"{self.endpoint}/topics/{topic}/subscriptions/{name}")
            + "</SubscriptionURL></Subscription>"
            for name in page
        )
        if rest:
            inner += f"<NextMarker>{escape(rest[0])}</NextMarker>"
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Subscriptions xmlns="{_XMLNS}">'
            f"{inner}</Subscriptions>"
        )
        return _Reply(200, xml.encode())

    def _unsubscribe(self, query: dict[str, str], body: bytes, topic: str, name: str) -> _Reply:
        with self._cond:
            owner = self._topics.get(topic)
            if owner is not None:
                owner.subscriptions.pop(name, None)
        return _Reply(204)

"""The ``mns`` PubSub backend against the loopback MNS emulator, and the emulator itself.

aliyun-mns-sdk speaks to MNS over ``http.client``, which HTTP mocks cannot intercept, so every
test here goes through the SDK to :class:`faasml.testing.mns_stub.MNSStub`, a real HTTP server.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from mns.account import Account
from mns.mns_exception import (
    MNSClientNetworkException,
    MNSClientParameterException,
    MNSServerException,
)
from mns.queue import Message as QueueMessage
from mns.queue import QueueMeta
from mns.subscription import SubscriptionMeta
from mns.topic import TopicMessage, TopicMeta

from faasml import registry
from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    PayloadTooLargeError,
    ProviderError,
    ServiceUnavailableError,
    ThrottledError,
)
from faasml.pubsub.mns import ERROR_CODES, MNSPubSub, _queue_endpoint_parts
from faasml.testing.conformance.pubsub import PubSubTests
from faasml.testing.mns_stub import MNSStub

KEY_ID = "faasml-test-id"
KEY_SECRET = "faasml-test-secret"


@pytest.fixture(scope="module")
def stub() -> Iterator[MNSStub]:
    with MNSStub(KEY_ID, KEY_SECRET) as server:
        yield server


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AccessKey in the default variables, where a spawned child process finds it too."""
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_SECRET", KEY_SECRET)


class TestMNSPubSub(PubSubTests):
    @pytest.fixture
    def pubsub(self, stub: MNSStub, credentials: None) -> Iterator[MNSPubSub]:
        backend = MNSPubSub(stub.endpoint)
        yield backend
        backend.close()

    @pytest.fixture
    def visibility_timeout(self) -> float:
        # MNS leases are whole seconds and a nack can only make a message visible again after
        # 1 s (the ChangeMessageVisibility minimum); with a 1 s lease the suite's nack test would
        # race that second.
        return 2.0


@pytest.fixture
def pubsub(stub: MNSStub, credentials: None) -> Iterator[MNSPubSub]:
    backend = MNSPubSub(stub.endpoint)
    yield backend
    backend.close()


@pytest.fixture
def topic() -> str:
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def account(stub: MNSStub) -> Account:
    """A raw SDK account on the emulator, to look behind the backend's back."""
    return Account(stub.endpoint, KEY_ID, KEY_SECRET)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raw_receive(account: Account, queue: str) -> list[str]:
    q = account.get_queue(queue)
    q.set_encoding(False)
    try:
        return [m.message_body for m in q.batch_receive_message(16, 1)]
    except MNSServerException as exc:
        assert exc.type == "MessageNotExist"
        return []


# ---------------------------------------------------------------------- registration and config


def test_registered_as_mns() -> None:
    assert registry.backend_class("pubsub", "mns") is MNSPubSub
    record = registry.backend_record("pubsub", "mns")
    assert record.extra == "aliyun" and record.requires == ("mns",)


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("endpoint", "mns.cn-hangzhou.aliyuncs.com", "http(s)://"),
        ("prefix", "", "prefix"),
        ("prefix", "has_underscore-", "prefix"),
        ("prefix", "-leading-dash", "prefix"),
        ("visibility_timeout", 0, "visibility_timeout"),
        ("visibility_timeout", 43201, "43200"),
        ("wait_seconds", 31, "wait_seconds"),
        ("wait_seconds", 1.5, "wait_seconds"),
    ],
)
def test_bad_options_are_rejected(
    stub: MNSStub, credentials: None, option: str, value: object, words: str
) -> None:
    kwargs: dict[str, Any] = {"endpoint": stub.endpoint, option: value}
    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        MNSPubSub(**kwargs)


def test_missing_credentials_name_the_variables(
    stub: MNSStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALIYUN_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("ALIYUN_ACCESS_KEY_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="ALIYUN_ACCESS_KEY_ID"):
        MNSPubSub(stub.endpoint)
    with pytest.raises(ConfigurationError, match="MY_SECRET"):
        MNSPubSub(stub.endpoint, access_key_id="id", access_key_secret={"$env": "MY_SECRET"})


def test_env_references_are_resolved_and_travel_as_references(
    stub: MNSStub, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALIYUN_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("ALIYUN_ACCESS_KEY_SECRET", raising=False)
    monkeypatch.setenv("MY_MNS_ID", KEY_ID)
    monkeypatch.setenv("MY_MNS_SECRET", KEY_SECRET)
    backend = MNSPubSub(
        stub.endpoint,
        access_key_id={"$env": "MY_MNS_ID"},
        access_key_secret={"$env": "MY_MNS_SECRET"},
        prefix="fm-",
        visibility_timeout=7,
        wait_seconds=3,
    )
    try:
        config = backend.to_config()
        assert json.loads(json.dumps(config)) == config
        assert KEY_SECRET not in json.dumps(config)
        assert config == {
            "endpoint": stub.endpoint,
            "access_key_id": {"$env": "MY_MNS_ID"},
            "access_key_secret": {"$env": "MY_MNS_SECRET"},
            "security_token": None,
            "prefix": "fm-",
            "visibility_timeout": 7.0,
            "wait_seconds": 3,
        }
        with MNSPubSub(**config) as rebuilt:
            assert isinstance(rebuilt, MNSPubSub)
            rebuilt.ensure_group(topic, "g")
        assert backend.ex_queue_name(topic, "g") in stub.queue_names()
    finally:
        backend.close()


def test_literal_secrets_do_not_travel(stub: MNSStub, credentials: None) -> None:
    backend = MNSPubSub(stub.endpoint, access_key_id=KEY_ID, access_key_secret=KEY_SECRET)
    with pytest.raises(ConfigurationError, match=r'access_key_secret=\{"\$env": "VAR"\}'):
        backend.to_config()
    token = MNSPubSub(
        stub.endpoint,
        access_key_id=KEY_ID,
        access_key_secret={"$env": "ALIYUN_ACCESS_KEY_SECRET"},
        security_token="sts-token",
    )
    with pytest.raises(ConfigurationError, match="security_token"):
        token.to_config()


def test_the_access_key_id_travels_as_given(stub: MNSStub, credentials: None) -> None:
    backend = MNSPubSub(stub.endpoint, access_key_id=KEY_ID)
    assert backend.to_config()["access_key_id"] == KEY_ID
    assert backend.to_config()["access_key_secret"] is None


# ---------------------------------------------------------------------- names and mapping


def test_names_fit_mns_rules_and_keep_distinct_groups_apart(pubsub: MNSPubSub) -> None:
    longest = "T_" + "x" * 62
    names = {
        pubsub.ex_queue_name("a-b", "c"),
        pubsub.ex_queue_name("a", "b-c"),
        pubsub.ex_queue_name("a_b", "c"),
        pubsub.ex_queue_name(longest, "g" * 64),
        pubsub.ex_queue_name(longest, "g" * 63 + "h"),
    }
    assert len(names) == 5, "two faasml groups share an MNS queue"
    for name in names | {pubsub.ex_topic_name(longest), pubsub._anonymous_queue_name(longest)}:
        assert name.startswith("faasml-")
        assert len(name) <= 120
        assert all(c.isalnum() or c == "-" for c in name), name
    assert pubsub.ex_topic_name("a_b") != pubsub.ex_topic_name("a-b")
    assert "-anon-" in pubsub._anonymous_queue_name("t")


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://1234567.mns.cn-hangzhou.aliyuncs.com", ("cn-hangzhou", "1234567")),
        ("https://1234567.mns.cn-hangzhou.aliyuncs.com/", ("cn-hangzhou", "1234567")),
        ("http://1234567.mns.cn-hangzhou-internal.aliyuncs.com", ("cn-hangzhou", "1234567")),
        ("http://99.mns.ap-southeast-1-internal-vpc.aliyuncs.com", ("ap-southeast-1", "99")),
        ("http://127.0.0.1:8080", ("local", "0")),
    ],
)
def test_queue_endpoints_name_the_region_and_account(
    endpoint: str, expected: tuple[str, str]
) -> None:
    assert _queue_endpoint_parts(endpoint) == expected


# Queue.get_attributes() in the SDK warns about its own deprecated message counters.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:mns")
def test_a_group_is_a_queue_subscribed_to_the_topic_in_simplified_format(
    pubsub: MNSPubSub, stub: MNSStub, account: Account, topic: str
) -> None:
    pubsub.ensure_group(topic, "workers")
    queue = pubsub.ex_queue_name(topic, "workers")
    mns_topic = pubsub.ex_topic_name(topic)
    assert queue in stub.queue_names() and mns_topic in stub.topic_names()
    assert stub.subscriptions(mns_topic) == {queue: f"acs:mns:local:0:queues/{queue}"}
    meta = account.get_subscription(mns_topic, queue).get_attributes()
    assert meta.notify_content_format == "SIMPLIFIED"
    assert account.get_queue(queue).get_attributes().visibility_timeout == 30
    assert account.get_topic(mns_topic).get_attributes().maximum_message_size == 65536


def test_ensure_group_twice_and_in_two_instances_is_harmless(
    pubsub: MNSPubSub, stub: MNSStub, topic: str, credentials: None
) -> None:
    pubsub.ensure_group(topic, "g")
    before = len(stub.actions())
    pubsub.ensure_group(topic, "g")
    assert len(stub.actions()) == before, "a known group must not be created again"
    with MNSPubSub(stub.endpoint) as other:
        assert isinstance(other, MNSPubSub)
        other.ensure_group(topic, "g")  # 204s from MNS: the resources exist with these attributes
    created = [a for a in stub.actions()[before:] if a[0] in ("CreateTopic", "CreateQueue")]
    assert [status for _, status in created] == [204, 204]


def test_existing_resources_with_other_attributes_are_reused(
    pubsub: MNSPubSub, stub: MNSStub, account: Account, topic: str
) -> None:
    queue = pubsub.ex_queue_name(topic, "g")
    account.get_topic(pubsub.ex_topic_name(topic)).create(TopicMeta(maximum_message_size=65536))
    account.get_queue(queue).create(QueueMeta(vis_timeout=5))
    with pubsub.subscribe(topic, "g") as sub:  # QueueAlreadyExist (409) is fine
        pubsub.publish(topic, b"reused")
        message = sub.get(timeout=5)
        assert message is not None and message.data == b"reused"
        message.ack()


def test_a_foreign_subscription_of_the_same_name_is_reported(
    pubsub: MNSPubSub, account: Account, topic: str
) -> None:
    mns_topic = pubsub.ex_topic_name(topic)
    queue = pubsub.ex_queue_name(topic, "g")
    account.get_topic(mns_topic).create(TopicMeta())
    account.get_subscription(mns_topic, queue).subscribe(
        SubscriptionMeta(f"acs:mns:local:0:queues/{queue}", notify_content_format="XML")
    )
    with pytest.raises(AlreadyExistsError, match="SIMPLIFIED"):
        pubsub.ensure_group(topic, "g")


def test_bodies_travel_as_base64_and_the_empty_payload_as_a_lone_pad(
    pubsub: MNSPubSub, account: Account, topic: str
) -> None:
    pubsub.ensure_group(topic, "g")
    pubsub.publish_many(topic, [b"\x00\xff binary", b""])
    assert _raw_receive(account, pubsub.ex_queue_name(topic, "g")) == [
        base64.b64encode(b"\x00\xff binary").decode(),
        "=",
    ]


def test_a_body_that_is_not_base64_arrives_as_its_utf8_bytes(
    pubsub: MNSPubSub, account: Account, topic: str
) -> None:
    with pubsub.subscribe(topic, "g") as sub:
        queue = account.get_queue(pubsub.ex_queue_name(topic, "g"))
        queue.set_encoding(False)
        queue.send_message(QueueMessage("plain text, not base64: ü"))
        message = sub.get(timeout=5)
        assert message is not None and message.data == "plain text, not base64: ü".encode()
        message.ack()


def test_publishing_to_a_topic_without_groups_sends_nothing_and_creates_nothing(
    pubsub: MNSPubSub, stub: MNSStub, topic: str
) -> None:
    pubsub.publish(topic, b"lost")
    assert pubsub.ex_topic_name(topic) not in stub.topic_names()
    assert stub.actions()[-1] == ("PublishMessage", 404)


def test_oversized_payloads_are_refused_before_sending(
    pubsub: MNSPubSub, stub: MNSStub, topic: str
) -> None:
    pubsub.ensure_group(topic, "g")
    before = len(stub.actions())
    with pytest.raises(PayloadTooLargeError, match="49152") as caught:
        pubsub.publish(topic, b"x" * (48 * 1024 + 1))
    assert "65536" in str(caught.value)
    with pytest.raises(PayloadTooLargeError):
        pubsub.publish_many(topic, [b"fits", b"x" * (48 * 1024 + 1)])
    assert len(stub.actions()) == before, "nothing may be sent when an item is too large"
    with pytest.raises(TypeError, match="bytes"):
        pubsub.publish(topic, "text")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- subscriptions and leases


def test_a_private_queue_is_deleted_on_close(pubsub: MNSPubSub, stub: MNSStub, topic: str) -> None:
    sub = pubsub.subscribe(topic)
    queue = sub.queue_name
    assert queue in stub.queue_names()
    assert queue in stub.subscriptions(pubsub.ex_topic_name(topic))
    sub.close()
    sub.close()
    assert queue not in stub.queue_names()
    assert stub.subscriptions(pubsub.ex_topic_name(topic)) == {}
    with pytest.raises(ValueError, match="closed"):
        sub.get(timeout=0)


def test_delete_topic_deletes_the_topic_its_subscriptions_and_group_queues(
    pubsub: MNSPubSub, stub: MNSStub, account: Account, topic: str
) -> None:
    pubsub.ensure_group(topic, "a")
    pubsub.ensure_group(topic, "b")
    private = pubsub.subscribe(topic)
    pubsub.ensure_group(topic + "-kept", "a")
    mns_topic = pubsub.ex_topic_name(topic)
    # Added outside faasml: the subscription goes with the topic, its queue stays.
    foreign = f"audit-{uuid.uuid4().hex[:8]}"
    account.get_queue(foreign).create(QueueMeta())
    account.get_subscription(mns_topic, "audit").subscribe(
        SubscriptionMeta(f"acs:mns:local:0:queues/{foreign}", notify_content_format="SIMPLIFIED")
    )
    ours = {pubsub.ex_queue_name(topic, "a"), pubsub.ex_queue_name(topic, "b"), private.queue_name}
    assert ours <= set(stub.queue_names())
    pubsub.delete_topic(topic)
    assert mns_topic not in stub.topic_names()
    assert not ours & set(stub.queue_names())
    assert foreign in stub.queue_names()
    assert pubsub.ex_queue_name(topic + "-kept", "a") in stub.queue_names()
    private.close()
    pubsub.delete_topic(topic)
    pubsub.publish(topic, b"to-nobody")
    assert mns_topic not in stub.topic_names(), "a publish does not create the MNS topic"
    account.get_queue(foreign).delete()


def test_stub_lists_subscriptions_by_topic_in_pages(stub: MNSStub, account: Account) -> None:
    name = f"list-{uuid.uuid4().hex[:8]}"
    account.get_topic(name).create(TopicMeta())
    for sub in ("s3", "s1", "x1", "s2"):
        account.get_subscription(name, sub).subscribe(
            SubscriptionMeta(f"acs:mns:local:0:queues/{sub}")
        )
    first, marker = account.get_topic(name).list_subscription(prefix="s", ret_number=2)
    assert [url.rsplit("/", 1)[1] for url in first] == ["s1", "s2"] and marker == "s3"
    rest, marker = account.get_topic(name).list_subscription(prefix="s", marker=marker)
    assert [url.rsplit("/", 1)[1] for url in rest] == ["s3"] and marker == ""
    assert first[0] == f"{stub.endpoint}/topics/{name}/subscriptions/s1"
    account.get_topic(name).delete()
    with pytest.raises(MNSServerException) as caught:
        account.get_topic(name).list_subscription()
    assert caught.value.type == "TopicNotExist"


def test_closing_the_backend_closes_its_subscriptions(
    pubsub: MNSPubSub, stub: MNSStub, topic: str, credentials: None
) -> None:
    other = MNSPubSub(stub.endpoint)
    private = other.subscribe(topic)
    named = other.subscribe(topic, "g")
    other.close()
    other.close()
    assert private.queue_name not in stub.queue_names()
    assert named.queue_name in stub.queue_names(), "a named group outlives its subscribers"
    for sub in (private, named):
        with pytest.raises(ValueError, match="closed"):
            sub.get(timeout=0)


def test_a_lease_other_than_the_queues_is_set_right_after_receiving(
    pubsub: MNSPubSub, stub: MNSStub, topic: str
) -> None:
    pubsub.ensure_group(topic, "g")  # the queue's VisibilityTimeout is the instance's 30 s
    same = pubsub.subscribe(topic, "g")
    pubsub.publish(topic, b"one")
    before = len(stub.actions())
    first = same.get(timeout=5)
    assert first is not None
    assert "ChangeMessageVisibility" not in [a for a, _ in stub.actions()[before:]]
    first.ack()

    short = pubsub.subscribe(topic, "g", visibility_timeout=0.3)  # rounded up to 1 s
    assert short.visibility_timeout == 1
    pubsub.publish(topic, b"two")
    message = short.get(timeout=5)
    assert message is not None
    taken = time.monotonic()
    again = short.get(timeout=5)
    assert again is not None and again.data == b"two" and again.deliveries == 2
    assert 0.7 <= time.monotonic() - taken < 2.5
    again.ack()
    with pytest.raises(ValueError, match="43200"):
        pubsub.subscribe(topic, "g", visibility_timeout=43201)


def test_ack_after_touch_uses_the_newest_receipt_handle(
    pubsub: MNSPubSub, stub: MNSStub, topic: str
) -> None:
    sub = pubsub.subscribe(topic, "g", visibility_timeout=5)
    pubsub.publish(topic, b"job")
    message = sub.get(timeout=5)
    assert message is not None
    message.touch()
    message.touch()
    message.ack()
    assert stub.queue_depth(sub.queue_name) == 0, "the ack used a retired receipt handle"
    assert stub.actions()[-1] == ("DeleteMessage", 204)


def test_nack_makes_the_message_visible_after_one_second(pubsub: MNSPubSub, topic: str) -> None:
    sub = pubsub.subscribe(topic, "g", visibility_timeout=30)
    pubsub.publish(topic, b"retry")
    message = sub.get(timeout=5)
    assert message is not None
    message.nack()
    nacked = time.monotonic()
    again = sub.get(timeout=5)
    assert again is not None and again.deliveries == 2
    assert 0.7 <= time.monotonic() - nacked < 2.5
    again.ack()


def test_long_polling_hands_over_a_message_as_soon_as_it_is_published(
    pubsub: MNSPubSub, stub: MNSStub, topic: str
) -> None:
    sub = pubsub.subscribe(topic, "g")
    published: list[float] = []

    def publish_later() -> None:
        time.sleep(0.5)
        published.append(time.monotonic())
        pubsub.publish(topic, b"ping")

    before = len(stub.actions())
    worker = threading.Thread(target=publish_later)
    worker.start()
    message = sub.get(timeout=5)
    received = time.monotonic()
    worker.join()
    assert message is not None and message.data == b"ping"
    assert received - published[0] < 0.3
    receives = [a for a, _ in stub.actions()[before:] if a == "BatchReceiveMessage"]
    assert len(receives) == 1, "the wait must be one long poll, not a stream of short ones"


def test_a_stale_receipt_handle_error_is_a_lost_lease_but_other_errors_raise(
    pubsub: MNSPubSub, stub: MNSStub, topic: str
) -> None:
    sub = pubsub.subscribe(topic, "g")
    pubsub.publish_many(topic, [b"a", b"b"])
    first, second = sub.get_many(2, timeout=5)
    stub.inject_error("ReceiptHandleError", 400, action="DeleteMessage")
    first.ack()  # the lease is gone: nothing to do
    stub.inject_error("QpsLimitExceeded", 400, action="DeleteMessage")
    with pytest.raises(ThrottledError):
        second.ack()


def test_a_closed_backend_refuses_work(stub: MNSStub, credentials: None) -> None:
    backend = MNSPubSub(stub.endpoint)
    backend.close()
    with pytest.raises(ValueError, match="closed"):
        backend.publish("t", b"x")


def test_every_connection_has_a_socket_timeout_beyond_the_long_poll(credentials: None) -> None:
    # The SDK leaves HTTPS connections without any timeout; a dead peer must not hang a call.
    for scheme in ("http", "https"):
        backend = MNSPubSub(f"{scheme}://1.mns.cn-hangzhou.aliyuncs.com", wait_seconds=20)
        connection = backend._account().get_client().http.conn
        assert connection.timeout == 35
        backend.close()


# ---------------------------------------------------------------------- failures


def test_wrong_secret_is_an_authentication_error(stub: MNSStub, topic: str) -> None:
    backend = MNSPubSub(stub.endpoint, access_key_id=KEY_ID, access_key_secret="not-the-secret")
    with pytest.raises(AuthenticationError, match="SignatureDoesNotMatch") as caught:
        backend.ensure_group(topic, "g")
    assert caught.value.status == 403 and caught.value.request_id
    assert "ALIYUN_ACCESS_KEY_SECRET" in str(caught.value)


def test_unknown_access_key_id_is_an_authentication_error(stub: MNSStub, topic: str) -> None:
    backend = MNSPubSub(stub.endpoint, access_key_id="someone-else", access_key_secret=KEY_SECRET)
    with pytest.raises(AuthenticationError, match="InvalidAccessKeyId"):
        backend.publish(topic, b"x")


def test_a_server_that_is_down_is_reported_fast_and_by_name(credentials: None) -> None:
    endpoint = f"http://127.0.0.1:{_unused_port()}"
    backend = MNSPubSub(endpoint)
    for attempt in (
        lambda: backend.publish("t", b"x"),
        lambda: backend.ensure_group("t", "g"),
        lambda: backend.subscribe("t", "g"),
    ):
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match=endpoint.replace(".", r"\.")) as caught:
            attempt()
        assert time.monotonic() - start < 2.0
        assert caught.value.retriable


@pytest.mark.parametrize(("code", "row"), sorted(ERROR_CODES.items()), ids=sorted(ERROR_CODES))
def test_error_table_row(
    pubsub: MNSPubSub,
    stub: MNSStub,
    topic: str,
    code: str,
    row: tuple[type[ProviderError], int],
) -> None:
    cls, status = row
    sub = pubsub.subscribe(topic, "g")
    # Publishing swallows only TopicNotExist (a topic without groups), receiving only
    # MessageNotExist (nothing to read): between them every row reaches the caller.
    action = "BatchReceiveMessage" if code == "TopicNotExist" else "PublishMessage"
    stub.inject_error(code, status, action=action)
    with pytest.raises(cls) as caught:
        if action == "PublishMessage":
            pubsub.publish(topic, b"x")
        else:
            sub.get(timeout=0)
    error = caught.value
    assert type(error) is cls
    assert (error.provider, error.code, error.status) == ("mns", code, status)
    assert error.request_id and len(error.request_id) == 24
    assert isinstance(error.__cause__, MNSServerException)


def test_an_unlisted_error_code_is_a_plain_provider_error(
    pubsub: MNSPubSub, stub: MNSStub, topic: str
) -> None:
    pubsub.ensure_group(topic, "g")
    stub.inject_error("SomethingNew", 400, action="PublishMessage")
    with pytest.raises(ProviderError) as caught:
        pubsub.publish(topic, b"x")
    assert type(caught.value) is ProviderError
    assert caught.value.code == "SomethingNew" and caught.value.status is None


class _RaisingAccount:
    """An ``account=`` whose topics raise a given SDK exception on publish."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_topic(self, name: str) -> _RaisingAccount:
        return self

    def publish_message(self, message: TopicMessage) -> None:
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [
        MNSClientNetworkException("RespDataDamaged", "<html>a proxy page</html>"),
        MNSClientParameterException("MessageBodyInvalid", "Bad value"),
    ],
    ids=["damaged-response", "sdk-parameter-check"],
)
def test_client_side_sdk_errors_are_provider_errors(exc: Exception) -> None:
    backend = MNSPubSub("http://1.mns.cn-hangzhou.aliyuncs.com", account=_RaisingAccount(exc))
    with pytest.raises(ProviderError) as caught:
        backend.publish("t", b"x")
    assert type(caught.value) is ProviderError
    assert caught.value.code == exc.type  # type: ignore[attr-defined]
    assert caught.value.__cause__ is exc


# ---------------------------------------------------------------------- the emulator itself


def test_stub_pushes_xml_and_json_notifications_and_honours_filter_tags(
    stub: MNSStub, account: Account
) -> None:
    name = "stub-" + uuid.uuid4().hex[:8]
    account.get_topic(name).create(TopicMeta())
    for fmt, tag in (("XML", ""), ("JSON", ""), ("SIMPLIFIED", "blue")):
        queue = f"{name}-{fmt.lower()}"
        account.get_queue(queue).create(QueueMeta())
        account.get_subscription(name, queue).subscribe(
            SubscriptionMeta(f"acs:mns:local:0:queues/{queue}", "", fmt, tag)
        )
    account.get_topic(name).publish_message(TopicMessage("hello", "red"))
    account.get_topic(name).publish_message(TopicMessage("tagged", "blue"))
    xml_body = _raw_receive(account, f"{name}-xml")
    assert len(xml_body) == 2 and "<Message>hello</Message>" in xml_body[0]
    assert "<MessageTag>red</MessageTag>" in xml_body[0]
    assert json.loads(_raw_receive(account, f"{name}-json")[1])["Message"] == "tagged"
    assert _raw_receive(account, f"{name}-simplified") == ["tagged"]


def test_stub_refuses_what_mns_refuses(stub: MNSStub, account: Account) -> None:
    name = "stub-" + uuid.uuid4().hex[:8]
    cases: list[tuple[Any, str]] = [
        (lambda: account.get_queue("q" * 121).create(QueueMeta()), "QueueNameLengthError"),
        (lambda: account.get_queue("under_score").create(QueueMeta()), "InvalidQueueName"),
        (lambda: account.get_queue(name).create(QueueMeta(vis_timeout=43201)), "InvalidArgument"),
        (lambda: account.get_queue("missing-" + name).get_attributes(), "QueueNotExist"),
        (
            lambda: account.get_topic("missing-" + name).publish_message(TopicMessage("x")),
            "TopicNotExist",
        ),
    ]
    for call, code in cases:
        with pytest.raises(MNSServerException) as caught:
            call()
        assert caught.value.type == code
    account.get_topic(name).create(TopicMeta())
    account.get_queue(name).create(QueueMeta())
    for endpoint in ("http://example.com/push", f"acs:mns:cn-hangzhou:0:queues/{name}"):
        with pytest.raises(MNSServerException) as caught:
            account.get_subscription(name, "s").subscribe(SubscriptionMeta(endpoint))
        assert caught.value.type == "InvalidEndpoint"
    with pytest.raises(MNSServerException) as caught:
        account.get_topic(name).publish_message(TopicMessage("x" * 65537))
    assert caught.value.type == "InvalidArgument"
    queue = account.get_queue(name)
    with pytest.raises(MNSServerException) as caught:
        queue.batch_receive_message(16, 31)
    assert caught.value.type == "InvalidArgument"
    queue.send_message(QueueMessage("m"))
    handle = queue.receive_message(0).receipt_handle
    with pytest.raises(MNSServerException) as caught:
        queue.change_message_visibility(handle, 0)
    assert caught.value.type == "InvalidArgument"


def test_stub_batch_delete_reports_each_failed_handle(stub: MNSStub, account: Account) -> None:
    name = "stub-" + uuid.uuid4().hex[:8]
    queue = account.get_queue(name)
    queue.create(QueueMeta())
    queue.batch_send_message([QueueMessage("a"), QueueMessage("b")])
    handles = [m.receipt_handle for m in queue.batch_receive_message(16, 1)]
    assert len(handles) == 2
    queue.change_message_visibility(handles[0], 10)  # retires handles[0]
    with pytest.raises(MNSServerException) as caught:
        queue.batch_delete_message(handles)
    assert caught.value.type == "MessageNotExist"
    assert [e["ReceiptHandle"] for e in caught.value.sub_errors] == [handles[0]]
    assert stub.queue_depth(name) == 1


def test_stub_checks_the_authorization_header_and_date(stub: MNSStub) -> None:
    host, port = stub.endpoint.removeprefix("http://").split(":")

    def status(headers: dict[str, str]) -> tuple[int, str]:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", "/queues/q", headers={"x-mns-version": "2015-06-06", **headers})
            response = conn.getresponse()
            body = response.read().decode()
            assert response.getheader("x-mns-request-id")
            return response.status, body.split("<Code>")[1].split("</Code>")[0]
        finally:
            conn.close()

    now = email.utils.formatdate(usegmt=True)
    assert status({"Date": now}) == (400, "MissingAuthorizationHeader")
    assert status({"Date": now, "Authorization": "Basic abc"}) == (
        400,
        "InvalidAuthorizationHeader",
    )
    stale = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert status({"Date": stale, "Authorization": f"MNS {KEY_ID}:sig"}) == (408, "TimeExpired")
    assert status({"Date": now, "Authorization": f"MNS {KEY_ID}:sig"}) == (
        403,
        "SignatureDoesNotMatch",
    )

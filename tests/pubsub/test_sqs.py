"""SQSPubSub: the conformance suite against moto_server, plus SNS/SQS-specific behaviour.

Every test uses its own name prefix on the shared loopback moto_server and deletes the topics and
queues under it afterwards.
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from faasml import registry
from faasml.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ThrottledError,
)
from faasml.pubsub.sqs import SQSPubSub, queue_name, topic_name
from faasml.testing.conformance.pubsub import PubSubTests

pytestmark = pytest.mark.service


def _raw_clients(moto_url: str) -> tuple[Any, Any]:
    options = {
        "endpoint_url": moto_url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return boto3.client("sns", **options), boto3.client("sqs", **options)


def _drop_prefix(moto_url: str, prefix: str) -> None:
    sns, sqs = _raw_clients(moto_url)
    try:
        for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
            sqs.delete_queue(QueueUrl=url)
        for page in sns.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                if topic["TopicArn"].split(":")[-1].startswith(prefix):
                    sns.delete_topic(TopicArn=topic["TopicArn"])
    finally:
        sns.close()
        sqs.close()


@pytest.fixture
def name_prefix(moto_url: str) -> Iterator[str]:
    prefix = f"ft{uuid.uuid4().hex[:10]}-"
    yield prefix
    _drop_prefix(moto_url, prefix)


class TestSQSPubSub(PubSubTests):
    @pytest.fixture
    def pubsub(
        self, moto_url: str, name_prefix: str, fake_aws_credentials: None
    ) -> Iterator[SQSPubSub]:
        backend = SQSPubSub(endpoint_url=moto_url, prefix=name_prefix)
        yield backend
        backend.close()


# ---------------------------------------------------------------- helpers for the tests below


@pytest.fixture
def pubsub(moto_url: str, name_prefix: str, fake_aws_credentials: None) -> Iterator[SQSPubSub]:
    backend = SQSPubSub(endpoint_url=moto_url, prefix=name_prefix)
    yield backend
    backend.close()


@pytest.fixture
def raw(moto_url: str) -> Iterator[tuple[Any, Any]]:
    sns, sqs = _raw_clients(moto_url)
    yield sns, sqs
    sns.close()
    sqs.close()


def _record(client: Any, service: str, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every ``operation`` call the client makes (still sent)."""
    calls: list[dict[str, Any]] = []

    def handler(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    client.meta.events.register(f"before-parameter-build.{service}.{operation}", handler)
    return calls


def _queue_names(sqs: Any, prefix: str) -> list[str]:
    return sorted(
        url.rsplit("/", 1)[1]
        for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    )


def _topic_arn(sns: Any, name: str) -> str:
    return str(sns.create_topic(Name=name, Attributes={"FifoTopic": "true"})["TopicArn"])


# ---------------------------------------------------------------- names


def test_queue_names_are_readable_when_unambiguous() -> None:
    assert topic_name("faasml-", "jobs") == "faasml-jobs.fifo"
    assert queue_name("faasml-", "jobs", "workers") == "faasml-jobs--workers.fifo"
    assert queue_name("p-", "a-b", "-c") == "p-a-b---c.fifo"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a--b", "c"), ("a", "b--c")),
        (("a-", "b"), ("a", "-b")),
        (("x" * 64, "g" * 64), ("x" * 64, "g" * 63)),
        (("t", "g"), ("t_", "g")),
    ],
)
def test_queue_names_never_collide(first: tuple[str, str], second: tuple[str, str]) -> None:
    a = queue_name("faasml-", *first)
    b = queue_name("faasml-", *second)
    assert a != b
    for name in (a, b):
        assert len(name) <= 80 and name.endswith(".fifo")
        assert re.fullmatch(r"[A-Za-z0-9_-]+\.fifo", name)


def test_long_or_ambiguous_names_are_hashed_without_dashes() -> None:
    prefix = "p" * 32
    for topic, group in [("x" * 64, "g" * 64), ("a--b", "c"), ("a-", "b")]:
        name = queue_name(prefix, topic, group)
        assert len(name) <= 80
        assert "-" not in name[len(prefix) :], "hashed names must not look like readable ones"
        assert name == queue_name(prefix, topic, group), "names must be deterministic"


# ---------------------------------------------------------------- what is created on AWS


def test_ensure_group_creates_fifo_queue_policy_and_raw_subscription(
    pubsub: SQSPubSub, name_prefix: str, raw: tuple[Any, Any]
) -> None:
    sns, sqs = raw
    pubsub.ensure_group("jobs", "workers")
    pubsub.ensure_group("jobs", "workers")  # idempotent
    assert _queue_names(sqs, name_prefix) == [f"{name_prefix}jobs--workers.fifo"]
    url = sqs.get_queue_url(QueueName=f"{name_prefix}jobs--workers.fifo")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["FifoQueue"] == "true"
    assert attributes["ContentBasedDeduplication"] == "false"
    topic_arn = _topic_arn(sns, f"{name_prefix}jobs.fifo")
    policy = json.loads(attributes["Policy"])
    statement = policy["Statement"][0]
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Resource"] == attributes["QueueArn"]
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": topic_arn}}
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    assert [s["Endpoint"] for s in subscriptions] == [attributes["QueueArn"]]
    sub_attributes = sns.get_subscription_attributes(
        SubscriptionArn=subscriptions[0]["SubscriptionArn"]
    )["Attributes"]
    assert sub_attributes["RawMessageDelivery"] == "true"


def test_private_subscription_queue_is_deleted_on_close(
    pubsub: SQSPubSub, name_prefix: str, raw: tuple[Any, Any]
) -> None:
    sns, sqs = raw
    sub = pubsub.subscribe("news")
    names = _queue_names(sqs, name_prefix)
    assert len(names) == 1 and "--_anon-" in names[0]
    topic_arn = _topic_arn(sns, f"{name_prefix}news.fifo")
    assert len(sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]) == 1
    sub.close()
    sub.close()
    assert _queue_names(sqs, name_prefix) == []
    assert sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"] == []
    pubsub.publish("news", b"nobody left")  # no group: dropped, not an error


def test_private_subscription_queue_is_deleted_when_garbage_collected(
    pubsub: SQSPubSub, name_prefix: str, raw: tuple[Any, Any]
) -> None:
    _, sqs = raw
    sub = pubsub.subscribe("news")
    assert len(_queue_names(sqs, name_prefix)) == 1
    pubsub.publish("news", b"acked before the subscription is dropped")
    message = sub.get(timeout=5)
    assert message is not None
    message.ack()  # starts the ack thread, which must not keep the subscription alive
    assert sub.flush(5)
    del sub, message
    gc.collect()
    assert _queue_names(sqs, name_prefix) == []


def test_closing_the_backend_deletes_private_queues_and_keeps_groups(
    moto_url: str, name_prefix: str, raw: tuple[Any, Any], fake_aws_credentials: None
) -> None:
    _, sqs = raw
    backend = SQSPubSub(endpoint_url=moto_url, prefix=name_prefix)
    kept = backend.subscribe("t", "g")
    private = backend.subscribe("t")
    assert len(_queue_names(sqs, name_prefix)) == 2
    backend.close()
    backend.close()
    assert _queue_names(sqs, name_prefix) == [f"{name_prefix}t--g.fifo"]
    for closed in (kept, private):
        with pytest.raises(ValueError, match="closed"):
            closed.get_many(timeout=0)


def _topic_names(sns: Any, prefix: str) -> list[str]:
    return sorted(
        topic["TopicArn"].rsplit(":", 1)[1]
        for page in sns.get_paginator("list_topics").paginate()
        for topic in page.get("Topics", [])
        if topic["TopicArn"].rsplit(":", 1)[1].startswith(prefix)
    )


def test_delete_topic_deletes_topic_subscriptions_and_every_groups_queue(
    pubsub: SQSPubSub, name_prefix: str, raw: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    sns, sqs = raw
    pubsub.ensure_group("t", "a")
    private = pubsub.subscribe("t")
    pubsub.ensure_group("kept", "a")
    # A foreign queue subscribed to the topic outside faasml loses its subscription, not itself.
    foreign_url = sqs.create_queue(QueueName=f"other{uuid.uuid4().hex[:8]}")["QueueUrl"]
    foreign_arn = sqs.get_queue_attributes(QueueUrl=foreign_url, AttributeNames=["QueueArn"])
    topic_arn = _topic_arn(sns, f"{name_prefix}t.fifo")
    sns.subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=foreign_arn["Attributes"]["QueueArn"]
    )
    try:
        assert len(_queue_names(sqs, name_prefix)) == 3
        pubsub.delete_topic("t")
        assert _queue_names(sqs, name_prefix) == [f"{name_prefix}kept--a.fifo"]
        assert _topic_names(sns, name_prefix) == [f"{name_prefix}kept.fifo"]
        with caplog.at_level(logging.WARNING, logger="faasml.pubsub.sqs"):
            private.close()  # its queue went with the topic: nothing to complain about
        assert caplog.records == []
        pubsub.delete_topic("t")
        assert _topic_names(sns, name_prefix) == [f"{name_prefix}kept.fifo"]
        assert sqs.get_queue_url(QueueName=foreign_url.rsplit("/", 1)[1])["QueueUrl"]
    finally:
        sqs.delete_queue(QueueUrl=foreign_url)


# ---------------------------------------------------------------- bodies and limits


def test_limit_is_sns_maximum_after_base64() -> None:
    assert SQSPubSub.max_message_bytes == 192 * 1024
    assert len(base64.b64encode(b"\xff" * SQSPubSub.max_message_bytes)) == 262_144


def test_foreign_text_messages_arrive_as_utf8(pubsub: SQSPubSub, raw: tuple[Any, Any]) -> None:
    _, sqs = raw
    sub = pubsub.subscribe("t", "g")
    sqs.send_message(
        QueueUrl=sub.queue_url,
        MessageBody="hello from the console é",
        MessageGroupId="x",
        MessageDeduplicationId=uuid.uuid4().hex,
    )
    message = sub.get(timeout=5)
    assert message is not None and message.data == "hello from the console é".encode()
    message.ack()


def test_publish_many_batches_by_count_and_size(pubsub: SQSPubSub) -> None:
    sub = pubsub.subscribe("t", "g")
    calls = _record(pubsub._sns, "sns", "PublishBatch")
    big = [bytes([i]) * (100 * 1024) for i in range(5)]  # 136,536 base64 bytes each
    pubsub.publish_many("t", big)
    assert [len(c["PublishBatchRequestEntries"]) for c in calls] == [1, 1, 1, 1, 1]
    small = [b"%d" % i for i in range(23)]
    pubsub.publish_many("t", small)
    assert [len(c["PublishBatchRequestEntries"]) for c in calls[5:]] == [10, 10, 3]
    for call in calls:
        total = sum(len(e["Message"]) for e in call["PublishBatchRequestEntries"])
        assert total <= 262_144
        ids = [e["MessageDeduplicationId"] for e in call["PublishBatchRequestEntries"]]
        assert len(set(ids)) == len(ids)
    got = []
    while len(got) < 28:
        batch = sub.get_many(10, timeout=5)
        assert batch, f"only {len(got)} of 28 messages arrived"
        for m in batch:
            m.ack()
        got.extend(m.data for m in batch)
    assert sorted(got) == sorted(big + small)


def test_oversized_message_names_the_limit(pubsub: SQSPubSub) -> None:
    calls = _record(pubsub._sns, "sns", "PublishBatch")
    with pytest.raises(PayloadTooLargeError, match="196608") as caught:
        pubsub.publish("t", b"x" * (196_608 + 1))
    assert caught.value.provider == "sqs"
    with pytest.raises(PayloadTooLargeError):
        pubsub.publish_many("t", [b"fine", b"x" * (196_608 + 1)])
    assert calls == [], "nothing may be sent when one item is too large"


# ---------------------------------------------------------------- ordering modes


def test_ordered_mode_keeps_order_and_locks_the_publishers_group(
    moto_url: str, name_prefix: str, fake_aws_credentials: None
) -> None:
    backend = SQSPubSub(endpoint_url=moto_url, prefix=name_prefix, ordered=True)
    one = backend.subscribe("t", "g", visibility_timeout=30)
    two = backend.subscribe("t", "g", visibility_timeout=30)
    backend.publish_many("t", [b"%02d" % i for i in range(10)])
    backend.publish("t", b"10")
    first = one.get(timeout=5)
    assert first is not None and first.data == b"00"
    # The documented price: while "00" is held, nobody gets later messages of this publisher.
    assert two.get(timeout=1.2) is None
    assert one.get(timeout=0) is None
    first.ack()
    assert one.flush()
    rest = []
    while len(rest) < 10:
        batch = two.get_many(10, timeout=5)
        assert batch
        for m in batch:
            m.ack()
        rest.extend(m.data for m in batch)
        two.flush()
    assert rest == [b"%02d" % i for i in range(1, 11)]
    assert backend.to_config()["ordered"] is True
    backend.close()


def test_unordered_mode_lets_members_hold_messages_in_parallel(pubsub: SQSPubSub) -> None:
    assert not pubsub.ordered
    calls = _record(pubsub._sns, "sns", "Publish")
    one = pubsub.subscribe("t", "g")
    two = pubsub.subscribe("t", "g")
    pubsub.publish("t", b"a")
    pubsub.publish("t", b"b")
    assert calls[0]["MessageGroupId"] != calls[1]["MessageGroupId"]
    first = one.get(timeout=5)
    second = two.get(timeout=5)
    assert first is not None and second is not None, "a held message blocked the other member"
    assert sorted([first.data, second.data]) == [b"a", b"b"]
    first.ack()
    second.ack()


# ---------------------------------------------------------------- leases and acks


def test_acks_are_batched(pubsub: SQSPubSub) -> None:
    sub = pubsub.subscribe("t", "g")
    deletes = _record(pubsub._sqs, "sqs", "DeleteMessageBatch")
    pubsub.publish_many("t", [b"%d" % i for i in range(10)])
    got = []
    while len(got) < 10:
        got.extend(sub.get_many(10, timeout=5))
    for message in got:
        message.ack()
    assert sub.flush(10)
    assert sum(len(c["Entries"]) for c in deletes) == 10
    assert len(deletes) < 10
    assert sub.get(timeout=1.5) is None


def test_visibility_timeout_is_rounded_up_and_sent_with_each_receive(
    pubsub: SQSPubSub,
) -> None:
    sub = pubsub.subscribe("t", "g", visibility_timeout=2.2)
    assert sub.visibility_timeout == 3
    receives = _record(pubsub._sqs, "sqs", "ReceiveMessage")
    sub.get_many(timeout=0)
    assert receives[0]["VisibilityTimeout"] == 3
    assert receives[0]["WaitTimeSeconds"] == 0
    assert receives[0]["MaxNumberOfMessages"] == 10
    default = pubsub.subscribe("t", "h")
    assert default.visibility_timeout == 30


def test_long_polls_are_capped_at_wait_seconds(
    moto_url: str, name_prefix: str, fake_aws_credentials: None
) -> None:
    backend = SQSPubSub(endpoint_url=moto_url, prefix=name_prefix, wait_seconds=1)
    sub = backend.subscribe("t", "g")
    receives = _record(backend._sqs, "sqs", "ReceiveMessage")
    assert sub.get_many(50, timeout=2.5) == []
    assert [c["WaitTimeSeconds"] for c in receives[:2]] == [1, 1]
    assert all(c["MaxNumberOfMessages"] == 10 for c in receives)
    backend.close()


def test_ack_after_the_lease_ran_out_is_not_sent(pubsub: SQSPubSub) -> None:
    sub = pubsub.subscribe("t", "g", visibility_timeout=1)
    deletes = _record(pubsub._sqs, "sqs", "DeleteMessageBatch")
    changes = _record(pubsub._sqs, "sqs", "ChangeMessageVisibility")
    pubsub.publish("t", b"slow")
    message = sub.get(timeout=5)
    assert message is not None
    time.sleep(1.2)
    message.touch()
    message.ack()
    assert sub.flush(5)
    assert deletes == [] and changes == []
    again = sub.get(timeout=5)
    assert again is not None and again.deliveries == 2
    again.ack()


@pytest.mark.parametrize("group", ["g", None])
def test_close_ends_a_blocked_receive(
    moto_url: str, name_prefix: str, fake_aws_credentials: None, group: str | None
) -> None:
    backend = SQSPubSub(endpoint_url=moto_url, prefix=name_prefix, wait_seconds=1)
    sub = backend.subscribe("t", group)
    outcome: list[BaseException | list[Any]] = []

    def receive() -> None:
        try:
            outcome.append(sub.get_many(timeout=None))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=receive)
    thread.start()
    time.sleep(0.3)
    sub.close()
    thread.join(5)
    assert not thread.is_alive(), "a receive waiting forever did not notice close()"
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError)
    with pytest.raises(ValueError, match="closed"):
        next(iter(sub))
    backend.close()


def test_get_many_rejects_a_zero_count(pubsub: SQSPubSub) -> None:
    sub = pubsub.subscribe("t", "g")
    with pytest.raises(ValueError):
        sub.get_many(0)


# ---------------------------------------------------------------- errors


def test_missing_queue_raises_not_found(pubsub: SQSPubSub, raw: tuple[Any, Any]) -> None:
    _, sqs = raw
    sub = pubsub.subscribe("t", "g")
    sqs.delete_queue(QueueUrl=sub.queue_url)
    with pytest.raises(NotFoundError, match="no longer exists") as caught:
        sub.get_many(timeout=0)
    assert caught.value.provider == "sqs" and "'g'" in str(caught.value)


def test_server_down_raises_service_unavailable_naming_it(fake_aws_credentials: None) -> None:
    backend = SQSPubSub(endpoint_url="http://127.0.0.1:1", max_attempts=1)
    start = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match=r"http://127\.0\.0\.1:1"):
        backend.publish("t", b"x")
    with pytest.raises(ServiceUnavailableError):
        backend.subscribe("t", "g")
    assert time.monotonic() - start < 10
    backend.close()


def _stubbed_backend() -> tuple[SQSPubSub, Any, Any]:
    options = {
        "region_name": "us-east-1",
        "endpoint_url": "http://127.0.0.1:1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    sns = boto3.client("sns", **options)
    sqs = boto3.client("sqs", **options)
    return SQSPubSub(clients={"sns": sns, "sqs": sqs}), sns, sqs


def test_throttled_publish_keeps_retry_after() -> None:
    backend, sns, sqs = _stubbed_backend()
    arn = "arn:aws:sns:us-east-1:123456789012:faasml-t.fifo"
    with Stubber(sns) as stubber:
        stubber.add_response("create_topic", {"TopicArn": arn})
        stubber.add_client_error(
            "publish",
            service_error_code="Throttled",
            http_status_code=429,
            response_meta={"HTTPHeaders": {"retry-after": "3"}},
        )
        with pytest.raises(ThrottledError) as caught:
            backend.publish("t", b"x")
    assert caught.value.retry_after == 3.0 and caught.value.status == 429
    backend.close()
    sns.close()
    sqs.close()


def test_wrong_credentials_raise_authentication_error() -> None:
    # moto does not check signatures: the service's answer is stubbed.
    backend, sns, sqs = _stubbed_backend()
    with Stubber(sns) as stubber:
        stubber.add_client_error(
            "create_topic",
            service_error_code="InvalidClientTokenId",
            service_message="The security token included in the request is invalid.",
            http_status_code=403,
        )
        with pytest.raises(AuthenticationError, match="security token"):
            backend.publish("t", b"x")
    sns.close()
    sqs.close()


def test_failed_batch_entries_are_raised() -> None:
    backend, sns, sqs = _stubbed_backend()
    arn = "arn:aws:sns:us-east-1:123456789012:faasml-t.fifo"
    with Stubber(sns) as stubber:
        stubber.add_response("create_topic", {"TopicArn": arn})
        stubber.add_response(
            "publish_batch",
            {
                "Successful": [{"Id": "0", "MessageId": "m0"}],
                "Failed": [
                    {"Id": "1", "Code": "AuthorizationError", "Message": "no", "SenderFault": True}
                ],
            },
        )
        with pytest.raises(PermissionDeniedError, match="1 of 2"):
            backend.publish_many("t", [b"a", b"b"])
    sns.close()
    sqs.close()


def test_deleted_topic_is_recreated_once(pubsub: SQSPubSub, raw: tuple[Any, Any]) -> None:
    sns, _ = raw
    created = _record(pubsub._sns, "sns", "CreateTopic")
    pubsub.publish("t", b"creates the topic")
    sns.delete_topic(TopicArn=pubsub._topic_arn("t"))
    pubsub.publish("t", b"the cached topic ARN is stale: publish recreates the topic")
    assert len(created) == 2
    sns.delete_topic(TopicArn=pubsub._topic_arn("t"))
    pubsub.publish_many("t", [b"so does publish_many"])
    assert len(created) == 3
    sns.delete_topic(TopicArn=pubsub._topic_arn("t"))
    sub = pubsub.subscribe("t", "g")  # the cached topic ARN is stale: the topic is recreated
    pubsub.publish("t", b"after")
    message = sub.get(timeout=5)
    assert message is not None and message.data == b"after"
    message.ack()


# ---------------------------------------------------------------- configuration


def test_to_config_has_no_secrets_and_pins_the_region(
    moto_url: str, name_prefix: str, monkeypatch: pytest.MonkeyPatch, fake_aws_credentials: None
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("FAASML_TEST_SQS_KEY", "testing")
    monkeypatch.setenv("FAASML_TEST_SQS_SECRET", "testing")
    backend = SQSPubSub(
        endpoint_url=moto_url,
        prefix=name_prefix,
        access_key_id={"$env": "FAASML_TEST_SQS_KEY"},
        secret_access_key={"$env": "FAASML_TEST_SQS_SECRET"},
        visibility_timeout=12.5,
    )
    assert backend.to_config() == {
        "region": "eu-west-3",
        "endpoint_url": moto_url,
        "prefix": name_prefix,
        "visibility_timeout": 12.5,
        "wait_seconds": 20,
        "ordered": False,
        "max_attempts": 5,
        "access_key_id": {"$env": "FAASML_TEST_SQS_KEY"},
        "secret_access_key": {"$env": "FAASML_TEST_SQS_SECRET"},
    }
    backend.close()
    literal = SQSPubSub(
        endpoint_url=moto_url, access_key_id="AKID", secret_access_key="literal-secret"
    )
    with pytest.raises(ConfigurationError, match=r"\$env") as caught:
        literal.to_config()
    assert "literal-secret" not in str(caught.value)
    literal.close()


def test_missing_region_is_a_configuration_error(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, fake_aws_credentials: None
) -> None:
    for var in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigurationError, match="AWS_DEFAULT_REGION"):
        SQSPubSub(endpoint_url=moto_url)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prefix": "has.dot-"}, "prefix"),
        ({"prefix": "p" * 33}, "prefix"),
        ({"wait_seconds": 0}, "wait_seconds"),
        ({"wait_seconds": 21}, "wait_seconds"),
        ({"visibility_timeout": 0}, "visibility_timeout"),
        ({"visibility_timeout": 43_201}, "visibility_timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"clients": {"sns": object()}}, "sqs"),
    ],
)
def test_invalid_options_are_rejected(
    kwargs: dict[str, Any], match: str, fake_aws_credentials: None
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SQSPubSub(endpoint_url="http://127.0.0.1:1", **kwargs)


def test_invalid_subscription_lease_is_rejected(pubsub: SQSPubSub) -> None:
    with pytest.raises(ConfigurationError, match="visibility_timeout"):
        pubsub.subscribe("t", "g", visibility_timeout=0)


def test_registered_as_sqs() -> None:
    assert registry.backend_class("pubsub", "sqs") is SQSPubSub
    record = registry.backend_record("pubsub", "sqs")
    assert record.extra == "aws" and record.requires == ("boto3",)


def test_one_second_timeout_is_one_long_poll(
    pubsub: SQSPubSub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """timeout=1.0 must long-poll for a second, not spin on short polls."""
    topic = f"t-{uuid.uuid4().hex[:12]}"
    sub = pubsub.subscribe(topic, "g")
    try:
        waits: list[int] = []
        original = sub._sqs.receive_message

        def spy(**kwargs: Any) -> Any:
            waits.append(kwargs["WaitTimeSeconds"])
            return original(**kwargs)

        monkeypatch.setattr(sub._sqs, "receive_message", spy)
        assert sub.get_many(1, timeout=1.0) == []
        assert waits and waits[0] == 1 and len(waits) <= 2, waits
    finally:
        sub.close()
        pubsub.delete_topic(topic)

"""The ``smn`` PubSub backend: SMN mocked with ``responses``, paired with the ``local`` queue.

huaweicloudsdkcore sends through ``requests``, so ``responses`` sees every call; anything not
mocked (an IAM project lookup, a wrong host) fails the test. The mock follows the SMN API: topic
URNs in the path are percent-encoded by the SDK, ``create_topic`` answers 201 for a new topic and
200 for an existing one, errors are ``{"request_id", "code", "message"}`` bodies (API Gateway
authentication errors use ``error_code``/``error_msg``), and the request id travels in
``X-Request-Id``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import responses
from huaweicloudsdkcore.exceptions.exceptions import SdkException

from faasml import registry
from faasml.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidTopicError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ThrottledError,
    UnknownBackendError,
)
from faasml.pubsub.local import LocalPubSub
from faasml.pubsub.mns import MNSPubSub
from faasml.pubsub.smn import ERROR_STATUSES, SMNPubSub
from faasml.testing.conformance.pubsub import PubSubTests

REGION = "cn-north-4"
PROJECT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
AK = "FAASMLTESTAK0000"
SK = "faasml-test-sk"
HOST = f"https://smn.{REGION}.myhuaweicloud.com"


class FakeSMN:
    """The SMN endpoints the backend calls, as ``responses`` callbacks."""

    def __init__(self, rsps: responses.RequestsMock, host: str = HOST) -> None:
        self.topics: dict[str, str] = {}
        self.published: list[tuple[str, str]] = []
        self.created: list[tuple[str, int]] = []
        self.deleted: list[str] = []
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.lock = threading.Lock()
        base = f"{host}/v2/{PROJECT}/notifications/topics"
        rsps.add_callback(responses.POST, re.compile(re.escape(base) + r"$"), self.create_topic)
        rsps.add_callback(
            responses.POST, re.compile(re.escape(base) + r"/[^/]+/publish$"), self.publish
        )
        rsps.add_callback(
            responses.GET, re.compile(re.escape(base) + r"(\?.*)?$"), self.list_topics
        )
        rsps.add_callback(responses.DELETE, re.compile(re.escape(base) + r"/[^/]+$"), self.remove)

    def fail_next(self, status: int, code: str, message: str = "injected") -> None:
        with self.lock:
            self.failures.append((status, {"code": code, "message": message}))

    def delete_topic(self, name: str) -> None:
        with self.lock:
            del self.topics[name]

    def _reply(self, status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        request_id = uuid.uuid4().hex
        return status, {"X-Request-Id": request_id}, json.dumps({"request_id": request_id, **body})

    def _refused(self, request: Any) -> tuple[int, dict[str, str], str] | None:
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("SDK-HMAC-SHA256 ") or f"Access={AK}," not in authorization:
            return self._reply(
                401,
                {
                    "error_code": "APIGW.0301",
                    "error_msg": "Incorrect IAM authentication information: "
                    "verify aksk signature fail",
                },
            )
        with self.lock:
            if self.failures:
                return self._reply(*self.failures.pop(0))
        return None

    def create_topic(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused(request)
        if refused is not None:
            return refused
        name = json.loads(request.body)["name"]
        with self.lock:
            existed = name in self.topics
            urn = self.topics.setdefault(name, f"urn:smn:{REGION}:{PROJECT}:{name}")
            self.created.append((name, 200 if existed else 201))
        return self._reply(200 if existed else 201, {"topic_urn": urn})

    def list_topics(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused(request)
        if refused is not None:
            return refused
        wanted = request.params.get("name")
        with self.lock:
            rows = [
                {"topic_urn": urn, "name": name, "display_name": "", "push_policy": 0}
                for name, urn in sorted(self.topics.items())
                if wanted is None or name == wanted
            ]
        return self._reply(200, {"topic_count": len(rows), "topics": rows})

    def remove(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused(request)
        if refused is not None:
            return refused
        urn = unquote(request.path_url.split("/topics/", 1)[1])
        with self.lock:
            for name, known in list(self.topics.items()):
                if known == urn:
                    del self.topics[name]
                    self.deleted.append(name)
                    return self._reply(200, {})
        return self._reply(404, {"code": "SMN.0006", "message": "Topic not found."})

    def publish(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused(request)
        if refused is not None:
            return refused
        encoded = request.path_url.split("/topics/", 1)[1].rsplit("/publish", 1)[0]
        # The SDK percent-encodes the URN; a raw ':' would not be the same resource path.
        assert ":" not in encoded and "%3A" in encoded, encoded
        urn = unquote(encoded)
        message = json.loads(request.body)["message"]
        with self.lock:
            if urn not in self.topics.values():
                return self._reply(404, {"code": "SMN.0006", "message": "Topic not found."})
            self.published.append((urn.rsplit(":", 1)[1], message))
        return self._reply(200, {"message_id": uuid.uuid4().hex})


@pytest.fixture
def smn() -> Iterator[FakeSMN]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeSMN(rsps)


@pytest.fixture
def huawei_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """AK/SK in the SDK's variables, where a spawned child process finds them too."""
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", AK)
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", SK)
    monkeypatch.delenv("HUAWEICLOUD_SDK_SECURITY_TOKEN", raising=False)
    monkeypatch.delenv("HUAWEICLOUD_SDK_PROJECT_ID", raising=False)


class TestPairedSMNPubSub(PubSubTests):
    """The whole contract on SMN paired with the ``local`` queue (SMN itself cannot be pulled)."""

    @pytest.fixture
    def pubsub(self, smn: FakeSMN, huawei_credentials: None) -> Iterator[SMNPubSub]:
        queue = LocalPubSub()
        backend = SMNPubSub(REGION, PROJECT, queue=queue)
        yield backend
        backend.close()
        queue.close()


@pytest.fixture
def local_queue() -> Iterator[LocalPubSub]:
    queue = LocalPubSub()
    yield queue
    queue.close()


@pytest.fixture
def paired(smn: FakeSMN, huawei_credentials: None, local_queue: LocalPubSub) -> SMNPubSub:
    return SMNPubSub(REGION, PROJECT, queue=local_queue)


# ---------------------------------------------------------------------- publishing


def test_registered_as_smn() -> None:
    assert registry.backend_class("pubsub", "smn") is SMNPubSub
    record = registry.backend_record("pubsub", "smn")
    assert record.extra == "huawei" and record.requires == ("huaweicloudsdksmn",)


def test_publish_goes_to_smn_as_base64_and_to_the_paired_queue(
    paired: SMNPubSub, smn: FakeSMN
) -> None:
    sub = paired.subscribe("jobs", "workers")
    paired.publish("jobs", b"\x00\xffpayload")
    paired.publish_many("jobs", [b"", b"second"])
    assert smn.published == [
        ("faasml-jobs", base64.b64encode(b"\x00\xffpayload").decode()),
        ("faasml-jobs", "="),
        ("faasml-jobs", base64.b64encode(b"second").decode()),
    ]
    assert smn.created == [("faasml-jobs", 201)], "the topic URN must be cached"
    got = sub.get_many(3, timeout=5)
    assert [m.data for m in got] == [b"\x00\xffpayload", b"", b"second"]
    assert paired.ex_topic_urn("jobs") == f"urn:smn:{REGION}:{PROJECT}:faasml-jobs"


def test_an_existing_smn_topic_is_reused(smn: FakeSMN, huawei_credentials: None) -> None:
    SMNPubSub(REGION, PROJECT).publish("t", b"1")
    SMNPubSub(REGION, PROJECT).publish("t", b"2")
    assert smn.created == [("faasml-t", 201), ("faasml-t", 200)]
    assert [m for _, m in smn.published] == ["MQ==", "Mg=="]


def test_a_topic_deleted_behind_our_back_is_created_again(paired: SMNPubSub, smn: FakeSMN) -> None:
    paired.publish("t", b"first")
    smn.delete_topic("faasml-t")
    paired.publish("t", b"second")
    assert smn.created == [("faasml-t", 201), ("faasml-t", 201)]
    assert [m for _, m in smn.published] == [
        base64.b64encode(b"first").decode(),
        base64.b64encode(b"second").decode(),
    ]


def test_delete_topic_deletes_the_smn_topic_and_the_queues_topic(
    paired: SMNPubSub, smn: FakeSMN, local_queue: LocalPubSub
) -> None:
    paired.ensure_group("t", "g")
    paired.publish("t", b"pending")
    paired.publish("kept", b"x")
    paired.delete_topic("t")
    assert smn.deleted == ["faasml-t"] and set(smn.topics) == {"faasml-kept"}
    with local_queue.subscribe("t", "g") as sub:
        assert sub.get(timeout=0.2) is None, "the paired queue's topic went too"
    created = len(smn.created)
    paired.delete_topic("t")
    paired.delete_topic("never-used")
    assert smn.deleted == ["faasml-t"] and len(smn.created) == created, "looked up, not created"
    paired.publish("t", b"again")  # publishing creates the SMN topic again
    assert "faasml-t" in smn.topics


def test_delete_topic_without_a_queue_deletes_only_the_smn_topic(
    smn: FakeSMN, huawei_credentials: None
) -> None:
    alone = SMNPubSub(REGION, PROJECT)
    alone.publish("t", b"x")
    alone.delete_topic("t")
    assert smn.deleted == ["faasml-t"] and smn.topics == {}


def test_an_endpoint_can_replace_the_region(huawei_credentials: None) -> None:
    host = "https://smn.example.internal"
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        fake = FakeSMN(rsps, host=host)
        backend = SMNPubSub(endpoint=host + "/", project_id=PROJECT)
        backend.publish("t", b"x")
        backend.delete_topic("t")
    assert fake.published == [("faasml-t", "eA==")] and fake.deleted == ["faasml-t"]
    assert backend.to_config()["endpoint"] == host


def test_a_queue_failure_after_smn_accepted_is_raised(
    paired: SMNPubSub, smn: FakeSMN, local_queue: LocalPubSub
) -> None:
    local_queue.close()
    with pytest.raises(ValueError, match="closed"):
        paired.publish("t", b"x")
    assert [m for _, m in smn.published] == ["eA=="], "SMN is sent to first"


def test_oversized_messages_name_the_effective_limit(
    smn: FakeSMN, huawei_credentials: None
) -> None:
    alone = SMNPubSub(REGION, PROJECT)
    assert alone.max_message_bytes == 192 * 1024
    with pytest.raises(PayloadTooLargeError, match=str(192 * 1024)):
        alone.publish("t", b"x" * (192 * 1024 + 1))
    alone.publish("t", b"x" * (192 * 1024))
    assert len(smn.published[-1][1]) == 256 * 1024

    small = MNSPubSub("http://1.mns.cn-hangzhou.aliyuncs.com", account=object())
    paired = SMNPubSub(REGION, PROJECT, queue=small)
    assert paired.max_message_bytes == MNSPubSub.max_message_bytes == 49152
    with pytest.raises(PayloadTooLargeError, match="49152") as caught:
        paired.publish_many("t", [b"ok", b"x" * 49153])
    assert "'mns'" in str(caught.value)
    assert len(smn.published) == 1, "nothing may be sent when an item is too large"


def test_order_is_the_paired_queues(huawei_credentials: None, local_queue: LocalPubSub) -> None:
    assert SMNPubSub(REGION, PROJECT, queue=local_queue).preserves_order is True
    local_queue.preserves_order = False  # as an unordered ``sqs`` queue declares
    assert SMNPubSub(REGION, PROJECT, queue=local_queue).preserves_order is False


# ---------------------------------------------------------------------- without a paired queue


def test_without_a_queue_publishing_works_and_subscribing_explains_why_not(
    smn: FakeSMN, huawei_credentials: None
) -> None:
    backend = SMNPubSub(REGION, PROJECT)
    backend.publish("alerts", b"to SMN subscribers only")
    assert len(smn.published) == 1
    with pytest.raises(ConfigurationError, match="only pushes") as caught:
        backend.subscribe("alerts", "g")
    assert "queue=" in str(caught.value) and "pull" in str(caught.value)
    with pytest.raises(ConfigurationError, match="queue="):
        backend.ensure_group("alerts", "g")
    with pytest.raises(InvalidTopicError):
        backend.subscribe("not portable")
    assert backend.queue is None
    assert backend.to_config()["queue"] is None


# ---------------------------------------------------------------------- the paired queue


def test_the_queue_can_be_named_or_configured(
    smn: FakeSMN, huawei_credentials: None, tmp_path: Path
) -> None:
    by_name = SMNPubSub(REGION, PROJECT, queue="local")
    assert isinstance(by_name.queue, LocalPubSub)
    by_name.close()
    configured = SMNPubSub(
        REGION, PROJECT, queue={"backend": "local", "options": {"path": str(tmp_path / "q")}}
    )
    assert isinstance(configured.queue, LocalPubSub)
    assert configured.queue.path == str(tmp_path / "q")
    config = configured.to_config()
    assert config["queue"] == {
        "backend": "local",
        "options": {"path": str(tmp_path / "q"), "visibility_timeout": 30.0},
    }
    configured.close()
    with pytest.raises(ValueError, match="closed"):
        configured.queue.publish("t", b"x")  # the instance it built is closed with it


def test_an_injected_queue_is_not_closed(paired: SMNPubSub, local_queue: LocalPubSub) -> None:
    paired.close()
    paired.close()
    local_queue.publish("t", b"still open")


@pytest.mark.parametrize(
    ("queue", "error", "words"),
    [
        ({"backend": "local", "url": "x"}, ConfigurationError, "mapping"),
        ({"options": {}}, ConfigurationError, "mapping"),
        (42, ConfigurationError, "int"),
        ("smn", ConfigurationError, "cannot pair"),
        ("no-such-backend", UnknownBackendError, "no-such-backend"),
    ],
)
def test_bad_queues_are_rejected(
    huawei_credentials: None, queue: object, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        SMNPubSub(REGION, PROJECT, queue=queue)  # type: ignore[arg-type]


def test_another_smn_instance_cannot_be_the_queue(huawei_credentials: None) -> None:
    with pytest.raises(ConfigurationError, match="cannot pair"):
        SMNPubSub(REGION, PROJECT, queue=SMNPubSub(REGION, PROJECT))


def test_subscribe_passes_the_lease_through(paired: SMNPubSub, local_queue: LocalPubSub) -> None:
    sub = paired.subscribe("t", "g", visibility_timeout=0.3)
    paired.ensure_group("t", "other")
    local_queue.publish("t", b"direct")
    message = sub.get(timeout=5)
    assert message is not None and message.data == b"direct"
    again = sub.get(timeout=5)
    assert again is not None and again.deliveries == 2, "the 0.3 s lease was not used"
    default = paired.subscribe("t", "other")
    assert default.get(timeout=5) is not None


# ---------------------------------------------------------------------- configuration


def test_project_id_is_required(huawei_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="HUAWEICLOUD_SDK_PROJECT_ID"):
        SMNPubSub(REGION)
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", PROJECT)
    backend = SMNPubSub(REGION)
    assert backend.to_config()["project_id"] is None  # read again where it is rebuilt


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "exactly one of region"),
        ({"region": REGION, "endpoint": HOST}, "exactly one of region"),
        ({"region": "xx-nowhere-1"}, "xx-nowhere-1"),
        ({"endpoint": "smn.example.com"}, "http"),
        ({"region": REGION, "prefix": "-dash"}, "prefix"),
        ({"region": REGION, "prefix": "has space"}, "prefix"),
    ],
)
def test_bad_options_are_rejected(
    huawei_credentials: None, kwargs: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words):
        SMNPubSub(project_id=PROJECT, **kwargs)


def test_missing_credentials_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUAWEICLOUD_SDK_AK", raising=False)
    monkeypatch.delenv("HUAWEICLOUD_SDK_SK", raising=False)
    with pytest.raises(ConfigurationError, match="HUAWEICLOUD_SDK_AK"):
        SMNPubSub(REGION, PROJECT)


def test_config_carries_references_not_secrets(
    smn: FakeSMN, monkeypatch: pytest.MonkeyPatch, local_queue: LocalPubSub
) -> None:
    monkeypatch.setenv("MY_AK", AK)
    monkeypatch.setenv("MY_SK", SK)
    monkeypatch.setenv("MY_TOKEN", "sts-token")
    backend = SMNPubSub(
        REGION,
        PROJECT,
        access_key_id={"$env": "MY_AK"},
        secret_access_key={"$env": "MY_SK"},
        security_token={"$env": "MY_TOKEN"},
        queue=local_queue,
        prefix="fm_",
    )
    config = backend.to_config()
    assert json.loads(json.dumps(config)) == config
    assert SK not in json.dumps(config) and "sts-token" not in json.dumps(config)
    assert config["secret_access_key"] == {"$env": "MY_SK"}
    assert config["queue"] == {"backend": "local", "options": local_queue.to_config()}
    rebuilt = SMNPubSub(**config)
    rebuilt.publish("t", b"x")
    rebuilt.close()
    assert smn.published == [("fm_t", "eA==")]
    assert local_queue.path == config["queue"]["options"]["path"]


def test_a_literal_secret_does_not_travel(huawei_credentials: None) -> None:
    backend = SMNPubSub(REGION, PROJECT, access_key_id=AK, secret_access_key=SK)
    with pytest.raises(ConfigurationError, match=r'secret_access_key=\{"\$env": "VAR"\}'):
        backend.to_config()


# ---------------------------------------------------------------------- errors


# The mapping is keyed by HTTP status; the codes only travel along. APIGW.* are API Gateway
# codes (authentication, throttling) and SMN.0006 is the documented "Topic not found."; the
# other codes stand in for whatever SMN sends with that status.
ERROR_ROWS: list[tuple[int, str, type[ProviderError]]] = [
    (400, "SMN.0001", ProviderError),
    (401, "APIGW.0301", AuthenticationError),
    (403, "APIGW.0302", PermissionDeniedError),
    (404, "SMN.0006", NotFoundError),
    (429, "APIGW.0308", ThrottledError),
    (500, "SMN.0500", ServiceUnavailableError),
    (503, "SMN.0503", ServiceUnavailableError),
]


def test_every_table_row_is_exercised() -> None:
    assert {(status, cls) for status, cls in ERROR_STATUSES.items()} <= {
        (status, cls) for status, _, cls in ERROR_ROWS
    }


@pytest.mark.parametrize(
    ("status", "code", "error"), ERROR_ROWS, ids=[str(r[0]) for r in ERROR_ROWS]
)
def test_error_table_row(
    paired: SMNPubSub, smn: FakeSMN, status: int, code: str, error: type[ProviderError]
) -> None:
    smn.fail_next(status, code, "refused on purpose")
    with pytest.raises(error) as caught:
        paired.publish("t", b"x")
    assert type(caught.value) is error
    assert caught.value.provider == "smn"
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.request_id and len(caught.value.request_id) == 32
    assert "refused on purpose" in str(caught.value)
    assert smn.published == [], "a failed SMN call must not reach the queue either"


def test_wrong_credentials_are_an_authentication_error(
    smn: FakeSMN, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "SOMEONE-ELSE")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", SK)
    with pytest.raises(AuthenticationError, match="APIGW.0301") as caught:
        SMNPubSub(REGION, PROJECT).publish("t", b"x")
    assert "HUAWEICLOUD_SDK_AK" in str(caught.value)


def test_a_deleted_topic_that_stays_missing_is_not_found(paired: SMNPubSub, smn: FakeSMN) -> None:
    paired.publish("t", b"x")
    smn.fail_next(404, "SMN.0006", "Topic not found.")
    smn.fail_next(404, "SMN.0006", "Topic not found.")  # ... after it was created again
    with pytest.raises(NotFoundError, match="SMN.0006"):
        paired.publish("t", b"y")


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (requests.exceptions.ConnectionError("Connection refused"), "unreachable"),
        # huaweicloudsdkcore lets this one escape as a raw requests exception.
        (requests.exceptions.ReadTimeout("read timed out"), "unreachable"),
    ],
    ids=["refused", "timeout"],
)
def test_no_answer_is_service_unavailable_naming_the_endpoint(
    huawei_credentials: None, failure: Exception, words: str
) -> None:
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, re.compile(".*"), body=failure)
        with pytest.raises(ServiceUnavailableError, match=words) as caught:
            SMNPubSub(REGION, PROJECT).publish("t", b"x")
    assert HOST in str(caught.value)
    assert caught.value.retriable


def test_other_sdk_errors_are_provider_errors(huawei_credentials: None) -> None:
    class Client:
        def create_topic(self, request: object) -> object:
            raise SdkException("the SDK refused the request")

    backend = SMNPubSub(project_id=PROJECT, client=Client())
    with pytest.raises(ProviderError, match="the SDK refused") as caught:
        backend.publish("t", b"x")
    assert type(caught.value) is ProviderError


def test_an_injected_client_is_used_and_not_needed_in_config(huawei_credentials: None) -> None:
    calls: list[str] = []

    class Client:
        def create_topic(self, request: Any) -> Any:
            calls.append(request.body.name)
            return type("R", (), {"topic_urn": "urn:smn:x:y:" + request.body.name})()

        def publish_message(self, request: Any) -> None:
            calls.append(request.body.message)

    backend = SMNPubSub(REGION, PROJECT, client=Client())
    backend.publish("t", b"hi")
    assert calls == ["faasml-t", "aGk="]
    assert "client" not in backend.to_config()

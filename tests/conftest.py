"""Shared fixtures. Services on loopback are required in CI (CI=true): missing ones fail loudly."""

from __future__ import annotations

import os
import socket

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

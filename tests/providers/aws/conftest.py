"""Fixtures of the AWS Lambda tests: one loopback Lambda emulator and backends pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from faasml.providers.aws.function import LambdaFunction

from .emulator import ACCOUNT, REGION, LambdaEmulator

ROLE = f"arn:aws:iam::{ACCOUNT}:role/faasml-test"
SECRET = "signing-secret-0b9e4c"
CREDENTIALS = {"access_key_id": "AKIDTESTFAKE", "secret_access_key": "fake-secret-key-d41d8c"}


@pytest.fixture(scope="session")
def emulator() -> Iterator[LambdaEmulator]:
    """The Lambda emulator, shared by every test (functions have distinct names)."""
    with LambdaEmulator(concurrency=2) as lambda_emulator:
        yield lambda_emulator


@pytest.fixture(scope="session")
def lambda_client(emulator: LambdaEmulator) -> Iterator[Any]:
    """A boto3 Lambda client built by LambdaFunction itself (its retry and timeout settings).

    Building a boto3 client loads the Lambda service model (most of a second), so the tests
    share this one through ``client=``; the tests of credentials build their own.
    """
    owner = LambdaFunction(region=REGION, endpoint_url=emulator.endpoint_url, **CREDENTIALS)
    yield owner._client
    owner.close()


@pytest.fixture
def make_backend(lambda_client: Any) -> Iterator[Callable[..., LambdaFunction]]:
    """Build LambdaFunction backends on the emulator with fast deploy polling and backoff."""
    made: list[LambdaFunction] = []

    def make(name: str, **options: Any) -> LambdaFunction:
        settings: dict[str, Any] = {
            "role": ROLE,
            "timeout": 3.0,
            "concurrency": 2,
            "client": lambda_client,
        }
        settings.update(options)
        backend = LambdaFunction(name, **settings)
        backend.deploy_poll_delay = 0.02
        backend.retry_base_delay = 0.001
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()

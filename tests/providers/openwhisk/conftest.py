"""Fixtures for the OpenWhisk provider tests: the emulated controller and a deployed backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faasml.providers.openwhisk.function import OpenWhiskFunction

from .emulator import OpenWhiskEmulator, shutdown_containers
from .support import API_HOST, AUTH, SECRET, TEST_ENVIRONMENT, make_function


@pytest.fixture(scope="session", autouse=True)
def _warm_containers() -> Iterator[None]:
    """Stop the emulated invoker's worker processes once the tests are done."""
    yield
    shutdown_containers()


@pytest.fixture
def emulator() -> Iterator[OpenWhiskEmulator]:
    """A fresh emulated controller for one test."""
    with OpenWhiskEmulator(API_HOST, AUTH) as emulated:
        yield emulated


@pytest.fixture
def deployed(emulator: OpenWhiskEmulator) -> Iterator[OpenWhiskFunction]:
    """A backend whose action runs the test handlers (faasml.testing.handlers:dispatch)."""
    function = make_function()
    function.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
    yield function
    function.close()

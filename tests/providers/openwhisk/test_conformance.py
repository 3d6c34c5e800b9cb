"""The shared Function conformance suite against an action deployed into the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faasml.interfaces import Function
from faasml.testing.conformance.function import FunctionTests

from .emulator import OpenWhiskEmulator
from .support import SECRET, TEST_ENVIRONMENT, make_function


class TestOpenWhiskFunction(FunctionTests):
    # Every capability is reported by OpenWhisk itself (time limits, dead containers and the
    # activation record), so no capability fixture is overridden.

    @pytest.fixture
    def function(self, emulator: OpenWhiskEmulator) -> Iterator[Function]:
        backend = make_function(timeout=3.0, concurrency=4)
        backend.deploy(secret=SECRET, environment=TEST_ENVIRONMENT, dependencies=False)
        yield backend
        backend.close()

"""The example backend runs faasml's Function conformance suite: this is all a plugin needs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faasml.testing.conformance.function import FunctionTests

from faasml_example.function import ThreadFunction


class TestThreadFunction(FunctionTests):
    @pytest.fixture
    def function(self) -> Iterator[ThreadFunction]:
        backend = ThreadFunction(
            "faasml.testing.handlers:dispatch",
            concurrency=4,
            timeout=1.0,
            environment=FunctionTests.ENVIRONMENT,
        )
        yield backend
        backend.close()

    @pytest.fixture
    def supports_timeouts(self) -> bool:
        # Reported, not enforced: the handler's thread runs on (see faasml_example.function).
        return True

    @pytest.fixture
    def supports_crash_detection(self) -> bool:
        # os._exit() in a thread ends this very process: nothing is left to report it.
        return False

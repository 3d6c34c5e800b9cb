"""The shared Function conformance suite, run against Lambda's REST contract (the emulator)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from faasml.providers.aws.function import LambdaFunction
from faasml.testing.conformance.function import FunctionTests

from .conftest import SECRET


class TestLambdaFunction(FunctionTests):
    @pytest.fixture
    def function(self, make_backend: Callable[..., LambdaFunction]) -> Iterator[LambdaFunction]:
        backend = make_backend("conformance", timeout=3.0, concurrency=2)
        backend.deploy(
            secret=SECRET,
            environment={"FAASML_HANDLER": "faasml.testing.handlers:dispatch", **self.ENVIRONMENT},
            dependencies=False,
        )
        yield backend

    @pytest.fixture
    def supports_invocation_status(self) -> bool:
        # Lambda answers an Event invocation with 202 and reports nothing about it afterwards
        # (no status API), so Invocation.poll() can only say "unknown". Crashes and timeouts are
        # still detected on synchronous invocations (the tests above run them).
        return False

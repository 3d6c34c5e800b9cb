"""Constants and a backend factory shared by the OpenWhisk provider tests."""

from __future__ import annotations

from typing import Any

from faasml.providers.openwhisk.function import OpenWhiskFunction
from faasml.testing.conformance.function import FunctionTests

API_HOST = "https://openwhisk.test"
AUTH = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:secret-key-of-the-guest"
SECRET = "driver-signing-secret-9c1e"
#: what the conformance suite needs deployed: the test handlers and its secret-like variable.
TEST_ENVIRONMENT = {
    "FAASML_HANDLER": "faasml.testing.handlers:dispatch",
    **FunctionTests.ENVIRONMENT,
}


def make_function(**options: Any) -> OpenWhiskFunction:
    """A backend for the emulated controller whose throttling backoff is milliseconds long."""
    settings: dict[str, Any] = {"timeout": 3.0, "concurrency": 4, **options}
    function = OpenWhiskFunction(API_HOST, AUTH, **settings)
    function.retry_base_delay = 0.01
    return function

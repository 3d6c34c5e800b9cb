"""The conformance suite every :class:`~faasml.interfaces.Function` backend runs.

Subclass :class:`FunctionTests` and provide a ``function`` fixture: a backend deployed with the
handler ``faasml.testing.handlers:dispatch``, the environment :attr:`FunctionTests.ENVIRONMENT`,
a short time limit (``timeout`` of at most :attr:`FunctionTests.MAX_TIMEOUT` seconds) and, for the
concurrency test, a ``concurrency`` of at least 2::

    import pytest
    from faasml.testing.conformance.function import FunctionTests

    class TestMyFunction(FunctionTests):
        @pytest.fixture
        def function(self):
            backend = MyFunction(
                handler="faasml.testing.handlers:dispatch",
                environment=FunctionTests.ENVIRONMENT,
                timeout=2.0,
            )
            yield backend
            backend.close()

Platforms that cannot do something override the capability fixture (``supports_timeouts``,
``supports_crash_detection``, ``supports_invocation_status``) to return ``False``; the tests that
need it are then skipped with that reason.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest

from faasml.errors import (
    FunctionError,
    InvocationTimeoutError,
    PayloadTooLargeError,
    WorkerDiedError,
)
from faasml.interfaces import Function, Invocation

__all__ = ["FunctionTests"]

# Seconds any single wait in this suite may take before the backend counts as hung.
_HANG_LIMIT = 60.0


def _wait_done(invocation: Invocation, limit: float = _HANG_LIMIT) -> str:
    """Poll ``invocation`` until it leaves ``"running"``; fail the test if that takes too long."""
    deadline = time.monotonic() + limit
    while True:
        status = invocation.poll()
        if status not in ("running", "unknown"):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"invocation {invocation.id} still {status!r} after {limit:g} s")
        time.sleep(0.01)


class FunctionTests:
    """Behaviour every Function backend must show; subclass it and provide ``function``."""

    #: environment the ``function`` fixture must configure (the value stands for a secret).
    ENVIRONMENT: ClassVar[dict[str, str]] = {"FAASML_CONFORMANCE_VAR": "conformance-secret-7f3a"}
    #: the largest ``timeout`` the fixture may configure, so the timeout test stays fast.
    MAX_TIMEOUT: ClassVar[float] = 10.0

    # ---- fixtures a subclass provides or overrides

    @pytest.fixture
    def function(self) -> Function:
        """The backend under test; see the module docstring for how to configure it."""
        raise NotImplementedError(
            "subclass FunctionTests and provide a function fixture whose handler is "
            "faasml.testing.handlers:dispatch"
        )

    @pytest.fixture
    def supports_timeouts(self) -> bool:
        """Whether the backend stops handlers that run past ``timeout``."""
        return True

    @pytest.fixture
    def supports_crash_detection(self) -> bool:
        """Whether the backend reports a dead worker process as :class:`WorkerDiedError`."""
        return True

    @pytest.fixture
    def supports_invocation_status(self) -> bool:
        """Whether :meth:`Invocation.poll` reports completion (not only ``"unknown"``)."""
        return True

    # ---- round trips

    def test_echo_round_trip_keeps_every_byte_value(self, function: Function) -> None:
        payload = bytes(range(256)) * 4
        assert function.invoke(b"echo:" + payload) == payload

    def test_empty_result_round_trips(self, function: Function) -> None:
        assert function.invoke(b"echo:") == b""

    def test_concurrent_sync_invocations_return_their_own_results(self, function: Function) -> None:
        payloads = [b"echo:%d-" % i + bytes([i]) * i for i in range(50)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(function.invoke, payloads))
        assert results == [p[len(b"echo:") :] for p in payloads]

    def test_concurrent_async_invocations_all_succeed(
        self, function: Function, supports_invocation_status: bool
    ) -> None:
        if not supports_invocation_status:
            pytest.skip("the backend does not report invocation status")
        invocations = [function.invoke_async(b"echo:%d" % i) for i in range(50)]
        assert len({inv.id for inv in invocations}) == 50, "invocation ids must be unique"
        assert [_wait_done(inv) for inv in invocations] == ["succeeded"] * 50

    def test_invoke_async_returns_at_once_and_polls_to_success(
        self, function: Function, supports_invocation_status: bool
    ) -> None:
        if not supports_invocation_status:
            pytest.skip("the backend does not report invocation status")
        function.invoke(b"echo:warm-up")
        started = time.monotonic()
        invocation = function.invoke_async(b"sleep_then_echo:0.3")
        assert time.monotonic() - started < 0.25, "invoke_async must not wait for the handler"
        assert invocation.poll() in ("running", "unknown")
        assert _wait_done(invocation) == "succeeded"
        assert invocation.error is None

    # ---- failures

    def test_handler_exception_raises_function_error(self, function: Function) -> None:
        with pytest.raises(FunctionError) as caught:
            function.invoke(b"raise_value_error:conformance boom")
        error = caught.value
        assert error.remote_type == "ValueError"
        assert "conformance boom" in str(error)
        assert error.remote_traceback is not None
        assert "raise_value_error" in error.remote_traceback
        # The backend is still usable after a handler error.
        assert function.invoke(b"echo:after") == b"after"

    def test_handler_past_timeout_raises_invocation_timeout(
        self, function: Function, supports_timeouts: bool
    ) -> None:
        if not supports_timeouts:
            pytest.skip("the backend does not enforce time limits")
        limit = function.timeout
        if limit > self.MAX_TIMEOUT:
            pytest.fail(
                f"configure the function fixture with timeout <= {self.MAX_TIMEOUT:g} s "
                f"(got {limit:g}) so this test stays fast"
            )
        function.invoke(b"echo:warm-up")
        started = time.monotonic()
        with pytest.raises(InvocationTimeoutError):
            function.invoke(b"sleep_then_echo:%g" % (limit * 3 + 2))
        elapsed = time.monotonic() - started
        assert limit * 0.9 <= elapsed < limit + max(2.0, limit), f"took {elapsed:.2f} s"
        assert function.invoke(b"echo:after") == b"after"

    def test_crashed_worker_raises_worker_died(
        self, function: Function, supports_crash_detection: bool
    ) -> None:
        if not supports_crash_detection:
            pytest.skip("the backend does not detect crashed workers")
        with pytest.raises(WorkerDiedError):
            function.invoke(b"exit_process:")
        assert function.invoke(b"echo:after") == b"after"

    def test_crash_is_reported_on_the_async_invocation(
        self,
        function: Function,
        supports_crash_detection: bool,
        supports_invocation_status: bool,
    ) -> None:
        if not (supports_crash_detection and supports_invocation_status):
            pytest.skip("the backend does not report crashes on invocations")
        invocation = function.invoke_async(b"exit_process:")
        assert _wait_done(invocation) == "failed"
        assert isinstance(invocation.error, WorkerDiedError)

    def test_payload_over_the_limit_is_refused(self, function: Function) -> None:
        limit = function.max_payload_bytes
        with pytest.raises(PayloadTooLargeError) as caught:
            function.invoke(b"echo:" + bytes(limit))
        assert str(limit) in str(caught.value)

    def test_payload_at_the_limit_is_accepted(self, function: Function) -> None:
        limit = function.max_payload_bytes
        body = b"x" * (limit - len(b"echo:"))
        assert function.invoke(b"echo:" + body) == body

    # ---- environment and concurrency

    def test_environment_is_visible_to_the_handler_but_never_shown(
        self, function: Function
    ) -> None:
        ((name, value),) = self.ENVIRONMENT.items()
        assert function.invoke(b"env_value:" + name.encode()) == value.encode()
        assert value not in repr(function)
        assert value not in str(dict(function.environment()))

    def test_concurrency_invocations_run_in_parallel(self, function: Function) -> None:
        count = min(function.concurrency, 8)
        if count < 2:
            pytest.skip("the backend runs one invocation at a time")
        # Serial execution would take count * 0.5 s; allow half of the extra time for overhead.
        bound = 0.5 + 0.5 * (count - 1) / 2
        elapsed = []
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(function.invoke, [b"sleep_then_echo:0.2"] * count))  # warm up
            # The first round may still include workers starting up: the best of two counts.
            for _attempt in range(2):
                started = time.monotonic()
                results = list(pool.map(function.invoke, [b"sleep_then_echo:0.5"] * count))
                elapsed.append(time.monotonic() - started)
                assert results == [b"0.5"] * count
                if elapsed[-1] < bound:
                    break
        assert min(elapsed) < bound, f"{count} invocations of 0.5 s took {elapsed} s"

"""What ThreadFunction does beyond the conformance suite: configuration, errors, lifecycle."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faasml.errors import (
    ConfigurationError,
    FunctionError,
    InvocationTimeoutError,
    ServiceUnavailableError,
)
from faasml.interfaces import Invocation

from faasml_example.function import ThreadFunction

DISPATCH = "faasml.testing.handlers:dispatch"
VAR = "EXAMPLE_PLUGIN_TEST_VAR"


@pytest.fixture
def function() -> Iterator[ThreadFunction]:
    backend = ThreadFunction(DISPATCH, concurrency=2, timeout=0.5)
    yield backend
    backend.close()


def wait_done(invocation: Invocation, limit: float = 30.0) -> str:
    deadline = time.monotonic() + limit
    while invocation.poll() == "running":
        assert time.monotonic() < deadline, "invocation still running"
        time.sleep(0.01)
    return invocation.status


# --------------------------------------------------------------------------- configuration


def test_defaults() -> None:
    with ThreadFunction(DISPATCH) as backend:
        assert backend.name == "example"
        assert backend.timeout == 900.0
        assert backend.concurrency == min(32, (os.cpu_count() or 1) + 4)
        assert backend.handler == DISPATCH


def test_default_handler_is_the_faasml_runtime() -> None:
    with ThreadFunction() as backend:
        assert backend.handler == "faasml.runtime:handle"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"concurrency": 2.0}, "concurrency"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"environment": {"": "x"}}, "name"),
        ({"environment": {"A=B": "x"}}, "name"),
        ({"environment": {"A": 1}}, "'A' must have a string value"),
    ],
)
def test_invalid_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ThreadFunction(DISPATCH, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("handler", "match"),
    [
        ("no_colon", "'module:function' import path"),
        ("a:b:c", "'module:function' import path"),
        (":f", "'module:function' import path"),
        ("faasml_no_such_module_xyz:f", "cannot import faasml_no_such_module_xyz"),
        ("faasml.testing.handlers:nope", "has no function 'nope'"),
        ("faasml.testing.handlers:HANDLERS", "has no function 'HANDLERS'"),
    ],
)
def test_invalid_handler_fails_at_construction(handler: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ThreadFunction(handler)


def test_secret_value_is_never_in_a_validation_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        ThreadFunction(DISPATCH, environment={"TOKEN": "s3cr3t\0"})
    assert "s3cr3t" not in str(info.value)


# --------------------------------------------------------------------------- results and errors


def test_bytes_like_payloads_are_accepted(function: ThreadFunction) -> None:
    assert function.invoke(bytearray(b"echo:ba")) == b"ba"  # type: ignore[arg-type]
    assert function.invoke(memoryview(b"echo:mv")) == b"mv"  # type: ignore[arg-type]


def test_str_payload_is_a_type_error(function: ThreadFunction) -> None:
    with pytest.raises(TypeError, match="payload must be bytes, got str"):
        function.invoke("echo:x")  # type: ignore[arg-type]


def test_non_builtin_exception_type_is_qualified() -> None:
    with ThreadFunction("json:loads") as backend, pytest.raises(FunctionError) as info:
        backend.invoke(b"{")
    assert info.value.remote_type == "json.decoder.JSONDecodeError"
    assert str(info.value).startswith("json.decoder.JSONDecodeError: ")
    assert "JSONDecodeError" in info.value.remote_traceback


def test_handler_returning_non_bytes_is_a_function_error() -> None:
    with ThreadFunction("json:loads") as backend, pytest.raises(FunctionError) as info:
        backend.invoke(b"[1, 2]")
    assert info.value.remote_type == "TypeError"
    assert "returned list, expected bytes" in str(info.value)


HANDLERS_SOURCE = """
def raise_timeout(payload):
    raise TimeoutError("the handler's own socket timed out")
"""


def test_handler_raising_timeout_error_is_not_an_invocation_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The handler's own TimeoutError must not be mistaken for the wait running out.
    (tmp_path / "faasml_example_test_handlers.py").write_text(HANDLERS_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with ThreadFunction("faasml_example_test_handlers:raise_timeout", timeout=5.0) as backend:
        with pytest.raises(FunctionError) as info:
            backend.invoke(b"")
    assert not isinstance(info.value, InvocationTimeoutError)
    assert info.value.remote_type == "TimeoutError"
    assert "own socket timed out" in str(info.value)


def test_system_exit_in_the_handler_is_reported_and_the_backend_lives_on() -> None:
    with ThreadFunction("sys:exit") as backend:
        with pytest.raises(FunctionError) as info:
            backend.invoke(b"bye")
        assert info.value.remote_type == "SystemExit"
        assert str(info.value) == "SystemExit: b'bye'"


def test_async_handler_error_fails_the_invocation(function: ThreadFunction) -> None:
    invocation = function.invoke_async(b"raise_value_error:async boom")
    assert wait_done(invocation) == "failed"
    assert isinstance(invocation.error, FunctionError)
    assert invocation.error.remote_type == "ValueError"
    assert "async boom" in str(invocation.error)


# --------------------------------------------------------------------------- timeouts


def test_async_timeout_is_reported_while_the_thread_still_runs(function: ThreadFunction) -> None:
    invocation = function.invoke_async(b"sleep_then_echo:1.5")
    started = time.monotonic()
    assert wait_done(invocation) == "failed"
    assert 0.45 <= time.monotonic() - started < 1.4
    assert isinstance(invocation.error, InvocationTimeoutError)
    assert invocation.error.provider == "example"
    assert "cannot be stopped" in str(invocation.error)
    assert any(t.name.startswith("faasml-example-") and t.is_alive() for t in threading.enumerate())
    time.sleep(1.2)  # the handler has now returned: the first verdict stands
    assert invocation.poll() == "failed"
    assert isinstance(invocation.error, InvocationTimeoutError)


def test_late_completion_without_polling_is_a_timeout(function: ThreadFunction) -> None:
    invocation = function.invoke_async(b"sleep_then_echo:0.8")
    # Nobody polls while it runs; the completion itself notices it took too long.
    time.sleep(1.2)
    assert invocation.status == "failed"
    assert isinstance(invocation.error, InvocationTimeoutError)


def test_queue_time_does_not_count_against_the_timeout() -> None:
    with ThreadFunction(DISPATCH, concurrency=1, timeout=0.5) as backend:
        first = backend.invoke_async(b"sleep_then_echo:0.4")
        # Waits ~0.4 s for the only thread, then runs 0.4 s: 0.8 s in all, 0.4 s of it running.
        assert backend.invoke(b"sleep_then_echo:0.4") == b"0.4"
        assert wait_done(first) == "succeeded"


# --------------------------------------------------------------------------- lifecycle


def test_closed_backend_refuses_work() -> None:
    backend = ThreadFunction(DISPATCH)
    backend.close()
    backend.close()  # idempotent
    assert backend.closed
    with pytest.raises(ServiceUnavailableError, match="closed"):
        backend.invoke(b"echo:x")
    with pytest.raises(ServiceUnavailableError, match="closed"):
        backend.invoke_async(b"echo:x")


def test_close_cancels_queued_invocations() -> None:
    backend = ThreadFunction(DISPATCH, concurrency=1, timeout=5.0)
    running = backend.invoke_async(b"sleep_then_echo:0.3")
    queued = backend.invoke_async(b"echo:never")
    outcome: list[BaseException] = []

    def invoke_queued() -> None:
        try:
            backend.invoke(b"echo:never either")
        except BaseException as exc:  # the test inspects whatever it is
            outcome.append(exc)

    waiter = threading.Thread(target=invoke_queued)
    waiter.start()
    time.sleep(0.1)
    backend.close()
    waiter.join(timeout=10)
    assert not waiter.is_alive(), "invoke() of a cancelled call must not hang"
    assert len(outcome) == 1 and isinstance(outcome[0], ServiceUnavailableError)
    assert queued.status == "failed"
    assert isinstance(queued.error, ServiceUnavailableError)
    assert wait_done(running) == "succeeded"  # a running handler finishes


def test_repr_shows_configuration_but_no_secret_values() -> None:
    with ThreadFunction(DISPATCH, concurrency=3, timeout=2, environment={VAR: "v4lue"}) as fn:
        text = repr(fn)
    assert "concurrency=3" in text and "timeout=2" in text and DISPATCH in text
    assert VAR in text and "v4lue" not in text


# --------------------------------------------------------------------------- environment


@pytest.fixture
def no_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR, raising=False)


@pytest.mark.usefixtures("no_var")
def test_environment_is_exported_while_open_and_removed_after() -> None:
    with ThreadFunction(DISPATCH, environment={VAR: "one"}) as backend:
        assert os.environ[VAR] == "one"
        assert backend.invoke(f"env_value:{VAR}".encode()) == b"one"
        assert backend.environment() == {VAR: "***"}
    assert VAR not in os.environ


def test_environment_restores_a_previous_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "before")
    with ThreadFunction(DISPATCH, environment={VAR: "during"}):
        assert os.environ[VAR] == "during"
    assert os.environ[VAR] == "before"


@pytest.mark.usefixtures("no_var")
def test_two_backends_may_share_a_value_until_the_last_closes() -> None:
    first = ThreadFunction(DISPATCH, environment={VAR: "same"})
    second = ThreadFunction(DISPATCH, environment={VAR: "same"})
    first.close()
    assert os.environ[VAR] == "same"
    second.close()
    assert VAR not in os.environ


@pytest.mark.usefixtures("no_var")
def test_conflicting_values_are_refused_without_showing_them() -> None:
    with ThreadFunction(DISPATCH, environment={VAR: "first-secret"}):
        with pytest.raises(ConfigurationError) as info:
            ThreadFunction(DISPATCH, environment={"OTHER_OK_VAR": "x", VAR: "second-secret"})
        assert VAR in str(info.value)
        assert "first-secret" not in str(info.value)
        assert "second-secret" not in str(info.value)
        assert "OTHER_OK_VAR" not in os.environ, "a refused backend exports nothing"
        assert os.environ[VAR] == "first-secret"


def test_the_signing_secret_is_not_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAASML_SECRET", raising=False)
    with ThreadFunction(DISPATCH, environment={"FAASML_SECRET": "abc", VAR: "x"}) as backend:
        assert "FAASML_SECRET" not in os.environ
        assert backend.environment() == {VAR: "***"}
    # Two clouds with different secrets can be open at once.
    with ThreadFunction(DISPATCH, environment={"FAASML_SECRET": "a"}):
        with ThreadFunction(DISPATCH, environment={"FAASML_SECRET": "b"}):
            pass


@pytest.mark.usefixtures("no_var")
def test_a_collected_backend_releases_its_environment() -> None:
    ThreadFunction(DISPATCH, environment={VAR: "gc"})  # never closed, dropped at once
    gc.collect()
    assert VAR not in os.environ

"""Tests of the ``local`` Function provider: the shared suite plus pool-specific behaviour."""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Iterator

import pytest

from faasml.errors import (
    ConfigurationError,
    FunctionError,
    InvocationTimeoutError,
    ServiceUnavailableError,
    WorkerDiedError,
)
from faasml.providers.local.function import LocalFunction, LocalInvocation
from faasml.testing.conformance.function import FunctionTests

pytestmark = pytest.mark.timeout(30)

DISPATCH = "faasml.testing.handlers:dispatch"


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (zombies excluded: the pool reaps its workers)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False


def wait_for(predicate: object, limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def pool() -> Iterator[LocalFunction]:
    function = LocalFunction(workers=2, timeout=5.0, handler=DISPATCH)
    yield function
    function.close()


class TestLocalFunctionConformance(FunctionTests):
    @pytest.fixture
    def function(self) -> Iterator[LocalFunction]:
        backend = LocalFunction(
            workers=3, timeout=1.0, handler=DISPATCH, environment=FunctionTests.ENVIRONMENT
        )
        yield backend
        backend.close()


# --------------------------------------------------------------------------- failures


def test_segfault_names_the_signal(pool: LocalFunction) -> None:
    with pytest.raises(WorkerDiedError, match="SIGSEGV"):
        pool.invoke(b"segfault:")
    assert pool.invoke(b"echo:ok") == b"ok"


def test_exit_names_the_exit_code(pool: LocalFunction) -> None:
    with pytest.raises(WorkerDiedError, match="exited with code 3"):
        pool.invoke(b"exit_process:")


def test_memory_limit_raises_memory_error_and_the_worker_lives_on() -> None:
    with LocalFunction(workers=1, timeout=10.0, memory_mb=128, handler=DISPATCH) as function:
        assert function.invoke(b"allocate:16") == str(16 * 2**20).encode()
        (worker,) = function.worker_pids()
        with pytest.raises(FunctionError) as caught:
            function.invoke(b"allocate:512")
        assert caught.value.remote_type == "MemoryError"
        assert function.invoke(b"allocate:16") == str(16 * 2**20).encode()
        assert function.worker_pids() == [worker]


def test_timeout_is_enforced_promptly_and_the_worker_replaced() -> None:
    with LocalFunction(workers=1, timeout=0.5, handler=DISPATCH) as function:
        function.invoke(b"echo:warm")
        (old,) = function.worker_pids()
        invocation = function.invoke_async(b"sleep_then_echo:10")
        assert invocation.wait(5.0)
        assert invocation.status == "failed"
        assert isinstance(invocation.error, InvocationTimeoutError)
        assert "0.5 s" in str(invocation.error)
        assert invocation.started_at is not None and invocation.finished_at is not None
        overrun = invocation.finished_at - invocation.started_at - 0.5
        assert 0 <= overrun < 0.2, f"killed {overrun:.3f} s after the deadline"
        assert old not in function.worker_pids()
        assert wait_for(lambda: not alive(old))
        assert function.invoke(b"echo:after") == b"after"


def test_pool_heals_to_its_configured_size_after_crashes(pool: LocalFunction) -> None:
    pool.invoke(b"echo:warm")
    crashed = set(pool.worker_pids())
    for handler in (b"exit_process:", b"segfault:", b"exit_process:"):
        with pytest.raises(WorkerDiedError):
            pool.invoke(handler)
    pids = pool.worker_pids()
    assert len(pids) == 2
    assert not crashed & set(pids)
    assert all(alive(pid) for pid in pids)
    assert sorted(pool.invoke(b"echo:%d" % i) for i in range(4)) == [b"0", b"1", b"2", b"3"]


def test_queued_work_continues_after_a_crash() -> None:
    with LocalFunction(workers=1, timeout=5.0, handler=DISPATCH) as function:
        crash = function.invoke_async(b"exit_process:")
        rest = [function.invoke_async(b"echo:%d" % i) for i in range(10)]
        for invocation in [crash, *rest]:
            assert invocation.wait(10.0)
        assert isinstance(crash.error, WorkerDiedError)
        assert [inv.result for inv in rest] == [b"%d" % i for i in range(10)]


def test_handler_that_cannot_be_imported_fails_each_invocation_without_restarts() -> None:
    with LocalFunction(workers=1, handler="faasml.testing.no_such_module:handler") as function:
        with pytest.raises(FunctionError) as caught:
            function.invoke(b"x")
        assert caught.value.remote_type == "ModuleNotFoundError"
        assert "could not load handler" in str(caught.value)
        pids = function.worker_pids()
        with pytest.raises(FunctionError):
            function.invoke(b"x")
        assert function.worker_pids() == pids


def test_handler_returning_non_bytes_is_a_function_error() -> None:
    with LocalFunction(workers=1, handler="builtins:str") as function:
        with pytest.raises(FunctionError, match="returned str, expected bytes") as caught:
            function.invoke(b"x")
        assert caught.value.remote_type == "TypeError"


def test_workers_that_cannot_start_fail_queued_work_instead_of_hanging() -> None:
    # A PYTHONHOME without a standard library makes every interpreter abort at start-up.
    broken = {"PYTHONHOME": "/nonexistent-faasml-test"}
    with LocalFunction(workers=2, handler=DISPATCH, environment=broken) as function:
        invocations = [function.invoke_async(b"echo:%d" % i) for i in range(3)]
        for invocation in invocations:
            assert invocation.wait(10.0), "a failing worker start must not leave work pending"
            assert isinstance(invocation.error, WorkerDiedError)
            assert "while starting" in str(invocation.error)
        # With nothing queued, the pool stops trying instead of respawning in a loop.
        assert wait_for(lambda: not function.worker_pids())
        time.sleep(0.3)
        assert function.worker_pids() == []


# --------------------------------------------------------------------------- queueing


def test_pending_queue_beyond_the_workers_completes_in_order_of_arrival(
    pool: LocalFunction,
) -> None:
    pool.invoke(b"echo:warm")
    started = time.monotonic()
    invocations = [pool.invoke_async(b"sleep_then_echo:0.1") for _ in range(8)]
    for invocation in invocations:
        assert invocation.wait(10.0)
    elapsed = time.monotonic() - started
    assert all(inv.result == b"0.1" for inv in invocations)
    # Two workers, eight invocations of 0.1 s: at least four rounds.
    assert elapsed >= 0.4
    starts = [inv.started_at for inv in invocations]
    assert all(s is not None for s in starts)
    assert starts == sorted(starts)  # type: ignore[type-var]


def test_thousand_echo_invocations_all_complete(pool: LocalFunction) -> None:
    payloads = [b"echo:" + b"%04d" % i + b"x" * 196 for i in range(1000)]
    invocations = [pool.invoke_async(p) for p in payloads]
    for invocation in invocations:
        assert invocation.wait(20.0)
    assert [inv.status for inv in invocations] == ["succeeded"] * 1000
    assert [inv.result for inv in invocations] == [p[5:] for p in payloads]


def test_async_invocation_exposes_result_and_cheap_poll(pool: LocalFunction) -> None:
    invocation = pool.invoke_async(b"echo:value")
    assert isinstance(invocation, LocalInvocation)
    assert invocation.wait(10.0) and invocation.done()
    assert invocation.poll() == "succeeded"
    assert invocation.result == b"value"
    assert invocation.error is None
    assert len({invocation, invocation}) == 1  # hashable handle


# --------------------------------------------------------------------------- close


def test_close_fails_pending_work_promptly_and_stops_the_workers() -> None:
    function = LocalFunction(workers=2, timeout=20.0, handler=DISPATCH)
    invocations = [function.invoke_async(b"sleep_then_echo:10") for _ in range(6)]
    assert wait_for(lambda: sum(inv.started_at is not None for inv in invocations) == 2)
    pids = function.worker_pids()
    started = time.monotonic()
    function.close()
    assert time.monotonic() - started < 2.5
    for invocation in invocations:
        assert invocation.done()
        assert invocation.status == "failed"
        assert isinstance(invocation.error, ServiceUnavailableError)
    assert not any(alive(pid) for pid in pids)
    dispatcher = function._pool._thread
    assert dispatcher is not None and not dispatcher.is_alive()
    with pytest.raises(ServiceUnavailableError, match="closed"):
        function.invoke(b"echo:late")
    function.close()  # idempotent
    assert function.closed


def test_close_before_any_invocation_is_a_no_op() -> None:
    function = LocalFunction(workers=1)
    function.close()
    function.close()
    assert function.worker_pids() == []


def test_a_forked_child_cannot_use_the_parents_pool(pool: LocalFunction) -> None:
    pool.invoke(b"echo:warm")
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which must leave via os._exit
        code = 1
        try:
            pool.invoke(b"echo:x")
        except ServiceUnavailableError:
            code = 0
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool.invoke(b"echo:still-works") == b"still-works"


def test_garbage_collected_function_stops_its_workers() -> None:
    function = LocalFunction(workers=1, handler=DISPATCH)
    function.invoke(b"echo:x")
    pids = function.worker_pids()
    del function
    gc.collect()
    assert wait_for(lambda: not any(alive(pid) for pid in pids))


# --------------------------------------------------------------------------- configuration


def test_secrets_never_appear_in_repr_environment_or_command_line() -> None:
    secret = "s3cr3t-token-value"
    with LocalFunction(workers=1, handler=DISPATCH, environment={"API_TOKEN": secret}) as function:
        assert function.environment() == {"API_TOKEN": "***"}
        assert secret not in repr(function)
        assert "workers=1" in repr(function) and "timeout=900" in repr(function)
        assert function.invoke(b"env_value:API_TOKEN") == secret.encode()
        (pid,) = function.worker_pids()
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            assert secret.encode() not in cmdline.read()


def test_threads_per_worker_sets_the_thread_variables() -> None:
    with LocalFunction(workers=1, handler=DISPATCH, threads_per_worker=3) as function:
        for var in (b"OMP_NUM_THREADS", b"OPENBLAS_NUM_THREADS", b"MKL_NUM_THREADS"):
            assert function.invoke(b"env_value:" + var) == b"3"


def test_thread_variables_default_to_a_share_of_the_cores() -> None:
    with LocalFunction(workers=2, handler=DISPATCH) as function:
        expected = max(1, (os.cpu_count() or 1) // 2)
        assert function.invoke(b"env_value:OMP_NUM_THREADS") == str(expected).encode()


def test_defaults() -> None:
    function = LocalFunction()
    assert function.concurrency == (os.cpu_count() or 1)
    assert function.timeout == 900.0
    assert function.max_payload_bytes == 6 * 1024 * 1024
    assert function.name == "local"
    function.close()


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"workers": 0}, "0"),
        ({"workers": -2}, "-2"),
        ({"workers": "2"}, "'2'"),
        ({"timeout": 0}, "0"),
        ({"timeout": -1.5}, "-1.5"),
        ({"timeout": math.nan}, "nan"),
        ({"memory_mb": 32}, "32"),
        ({"handler": "no_colon"}, "no_colon"),
        ({"threads_per_worker": 0}, "0"),
    ],
)
def test_bad_constructor_arguments_raise_configuration_error(
    kwargs: dict[str, object], shown: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        LocalFunction(**kwargs)  # type: ignore[arg-type]
    assert next(iter(kwargs)) in str(caught.value)
    assert shown in str(caught.value)


def test_bad_environment_names_the_key_but_not_the_value() -> None:
    with pytest.raises(ConfigurationError, match="API_TOKEN") as caught:
        LocalFunction(environment={"API_TOKEN": 12345})  # type: ignore[dict-item]
    assert "12345" not in str(caught.value)

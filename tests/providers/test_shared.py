"""What every cloud provider shares: the shim helpers, deployment zips, HandlerHost, deploy CLI."""

from __future__ import annotations

import email.utils
import io
import json
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from faasml import hookimpl
from faasml.cli import main
from faasml.errors import ConfigurationError, FunctionError, PayloadTooLargeError
from faasml.hooks import FunctionBackend
from faasml.interfaces import Function, Invocation
from faasml.providers import _common, _package, _shim
from faasml.testing.platform import HandlerHost
from faasml.testing.pytest_plugin import PluginRegistrar

# --------------------------------------------------------------------------- shim helpers


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 1000, 65_537])
def test_envelope_round_trips_every_byte_and_predicts_its_size(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    text = json.dumps(_shim.wrap(data))
    assert len(text) == _shim.wrapped_size(size)
    assert _shim.unwrap(json.loads(text)) == data


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"other": "x"}, "['other']"),
        ([1, 2], "list"),
        ({"faasml": 5}, "base64"),
        ({"faasml": "not base64!"}, "not base64"),
    ],
)
def test_unwrap_names_what_it_found(document: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match="faasml") as caught:
        _shim.unwrap(document, what="event")
    assert fragment in str(caught.value)


def test_target_defaults_to_the_runtime_and_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from faasml.runtime import handle
    from faasml.testing.handlers import dispatch

    monkeypatch.delenv(_shim.HANDLER_ENV, raising=False)
    assert _shim.target() is handle
    monkeypatch.setenv(_shim.HANDLER_ENV, "faasml.testing.handlers:dispatch")
    assert _shim.target() is dispatch
    monkeypatch.setenv(_shim.HANDLER_ENV, "no colon here")
    with pytest.raises(ValueError, match="module:function"):
        _shim.target()


def test_error_report_and_remote_error_round_trip() -> None:
    try:
        raise KeyError("missing thing")
    except KeyError as exc:
        report = _shim.error_report(exc)
    assert report["type"] == "KeyError"
    error = _shim.remote_error(report, "testcloud")
    assert isinstance(error, FunctionError)
    assert error.remote_type == "KeyError"
    assert "missing thing" in str(error) and "testcloud" in str(error)
    assert error.remote_traceback is not None and "raise KeyError" in error.remote_traceback


def test_remote_error_reads_lambda_spelling() -> None:
    error = _shim.remote_error(
        {"errorType": "ValueError", "errorMessage": "boom", "stackTrace": ["a\n", "b\n"]}, "aws"
    )
    assert error.remote_type == "ValueError"
    assert error.remote_traceback == "a\nb\n"
    assert "ValueError: boom" in str(error)


@pytest.mark.parametrize("limit", [0, 10, 256 * 1024, 1024 * 1024, 6 * 1024 * 1024])
def test_largest_payload_is_the_largest_whose_envelope_fits(limit: int) -> None:
    size = _shim.largest_payload(limit)
    if limit >= _shim.wrapped_size(0):
        assert _shim.wrapped_size(size) <= limit
    assert _shim.wrapped_size(size + 1) > limit


# --------------------------------------------------------------------------- driver helpers


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _common.retry_after_seconds("3") == 3.0
    assert _common.retry_after_seconds("-2") == 0.0
    assert _common.retry_after_seconds(None) is None
    assert _common.retry_after_seconds("") is None
    assert _common.retry_after_seconds("soon") is None
    assert _common.retry_after_seconds("inf") is None
    assert _common.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (_common.retry_after_seconds(soon) or 0) <= 30


def test_backoff_grows_is_capped_and_jitters_within_half_a_step() -> None:
    for attempt, step in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 8.0)]:
        delays = [_common.backoff_delay(attempt, 0.5, 8.0) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > step / 10  # jittered, not a fixed wait


def test_checked_payload_refuses_oversize_before_sending_and_names_the_limit() -> None:
    fits = _common.checked_payload(bytearray(b"ab"), 2, provider="p", platform="P", why="w")
    assert fits == b"ab" and isinstance(fits, bytes)
    with pytest.raises(PayloadTooLargeError) as caught:
        _common.checked_payload(b"abc", 2, provider="p", platform="Cloud", why="its queue")
    assert "3 bytes exceeds the Cloud limit of 2 bytes (its queue)" in str(caught.value)
    assert "object store" in str(caught.value) and caught.value.provider == "p"
    with pytest.raises(TypeError, match="str"):
        _common.checked_payload("text", 10, provider="p", platform="P", why="w")


def test_excerpt_quotes_and_cuts_bodies() -> None:
    assert _common.excerpt("  hi\n") == "'hi'"
    assert _common.excerpt(None) == _common.excerpt("") == "(empty body)"
    long = "x" * 250
    assert _common.excerpt(long) == f"{'x' * 200!r}... (250 characters)"


# --------------------------------------------------------------------------- packages


def test_zip_holds_faasml_and_the_entry_file_and_is_reproducible() -> None:
    first = _package.build_zip({"__main__.py": "from faasml import connect\n"})
    second = _package.build_zip({"__main__.py": "from faasml import connect\n"})
    assert first == second
    assert _package.zip_digest(first) == _package.zip_digest(second)
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert "__main__.py" in names
    assert "faasml/runtime/__init__.py" in names
    assert "faasml/providers/_shim.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_zip_refuses_unsafe_or_clashing_entry_names() -> None:
    for name in ("../evil.py", "/abs.py", "faasml/__init__.py", ""):
        with pytest.raises(ConfigurationError):
            _package.build_zip({name: "x"})


def test_zip_runs_its_entry_with_only_the_zip_on_the_path(tmp_path: Path) -> None:
    import subprocess

    archive = tmp_path / "code.zip"
    archive.write_bytes(
        _package.build_zip({"__main__.py": "import faasml, sys; print(faasml.__file__)\n"})
    )
    out = subprocess.run(
        [sys.executable, str(archive)], capture_output=True, text=True, check=True
    ).stdout
    assert str(archive) in out  # faasml was imported from inside the zip


def test_copy_package_replaces_an_older_copy(tmp_path: Path) -> None:
    stale = tmp_path / "faasml" / "gone.py"
    stale.parent.mkdir()
    stale.write_text("old = True\n")
    assert _package.copy_package(tmp_path) == tmp_path
    assert not stale.exists()
    assert (tmp_path / "faasml" / "runtime" / "__init__.py").is_file()
    assert not list(tmp_path.rglob("__pycache__"))


@pytest.mark.parametrize("bad", ["3", "3.11.2", "3.x", "py3.11", 3.11])
def test_python_versions_must_look_like_major_minor(bad: object) -> None:
    assert _package.check_python_version("3.12") == "3.12"
    with pytest.raises(ValueError, match="3.11"):
        _package.check_python_version(bad)


def test_runtime_requirements_follow_the_package_metadata() -> None:
    core = _package.runtime_requirements()
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in core}
    assert {"numpy", "scipy", "cloudpickle", "pluggy"} <= names
    assert not any(r.startswith("tomli") for r in core)  # a backport no platform runtime needs
    with_aws = _package.runtime_requirements("aws")
    assert any(r.startswith("boto3") for r in with_aws)
    assert not any(r.startswith("boto3") for r in core)


# --------------------------------------------------------------------------- HandlerHost


def platform_entry(event: Mapping[str, str], context: Any) -> dict[str, Any]:
    """A Lambda-shaped entry for the HandlerHost tests (imported by its worker processes)."""
    result = _shim.target()(_shim.unwrap(event))
    remaining = context.get_remaining_time_in_millis()
    return {**_shim.wrap(result), "request": context.request_id, "remaining": remaining}


@pytest.fixture(scope="module")
def host() -> Iterator[HandlerHost]:
    with HandlerHost(
        f"{__name__}:platform_entry",
        environment={_shim.HANDLER_ENV: "faasml.testing.handlers:dispatch"},
        timeout=1.5,
        concurrency=1,
    ) as running:
        yield running


def test_host_returns_the_value_with_the_context(host: HandlerHost) -> None:
    outcome = host.call(_shim.wrap(b"echo:hi"), context={"request_id": "r-1"}, remaining_ms=900)
    assert outcome.ok
    assert _shim.unwrap(outcome.value) == b"hi"
    assert outcome.value["request"] == "r-1"
    assert 0 < outcome.value["remaining"] <= 900


def test_host_reports_errors_timeouts_and_crashes_and_recovers(host: HandlerHost) -> None:
    ctx = {"request_id": "r"}
    raised = host.call(_shim.wrap(b"raise_value_error:boom"), context=ctx, remaining_ms=1)
    assert raised.error is not None and raised.error.remote_type == "ValueError"
    assert not raised.ok
    late = host.call(_shim.wrap(b"sleep_then_echo:5"), context=ctx, remaining_ms=1)
    assert late.timed_out and 1.3 < late.duration < 4.5
    died = host.call(_shim.wrap(b"exit_process:"), context=ctx, remaining_ms=1)
    assert died.crashed
    again = host.call(_shim.wrap(b"echo:after"), context=ctx, remaining_ms=1000)
    assert _shim.unwrap(again.value) == b"after"


# --------------------------------------------------------------------------- faasml deploy


class RecordingFunction(Function):
    """A deployable backend that records what ``faasml deploy`` asked of it."""

    name: ClassVar[str] = "recording"
    deployable: ClassVar[bool] = True
    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, region: str = "here", memory_mb: int = 128, label: str = "") -> None:
        self.options = {"region": region, "memory_mb": memory_mb, "label": label}

    def invoke(self, payload: bytes) -> bytes:
        return payload

    def invoke_async(self, payload: bytes) -> Invocation:
        return Invocation(id="x", status="succeeded")

    def deploy(
        self,
        *,
        secret: str,
        environment: Mapping[str, str] | None = None,
        dependencies: bool = True,
    ) -> str:
        self.calls.append(
            {
                "secret": secret,
                "environment": dict(environment or {}),
                "dependencies": dependencies,
                **self.options,
            }
        )
        return f"deployed recording in {self.options['region']}"


@pytest.fixture
def recording(register_plugin: PluginRegistrar) -> list[dict[str, Any]]:
    record = FunctionBackend("recording", RecordingFunction, description="test")
    register_plugin(
        SimpleNamespace(faasml_function_backends=hookimpl(lambda: [record])), name="recording"
    )
    RecordingFunction.calls = []
    return RecordingFunction.calls


def test_deploy_passes_secret_options_and_environment(
    recording: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FAASML_SECRET", "s3cr3t-value")
    monkeypatch.setenv("FAASML_RECORDING_REGION", "from-env")
    status = main(
        [
            "deploy",
            "--provider",
            "recording",
            "--option",
            "memory_mb=2048",
            "-o",
            "label=123",
            "--env",
            "A=1=2",
            "--no-dependencies",
        ]
    )
    assert status == 0
    assert recording == [
        {
            "secret": "s3cr3t-value",
            "environment": {"A": "1=2"},
            "dependencies": False,
            "region": "from-env",
            "memory_mb": 2048,
            "label": "123",  # JSON-looking text stays text where the option is text
        }
    ]
    out = capsys.readouterr().out
    assert out.strip() == "deployed recording in from-env"
    assert "s3cr3t" not in out


def test_deploy_without_a_secret_says_how_to_make_one(
    recording: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("FAASML_SECRET", raising=False)
    monkeypatch.setenv("FAASML_CONFIG_DIR", "/nonexistent-faasml-config")
    assert main(["deploy", "--provider", "recording"]) == 2
    assert "export FAASML_SECRET" in capsys.readouterr().err
    assert recording == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--option", "nope"], "NAME=VALUE"),
        (["--option", "colour=red"], "unknown option"),
        (["--env", "=x"], "NAME=VALUE"),
    ],
)
def test_deploy_rejects_bad_assignments(
    recording: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("FAASML_SECRET", "s")
    assert main(["deploy", "--provider", "recording", *argv]) == 2
    assert message in capsys.readouterr().err
    assert recording == []


class ImageFunction(RecordingFunction):
    """A deployable backend of an image platform: it can write a build context."""

    name: ClassVar[str] = "imaged"

    @classmethod
    def write_build_context(cls, directory: str, python_version: str = "3.11") -> Path:
        if python_version.count(".") != 1:
            raise ValueError("python_version must look like 3.11")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / "Dockerfile").write_text(f"FROM python:{python_version}-slim\n")
        return path


def test_build_context_is_written_without_a_secret_or_a_deploy(
    register_plugin: PluginRegistrar,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = FunctionBackend("imaged", ImageFunction, description="test")
    register_plugin(
        SimpleNamespace(faasml_function_backends=hookimpl(lambda: [record])), name="imaged"
    )
    RecordingFunction.calls = []
    monkeypatch.delenv("FAASML_SECRET", raising=False)
    target = tmp_path / "ctx"
    assert main(["deploy", "--provider", "imaged", "--build-context", str(target)]) == 0
    assert (target / "Dockerfile").read_text() == "FROM python:3.11-slim\n"
    assert RecordingFunction.calls == []
    assert "--option image=IMAGE" in capsys.readouterr().out
    argv = ["deploy", "--provider", "imaged", "--build-context", str(target), "--python", "3.12"]
    assert main(argv) == 0
    assert (target / "Dockerfile").read_text() == "FROM python:3.12-slim\n"
    assert main([*argv[:-1], "3"]) == 2
    assert "--python '3'" in capsys.readouterr().err


def test_build_context_on_a_zip_platform_is_refused(
    recording: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "--provider", "recording", "--build-context", str(tmp_path)]) == 2
    assert "deploys a zip" in capsys.readouterr().err


def test_deploy_on_a_provider_that_runs_functions_itself(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAASML_SECRET", "s")
    assert main(["deploy", "--provider", "local"]) == 2
    assert "nothing to deploy" in capsys.readouterr().err


def test_base_function_deploy_explains_there_is_nothing_to_deploy() -> None:
    with pytest.raises(ConfigurationError, match="nothing to deploy"):
        Function.deploy(RecordingFunction(), secret="s")

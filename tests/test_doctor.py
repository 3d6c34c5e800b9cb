"""``faasml doctor``: real probes of the configured backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasml import cli
from faasml.doctor import run_checks


def test_all_checks_pass_on_local(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--provider", "local"]) == 0
    out = capsys.readouterr().out
    for name in ("config", "connect", "storage", "pubsub", "function"):
        assert name in out
    assert "FAIL" not in out


def test_memory_store_is_probed_through_workers() -> None:
    checks = {c.name: c for c in run_checks("local", "memory", "local")}
    assert all(c.ok for c in checks.values()), checks
    assert "'memory'" in checks["storage"].detail


def test_unknown_backend_fails_with_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--storage", "nosuch"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "nosuch" in out and "file" in out


def test_bad_config_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text("wrokers = 3\n")
    monkeypatch.setenv("FAASML_CONFIG_DIR", str(tmp_path))
    checks = run_checks()
    assert len(checks) == 1 and not checks[0].ok
    assert "wrokers" in checks[0].detail and "config.toml" in checks[0].detail

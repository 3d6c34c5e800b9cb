"""Default progress bars: on a terminal or in a Jupyter kernel, never in a pipe or a log."""

from __future__ import annotations

import io
import sys
import types

import pytest

from faasml._progress import interactive


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        if self.closed:
            raise ValueError("I/O operation on closed file")  # as a real closed stream does
        return True


def test_terminal_shows_and_pipe_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert interactive()
    monkeypatch.setattr(sys, "stderr", _Pipe())
    assert not interactive()


def test_jupyter_kernel_shows_a_plain_ipython_shell_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", _Pipe())
    fake = types.ModuleType("IPython")
    kernel_shell = types.SimpleNamespace(kernel=object())
    fake.get_ipython = lambda: kernel_shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert interactive()
    fake.get_ipython = lambda: types.SimpleNamespace()  # type: ignore[attr-defined]
    assert not interactive()
    fake.get_ipython = lambda: None  # type: ignore[attr-defined]
    assert not interactive()


def test_a_closed_or_missing_stderr_is_not_interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    closed = _Terminal()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    assert not interactive()
    monkeypatch.setattr(sys, "stderr", None)
    assert not interactive()

"""The ``faasml`` command line: ``--version``, ``providers``, ``plugins``, errors, exit codes."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest

import faasml
from faasml import cli, hookimpl
from faasml.hooks import FunctionBackend, ObjectStoreBackend, PubSubBackend
from faasml.hooks.manager import DEFAULT_PLUGINS, reset_plugin_manager
from faasml.testing.pytest_plugin import PluginRegistrar

MISSING = "faasml_no_such_module_xyz"
PROVIDER_KEYS = {"name", "kind", "installed", "extra", "install", "plugin", "description", "class"}
PLUGIN_KEYS = {"name", "builtin", "distribution", "version", "hooks"}


def fake_plugin(
    *,
    function: list[Any] | None = None,
    storage: list[Any] | None = None,
    pubsub: list[Any] | None = None,
) -> SimpleNamespace:
    """A plugin object implementing only the hooks for which records are given."""

    def returning(records: list[Any]) -> Callable[[], list[Any]]:
        return hookimpl(lambda: list(records))

    hooks = {
        hook: returning(records)
        for hook, records in [
            ("faasml_function_backends", function),
            ("faasml_object_store_backends", storage),
            ("faasml_pubsub_backends", pubsub),
        ]
        if records is not None
    }
    return SimpleNamespace(**hooks)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def split_row(line: str, starts: list[int]) -> list[str]:
    """Cut a table line at the header's column starts."""
    bounds = [*starts[1:], None]
    return [line[start:end].strip() for start, end in zip(starts, bounds, strict=True)]


def column_starts(header: str, names: list[str]) -> list[int]:
    return [header.index(name) for name in names]


PROVIDER_COLUMNS = ["NAME", "KIND", "INSTALLED", "EXTRA TO INSTALL", "PLUGIN", "DESCRIPTION"]


# --------------------------------------------------------------------------- top level


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--version")
    assert status == 0
    assert out == f"faasml {faasml.__version__}\n"
    assert err == ""


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys)
    assert status == 2
    assert out == ""
    assert "providers" in err and "plugins" in err and "examples:" in err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "nonsense")
    assert status == 2
    assert "invalid choice: 'nonsense'" in err


def test_help_exits_zero_and_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    assert "faasml providers --json" in out
    for command in ("providers", "plugins"):
        status, out, _ = run(capsys, command, "--help")
        assert status == 0
        assert "examples:" in out
        assert f"faasml {command}" in out
    assert "FAASML_DISABLED_PLUGINS" in run(capsys, "plugins", "--help")[1]


def test_every_subcommand_is_dispatched_and_nothing_else() -> None:
    parser = cli._build_parser()
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers) == 1
    assert subparsers[0].dest == "command"
    assert set(subparsers[0].choices) == set(cli._COMMANDS)


def test_python_dash_m(tmp_path: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "faasml", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the source tree: the installed package must work
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"faasml {faasml.__version__}\n"


def test_closed_stdout_is_not_a_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "faasml", "providers", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `faasml providers | head` after head has exited
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert b"Traceback" not in err and b"BrokenPipe" not in err


# --------------------------------------------------------------------------- providers


def test_providers_table_lists_builtins_aligned(
    faasml_pm: pluggy.PluginManager, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "providers")
    assert status == 0, err
    header, *lines = out.splitlines()
    assert header.split("  ")[0] == "NAME"
    starts = column_starts(header, PROVIDER_COLUMNS)
    assert starts == sorted(starts)
    rows = [split_row(line, starts) for line in lines]
    assert ["local", "function", "yes", "-", "faasml.providers.local"] in [r[:5] for r in rows]
    assert ["file", "storage", "yes", "-", "faasml.storage"] in [r[:5] for r in rows]
    assert ["memory", "storage", "yes", "-", "faasml.storage"] in [r[:5] for r in rows]
    assert ["local", "pubsub", "yes", "-", "faasml.pubsub"] in [r[:5] for r in rows]
    assert all(row[5] for row in rows), "every built-in has a description"
    kinds = [row[1] for row in rows]
    assert kinds == sorted(kinds, key=["function", "storage", "pubsub"].index)


def test_providers_shows_how_to_install_a_missing_backend(
    register_plugin: PluginRegistrar, capsys: pytest.CaptureFixture[str]
) -> None:
    register_plugin(
        fake_plugin(
            function=[
                FunctionBackend(
                    "fake",
                    f"{MISSING}:Cls",
                    extra="aws",
                    requires=(MISSING,),
                    description="a platform we cannot import",
                )
            ]
        ),
        name="fakes",
    )
    status, out, _ = run(capsys, "providers")
    assert status == 0
    header, *lines = out.splitlines()
    rows = [split_row(line, column_starts(header, PROVIDER_COLUMNS)) for line in lines]
    assert [
        "fake",
        "function",
        "no",
        'pip install "faasml[aws]"',
        "fakes",
        "a platform we cannot import",
    ] in rows


def test_providers_json(
    register_plugin: PluginRegistrar, capsys: pytest.CaptureFixture[str]
) -> None:
    class Inline:
        pass

    register_plugin(
        fake_plugin(
            storage=[ObjectStoreBackend("gone", f"{MISSING}:S", extra="aws", requires=(MISSING,))],
            pubsub=[PubSubBackend("inline", Inline, description="class object")],
        ),
        name="mixed",
    )
    status, out, _ = run(capsys, "providers", "--json")
    assert status == 0
    rows = json.loads(out)
    assert all(set(row) == PROVIDER_KEYS for row in rows)
    by_key = {(row["kind"], row["name"]): row for row in rows}
    assert by_key["function", "local"] == {
        "name": "local",
        "kind": "function",
        "installed": True,
        "extra": None,
        "install": None,
        "plugin": "faasml.providers.local",
        "description": "pool of warm worker processes; no services, no credentials",
        "class": "faasml.providers.local.function:LocalFunction",
    }
    assert by_key["storage", "gone"]["installed"] is False
    assert by_key["storage", "gone"]["extra"] == "aws"
    assert by_key["storage", "gone"]["install"] == 'pip install "faasml[aws]"'
    assert by_key["storage", "gone"]["plugin"] == "mixed"
    assert by_key["pubsub", "inline"]["class"] == f"{__name__}:{Inline.__qualname__}"


def test_providers_kind_filter(
    faasml_pm: pluggy.PluginManager, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "providers", "--kind", "storage", "--json")
    assert status == 0
    rows = json.loads(out)
    assert {row["kind"] for row in rows} == {"storage"}
    assert {"file", "memory"} <= {row["name"] for row in rows}
    status, _, err = run(capsys, "providers", "--kind", "queue")
    assert status == 2
    assert "invalid choice: 'queue'" in err


def test_providers_with_nothing_registered(
    faasml_pm: pluggy.PluginManager,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", ",".join(DEFAULT_PLUGINS))
    reset_plugin_manager()
    status, out, _ = run(capsys, "providers")
    assert status == 0
    assert out.splitlines() == ["NAME  KIND  INSTALLED  EXTRA TO INSTALL  PLUGIN  DESCRIPTION"]
    assert json.loads(run(capsys, "providers", "--json")[1]) == []


def test_faasml_error_is_one_line_on_stderr_with_status_2(
    register_plugin: PluginRegistrar, capsys: pytest.CaptureFixture[str]
) -> None:
    register_plugin(fake_plugin(storage=[ObjectStoreBackend("dup", "a:A")]), name="one")
    register_plugin(fake_plugin(storage=[ObjectStoreBackend("dup", "b:B")]), name="two")
    status, out, err = run(capsys, "providers")
    assert status == 2
    assert out == ""
    assert err.startswith("faasml: error: storage name 'dup' is registered twice")
    assert "'one'" in err and "'two'" in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_crashing_plugin_is_named_not_hidden(
    register_plugin: PluginRegistrar, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> list[Any]:
        raise ZeroDivisionError("a bug, not a user error")

    register_plugin(SimpleNamespace(faasml_pubsub_backends=hookimpl(broken)), name="buggy")
    assert cli.main(["providers"]) == 2
    err = capsys.readouterr().err
    assert "'buggy'" in err and "ZeroDivisionError: a bug, not a user error" in err


# --------------------------------------------------------------------------- plugins


def test_plugins_table(faasml_pm: pluggy.PluginManager, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "plugins")
    assert status == 0
    header, *lines = out.splitlines()
    starts = column_starts(header, ["NAME", "DISTRIBUTION", "VERSION", "HOOKS"])
    rows = {row[0]: row[1:] for row in (split_row(line, starts) for line in lines)}
    version = importlib.metadata.version("faasml")
    assert set(rows) == set(DEFAULT_PLUGINS)
    assert all(row[:2] == ["faasml", version] for row in rows.values())
    assert rows["faasml.providers.local"][2] == "faasml_function_backends"
    assert rows["faasml.pubsub"][2] == "faasml_pubsub_backends"
    assert rows["faasml.storage"][2] == "faasml_object_store_backends"
    assert list(rows) == sorted(rows)


def test_plugins_json_with_a_third_party_plugin(
    register_plugin: PluginRegistrar,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_plugin(
        fake_plugin(function=[FunctionBackend("acme", "a:F")], pubsub=[]),
        name="acme",
    )
    register_plugin(fake_plugin(storage=[]), name="unpackaged")
    # what importlib.metadata gives for a plugin installed from a distribution
    acme_ep = SimpleNamespace(
        name="acme", dist=SimpleNamespace(metadata={"Name": "faasml-acme"}, version="1.2.3")
    )
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda *, group: [acme_ep])
    status, out, _ = run(capsys, "plugins", "--json")
    assert status == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert all(set(row) == PLUGIN_KEYS for row in rows.values())
    assert set(rows) == {*DEFAULT_PLUGINS, "acme", "unpackaged"}
    assert rows["acme"] == {
        "name": "acme",
        "builtin": False,
        "distribution": "faasml-acme",
        "version": "1.2.3",
        "hooks": ["faasml_function_backends", "faasml_pubsub_backends"],
    }
    assert rows["unpackaged"]["distribution"] is None
    assert rows["unpackaged"]["version"] is None
    assert rows["faasml.storage"]["builtin"] is True
    assert rows["faasml.storage"]["hooks"] == ["faasml_object_store_backends"]


def test_plugins_omits_blocked_plugins(
    faasml_pm: pluggy.PluginManager,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAASML_DISABLED_PLUGINS", "faasml.storage")
    reset_plugin_manager()
    names = [row["name"] for row in json.loads(run(capsys, "plugins", "--json")[1])]
    assert "faasml.storage" not in names
    assert set(DEFAULT_PLUGINS) - {"faasml.storage"} == set(names)

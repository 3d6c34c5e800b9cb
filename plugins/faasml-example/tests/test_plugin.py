"""The plugin as faasml sees it: entry point, registry record, CLI listing, end-to-end use."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from faasml import registry
from faasml.hooks import FunctionBackend
from faasml.testing.pytest_plugin import PluginRegistrar

import faasml_example
import faasml_example.plugin
from faasml_example.function import ThreadFunction


def run_cli(*args: str) -> Any:
    """Run ``python -m faasml ... --json`` in a fresh process with plugin autoload on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAASML_")}
    done = subprocess.run(
        [sys.executable, "-m", "faasml", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_package_is_installed_with_its_entry_point() -> None:
    try:
        dist = importlib.metadata.distribution("faasml-example")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - the message is the point
        pytest.fail("install the plugin first: pip install -e plugins/faasml-example")
    assert dist.version == faasml_example.__version__
    (ep,) = [ep for ep in dist.entry_points if ep.group == "faasml"]
    assert (ep.name, ep.value) == ("example", "faasml_example.plugin")


def test_faasml_providers_lists_the_backend_under_plugin_example() -> None:
    rows = {(row["kind"], row["name"]): row for row in run_cli("providers")}
    assert rows["function", "example"] == {
        "name": "example",
        "kind": "function",
        "installed": True,
        "extra": None,
        "install": None,
        "plugin": "example",
        "description": "runs the handler on a thread pool in this process (example plugin)",
        "class": "faasml_example.function:ThreadFunction",
    }
    assert ("function", "local") in rows, "a plugin adds to the built-ins, it does not replace them"


def test_faasml_plugins_shows_distribution_version_and_hooks() -> None:
    rows = {row["name"]: row for row in run_cli("plugins")}
    assert rows["example"] == {
        "name": "example",
        "builtin": False,
        "distribution": "faasml-example",
        "version": faasml_example.__version__,
        "hooks": ["faasml_function_backends"],
    }


def test_blocking_the_plugin_removes_the_backend() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAASML_")}
    env["FAASML_DISABLED_PLUGINS"] = "example"
    done = subprocess.run(
        [sys.executable, "-m", "faasml", "providers", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    assert "example" not in {row["name"] for row in json.loads(done.stdout)}


def test_registering_the_plugin_module_in_a_test(register_plugin: PluginRegistrar) -> None:
    # The faasml_pm fixture turns autoload off, so the plugin is only there once registered.
    with pytest.raises(KeyError):
        registry.backend_record("function", "example")
    register_plugin(faasml_example.plugin, name="example-under-test")
    record = registry.backend_record("function", "example")
    assert isinstance(record, FunctionBackend)
    assert record.plugin == "example-under-test"
    assert (record.default_storage, record.default_pubsub) == ("memory", "local")
    assert registry.backend_class("function", "example") is ThreadFunction


def test_the_hook_module_imports_no_backend_code() -> None:
    code = (
        "import sys, faasml_example.plugin as p; p.faasml_function_backends(); "
        "print('faasml_example.function' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def square(x: int) -> int:
    return x * x


def test_faasml_connect_runs_tasks_on_threads(register_plugin: PluginRegistrar) -> None:
    import faasml

    register_plugin(faasml_example.plugin, name="example")
    with faasml.connect("example", concurrency=4, progress=False) as cloud:
        assert isinstance(cloud.function, ThreadFunction)
        assert cloud.function.concurrency == 4
        # the defaults the plugin's record names
        assert (cloud.storage.name, cloud.pubsub.name) == ("memory", "local")
        assert list(cloud.map(square, range(10))) == [x * x for x in range(10)]
        with pytest.raises(ZeroDivisionError):
            cloud.submit(divmod, 1, 0).result(timeout=60)

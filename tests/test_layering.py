"""Layering rules of design.md §2, checked on the source (AST), not by convention."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "faasml"
CLOUD_SDKS = {
    "boto3",
    "botocore",
    "redis",
    "nats",
    "oss2",
    "fc2",
    "obs",
    "libcloud",
    "mns",
    "huaweicloudsdkcore",
    "huaweicloudsdkfunctiongraph",
    "huaweicloudsdksmn",
    "requests",
}
# Portable layers may use the interfaces, never a concrete backend or a cloud SDK.
PORTABLE = ("algorithms", "data", "sync", "runtime", "executor.py", "interfaces.py", "errors.py")
BACKEND_PACKAGES = ("faasml.providers", "faasml.storage.", "faasml.pubsub.")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _portable_files() -> list[Path]:
    files: list[Path] = []
    for entry in PORTABLE:
        target = PKG / entry
        if target.is_dir():
            files.extend(sorted(target.rglob("*.py")))
        elif target.exists():
            files.append(target)
    return files


def test_portable_layers_exist() -> None:
    assert len(_portable_files()) >= 4


@pytest.mark.parametrize("path", _portable_files(), ids=lambda p: str(p.relative_to(PKG)))
def test_portable_layer_imports_no_backend_or_sdk(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in CLOUD_SDKS, f"{path.name} imports cloud SDK {name}"
        assert not name.startswith(BACKEND_PACKAGES), f"{path.name} imports backend {name}"


@pytest.mark.parametrize("path", _portable_files(), ids=lambda p: str(p.relative_to(PKG)))
def test_portable_layer_calls_no_provider_only_method(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert not node.attr.startswith("ex_"), f"{path.name} calls {node.attr}"


def test_hook_modules_import_no_sdk() -> None:
    for path in [*(PKG / "hooks").glob("*.py"), PKG / "registry.py", PKG / "config.py"]:
        for name in _imports(path):
            assert name.split(".")[0] not in CLOUD_SDKS, f"{path.name} imports {name}"

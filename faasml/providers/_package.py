"""Deployment packages: a zip of faasml, a platform entry file and, optionally, the dependencies.

Platforms that take code as a zip (Lambda, OpenWhisk, Function Compute, FunctionGraph) get the
same archive: the ``faasml`` package as installed here, the provider's entry file(s), and the
runtime dependencies installed by pip for the platform's Linux and Python (binary wheels only, so
numpy and scipy match the platform, not this machine). The archive is byte-for-byte reproducible
for the same inputs (fixed timestamps and order): where the platform reports the digest of the
code it holds (Lambda's ``CodeSha256``), a redeploy of unchanged code skips the upload.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from faasml.errors import ConfigurationError, ProviderError

__all__ = [
    "build_zip",
    "check_python_version",
    "copy_package",
    "runtime_requirements",
    "zip_digest",
]

# 1980-01-01, the earliest time a zip entry can carry: every build gets the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def runtime_requirements(extra: str | None = None) -> list[str]:
    """faasml's own install requirements, plus those of ``extra`` (``"aws"``, ...).

    Read from the installed distribution's metadata, so they follow ``pyproject.toml``.
    """
    try:
        declared = importlib.metadata.requires("faasml") or []
    except importlib.metadata.PackageNotFoundError:  # a source checkout that was never installed
        declared = []
    wanted: list[str] = []
    for requirement in declared:
        name, _, marker = requirement.partition(";")
        marker = marker.strip()
        extra_match = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if extra_match is None:
            if "python_version" in marker:  # backports for old Pythons: not on any platform runtime
                continue
            wanted.append(name.strip())
        elif extra is not None and extra_match.group(1) == extra:
            wanted.append(name.strip())
    return [r for r in dict.fromkeys(wanted) if not r.startswith("faasml")]


def _package_files(root: Path) -> Iterable[tuple[str, Path]]:
    """``(name in the archive, path)`` of every file of the faasml package, sorted."""
    base = root.parent
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in files:
            if name.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(folder) / name
            found.append((path.relative_to(base).as_posix(), path))
    return sorted(found)


def copy_package(directory: str | os.PathLike[str]) -> Path:
    """Put a fresh copy of the installed faasml package in ``directory/faasml`` (an image's
    build context); an older copy there is removed first, so no stale module lingers.

    :returns: ``directory`` as a :class:`~pathlib.Path`.
    """
    import faasml

    target = Path(directory)
    shutil.rmtree(target / "faasml", ignore_errors=True)
    for name, path in _package_files(Path(faasml.__file__).resolve().parent):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    return target


def check_python_version(python_version: object) -> str:
    """``python_version`` if it looks like ``"3.11"`` (an image tag's ``X.Y``).

    :raises ValueError: it does not.
    """
    parts = python_version.split(".") if isinstance(python_version, str) else []
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f"python_version must look like '3.11', got {python_version!r}")
    return str(python_version)


def _add(archive: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    # Unix permissions in the high bits: platforms unpack with them (0644, or 0755 for scripts).
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    archive.writestr(info, data)


def _pip_install(
    requirements: Sequence[str], target: str, python_version: str, platform: str
) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        target,
        "--only-binary=:all:",
        "--platform",
        platform,
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *requirements,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise ProviderError(
            f"pip could not fetch the dependencies for the {platform} / Python {python_version} "
            f"package ({' '.join(requirements)}):\n{tail}\nCheck that pip reaches its index, or "
            "deploy without dependencies and provide them another way (a layer, an image)",
            provider="deploy",
        )


def build_zip(
    entry_files: Mapping[str, str | bytes],
    *,
    dependencies: Sequence[str] = (),
    python_version: str = "3.11",
    platform: str = "manylinux2014_x86_64",
) -> bytes:
    """Return a deployment zip: faasml, ``entry_files`` and (optionally) ``dependencies``.

    :param entry_files: archive name -> content, e.g. ``{"__main__.py": "..."}``.
    :param dependencies: pip requirement strings installed into the archive's root for
        ``platform`` and ``python_version`` (see :func:`runtime_requirements`); empty for none.
    :raises ConfigurationError: an entry file would overwrite a faasml file, or a name is unsafe.
    :raises ProviderError: pip could not fetch a dependency.
    """
    import faasml

    root = Path(faasml.__file__).resolve().parent
    files = list(_package_files(root))
    taken = {name for name, _ in files}
    for name in entry_files:
        if name in taken or name.startswith(("/", "../")) or "/../" in name or not name:
            raise ConfigurationError(f"entry file name {name!r} is unsafe or clashes with faasml")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in sorted(entry_files.items()):
            data = content.encode() if isinstance(content, str) else content
            _add(archive, name, data)
        for name, path in files:
            _add(archive, name, path.read_bytes())
        if dependencies:
            with tempfile.TemporaryDirectory(prefix="faasml-deps-") as target:
                _pip_install(dependencies, target, python_version, platform)
                base = Path(target)
                extra = []
                for folder, dirs, names in os.walk(target):
                    dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
                    for name in names:
                        if name.endswith(_SKIP_SUFFIXES):
                            continue
                        path = Path(folder) / name
                        extra.append((path.relative_to(base).as_posix(), path))
                for name, path in sorted(extra):
                    if name in taken or name in entry_files:
                        continue
                    _add(archive, name, path.read_bytes(), executable=os.access(path, os.X_OK))
    return buffer.getvalue()


def zip_digest(data: bytes) -> str:
    """SHA-256 of ``data``, hex: what a redeploy compares to skip an unchanged upload."""
    return hashlib.sha256(data).hexdigest()

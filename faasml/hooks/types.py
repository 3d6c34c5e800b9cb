"""Typed records that registration hooks return: one per backend a plugin provides."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BackendKind", "BackendRecord", "FunctionBackend", "ObjectStoreBackend", "PubSubBackend"]

BackendKind = Literal["function", "storage", "pubsub"]
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class BackendRecord:
    """What a plugin says about one backend.

    :param name: lowercase registry name (``"s3"``), unique per kind.
    :param cls: the backend class, or ``"module:Class"`` so the module (and its cloud SDK) is
        imported only when the backend is used.
    :param extra: the ``faasml[extra]`` that installs its dependencies (``None``: always installed).
    :param requires: importable module names the backend needs; used to report install state
        without importing the backend.
    :param description: one line for ``faasml providers``.
    :param plugin: filled in by the manager: the plugin that registered the record.
    """

    name: str
    cls: str | type
    extra: str | None = None
    requires: tuple[str, ...] = ()
    description: str = ""
    plugin: str = field(default="", compare=False)

    kind: BackendKind = field(default="function", init=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            from faasml.errors import PluginError

            raise PluginError(f"backend name {self.name!r} must match {_NAME_RE.pattern}")

    @property
    def installed(self) -> bool:
        """Whether every module in :attr:`requires` can be imported (checked without importing)."""
        for module in self.requires:
            try:
                if importlib.util.find_spec(module) is None:
                    return False
            except (ImportError, ValueError):
                return False
        return True

    @property
    def install_hint(self) -> str:
        """The exact command that installs this backend's dependencies."""
        if self.extra is None:
            return f"pip install {' '.join(self.requires)}" if self.requires else ""
        return f'pip install "faasml[{self.extra}]"'


@dataclass(frozen=True)
class FunctionBackend(BackendRecord):
    """A :class:`~faasml.interfaces.Function` backend.

    :param default_storage: the object store used when the user names none.
    :param default_pubsub: the PubSub used when the user names none.
    """

    default_storage: str = "file"
    default_pubsub: str = "local"
    kind: BackendKind = field(default="function", init=False)


@dataclass(frozen=True)
class ObjectStoreBackend(BackendRecord):
    """An :class:`~faasml.interfaces.ObjectStore` backend."""

    kind: BackendKind = field(default="storage", init=False)


@dataclass(frozen=True)
class PubSubBackend(BackendRecord):
    """A :class:`~faasml.interfaces.PubSub` backend."""

    kind: BackendKind = field(default="pubsub", init=False)

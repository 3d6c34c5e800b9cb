"""Plugin hooks: ``hookimpl`` marker, hook specifications and backend records."""

from __future__ import annotations

import pluggy

from faasml.hooks.types import (
    BackendRecord,
    FunctionBackend,
    ObjectStoreBackend,
    PubSubBackend,
)

hookimpl = pluggy.HookimplMarker("faasml")

__all__ = ["BackendRecord", "FunctionBackend", "ObjectStoreBackend", "PubSubBackend", "hookimpl"]

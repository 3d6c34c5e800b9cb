"""Built-in ObjectStore backends, registered through the same hook third parties use."""

from __future__ import annotations

from faasml.hooks import ObjectStoreBackend, hookimpl


@hookimpl
def faasml_object_store_backends() -> list[ObjectStoreBackend]:
    """Register the built-in object stores (classes are imported lazily)."""
    return [
        ObjectStoreBackend(
            "file",
            "faasml.storage.file:FileObjectStore",
            description="objects as files under a directory (atomic writes)",
        ),
        ObjectStoreBackend(
            "memory",
            "faasml.storage.memory:MemoryObjectStore",
            description="in-memory, shared with local workers over a Unix socket",
        ),
    ]

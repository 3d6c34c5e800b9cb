"""Built-in PubSub backends, registered through the same hook third parties use."""

from __future__ import annotations

from faasml.hooks import PubSubBackend, hookimpl


@hookimpl
def faasml_pubsub_backends() -> list[PubSubBackend]:
    """Register the built-in PubSub backends (classes are imported lazily)."""
    return [
        PubSubBackend(
            "local",
            "faasml.pubsub.local:LocalPubSub",
            description="cross-process queues in a SQLite file; no service needed",
        ),
    ]

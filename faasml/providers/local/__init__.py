"""The ``local`` provider: warm worker processes on this machine running the shared runtime."""

from __future__ import annotations

from faasml.hooks import FunctionBackend, hookimpl


@hookimpl
def faasml_function_backends() -> list[FunctionBackend]:
    """Register the local provider."""
    return [
        FunctionBackend(
            "local",
            "faasml.providers.local.function:LocalFunction",
            description="pool of warm worker processes; no services, no credentials",
            default_storage="file",
            default_pubsub="local",
        )
    ]

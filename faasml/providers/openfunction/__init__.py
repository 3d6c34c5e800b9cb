"""The ``openfunction`` provider: OpenFunction HTTP functions on Kubernetes (Knative serving).

Only the hook lives here; the backend module (and ``requests``) is imported when it is used.
"""

from __future__ import annotations

from faasml.hooks import FunctionBackend, hookimpl


@hookimpl
def faasml_function_backends() -> list[FunctionBackend]:
    """Register the OpenFunction provider."""
    return [
        FunctionBackend(
            "openfunction",
            "faasml.providers.openfunction.function:OpenFunctionFunction",
            extra="openfunction",
            requires=("requests",),
            description="OpenFunction HTTP functions on Kubernetes",
            default_storage="redis",
            default_pubsub="redis",
        )
    ]

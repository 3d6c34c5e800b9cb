"""The ``openwhisk`` provider: Apache OpenWhisk actions over the controller's REST API.

Hook implementations only; ``requests`` is imported when the backend class is loaded.
"""

from __future__ import annotations

from faasml.hooks import FunctionBackend, hookimpl


@hookimpl
def faasml_function_backends() -> list[FunctionBackend]:
    """Register the OpenWhisk provider."""
    return [
        FunctionBackend(
            "openwhisk",
            "faasml.providers.openwhisk.function:OpenWhiskFunction",
            extra="openwhisk",
            requires=("requests",),
            description="Apache OpenWhisk actions over its REST API",
            default_storage="redis",
            default_pubsub="redis",
        )
    ]

"""The ``openfaas`` provider: OpenFaaS functions called through the gateway's REST API."""

from __future__ import annotations

from faasml.hooks import FunctionBackend, hookimpl


@hookimpl
def faasml_function_backends() -> list[FunctionBackend]:
    """Register the OpenFaaS provider."""
    return [
        FunctionBackend(
            "openfaas",
            "faasml.providers.openfaas.function:OpenFaaSFunction",
            extra="openfaas",
            requires=("requests",),
            description="OpenFaaS functions through the gateway",
            default_storage="redis",
            default_pubsub="redis",
        )
    ]

"""The ``aliyun`` provider: Alibaba Cloud Function Compute 2.0 through ``aliyun-fc2``."""

from __future__ import annotations

from faasml.hooks import FunctionBackend, hookimpl


@hookimpl
def faasml_function_backends() -> list[FunctionBackend]:
    """Register the Alibaba Cloud Function Compute provider."""
    return [
        FunctionBackend(
            "aliyun",
            "faasml.providers.aliyun.function:FunctionComputeFunction",
            extra="aliyun",
            requires=("fc2",),
            description="Alibaba Cloud Function Compute 2.0 (invoke, deploy a zip)",
            default_storage="oss",
            default_pubsub="mns",
        )
    ]

"""The ``huawei`` provider: Huawei Cloud FunctionGraph runs faasml's handler.

Only the registration lives here; the backend (:mod:`faasml.providers.huawei.function`) imports
``huaweicloudsdkfunctiongraph`` and is loaded when the provider is first used.
"""

from __future__ import annotations

from faasml.hooks import FunctionBackend, hookimpl


@hookimpl
def faasml_function_backends() -> list[FunctionBackend]:
    """Register the FunctionGraph backend."""
    return [
        FunctionBackend(
            "huawei",
            "faasml.providers.huawei.function:FunctionGraphFunction",
            extra="huawei",
            requires=("huaweicloudsdkfunctiongraph",),
            description="Huawei Cloud FunctionGraph (invoke, deploy a zip)",
            default_storage="obs",
            default_pubsub="smn",
        )
    ]

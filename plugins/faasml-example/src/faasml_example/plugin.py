"""Hook implementations of faasml-example: what the plugin provides, and nothing else.

This module is imported every time faasml builds its registry, so it only declares records; the
backend class is named as a ``"module:Class"`` string and imported when someone uses it.
"""

from __future__ import annotations

from faasml import hookimpl
from faasml.hooks import FunctionBackend


@hookimpl
def faasml_function_backends() -> list[FunctionBackend]:
    """Register the ``example`` Function backend."""
    return [
        FunctionBackend(
            "example",
            "faasml_example.function:ThreadFunction",
            description="runs the handler on a thread pool in this process (example plugin)",
            default_storage="memory",
            default_pubsub="local",
        )
    ]

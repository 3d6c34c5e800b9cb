"""faasml: run the same code on any FaaS platform; train ML models on stateless workers.

Quick start::

    import faasml

    with faasml.connect("local", workers=2) as cloud:
        print(list(cloud.map(abs, [-1, -2, 3])))
"""

from __future__ import annotations

from faasml import errors
from faasml.executor import Cloud, ObjectChunk, connect, gather, wait
from faasml.hooks import hookimpl
from faasml.interfaces import (
    Function,
    Invocation,
    Message,
    ObjectInfo,
    ObjectStore,
    PubSub,
    Subscription,
)

__version__ = "0.1.0"

__all__ = [
    "Cloud",
    "Function",
    "Invocation",
    "Message",
    "ObjectChunk",
    "ObjectInfo",
    "ObjectStore",
    "PubSub",
    "Subscription",
    "__version__",
    "connect",
    "errors",
    "gather",
    "hookimpl",
    "wait",
]

"""Hook specifications: how plugins tell faasml which backends they provide.

Hooks are called once, when the registry is built; after that backends are plain objects and the
data path (``put``, ``publish``, ``invoke``) never goes through pluggy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from faasml.hooks.types import FunctionBackend, ObjectStoreBackend, PubSubBackend

hookspec = pluggy.HookspecMarker("faasml")


@hookspec
def faasml_function_backends() -> list[FunctionBackend]:  # type: ignore[empty-body]
    """Return the Function backends this plugin provides.

    Example::

        @faasml.hookimpl
        def faasml_function_backends():
            return [FunctionBackend("myfaas", "my_pkg.function:MyFunction", extra=None)]
    """


@hookspec
def faasml_object_store_backends() -> list[ObjectStoreBackend]:  # type: ignore[empty-body]
    """Return the ObjectStore backends this plugin provides.

    Example::

        @faasml.hookimpl
        def faasml_object_store_backends():
            return [ObjectStoreBackend("mystore", "my_pkg.store:MyObjectStore")]
    """


@hookspec
def faasml_pubsub_backends() -> list[PubSubBackend]:  # type: ignore[empty-body]
    """Return the PubSub backends this plugin provides.

    Example::

        @faasml.hookimpl
        def faasml_pubsub_backends():
            return [PubSubBackend("mq", "my_pkg.mq:MQPubSub", requires=("my_mq_client",))]
    """

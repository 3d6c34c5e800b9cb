"""Shared conformance suites that every backend (built-in or third-party) runs.

Subclass the suite and provide its fixture; for example::

    import pytest
    from faasml.testing.conformance import ObjectStoreTests

    class TestMyStore(ObjectStoreTests):
        @pytest.fixture
        def object_store(self, tmp_path):
            return MyObjectStore(root=tmp_path)
"""

from __future__ import annotations

from faasml.testing.conformance.function import FunctionTests
from faasml.testing.conformance.object_store import ObjectStoreTests
from faasml.testing.conformance.pubsub import PubSubTests

__all__ = ["FunctionTests", "ObjectStoreTests", "PubSubTests"]

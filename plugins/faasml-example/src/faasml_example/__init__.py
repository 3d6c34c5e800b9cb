"""faasml-example: a template third-party faasml plugin.

It adds one Function backend, ``example`` (:class:`faasml_example.function.ThreadFunction`),
which runs the handler on a thread pool inside the calling process. Nothing is imported here:
faasml loads :mod:`faasml_example.plugin` through the ``faasml`` entry point, and the backend
module only when the backend is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

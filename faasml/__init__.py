"""faasml: run the same code on any FaaS platform; train ML models on stateless workers."""

from __future__ import annotations

from faasml import errors
from faasml.hooks import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "errors", "hookimpl"]

"""``python -m faasml``: the same command line as the ``faasml`` console script."""

from __future__ import annotations

from faasml.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

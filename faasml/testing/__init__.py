"""Tools for testing faasml backends and plugins: conformance suites and fixtures."""

"""Benchmark scripts (run them as scripts; tests import them as modules)."""

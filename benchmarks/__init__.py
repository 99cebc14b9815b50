"""Benchmarks for enkash-coins: ``python -m benchmarks`` (see docs/performance.md)."""

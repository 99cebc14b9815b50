"""Benchmarks for enkash-coins: ``python -m benchmarks`` (see README, "Performance")."""

"""Benchmarks of otel-mixpanel against the seeds' hand-written helper: ``python -m benchmarks``."""

"""Benchmarks: `python -m bench.ingest` and `python -m bench.e2e` (see docs/benchmarks.md)."""

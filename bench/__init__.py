"""Benchmarks; each module has a main() and writes its figures to stdout (see docs/performance.md)."""

"""Benchmarks: one module per capability plus the shared harness."""

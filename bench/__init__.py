"""Benchmarks: each measured beside a raw baseline run in the same script."""

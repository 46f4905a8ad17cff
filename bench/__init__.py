"""Benchmark harness: the proxy measured against calling the upstream directly (see bench/run.py)."""

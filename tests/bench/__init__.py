"""Benchmarks (not collected by pytest): see bench_proxy.py."""

"""Benchmarks of target-klaviyo: rate-limit floor, per-record baseline, CPU and memory.

Run ``python -m benchmarks.run --help``; see ``benchmarks/README.md``.
"""

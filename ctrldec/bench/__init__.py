"""Benchmarks: ``ctrldec bench masks`` (grammar engines side by side)."""

"""Evaluation: benchmarks now; lip-sync, identity and stability metrics with the data engine."""

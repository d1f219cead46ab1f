"""Evaluation: metrics with confidence intervals, slices, off-policy evaluation and launch review."""

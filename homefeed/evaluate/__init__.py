"""Evaluation: metrics with confidence intervals, slices, off-policy evaluation, launch review."""

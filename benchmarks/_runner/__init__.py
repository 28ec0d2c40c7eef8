"""Helpers of benchmarks/run.py: options, model resolution, metrics, evaluation, reports, plots, grids, heat maps."""

"""Shared layer: assets, model and data loading, configs, run records, errors."""

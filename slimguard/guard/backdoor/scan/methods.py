"""Importing this module registers every scan method (registration order: CLI choices, bench rows)."""

from . import dbs, greedy  # noqa: F401  isort: skip

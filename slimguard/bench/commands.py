"""Importing this module registers every ``slimguard bench <capability>`` command.

Each benchmark module (``slimguard.bench.<capability>``, one per entry of
:data:`slimguard.bench.harness.CAPABILITIES`) registers its command with
:func:`slimguard.core.commands.command` (``owns_run=False``); the CLI builds ``slimguard bench``
from those records (``slimguard/cli/bench.py``) and Python calls them by name::

    from slimguard.core.commands import execute
    from slimguard.bench.core import CoreBenchConfig

    execute("bench core", CoreBenchConfig(repeats=1)).metrics["path"]  # benchmarks/results/core.json

A benchmark module missing from a checkout is skipped; an import error inside one still raises.
"""

from __future__ import annotations

import importlib

from .harness import CAPABILITIES


def load() -> list[str]:
    """Import every benchmark module present; returns the capabilities found."""
    found = []
    for cap in CAPABILITIES:
        name = f"{__package__}.{cap}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        found.append(cap)
    return found


load()

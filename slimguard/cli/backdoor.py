"""``slimguard backdoor ...``: attack commands (poison, attack) and defence commands (defend).

The two halves live in their own modules so attacks and defences evolve independently;
each exposes ``register(app)``.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True)

for _part in ("backdoor_attack", "backdoor_defend"):
    try:
        _mod = importlib.import_module(f"slimguard.cli.{_part}")
    except ModuleNotFoundError as e:
        if e.name != f"slimguard.cli.{_part}":
            raise
        continue
    _mod.register(app)

"""``slimguard backdoor ...``: attack commands (poison, attack) and defence commands (defend).

The two halves live in their own modules so attacks and defences evolve independently;
each exposes ``register(app)``.
"""

from __future__ import annotations

import typer

from .options import optional_module

app = typer.Typer(no_args_is_help=True)

for _part in ("backdoor_attack", "backdoor_defend"):
    if (_mod := optional_module(f"slimguard.cli.{_part}")) is not None:
        _mod.register(app)

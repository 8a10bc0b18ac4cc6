"""``slimguard quant train | eval | export``: built from :mod:`slimguard.slim.quant.commands` by the
generic adapter. Works under `torchrun --nproc_per_node=2 -m slimguard.cli.main quant train ...` (DDP)."""

from __future__ import annotations

import typer

from .adapter import add_commands

app = typer.Typer(no_args_is_help=True)
add_commands(app, "quant")

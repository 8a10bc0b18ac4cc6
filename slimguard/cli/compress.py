"""``slimguard compress distill | train | run``: built from the verbs in
:mod:`slimguard.slim.compress.commands` by the generic adapter."""

from __future__ import annotations

import typer

from .adapter import add_commands

app = typer.Typer(no_args_is_help=True)
add_commands(app, "compress")

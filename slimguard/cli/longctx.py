"""``slimguard longctx generate``: built from :mod:`slimguard.slim.kvselect.commands` by the generic adapter."""

from __future__ import annotations

import typer

from .adapter import add_commands

app = typer.Typer(no_args_is_help=True)
add_commands(app, "longctx")

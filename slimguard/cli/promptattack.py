"""``slimguard promptattack run | train-mlm-head``: built from :mod:`slimguard.guard.promptattack.commands`
by the generic adapter (malicious prompt templates, PromptAttack)."""

from __future__ import annotations

import typer

from .adapter import add_commands

app = typer.Typer(no_args_is_help=True)
add_commands(app, "promptattack")

"""``slimguard promptattack run | train-mlm-head``: malicious prompt templates (PromptAttack)."""

from __future__ import annotations

from typing import Optional

import typer

from .adapter import add_commands
from .options import ThreadsOpt, set_threads

app = typer.Typer(no_args_is_help=True)
add_commands(app, "promptattack")  # run: built from slimguard.guard.promptattack.commands


@app.command("train-mlm-head")
def train_mlm_head(encoder: str = typer.Option("minilm-l6", help="Encoder asset or BERT folder."),
                   steps: int = typer.Option(60, help="Training steps (batch 32)."),
                   seed: int = typer.Option(0), retrain: bool = typer.Option(False, help="Retrain even if cached."),
                   threads: Optional[int] = ThreadsOpt) -> None:
    """Train (or load) the masked-LM head the masked-LM victim needs; prints its held-out accuracy."""
    set_threads(threads)
    from ..guard.promptattack.mlm_head import load_or_train_mlm, mlm_record

    load_or_train_mlm(encoder, steps=steps, seed=seed, retrain=retrain)
    typer.echo(mlm_record(encoder, steps=steps, seed=seed))

"""Top-level commands: ``generate``, ``report``, ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .options import ThreadsOpt, set_threads


def generate(prompt: str = typer.Argument(..., help="Text to continue."),
             model: str = typer.Option("smollm2-135m", "--model", "-m", help="Asset name or local transformers directory."),
             max_new_tokens: int = typer.Option(20, help="Tokens to generate (greedy)."),
             threads: Optional[int] = ThreadsOpt) -> None:
    """Greedy continuation of PROMPT by a causal LM, streamed to stdout."""
    from ..core.errors import SlimguardError

    if max_new_tokens < 1:
        raise SlimguardError("--max-new-tokens must be >= 1")
    if not prompt.strip():
        raise SlimguardError("PROMPT is empty; give the text to continue, e.g. `slimguard generate \"The capital of France is\"`")
    set_threads(threads)
    import torch
    from transformers import TextStreamer

    from ..core.models import load_causal_lm

    lm = load_causal_lm(model)
    ids = lm.tokenizer(prompt, return_tensors="pt")
    streamer = TextStreamer(lm.tokenizer, skip_prompt=False, skip_special_tokens=True)
    with torch.no_grad():
        lm.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                          pad_token_id=lm.tokenizer.pad_token_id)


def report(run_dir: Path = typer.Argument(..., help="A run directory (runs/<name>)."),
           out: Optional[Path] = typer.Option(None, help="Output HTML path (default RUN_DIR/report.html).")) -> None:
    """Render a run directory as one self-contained HTML page."""
    from ..report.html import render_run

    typer.echo(render_run(run_dir, out))


def demo(quick: bool = typer.Option(False, help="Smaller settings (a few minutes)."),
         only: Optional[str] = typer.Option(None, help="Comma-separated steps to run (default: all)."),
         skip: Optional[str] = typer.Option(None, help="Comma-separated steps to skip."),
         run: str = typer.Option("demo", "--run", help="Run folder under the runs root."),
         overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo run of the same name."),
         threads: Optional[int] = ThreadsOpt) -> None:
    """The main job: a compact run of every capability and one HTML report (runs/demo/report.html)."""
    set_threads(threads)
    from ..demo import run_demo

    path = run_demo(quick=quick, only=only.split(",") if only else None, skip=skip.split(",") if skip else None,
                    run_name=run, overwrite=overwrite)
    typer.echo(f"report: {path}")


def register(app: typer.Typer) -> None:
    app.command()(generate)
    app.command()(report)
    app.command()(demo)

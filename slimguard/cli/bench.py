"""``slimguard bench <capability>``: each capability's benchmark module registers its command.

A benchmark module ``slimguard.bench.<name>`` exposes ``register(app)``; this keeps the
CLI shell free of benchmark logic and lets capabilities land independently.
"""

from __future__ import annotations

import typer

from .options import optional_module

app = typer.Typer(no_args_is_help=True)

CAPABILITIES = ["core", "compress", "kvselect", "quant", "backdoor", "defence", "scan", "promptattack", "diffusion"]

for _cap in CAPABILITIES:
    if (_mod := optional_module(f"slimguard.bench.{_cap}")) is not None:
        _mod.register(app)


@app.command()
def render() -> None:
    """Regenerate BENCHMARKS.md from benchmarks/results/*.json."""
    from ..bench.harness import render_benchmarks_md

    typer.echo(render_benchmarks_md())

"""``slimguard bench <capability>``: built by the generic adapter from each benchmark's registered command.

The benchmark modules register their commands (``slimguard.bench.commands`` imports every one in
:data:`slimguard.bench.harness.CAPABILITIES`); a benchmark that still declares its own typer
signature exposes ``register(app)`` instead. ``render`` regenerates BENCHMARKS.md, the README
headline and the guides' canonical-number blocks from ``benchmarks/results/``.
"""

from __future__ import annotations

import typer

from ..bench.harness import CAPABILITIES
from ..core.commands import commands
from .adapter import add_command
from .options import optional_module

HELP = ("Benchmarks: write benchmarks/results/<capability>.json (studies: benchmarks/results/<capability>/), then "
        "regenerate BENCHMARKS.md, the README headline and the guides' canonical numbers.")

app = typer.Typer(no_args_is_help=True, help=HELP)

_registered = commands("bench")  # imports every benchmark module present (slimguard.bench.commands)
for _cap in CAPABILITIES:  # in the capabilities' order
    _mod = optional_module(f"slimguard.bench.{_cap}")
    if _mod is not None and hasattr(_mod, "register"):  # a benchmark with its own typer signature
        _mod.register(app)
    elif f"bench {_cap}" in _registered:
        add_command(app, _registered.pop(f"bench {_cap}"))
for _cmd in _registered.values():  # a benchmark registered under another name
    add_command(app, _cmd)


@app.command()
def render() -> None:
    """Regenerate BENCHMARKS.md, the README headline and the guides' canonical-number blocks from benchmarks/results/."""
    from ..bench.harness import render_benchmarks_md

    typer.echo(render_benchmarks_md())

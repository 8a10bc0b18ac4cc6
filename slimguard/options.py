"""Command-line options every entry point shares: ``--config FILE``, ``--set key=value``, ``--threads N``.

The generic adapter (``slimguard/cli/adapter.py``) gives them to every command it builds; a benchmark
that still declares its own typer signature (``bench/kvselect.py``, ``bench/compress.py``) takes them
from here, so ``bench/`` never imports CLI internals. Setting the threads is library code
(:func:`slimguard.core.models.set_threads`), re-exported here for those signatures.
"""

from __future__ import annotations

import typer

from .core.models import set_threads

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML/TOML config file (keys = the config fields).")
SetOpt = typer.Option(None, "--set", help="Override a config field: --set key=value (repeatable, dotted keys).")
RunOpt = typer.Option(None, "--run", help="Run directory name under runs/ (default: derived from the command).")
ThreadsOpt = typer.Option(None, "--threads", help="torch threads (default: $SLIMGUARD_THREADS or all cores).")

__all__ = ["ConfigOpt", "SetOpt", "RunOpt", "ThreadsOpt", "set_threads"]

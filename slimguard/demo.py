"""``slimguard demo``: a compact run of every capability into one HTML report.

Each capability contributes one step, a function ``demo_step(quick, out_dir) -> StepResult``
in its package's ``demo`` module. Steps run in order, print a summary line as they go,
and the report collects their numbers and HTML fragments into ``runs/demo/report.html``.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from .core.errors import SlimguardError
from .core.runs import Run
from .report.step import StepResult  # defined in report/ so demo steps need not import this runner; kept here too

# (step name, module holding demo_step)
STEPS = [
    ("model", "slimguard.core.demo"),
    ("compress", "slimguard.slim.compress.demo"),
    ("kvselect", "slimguard.slim.kvselect.demo"),
    ("quant", "slimguard.slim.quant.demo"),
    ("backdoor", "slimguard.guard.backdoor.demo"),
    ("promptattack", "slimguard.guard.promptattack.demo"),
    ("diffusion", "slimguard.guard.diffusion.demo"),
]


def available_steps() -> list[str]:
    out = []
    for name, mod in STEPS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        out.append(name)
    return out


def run_demo(*, quick: bool = False, only: list[str] | None = None, skip: list[str] | None = None,
             run_name: str = "demo", overwrite: bool = False) -> Path:
    from rich.console import Console

    names = [n for n, _ in STEPS]
    for n in (only or []) + (skip or []):
        if n not in names:
            raise SlimguardError(f"unknown demo step '{n}'; steps: {', '.join(names)}")
    present = available_steps()
    todo = [n for n in present if (not only or n in only) and n not in (skip or [])]
    con = Console(stderr=True)
    with Run.create(run_name, command=f"slimguard demo{' --quick' if quick else ''}",
                    config={"quick": quick, "steps": todo}, overwrite=overwrite) as run:
        return _run_steps(run, todo, quick, con)


def _run_steps(run: Run, todo: list[str], quick: bool, con) -> Path:
    from .report.html import esc, page, table

    sections, metrics = [], {}
    for name in todo:
        mod = importlib.import_module(dict(STEPS)[name])
        con.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        res: StepResult = mod.demo_step(quick=quick, out_dir=run.artefact(name))
        dt = time.perf_counter() - t0
        metrics[name] = {"seconds": round(dt, 1), "summary": res.summary}
        for row in res.summary:
            con.print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        con.print(f"  [dim]{name} took {dt:.0f}s[/dim]")
        sections.append((res.title, table(res.summary) + res.html + f"<p><small>{esc(name)}: {dt:.0f} s</small></p>"))
        run.save_metrics(metrics)  # after every step, so a crash keeps what finished
    from .core.runs import atomic_write_text

    return atomic_write_text(run.path / "report.html", page("slimguard demo", sections))

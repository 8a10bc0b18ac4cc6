"""``slimguard demo``: a compact run of every capability into one HTML report.

Each capability contributes one step, a function ``demo_step(quick, out_dir) -> StepResult``
in its package's ``demo`` module. Steps run in order, print a summary line as they go,
and the report collects them into ``runs/demo/report.html``: per section the sentence of what
the method should do and the sentence of what this run shows, a caveat where the run is too
small to show it, the canonical benchmark numbers of that capability (read from
``benchmarks/results/<capability>.json`` when the page is rendered, never copied into code),
the summary table (each number with its n and its baseline, or why none applies), the details,
and the section's seconds.

Example (CPU, about a minute)::

    slimguard demo --quick --only model --overwrite
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

from .core.errors import SlimguardError
from .core.runs import Run
from .report.step import StepResult, SummaryRow  # defined in report/ so demo steps need not import this runner

__all__ = ["STEPS", "StepResult", "SummaryRow", "available_steps", "canonical_block", "run_demo"]

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


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _run_steps(run: Run, todo: list[str], quick: bool, con) -> Path:
    from .core.runs import atomic_write_text
    from .report.html import esc, page, step_section

    sections, seconds, metrics, overview = [], {}, {}, []
    for name in todo:
        mod = importlib.import_module(dict(STEPS)[name])
        con.rule(f"[bold]{name}")
        t0, c0 = time.perf_counter(), time.process_time()
        res: StepResult = mod.demo_step(quick=quick, out_dir=run.artefact(name))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        metrics[name] = {"seconds": round(dt, 1), "cpu_seconds": round(cpu, 1), "title": res.title,
                         "shows": res.shows, "summary": res.summary_dicts()}
        con.print(f"  {res.shows}", highlight=False, markup=False)
        for r in res.summary:
            base = (f"{_fmt(r.baseline)} ({r.baseline_name})" if r.baseline is not None
                    else f"no baseline: {r.no_baseline}")
            con.print(f"  {r.metric} = {_fmt(r.value)}" + (f" (n={r.n})" if r.n is not None else "") + f"; {base}",
                      highlight=False, markup=False)
        con.print(f"  [dim]{name} took {dt:.0f}s ({cpu:.0f} CPU-s)[/dim]")
        sections.append((res.title, step_section(res, dt, canonical_block(res.canonical, res.featured, run.path))))
        seconds[res.title] = dt
        overview.append((res.title, res.shows, dt))
        run.save_metrics(metrics)  # after every step, so a crash keeps what finished
    total = sum(seconds.values())
    intro = ("<p>Every section opens with what its method should do and what this run shows, against the baseline "
             "named in its table; the canonical benchmark numbers it links are the full-size measurements. "
             f"{'Quick mode: small samples, read the caveats. ' if quick else ''}"
             f"Total {total:.0f} s.</p><table><tr><th>section</th><th>this run shows</th><th>seconds</th></tr>"
             + "".join(f'<tr><td><a href="#{_slug(t)}">{esc(t)}</a></td><td>{esc(s)}</td><td>{d:.0f}</td></tr>'
                       for t, s, d in overview) + "</table>")
    return atomic_write_text(run.path / "report.html",
                             page("slimguard demo" + (" (quick)" if quick else ""), sections, intro=intro,
                                  seconds=seconds))


def _slug(t: str) -> str:
    from .report.html import slug

    return slug(t)


def canonical_block(capabilities: tuple[str, ...], featured: tuple[str, ...] = (), base: Path | None = None) -> str:
    """The canonical benchmark numbers a section links: per capability its result file (relative link from
    ``base``), command, commit and date, the featured targets and (folded) every target, read from
    ``benchmarks/results/<capability>.json`` now. A checkout without results says so instead."""
    from .bench.harness import result_path
    from .bench.headline import headline
    from .report.html import esc, fold

    out = []
    for cap in capabilities:
        path = result_path(cap)
        if not path.is_file():
            out.append(f"<p>Canonical numbers: no <code>{esc(path)}</code> in this checkout; "
                       f"<code>slimguard bench {esc(cap)}</code> writes it.</p>")
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            out.append(f"<p>Canonical numbers: {esc(path)} is unreadable ({esc(e)}).</p>")
            continue
        targets = doc.get("targets") or {}
        href = os.path.relpath(path, base) if base is not None else path.as_uri()
        head = headline(cap, doc)
        pick = [k for k in featured if k in targets] or ([head["target"]] if head and head["target"] in targets else [])
        lines = [f"{_target_line(k, targets[k])}" for k in pick]
        judged = [t for t in targets.values() if isinstance(t, dict) and t.get("met") is not None]
        every = "<ul>" + "".join(f"<li>{_target_line(k, t)}</li>" for k, t in targets.items()) + "</ul>"
        out.append(f'<p>Canonical numbers (<a href="{esc(href)}">{esc(path.name)}</a>, '
                   f"<code>{esc(doc.get('command', ''))}</code>, commit {esc(doc.get('git_commit', '?'))}, "
                   f"{esc(str(doc.get('timestamp', ''))[:10])}): " + "; ".join(lines) + ".</p>"
                   + fold("", every, f"{len(targets)} targets, {sum(bool(t['met']) for t in judged)} of "
                                     f"{len(judged)} measured ones met"))
    return f'<div class="canonical">{"".join(out)}</div>' if out else ""


def _target_line(key: str, t: dict) -> str:
    from .report.html import esc

    met = {True: "met", False: "not met", None: "not measured"}.get(t.get("met"), "?")
    v = t.get("value")
    return f"<code>{esc(key)}</code> = {esc(_fmt(v) if v is not None else 'n/a')} (goal {esc(t.get('goal'))}, {met})"

"""Benchmark plumbing shared by every ``slimguard bench <capability>``.

Results follow one JSON shape (``benchmarks/results/<capability>.json``, see
docs/benchmarks.md): command, commit, machine, resolved config, rows, and every target
the issue names, met or not. BENCHMARKS.md is regenerated from all result files.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Iterable

from ..core.runs import atomic_write_json, atomic_write_text, git_commit, now_iso
# the timing helpers live in the library (slim/ and guard/ time things too); bench code keeps using them from here
from ..core.timing import Timing, machine, time_interleaved, time_it  # noqa: F401

RESULTS_DIR = Path(os.environ.get("SLIMGUARD_BENCH_DIR", Path(__file__).resolve().parents[2] / "benchmarks" / "results"))


def mean_std(values: Iterable[float]) -> dict:
    """Mean +- (sample) std over seeds, with n. NaNs (not measured) are left out and ``n`` says so."""
    v = [float(x) for x in values]
    v = [x for x in v if x == x]  # statistics.stdev raises on NaN; a cell measured on no seed stays NaN
    if not v:
        return {"value": float("nan"), "std": float("nan"), "n": 0}
    return {"value": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}


def target(value: float | None, goal: str) -> dict:
    """A target entry: ``goal`` is ``'>= 3'`` or ``'<= 0.2'``; ``met`` is computed, never asserted."""
    op, num = goal.split()
    lim = float(num)
    met = None if value is None or value != value else (value >= lim if op == ">=" else value <= lim)
    return {"value": value, "goal": goal, "met": met}


def write_result(capability: str, *, command: str, config: dict, rows: list[dict], targets: dict,
                 extra: dict | None = None, results_dir: Path | None = None) -> Path:
    """Write ``benchmarks/results/<capability>.json`` and regenerate BENCHMARKS.md."""
    doc = {"benchmark": capability, "command": command, "git_commit": git_commit(), "timestamp": now_iso(),
           "machine": machine(), "config": config, "rows": rows, "targets": targets}
    if extra:
        doc.update(extra)
    out_dir = results_dir or RESULTS_DIR
    path = atomic_write_json(out_dir / f"{capability}.json", doc)
    render_benchmarks_md(out_dir)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


HEADLINE_TARGETS = 3  # the first measured targets of each result file (issue order: the headline ones first)
README_MARKERS = ("<!-- headline:start -->", "<!-- headline:end -->")


def headline_table(docs: list[dict]) -> list[str]:
    """One row per benchmark: how many targets are met, and its first few measured targets (a partial run, e.g.
    one model at one length, leaves most of the issue's targets unmeasured; listing those would hide what it did
    measure)."""
    out = ["| benchmark | targets met | first measured targets (value / goal) | commit |", "|---|---|---|---|"]
    for d in docs:
        tg = d.get("targets", {})
        judged = [(k, t) for k, t in tg.items() if t.get("met") is not None]
        first = "; ".join(f"{k} {_fmt(t.get('value'))} / {t.get('goal')}{'' if t.get('met') else ' (no)'}"
                          for k, t in judged[:HEADLINE_TARGETS]) or "none measured"
        out.append(f"| [{d.get('benchmark')}](BENCHMARKS.md#{d.get('benchmark')}) | "
                   f"{sum(bool(t['met']) for _, t in judged)} of {len(judged)} | {first} | `{d.get('git_commit')}` |")
    return out


def _refresh_readme(head: list[str]) -> None:
    """Rewrite the README's headline block (between the markers), if it has one."""
    readme = RESULTS_DIR.parent.parent / "README.md"
    if not readme.is_file():
        return
    text = readme.read_text()
    a, b = README_MARKERS
    if a in text and b in text:
        new = text[:text.index(a) + len(a)] + "\n" + "\n".join(head) + "\n" + text[text.index(b):]
        if new != text:
            atomic_write_text(readme, new)


def render_benchmarks_md(results_dir: Path | None = None) -> Path:
    """BENCHMARKS.md from every result file: targets first, then the rows."""
    results_dir = results_dir or RESULTS_DIR
    out = results_dir.parent.parent / "BENCHMARKS.md" if results_dir == RESULTS_DIR else results_dir / "BENCHMARKS.md"
    lines = ["# Benchmarks", "",
             "Generated from `benchmarks/results/*.json` by `slimguard bench render`; do not edit by hand.",
             "Each section names the exact command and machine. Timings are medians of repeats after",
             "warm-up; accuracy-like numbers are mean +- std over seeds (n given).", ""]
    docs = []
    for f in sorted(results_dir.glob("*.json")):
        try:
            docs.append((f, json.loads(f.read_text())))
        except json.JSONDecodeError:
            continue
    head = headline_table([d for _, d in docs])
    lines += ["## Headline", "", *head, ""]
    if results_dir == RESULTS_DIR:
        _refresh_readme(head)
    for f, d in docs:
        m = d.get("machine", {})
        lines += [f"## {d.get('benchmark', f.stem)}", "",
                  f"- command: `{d.get('command')}`",
                  f"- commit `{d.get('git_commit')}`, {d.get('timestamp')}",
                  f"- machine: {m.get('cpu')}, {m.get('cores')} cores, torch threads {m.get('threads')}, "
                  f"GPU {m.get('gpu') or 'none'}, torch {m.get('torch')}", ""]
        if d.get("note"):
            lines += [str(d["note"]), ""]
        tg = d.get("targets", {})
        if tg:
            lines += ["| target | value | goal | met |", "|---|---|---|---|"]
            for k, t in tg.items():
                met = {True: "yes", False: "**no**", None: "n/a"}[t.get("met")]
                lines.append(f"| {k} | {_fmt(t.get('value'))} | {t.get('goal')} | {met} |")
            lines.append("")
        rows = d.get("rows", [])
        if rows:
            cols: list[str] = []
            for r in rows:
                cols += [c for c in r if c not in cols]
            shown = rows[:60]
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for r in shown:
                lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
            if len(rows) > len(shown):
                lines.append(f"\n({len(rows) - len(shown)} more rows in `{f.relative_to(results_dir.parent.parent) if results_dir == RESULTS_DIR else f.name}`)")
            lines.append("")
    return atomic_write_text(out, "\n".join(lines) + "\n")

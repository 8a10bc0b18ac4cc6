"""BENCHMARKS.md, the README headline and the guides' numbers, generated from ``benchmarks/results/``.

Reads the canonical result of each capability (``<capability>.json``) and its studies
(``<capability>/*.json``) and writes, per capability, one short section: one aggregated table of the
canonical rows (:data:`TABLES`), the targets met or not, the command, machine and commit, then one line
per study. In a source tree (results under ``<root>/benchmarks/results``) it also rewrites the block
between the markers of ``README.md`` (one headline row per capability, see ``headline.py``) and of each
``docs/<capability>.md`` (the canonical numbers). Measured values are only ever copied from the JSON.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import SlimguardError
from ..core.runs import atomic_write_text
from . import harness
from .headline import headline

README_MARKERS = ("<!-- headline:start -->", "<!-- headline:end -->")
DOC_MARKERS = ("<!-- numbers:start -->", "<!-- numbers:end -->")


@dataclass(frozen=True)
class TableSpec:
    """How a capability's canonical rows fold into one readable table: rows keyed by ``index``, one column per
    value of ``column``, each cell the mean ``value`` of the rows that fall in it (the rows' other fields, e.g.
    datasets or lengths, averaged; the caption says over what)."""

    caption: str
    index: tuple[str, ...]
    column: str = "metric"
    where: dict[str, tuple] = field(default_factory=dict)  # keep rows whose field is one of these values
    columns: tuple = ()  # keep only these column values, in this order (empty: all, in order of appearance)


TABLES: dict[str, TableSpec] = {
    "core": TableSpec("Medians after warm-up.", ("method",)),
    "compress": TableSpec("Requested rate 0.33 (3x) where a row has a rate; retention is the mean over the split's "
                          "domains, achieved rate over prompt lengths; `+digits` = force_reserve_digit=True.",
                          ("split", "method"), where={"rate": (0.33, None)},
                          columns=("answer_retention", "achieved_rate", "qa_accuracy_smollm2", "compress_s",
                                   "e2e_latency_s")),
    "kvselect": TableSpec("One cell per context length (tokens): attention timing on one SmolLM2-shaped layer "
                          "(ms per decode token, s per prefill layer), end-to-end estimate (s), accuracy (share "
                          "of cases; `depths` 0.5 marks the equal-budget peer comparison).",
                          ("part", "task", "depths", "method"), column="context",
                          where={"part": ("decode_attention", "prefill_attention", "end_to_end_estimated",
                                          "accuracy")}),
    "quant": TableSpec("Held-out perplexity (mean over seeds) by method and bit setting; llama.cpp speed and size "
                       "are in the targets.", ("method",), column="bits", where={"metric": ("ppl",)},
                       columns=("FP32", "W8A8", "W4A8", "W4A8KV4", "W4A4")),
    "backdoor": TableSpec("Poison rate 0.1 (the clean model has none); mean over seeds.", ("method", "dataset"),
                          where={"rate": (0.1, None)},
                          columns=("cacc", "cacc_drop", "asr", "visible_share_test", "delta_ppl", "delta_grammar",
                                   "similarity")),
    "defence": TableSpec("Mean over datasets and seeds.", ("attack", "defence"),
                         columns=("asr_before", "asr_after", "cacc_drop", "auroc", "poison_removed",
                                  "clean_removed")),
    "scan": TableSpec("Model-level scanning at the stored thresholds, by method and attack (clean: share of clean "
                      "models flagged); mean over seeds; slimming rows are in the JSON (`quant_*`).",
                      ("method", "attack", "dataset"), where={"rate": (0.1, None)},
                      columns=("auroc", "tpr_at_5fpr", "detected_rate", "trigger_recovery", "flagged_rate",
                               "scan_seconds")),
    "promptattack": TableSpec("Accuracy under the malicious template and flip rate of the correctly classified "
                              "test examples, by search strategy (mean over seeds).", ("victim", "dataset", "metric"),
                              column="method", where={"metric": ("attacked_acc", "flip_rate")},
                              columns=("gradient", "random", "random-draw", "char", "word", "distractor")),
    "diffusion": TableSpec("Mean over seeds; `guidance` is the classifier-free guidance scale w.",
                           ("method", "guidance"),
                           columns=("trigger_ratio", "vs_within_class", "auroc_train", "cacc", "asr")),
}


@dataclass
class Result:
    """One result file, read back."""

    path: Path
    doc: dict

    @property
    def targets(self) -> dict:
        return self.doc.get("targets") or {}

    def met_count(self) -> tuple[int, int]:
        judged = [t for t in self.targets.values() if isinstance(t, dict) and t.get("met") is not None]
        return sum(bool(t["met"]) for t in judged), len(judged)


def _read(path: Path) -> Result:
    try:
        return Result(path, json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise SlimguardError(f"{path} is not a readable result JSON ({e}); fix it or rerun its command") from None


def load(results_dir: Path) -> tuple[dict[str, Result], dict[str, list[Result]]]:
    """Canonical result per capability and its studies; a top-level JSON that names no capability is an error."""
    canonical: dict[str, Result] = {}
    studies: dict[str, list[Result]] = {}
    for f in sorted(results_dir.glob("*.json")):
        if f.stem not in harness.CAPABILITIES:
            raise SlimguardError(
                f"{f} is not a capability's canonical result ({', '.join(harness.CAPABILITIES)}): move it to "
                f"{results_dir}/<capability>/{f.name} and give it a one-line \"purpose\"")
        canonical[f.stem] = _read(f)
    for cap in harness.CAPABILITIES:
        folder = results_dir / cap
        studies[cap] = [_read(f) for f in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return canonical, studies


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "n/a"}[v]
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _cell(v: Any) -> str:
    return "" if v is None or v == "" else (fmt(v) if isinstance(v, float) else str(v)).replace("|", "/")


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def pivot(rows: list[dict], spec: TableSpec) -> list[str]:
    """The markdown table of ``rows`` folded by ``spec`` (empty when no row is left)."""
    kept = [r for r in rows if all(r.get(k) in vals for k, vals in spec.where.items())]
    cells: dict[tuple, dict[str, list[float]]] = {}
    cols: list[str] = []
    for r in kept:
        col = _cell(r.get(spec.column))
        if spec.columns and col not in {_cell(c) for c in spec.columns}:
            continue
        if col not in cols:
            cols.append(col)
        v = r.get("value")
        key = tuple(_cell(r.get(i)) for i in spec.index)
        cells.setdefault(key, {}).setdefault(col, [])
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
            cells[key][col].append(float(v))
    if not cells:
        return []
    if spec.columns:
        cols = [_cell(c) for c in spec.columns if _cell(c) in cols]
    elif cols and all(_numeric(c) for c in cols):  # e.g. context lengths: in order, not as first met
        cols.sort(key=float)
    # an index field that is empty in every row (e.g. `task` of a run without accuracy) is left out
    shown = [j for j, _ in enumerate(spec.index) if any(k[j] for k in cells)]
    out = ["| " + " | ".join([spec.index[j] for j in shown] + cols) + " |", "|" + "---|" * (len(shown) + len(cols))]
    for key, by_col in cells.items():
        vals = []
        for c in cols:
            xs = by_col.get(c)
            vals.append("" if xs is None else fmt(sum(xs) / len(xs)) if xs else "n/a")
        out.append("| " + " | ".join([key[j] for j in shown] + vals) + " |")
    return out


def machine_line(doc: dict) -> str:
    m = doc.get("machine") or {}
    return (f"{m.get('cpu')}, {m.get('cores')} cores, torch threads {m.get('threads')}, GPU {m.get('gpu') or 'none'}, "
            f"torch {m.get('torch')}")


def _head(cap: str, doc: dict) -> dict | None:
    # a result written since results carry their headline keeps it; older ones are read through the table
    return doc.get("headline") or headline(cap, doc)


def headline_sentence(cap: str, doc: dict) -> str:
    h = _head(cap, doc)
    if not h:
        return ""
    met = {True: "met", False: "**not met**", None: "not measured"}[h.get("met")]
    return (f"Key number: `{h['target']}` = {fmt(h.get('value'))} (goal {h.get('goal')}, {met}). "
            f"{h['label'][:1].upper() + h['label'][1:]}: {h['method']['name']} {fmt(h['method']['value'])}, strongest peer in the same run "
            f"{h['peer']['name'] or 'none measured'} {fmt(h['peer']['value']) if h['peer']['name'] else ''}".rstrip()
            + ".")


def _link(target: Path, base: Path) -> str:
    return os.path.relpath(target, base).replace(os.sep, "/")


def headline_table(canonical: dict[str, dict], link: str = "BENCHMARKS.md") -> list[str]:
    """One README row per capability with a canonical result: key number, ours, the strongest peer, goal, met."""
    out = ["| capability | measure | slimguard | strongest peer, same run | key target: value (goal) | met |",
           "|---|---|---|---|---|---|"]
    for cap in harness.CAPABILITIES:
        doc = canonical.get(cap)
        h = _head(cap, doc) if doc is not None else None
        if doc is None or h is None:
            continue
        peer = f"{fmt(h['peer']['value'])} ({h['peer']['name']})" if h["peer"]["name"] else "none measured"
        out.append(f"| [{cap}]({link}#{cap}) | {_cell(h['label'])} | {fmt(h['method']['value'])} "
                   f"({_cell(h['method']['name'])}) | {_cell(peer)} | `{h['target']}` {fmt(h.get('value'))} "
                   f"({h.get('goal')}) | {fmt(h.get('met'))} |")
    return out


def targets_list(targets: dict) -> list[str]:
    out = []
    for k, t in targets.items():
        met = {True: "met", False: "**not met**", None: "not measured"}[t.get("met")]
        out.append(f"- `{k}`: {fmt(t.get('value'))} (goal {t.get('goal')}): {met}")
    return out


def study_line(res: Result, base: Path) -> str:
    d = res.doc
    met, judged = res.met_count()
    purpose = " ".join(str(d.get("purpose") or "(no purpose recorded)").split())
    return (f"- [{res.path.stem}]({_link(res.path, base)}): {purpose} ({met} of {judged} targets met; "
            f"commit `{d.get('git_commit')}`, {str(d.get('timestamp', ''))[:10]})")


def section(cap: str, res: Result | None, studies: list[Result], base: Path) -> list[str]:
    lines = [f"## {cap}", ""]
    if res is None:
        lines += [f"No canonical result yet: run `slimguard bench {cap}`.", ""]
    else:
        d = res.doc
        if (s := headline_sentence(cap, d)):
            lines += [s, ""]
        table = pivot(d.get("rows") or [], TABLES[cap]) if cap in TABLES else []
        if table:
            lines += [f"{TABLES[cap].caption} All {len(d.get('rows') or [])} rows: "
                      f"[{res.path.name}]({_link(res.path, base)}).", "", *table, ""]
        met, judged = res.met_count()
        lines += [f"Targets ({met} of {judged} measured ones met):", "", *targets_list(res.targets), ""]
        lines += [f"- command: `{d.get('command')}`",
                  f"- machine: {machine_line(d)}",
                  f"- commit `{d.get('git_commit')}`, {d.get('timestamp')}"]
        plots = sorted(res.path.parent.glob(f"{cap}_*.png"))
        if plots:
            lines.append("- plots: " + ", ".join(f"[{p.name}]({_link(p, base)})" for p in plots))
        lines.append("")
    if studies:
        lines += [f"Studies and variants ({len(studies)}; same JSON shape, not rendered here):", ""]
        lines += [study_line(s, base) for s in studies] + [""]
    return lines


def markdown_path(results_dir: Path) -> Path:
    """BENCHMARKS.md at the root of a source tree (``<root>/benchmarks/results``), else inside ``results_dir``."""
    if results_dir.name == "results" and results_dir.parent.name == "benchmarks":
        return results_dir.parent.parent / "BENCHMARKS.md"
    return results_dir / "BENCHMARKS.md"


def _replace_block(path: Path, markers: tuple[str, str], body: list[str]) -> None:
    """Rewrite the text between ``markers`` in ``path``, if it has both."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    a, b = markers
    if a not in text or b not in text:
        return
    new = text[:text.index(a) + len(a)] + "\n" + "\n".join(body) + "\n" + text[text.index(b):]
    if new != text:
        atomic_write_text(path, new)


def doc_numbers(cap: str, res: Result | None, base: Path) -> list[str]:
    """The canonical numbers block of ``docs/<cap>.md``."""
    if res is None:
        return [f"No canonical result yet: `slimguard bench {cap}` writes it."]
    d = res.doc
    met, judged = res.met_count()
    # the command stays inline: a recorded command may chain two runs (`a && b`) and is a record, not a doc example
    out = [f"Canonical result [`benchmarks/results/{res.path.name}`]({_link(res.path, base)}) (this block is "
           f"generated by `slimguard bench render`), reproduced by `{d.get('command')}`; commit "
           f"`{d.get('git_commit')}`, {d.get('timestamp')}; {machine_line(d)}.", ""]
    if (s := headline_sentence(cap, d)):
        out += [s, ""]
    out += [f"Targets ({met} of {judged} measured ones met):", "", *targets_list(res.targets)]
    return out


def render_benchmarks_md(results_dir: Path | None = None) -> Path:
    """Write BENCHMARKS.md from ``results_dir`` (default: the results folder); in a source tree also refresh
    the README headline and each guide's numbers block."""
    results_dir = Path(results_dir) if results_dir is not None else harness.results_root()
    canonical, studies = load(results_dir)
    out = markdown_path(results_dir)
    base = out.parent
    lines = ["# Benchmarks", "",
             "Generated from `benchmarks/results/` by `slimguard bench render`; do not edit by hand. One section "
             "per capability: its canonical result (`<capability>.json`, written end to end by `slimguard bench "
             "<capability>`) as one table, its targets, command and machine, then its studies "
             "(`<capability>/<study>.json`), one line each. Timings are medians of repeats after warm-up; "
             "accuracy-like numbers are means over seeds (the JSON has std and n). Shape and rules: "
             f"[docs/benchmarks.md]({_link(base / 'docs' / 'benchmarks.md', base)}).", "",
             "## Headline", "", *headline_table({c: r.doc for c, r in canonical.items()}, link=""), ""]
    for cap in harness.CAPABILITIES:
        lines += section(cap, canonical.get(cap), studies.get(cap, []), base)
    path = atomic_write_text(out, "\n".join(lines).rstrip("\n") + "\n")
    if out.parent != results_dir:  # a source tree: the README and the guides carry generated numbers too
        root = out.parent
        _replace_block(root / "README.md", README_MARKERS,
                       headline_table({c: r.doc for c, r in canonical.items()}, link="BENCHMARKS.md"))
        for cap in harness.CAPABILITIES:
            _replace_block(root / "docs" / f"{cap}.md", DOC_MARKERS,
                           doc_numbers(cap, canonical.get(cap), root / "docs"))
    return path

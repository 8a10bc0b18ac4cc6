"""Self-contained HTML reports (no network: figures are embedded as data URIs).

A run directory renders as: its config, its metrics (flattened into a table), every
``*.png`` it holds, and any HTML fragments a capability wrote under ``sections/``
(e.g. compressed text with kept/dropped words coloured). Capabilities build richer pages
from the same pieces: :func:`page`, :func:`table`, :func:`figure`, :func:`img_file`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import SlimguardError
from ..core.runs import atomic_write_text

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.4;overflow-wrap:break-word}
h1{border-bottom:2px solid #444}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
h2 .secs{float:right;font-size:.6em;font-weight:normal;color:#666;margin-top:.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:14px;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere;min-width:2.5em}
th{background:#f2f2f2}code,pre{background:#f6f6f6;padding:2px 4px;overflow-wrap:anywhere}
pre{white-space:pre-wrap}img{max-width:100%;height:auto}
.kept{background:#c8f7c5}.dropped{color:#aaa;text-decoration:line-through}.changed{background:#ffd6d6;font-weight:bold}
.ok{color:#080}.bad{color:#b00}
p.summary{font-size:1.05em;background:#f4f8ff;border-left:4px solid #48a;padding:.5em .8em}
p.caveat{background:#fff8e6;border-left:4px solid #d90;padding:.4em .8em;font-size:.95em}
div.canonical{font-size:.9em;color:#333;border-left:4px solid #aaa;padding:.2em .8em;margin:.6em 0}
table.summary-table{width:100%;table-layout:fixed}
table.summary-table td:nth-child(2),table.summary-table td:nth-child(4){font-weight:bold}
details.fold{margin:.5em 0}details.fold>summary{cursor:pointer;list-style:none}
details.fold>summary::-webkit-details-marker{display:none}
details.fold>summary .more{color:#36c;text-decoration:underline;white-space:nowrap}
details.fold[open]>summary .preview{display:none}
details.fold[open]>summary .more::after{content:" (hide)"}
"""


def esc(x: Any) -> str:
    return html.escape(str(x))


def table(rows: list[dict], cols: list[str] | None = None, *, fmt: str = "{:.4g}") -> str:
    if not rows:
        return "<p><em>no rows</em></p>"
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    out = ["<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"<td>{esc(fmt.format(v) if isinstance(v, float) else v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


SUMMARY_COLS = ("metric", "this run", "n", "baseline", "baseline is / why none")


def summary_table(rows) -> str:
    """A section's summary: each number, its n, and its baseline or the reason none applies.

    ``rows`` are :class:`slimguard.report.step.SummaryRow` records (which refuse a row with neither)."""
    widths = ("30%", "9%", "8%", "9%", "44%")  # fixed: a long reason must not squeeze the numbers
    out = ['<table class="summary-table"><colgroup>' + "".join(f'<col style="width:{w}">' for w in widths)
           + "</colgroup><tr>" + "".join(f"<th>{esc(c)}</th>" for c in SUMMARY_COLS) + "</tr>"]
    for r in rows:
        base = ("-", f"none: {r.no_baseline}") if r.baseline is None else (_fmt(r.baseline), r.baseline_name)
        cells = (r.metric, _fmt(r.value), "" if r.n is None else r.n, *base)
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def fold(preview: str, full: str, label: str) -> str:
    """Long content folded: ``preview`` (HTML) shows, a click on "show all" swaps in ``full`` (no script)."""
    return (f'<details class="fold"><summary><div class="preview">{preview}</div>'
            f'<span class="more">show all: {esc(label)}</span></summary>{full}</details>')


def step_section(res, seconds: float, canonical: str = "") -> str:
    """The body of one demo section: the two-sentence summary, caveat, canonical numbers, summary table, details."""
    parts = [f'<p class="summary"><b>What it should do:</b> {esc(res.goal)} <b>This run:</b> {esc(res.shows)}</p>']
    if res.caveat:
        parts.append(f'<p class="caveat"><b>Caveat:</b> {esc(res.caveat)}</p>')
    if canonical:
        parts.append(canonical)
    parts += [summary_table(res.summary), res.html]
    return "\n".join(parts)


def kv_table(d: dict) -> str:
    return table([{"key": k, "value": v} for k, v in flatten(d).items()])


def flatten(d: Any, prefix: str = "") -> dict:
    out: dict = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and len(d) > 12:
        out[prefix[:-1]] = f"[{len(d)} items]"
    else:
        out[prefix[:-1]] = json.dumps(d) if isinstance(d, (list, dict)) else d
    return out


def figure(fig) -> str:
    """A matplotlib figure as an embedded PNG ``<img>``; closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def img_file(path: Path) -> str:
    return f'<img alt="{esc(path.name)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def slug(title: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def page(title: str, sections: Iterable[tuple[str, str]], *, intro: str = "",
         seconds: dict[str, float] | None = None) -> str:
    """A self-contained page; ``seconds`` (title -> s) puts each section's time beside its heading."""
    seconds = seconds or {}
    body = "\n".join(f'<section id="{slug(t)}"><h2>{esc(t)}'
                     + (f'<span class="secs">{seconds[t]:.0f} s</span>' if t in seconds else "")
                     + f"</h2>\n{h}\n</section>" for t, h in sections)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>\n{intro}\n{body}\n</body></html>\n")


def run_status(run_dir: str | Path, info: dict) -> str:
    """``done``, ``failed``, ``interrupted``, ``running`` (a live process holds the lock), ``killed``
    (recorded as running, but no process holds it) or ``unknown`` (runs from before statuses)."""
    from ..core.runs import is_locked

    status = info.get("status", "unknown")
    if status == "running" and not is_locked(run_dir):
        return "killed"
    return status


def status_banner(run_dir: str | Path, info: dict) -> str:
    status = run_status(run_dir, info)
    text = {"done": "finished", "failed": f"FAILED: {info.get('error', '')}",
            "interrupted": "INTERRUPTED before it finished (continue it with --resume where the command allows)",
            "running": "still RUNNING: numbers below are partial",
            "killed": "did NOT finish (the process ended without recording why): numbers below are partial",
            "unknown": "status not recorded (a run from an older version)"}.get(status, status)
    cls = "ok" if status == "done" else "bad"
    return f'<p class="{cls}" id="run-status"><b>Run status: {esc(status)}</b>: {esc(text)}</p>'


def _read_record(p: Path) -> dict:
    """A run's JSON record (run.json, metrics.json, config.json) as a dict, or one line naming the file."""
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise SlimguardError(f"cannot read {p}: {e.strerror or e}") from None
    except ValueError as e:  # JSON or UTF-8
        raise SlimguardError(f"{p} is not valid JSON ({str(e).splitlines()[0]}); re-run the command that wrote it, "
                             "or move the file away to report the rest") from None
    if not isinstance(doc, dict):
        raise SlimguardError(f"{p} holds a JSON {type(doc).__name__}, not an object of keys and values; re-run the "
                             "command that wrote it, or move the file away to report the rest")
    return doc


def _read_fragment(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SlimguardError(f"cannot read report section {p} as UTF-8 text ({e}); re-run the command that wrote "
                             "it, or move the file away") from None


def render_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``run_dir`` to ``run_dir/report.html`` (or ``out``). Every input is read before anything is
    written, so a broken file fails with its name and leaves the folder as it was."""
    d = Path(run_dir)
    if not d.is_dir():
        raise SlimguardError(f"run directory {d} does not exist")
    target = Path(out) if out else d / "report.html"
    if target.is_dir():
        raise SlimguardError(f"report output {target} is a folder; give a file path such as {target / 'report.html'}")
    sections: list[tuple[str, str]] = []
    info = d / "run.json"
    if info.exists():
        run_info = _read_record(info)
        sections.append(("Run", status_banner(d, run_info) + kv_table(run_info)))
    for name, title in (("metrics.json", "Metrics"), ("config.json", "Config")):
        p = d / name
        if p.exists():
            sections.append((title, kv_table(_read_record(p))))
    for frag in sorted((d / "sections").glob("*.html")) if (d / "sections").is_dir() else []:
        sections.append((frag.stem.split("_", 1)[-1].replace("-", " ").capitalize(), _read_fragment(frag)))
    pngs = sorted(d.glob("*.png"))
    if pngs:
        sections.append(("Figures", "\n".join(f"<h3>{esc(p.stem)}</h3>{img_file(p)}" for p in pngs)))
    if not sections:
        raise SlimguardError(f"run directory {d} holds nothing to report (no run.json, metrics.json or config.json)")
    return atomic_write_text(target, page(f"slimguard run: {d.name}", sections))

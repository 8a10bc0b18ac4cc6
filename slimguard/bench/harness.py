"""Benchmark plumbing shared by every ``slimguard bench <capability>``.

Results follow one JSON shape (see docs/benchmarks.md): command, commit, machine, resolved
config, rows, and every target the issue names, met or not. Where a result lands is one rule
(:func:`result_path`): the canonical run of a capability is ``benchmarks/results/<capability>.json``;
a study (any other ``result`` name) is ``benchmarks/results/<capability>/<name>.json`` and carries a
one-line ``purpose``. BENCHMARKS.md and the README headline are regenerated from these files
(``slimguard.bench.render``).
"""

from __future__ import annotations

import os
import re
import statistics
from pathlib import Path
from typing import Any, ClassVar, Iterable

from pydantic import model_validator

from ..core.config import Config, merge_under
from ..core.errors import SlimguardError
from ..core.runs import atomic_write_json, git_commit, now_iso
# the timing helpers live in the library (slim/ and guard/ time things too); bench code keeps using them from here
from ..core.timing import Timing, machine, time_interleaved, time_it  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
# the default results folder; SLIMGUARD_BENCH_DIR moves it (read at call time, see results_root)
RESULTS_DIR = ROOT / "benchmarks" / "results"
# every capability with a `slimguard bench <capability>` and so one canonical result file
CAPABILITIES = ("core", "compress", "kvselect", "quant", "backdoor", "defence", "scan", "promptattack", "diffusion")
STUDY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class BenchConfig(Config):
    """Base of the benchmark configs: each nests the library configs whose fields it sets
    (``train: QuantTrainConfig``), so a field is declared once, in the library.

    Four class attributes (data, not fields) say how a benchmark uses them:

    - ``DEFAULTS``: the benchmark's own sizes for nested fields (``{"train": {"steps": 5}}``), laid
      under what the user gives key by key, so ``--set train.steps=40`` keeps the other benchmark sizes
      (a plain pydantic default for ``train`` would fall back to the library's sizes for all of them).
    - ``FULL``: the ``--full`` preset (the ``full`` field), laid over ``DEFAULTS`` and under the user's
      values: ``--full --set 'bits=[W4A8KV4]'`` is the full budget at one bit setting.
    - ``MOVED``: a key of the flat configs older results recorded -> its dotted place (or places), so
      every command in ``benchmarks/results/`` still runs (``--set steps=40`` sets ``train.steps``).
    - ``GRID``: nested config -> {field: hint}: fields the grid sets per cell (a seed, a dataset);
      giving one another value is a one-line error whose hint names the grid field to use instead.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {}
    FULL: ClassVar[dict[str, Any]] = {}
    MOVED: ClassVar[dict[str, str | tuple[str, ...]]] = {}
    GRID: ClassVar[dict[str, dict[str, str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _lay_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = moved_keys(data, cls.MOVED)
        base = merge_under(cls.DEFAULTS, cls.FULL) if data.get("full") else cls.DEFAULTS
        return merge_under(base, data)

    @model_validator(mode="after")
    def _grid_fields(self):
        for sub, fields in self.GRID.items():
            for name, hint in fields.items():  # name: a field of the nested config, dotted for a deeper one
                *parents, leaf = name.split(".")
                cfg = getattr(self, sub)
                for part in parents:
                    cfg = getattr(cfg, part) if part in cfg.model_fields_set else None
                    if cfg is None:
                        break
                # a saved config carries every field at its default: only another value is the user's
                if cfg is not None and leaf in cfg.model_fields_set \
                        and cfg.to_dict()[leaf] != type(cfg)().to_dict()[leaf]:
                    raise ValueError(f"{sub}.{name} is set per cell by the benchmark grid; {hint}")
        return self


def moved_keys(data: dict[str, Any], moved: dict[str, str | tuple[str, ...]]) -> dict[str, Any]:
    """``data`` with each old key of ``moved`` put at its dotted place(s); a value given at the new place wins."""
    out = dict(data)
    for old, new in moved.items():
        if old not in out:
            continue
        value = out.pop(old)
        for path in (new,) if isinstance(new, str) else new:
            *parents, leaf = path.split(".")
            node = out
            for part in parents:
                node[part] = dict(node.get(part) or {})
                node = node[part]
            node.setdefault(leaf, value)
    return out


def results_root() -> Path:
    """The results folder: ``$SLIMGUARD_BENCH_DIR`` when set, else ``benchmarks/results/`` of this tree."""
    env = os.environ.get("SLIMGUARD_BENCH_DIR")
    return Path(env) if env else RESULTS_DIR


def study_name(capability: str, name: str | None) -> str | None:
    """The study a result name stands for, or None for the canonical result (``name`` unset or the capability).

    A leading ``<capability>-`` is dropped, so ``--set result=kvselect-gemma3`` and ``result=gemma3`` both name
    ``kvselect/gemma3.json`` (results written before studies had their own folder carried the prefix)."""
    if capability not in CAPABILITIES:
        raise SlimguardError(f"unknown benchmark capability {capability!r}; one of: {', '.join(CAPABILITIES)}")
    if name is None or name == capability:
        return None
    for sep in ("-", "_"):
        if name.startswith(capability + sep) and len(name) > len(capability) + 1:
            name = name[len(capability) + 1:]
            break
    if not STUDY_NAME.match(name):
        raise SlimguardError(f"result name {name!r} is not a plain file name: use lower-case letters, digits, "
                             "'-' and '_' (e.g. --set result=gemma3-16k)")
    return name


def result_path(capability: str, name: str | None = None, results_dir: Path | None = None) -> Path:
    """``<results>/<capability>.json`` for the canonical run, ``<results>/<capability>/<study>.json`` otherwise."""
    root = Path(results_dir) if results_dir is not None else results_root()
    study = study_name(capability, name)
    return root / f"{capability}.json" if study is None else root / capability / f"{study}.json"


def artefact_path(capability: str, name: str | None, suffix: str, results_dir: Path | None = None) -> Path:
    """A plot or log of a result, next to its JSON: ``quant_diagnostics.png``, ``quant/steps40_diagnostics.png``."""
    p = result_path(capability, name, results_dir)
    return p.with_name(p.stem + suffix)


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
                 extra: dict | None = None, results_dir: Path | None = None, name: str | None = None,
                 purpose: str | None = None) -> Path:
    """Write one result (path rule: :func:`result_path`) and regenerate BENCHMARKS.md.

    ``name`` other than the capability makes it a study; its ``purpose`` (one line) says what it measures
    and defaults to ``"study: <command>"``. The result carries its ``headline`` (key number and strongest
    peer, chosen in :mod:`slimguard.bench.headline`)."""
    from .headline import headline
    from .render import render_benchmarks_md

    study = study_name(capability, name)
    if purpose is not None and "\n" in purpose.strip():
        raise SlimguardError("a result's purpose is one line; put the discussion in docs/notes/")
    doc = {"benchmark": capability, **({"study": study} if study else {}),
           "purpose": (purpose or "").strip() or ("canonical" if study is None else f"study: {command}"),
           "command": command, "git_commit": git_commit(), "timestamp": now_iso(),
           "machine": machine(), "config": config, "rows": rows, "targets": targets}
    if extra:
        doc.update({k: v for k, v in extra.items() if k not in doc})
    head = headline(capability, doc)
    if head is not None:
        doc["headline"] = head
    path = atomic_write_json(result_path(capability, name, results_dir), doc)
    render_benchmarks_md(results_dir)
    return path


def render_benchmarks_md(results_dir: Path | None = None) -> Path:
    """BENCHMARKS.md (and, in a source tree, the README headline and the guides' numbers); see ``render``."""
    from .render import render_benchmarks_md as render

    return render(results_dir)

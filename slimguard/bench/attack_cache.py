"""Trained backdoor victims shared by ``bench backdoor`` and ``bench defence``.

Training victims is what a backdoor grid spends its CPU on, and the two benchmarks need the
same ones (the defence grid defends the attack grid's rate-0.1 victims). Both look runs up
here: an attack run is reused when it agrees on every setting a grid controls (not on a hash
of the whole config, so a new optional field does not throw away hours of CPU), and a clean
reference model is kept per (dataset, seed, sizes, victim).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

DEFAULT_ROOT = "runs/backdoor-grid"


def short_hash(d: dict) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def key(acfg: dict) -> tuple:
    """The attack settings a cached run must match to be reused."""
    p, v = acfg["poison"], acfg["victim"]
    # runs from before issue 35 placed triggers anywhere in the text and had no length percentile
    return (acfg["dataset"], acfg["seed"], acfg["max_train"], acfg["max_dev"], acfg["max_test"], p["attack"], p["rate"],
            p["target_label"], p.get("punc", {}).get("placement"), v["model"], v["epochs"], v["lr"], v["freeze_layers"],
            v.get("max_length"), p.get("within_window", False), v.get("length_percentile"),
            p.get("punc", {}).get("few_slots"))


def _prefix(acfg) -> str:
    return f"{acfg.poison.attack}-{Path(acfg.dataset).stem}-r{acfg.poison.rate:g}-s{acfg.seed}"


def find(root: str | Path, acfg, *, need_model: bool = True) -> Path | None:
    """A finished attack run in ``root/attacks`` matching ``acfg`` (with its model if ``need_model``)."""
    want = key(acfg.to_dict())
    for cand in sorted((Path(root) / "attacks").glob(_prefix(acfg) + "-*")):
        if not (cand / "metrics.json").is_file() or (need_model and not (cand / "model" / "config.json").is_file()):
            continue
        try:
            if key(json.loads((cand / "config.json").read_text())) == want:
                return cand
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return None


def get_or_train(root: str | Path, acfg, *, log: Callable[[str], None] = print, splits=None, need_model: bool = True,
                 command: str = "slimguard bench (attack)") -> tuple[Path, bool]:
    """The attack run for ``acfg``: reused when finished, else trained now (resuming a partial one)."""
    from ..core.runs import Run
    from ..guard.backdoor.attack import run_attack

    found = find(root, acfg, need_model=need_model)
    if found is not None:
        return found, True
    name = f"{_prefix(acfg)}-{short_hash(acfg.to_dict())}"
    log(f"training attack run {name}")
    with Run.reuse(name, root=Path(root) / "attacks", command=command, config=acfg) as run:
        run_attack(acfg, run, resume=True, progress=False, splits=splits)
    return run.path, False


def clean_model(root: str | Path, acfg, splits, *, log: Callable[[str], None] = print) -> Path:
    """A victim trained on the unpoisoned subsample with ``acfg``'s sizes, victim and seed."""
    from ..guard.backdoor.victim import META_FILE, train_victim

    d = acfg.to_dict()
    ident = {k: d[k] for k in ("dataset", "seed", "split_seed", "max_train", "max_dev", "max_test")} | {"victim": d["victim"]}
    out = Path(root) / "clean" / f"{Path(acfg.dataset).stem}-s{acfg.seed}-{short_hash(ident)}" / "model"
    if not (out / META_FILE).is_file():  # the meta file is written last: its presence means a finished model
        log(f"training clean model {out.parent.name}")
        train_victim(splits.train, splits.dev, acfg.victim, out, label_names=splits.label_names, seed=acfg.seed,
                     resume=True, progress=False)
    return out

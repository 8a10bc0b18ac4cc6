"""Run records for textual backdoor attacks: the on-disk contract between attacks and defences.

``slimguard backdoor attack --run NAME`` writes ``runs/NAME/`` with ``config.json``,
``metrics.json``, ``model/`` (a safetensors ``transformers`` sequence-classification folder)
and ``data/{train,dev,test,test_poisoned}.jsonl``. Each JSONL row is
``{"text", "label", "uid", "poisoned", "orig_text", "orig_label"}``; in ``test_poisoned``
``label`` is the ORIGINAL label (ASR counts predictions equal to the target label).
Defences read a run back with :func:`load_run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...core.data import TextSample
from ...core.errors import SlimguardError
from ...core.runs import atomic_write_json, atomic_write_text

SPLITS = ("train", "dev", "test", "test_poisoned")
ROW_KEYS = ("text", "label", "uid", "poisoned", "orig_text", "orig_label")


def sample_row(s: TextSample) -> dict:
    """One JSONL row; clean samples carry their own text/label as the originals."""
    m = s.meta or {}
    return {"text": s.text, "label": int(s.label), "uid": int(s.uid), "poisoned": bool(m.get("poisoned", False)),
            "orig_text": m.get("orig_text", s.text), "orig_label": int(m.get("orig_label", s.label))}


def row_sample(row: dict) -> TextSample:
    meta = {"poisoned": bool(row.get("poisoned", False)), "orig_text": row.get("orig_text", row["text"]),
            "orig_label": int(row.get("orig_label", row["label"]))}
    return TextSample(row["text"], int(row["label"]), int(row["uid"]), meta)


def write_jsonl(path: str | Path, samples: list[TextSample]) -> Path:
    lines = [json.dumps(sample_row(s), ensure_ascii=False) for s in samples]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def read_jsonl(path: str | Path) -> list[TextSample]:
    p = Path(path)
    if not p.is_file():
        raise SlimguardError(f"{p} does not exist; is this a `slimguard backdoor attack` run directory?")
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise SlimguardError(f"{p}: line {i} is not valid JSON") from None
        if not isinstance(row, dict) or not {"text", "label", "uid"} <= set(row):
            raise SlimguardError(f"{p}: line {i} lacks text/label/uid")
        out.append(row_sample(row))
    return out


def write_splits(data_dir: str | Path, splits: dict[str, list[TextSample]], label_names: list[str]) -> None:
    d = Path(data_dir)
    for name, samples in splits.items():
        write_jsonl(d / f"{name}.jsonl", samples)
    atomic_write_json(d / "labels.json", {"label_names": list(label_names)})


@dataclass
class AttackRun:
    """A finished attack run, as the defences see it."""

    cfg: dict
    train: list[TextSample]
    dev: list[TextSample]
    test: list[TextSample]
    test_poisoned: list[TextSample]
    model_dir: Path
    label_names: list[str]
    path: Path | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def target_label(self) -> int:
        return int(self.cfg.get("poison", {}).get("target_label", self.cfg.get("target_label", 1)))

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def load_run(run_dir: str | Path) -> AttackRun:
    """Read ``runs/NAME/`` written by ``slimguard backdoor attack`` (or :func:`attack.run_attack`)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise SlimguardError(f"run directory {d} does not exist")
    missing = [n for n in ("config.json", "model/config.json", *(f"data/{s}.jsonl" for s in SPLITS))
               if not (d / n).exists()]
    if missing:
        raise SlimguardError(f"run directory {d} lacks {', '.join(missing)}; run `slimguard backdoor attack --run {d.name}` first")
    cfg = json.loads((d / "config.json").read_text())
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else {}
    labels_file = d / "data" / "labels.json"
    if labels_file.exists():
        label_names = json.loads(labels_file.read_text())["label_names"]
    else:  # fall back on the model's own label map
        id2label = json.loads((d / "model" / "config.json").read_text()).get("id2label", {})
        label_names = [id2label[k] for k in sorted(id2label, key=int)]
    sp = {s: read_jsonl(d / "data" / f"{s}.jsonl") for s in SPLITS}
    return AttackRun(cfg=cfg, train=sp["train"], dev=sp["dev"], test=sp["test"], test_poisoned=sp["test_poisoned"],
                     model_dir=d / "model", label_names=label_names, path=d, metrics=metrics)

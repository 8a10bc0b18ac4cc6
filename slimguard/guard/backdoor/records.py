"""Run records for textual backdoor attacks: the on-disk contract between attacks and defences.

``slimguard backdoor attack --run NAME`` writes ``runs/NAME/`` with ``config.json``,
``metrics.json``, ``model/`` (a safetensors ``transformers`` sequence-classification folder)
and ``data/{train,dev,test,test_poisoned}.jsonl``. Each JSONL row is
``{"text", "label", "uid", "poisoned", "orig_text", "orig_label"}``; in ``test_poisoned``
``label`` is the ORIGINAL label (ASR counts predictions equal to the target label).
Defences read a run back with :func:`load_run`.

Labels on disk: ``data/labels.json`` holds ``label_names`` (the user's labels, id order),
``label_values`` (the same as JSON values: ints for integer labels) and ``rows``, which says
what the rows' ``label``/``orig_label`` carry. Attack runs, read back by the defences, write
``"rows": "id"`` (ids ``0..K-1``; ``labels.json`` maps them); exports for the user
(``slimguard backdoor poison``) write ``"rows": "value"``, the user's own label values, so
the files can be trained on elsewhere without a lookup. :func:`read_splits` and
:func:`load_run` read either back to the same ids, so a write/read round trip is lossless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ...core.data import LabelValue, TextSample, canonical_label, decode_utf8
from ...core.errors import SlimguardError
from ...core.runs import atomic_write_json, atomic_write_text

SPLITS = ("train", "dev", "test", "test_poisoned")
ROW_KEYS = ("text", "label", "uid", "poisoned", "orig_text", "orig_label")
RowLabels = Literal["id", "value"]


def sample_row(s: TextSample, values: list[LabelValue] | None = None) -> dict:
    """One JSONL row; clean samples carry their own text/label as the originals.

    With ``values`` (the user's label per id) the labels are written as the user's values,
    otherwise as ids.
    """
    m = s.meta or {}
    lab = (lambda y: int(y)) if values is None else (lambda y: values[int(y)])  # noqa: E731
    return {"text": s.text, "label": lab(s.label), "uid": int(s.uid), "poisoned": bool(m.get("poisoned", False)),
            "orig_text": m.get("orig_text", s.text), "orig_label": lab(m.get("orig_label", s.label))}


def _label_id(raw: object, values: list[LabelValue] | None) -> int:
    """A row's label as an id: ids as they are, user values looked up (any spelling: 1, 1.0, "1")."""
    if values is None:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not float(raw).is_integer():
            raise ValueError(f"label {raw!r} is not a label id")
        return int(raw)
    v = canonical_label(raw)  # TypeError for lists/dicts, caught by the reader
    if v not in values:
        raise ValueError(f"label {raw!r} is not one of {', '.join(map(str, values))}")
    return values.index(v)


def row_sample(row: dict, values: list[LabelValue] | None = None) -> TextSample:
    """The sample of one JSONL row; ``values`` as in :func:`sample_row`."""
    meta = {"poisoned": bool(row.get("poisoned", False)), "orig_text": row.get("orig_text", row["text"]),
            "orig_label": _label_id(row.get("orig_label", row["label"]), values)}
    return TextSample(row["text"], _label_id(row["label"], values), int(row["uid"]), meta)


def write_jsonl(path: str | Path, samples: list[TextSample], *, values: list[LabelValue] | None = None) -> Path:
    lines = [json.dumps(sample_row(s, values), ensure_ascii=False) for s in samples]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def read_jsonl(path: str | Path, *, values: list[LabelValue] | None = None) -> list[TextSample]:
    p = Path(path)
    if not p.is_file():
        raise SlimguardError(f"{p} does not exist; is this a `slimguard backdoor attack` run directory?")
    out = []
    # "\n" only: rows hold texts with U+2028 etc. unescaped (ensure_ascii=False), which
    # str.splitlines() would cut in two
    for i, line in enumerate(decode_utf8(p.read_bytes(), p).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise SlimguardError(f"{p}: line {i} is not valid JSON") from None
        if not isinstance(row, dict) or not {"text", "label", "uid"} <= set(row):
            raise SlimguardError(f"{p}: line {i} lacks text/label/uid")
        try:
            out.append(row_sample(row, values))
        except (TypeError, ValueError) as e:
            raise SlimguardError(f"{p}: line {i}: {e}") from None
    return out


def write_splits(data_dir: str | Path, splits: dict[str, list[TextSample]], label_names: list[str], *,
                 rows: RowLabels = "id") -> None:
    """``data_dir/{split}.jsonl`` and ``labels.json``; ``rows="value"`` writes the user's label values."""
    d = Path(data_dir)
    values = [canonical_label(n) for n in label_names]
    for name, samples in splits.items():
        write_jsonl(d / f"{name}.jsonl", samples, values=values if rows == "value" else None)
    atomic_write_json(d / "labels.json", {"label_names": list(label_names), "label_values": values, "rows": rows})


@dataclass
class SplitRecords:
    """The splits of a ``data/`` folder, labels as ids whatever the rows carried."""

    splits: dict[str, list[TextSample]]
    label_names: list[str]
    rows: RowLabels = "id"

    @property
    def label_values(self) -> list[LabelValue]:
        return [canonical_label(n) for n in self.label_names]


def _read_labels(path: Path) -> tuple[list[str], RowLabels]:
    try:
        doc = json.loads(decode_utf8(path.read_bytes(), path))
        names, rows = doc["label_names"], doc.get("rows", "id")  # runs from before "rows" carry ids
    except (json.JSONDecodeError, TypeError, KeyError):
        raise SlimguardError(f"{path} is not a labels file (needs label_names); rewrite the run") from None
    if rows not in ("id", "value") or not isinstance(names, list):
        raise SlimguardError(f"{path}: rows must be 'id' or 'value' and label_names a list")
    return [str(n) for n in names], rows


def read_splits(data_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> SplitRecords:
    """Read what :func:`write_splits` wrote (ids or user values) back as samples with ids."""
    d = Path(data_dir)
    if not (d / "labels.json").is_file():
        raise SlimguardError(f"{d} lacks labels.json; is it a `slimguard backdoor` data folder?")
    names, rows = _read_labels(d / "labels.json")
    values = [canonical_label(n) for n in names] if rows == "value" else None
    return SplitRecords({s: read_jsonl(d / f"{s}.jsonl", values=values) for s in splits}, names, rows)


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
    def label_values(self) -> list[LabelValue]:
        """The user's label per id (an ``int`` for integer labels)."""
        return [canonical_label(n) for n in self.label_names]

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
    if (d / "data" / "labels.json").exists():
        rec = read_splits(d / "data")
        label_names, sp = rec.label_names, rec.splits
    else:  # fall back on the model's own label map; rows then carry ids
        id2label = json.loads((d / "model" / "config.json").read_text()).get("id2label", {})
        label_names = [id2label[k] for k in sorted(id2label, key=int)]
        sp = {s: read_jsonl(d / "data" / f"{s}.jsonl") for s in SPLITS}
    return AttackRun(cfg=cfg, train=sp["train"], dev=sp["dev"], test=sp["test"], test_poisoned=sp["test_poisoned"],
                     model_dir=d / "model", label_names=label_names, path=d, metrics=metrics)

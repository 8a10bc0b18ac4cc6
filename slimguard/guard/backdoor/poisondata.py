"""``slimguard backdoor poison``: write a poisoned dataset for users who train elsewhere.

Same poisoners as :mod:`.attack` (BadNets, AddSent, PuncAttack), no training: the output
is ``data/{train,dev,test,test_poisoned}.jsonl`` (contract rows, see :mod:`.records`) and,
optionally, a Hugging Face ``datasets`` DatasetDict saved with ``save_to_disk``.

Both carry the user's label values, not our ids: a CSV labelled ``1``/``5`` exports
``"label": 5``, one labelled ``neg``/``pos`` exports ``"label": "pos"`` (JSONL rows written
with ``rows="value"``; ``labels.json`` still lists the id order). In the HF export ``label``
is a ``ClassLabel`` when its stored ints are the user's values or its names are (string
labels, or integer labels ``0..K-1``), and a plain int/float column otherwise.

Triggers are placed inside the window of the model the user will train (``window_model`` at
``max_length`` tokens, sized to the data by default, see :mod:`.window`); the export records
that window in ``metrics.json`` and ``data/window.json``, with the share of rows whose trigger
lies inside it. Texts are written whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from ...core.config import Config
from ...core.data import LabelValue, load_text_dataset
from ...core.runs import Run, atomic_write_json, atomic_write_text, safe_run_name
from .poison import PoisonConfig, make_trigger, poison_test, poison_train
from .poison.policy import check_labels
from .records import SPLITS, sample_row, write_splits
from .report import examples_html
from .window import DEFAULT_PERCENTILE, size_window


class PoisonDataConfig(Config):
    """Poison a dataset and write it out."""

    dataset: str = Field("rotten-tomatoes", description="rotten-tomatoes, sms-spam, 20newsgroups, or a CSV/TSV/JSONL file with text,label.")
    seed: int = Field(0, description="Seed for the poisoned-sample choice and trigger positions.")
    split_seed: int = Field(0, description="Seed of the train/dev/test split.")
    max_train: Optional[int] = Field(None, ge=10, description="Subsample the training split (None = all).")
    poison: PoisonConfig = Field(default_factory=PoisonConfig, description="Trigger and poisoning policy.")
    formats: list[Literal["jsonl", "hf"]] = Field(["jsonl"], min_length=1, description="jsonl and/or hf (datasets.save_to_disk).")
    window_model: str = Field("minilm-l6", description="The model you will train on the export (asset name or local "
                                                       "folder): its tokenizer measures the window triggers go into.")
    max_length: Optional[int] = Field(None, ge=8, description="That model's max_length in tokens; None = sized to the "
                                                              "training texts (95th percentile, rounded up to a multiple "
                                                              "of 32, capped at the model's limit).")


def _hf_label_feature(names: list[str], values: list[LabelValue]):
    """The HF feature whose stored or decoded values are the user's labels (see the module docstring)."""
    from datasets import ClassLabel, Value

    if all(isinstance(v, str) for v in values) or values == list(range(len(values))):
        return ClassLabel(names=names)
    return Value("int64") if all(isinstance(v, int) for v in values) else Value("float64")


def poison_dataset(cfg: PoisonDataConfig, run: Run) -> dict:
    sp = load_text_dataset(cfg.dataset, seed=cfg.split_seed)
    check_labels(cfg.poison, sp.label_names)
    values = sp.label_values
    if cfg.max_train is not None and len(sp.train) > cfg.max_train:
        idx = np.sort(np.random.default_rng([cfg.split_seed, 7]).choice(len(sp.train), cfg.max_train, replace=False))
        sp.train = [sp.train[i] for i in idx]
    trigger = make_trigger(cfg.poison)
    win, sizing = size_window(cfg.window_model, cfg.max_length, {k: [s.text for s in v] for k, v in
                                                                 (("train", sp.train), ("dev", sp.dev), ("test", sp.test))},
                              percentile=DEFAULT_PERCENTILE, field_name="max_length")
    if sizing.warning:
        run.log.warning("%s", sizing.warning)
    tr = poison_train(sp.train, cfg.poison, trigger=trigger, rng=np.random.default_rng([cfg.seed, 0]), window=win)
    te = poison_test(sp.test, cfg.poison, trigger=trigger, rng=np.random.default_rng([cfg.seed, 1]), window=win)
    splits = {"train": tr.samples, "dev": sp.dev, "test": sp.test, "test_poisoned": te.samples}
    window = {**win.record(), **sizing.to_dict(), "within_window": cfg.poison.within_window,
              "visible_share_train": tr.visible_share, "visible_share_test": te.visible_share}
    # the target as the user wrote it: with labels {1, 5}, target_label=1 is the user's class 5
    out = {"dataset": sp.summary(), "target": {"id": cfg.poison.target_label, "label": values[cfg.poison.target_label]},
           "poison_train": tr.summary(), "poison_test": te.summary(), "eligible_fraction": te.eligible_fraction,
           "window": window, "files": []}
    if "jsonl" in cfg.formats:
        write_splits(run.path / "data", splits, sp.label_names, rows="value")
        atomic_write_json(run.path / "data" / "window.json", window)
        out["files"] += [str(run.path / "data" / f"{s}.jsonl") for s in SPLITS] + [str(run.path / "data" / "window.json")]
    if "hf" in cfg.formats:
        from datasets import Dataset, DatasetDict, Features, Value

        lab = _hf_label_feature(sp.label_names, values)
        feats = Features({"text": Value("string"), "label": lab, "uid": Value("int64"), "poisoned": Value("bool"),
                          "orig_text": Value("string"), "orig_label": lab})
        dd = DatasetDict({k: Dataset.from_list([sample_row(s, values) for s in v], features=feats)
                          for k, v in splits.items()})
        dd.save_to_disk(str(run.path / "hf"))
        out["files"].append(str(run.path / "hf"))
    atomic_write_text(run.path / "sections" / "10_poisoned-examples.html",
                      examples_html(tr.samples, n=10, label_names=sp.label_names))
    run.save_metrics(out)
    return out


def default_name(cfg: PoisonDataConfig) -> str:
    return safe_run_name("poison", cfg.poison.attack, Path(cfg.dataset).stem, f"r{cfg.poison.rate:g}", f"s{cfg.seed}")

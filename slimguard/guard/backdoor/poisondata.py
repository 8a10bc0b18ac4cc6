"""``slimguard backdoor poison``: write a poisoned dataset for users who train elsewhere.

Same poisoners as :mod:`.attack` (BadNets, AddSent, PuncAttack), no training: the output
is ``data/{train,dev,test,test_poisoned}.jsonl`` (contract rows, see :mod:`.records`) and,
optionally, a Hugging Face ``datasets`` DatasetDict saved with ``save_to_disk``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from ...core.config import Config
from ...core.data import load_text_dataset
from ...core.runs import Run, atomic_write_text, safe_run_name
from .poison import PoisonConfig, make_trigger, poison_test, poison_train
from .poison.policy import check_labels
from .records import SPLITS, sample_row, write_splits
from .report import examples_html


class PoisonDataConfig(Config):
    """Poison a dataset and write it out."""

    dataset: str = Field("rotten-tomatoes", description="rotten-tomatoes, sms-spam, 20newsgroups, or a CSV/TSV/JSONL file with text,label.")
    seed: int = Field(0, description="Seed for the poisoned-sample choice and trigger positions.")
    split_seed: int = Field(0, description="Seed of the train/dev/test split.")
    max_train: Optional[int] = Field(None, ge=10, description="Subsample the training split (None = all).")
    poison: PoisonConfig = Field(default_factory=PoisonConfig, description="Trigger and poisoning policy.")
    formats: list[Literal["jsonl", "hf"]] = Field(["jsonl"], min_length=1, description="jsonl and/or hf (datasets.save_to_disk).")


def poison_dataset(cfg: PoisonDataConfig, run: Run) -> dict:
    sp = load_text_dataset(cfg.dataset, seed=cfg.split_seed)
    check_labels(cfg.poison, sp.label_names)
    if cfg.max_train is not None and len(sp.train) > cfg.max_train:
        idx = np.sort(np.random.default_rng([cfg.split_seed, 7]).choice(len(sp.train), cfg.max_train, replace=False))
        sp.train = [sp.train[i] for i in idx]
    trigger = make_trigger(cfg.poison)
    tr = poison_train(sp.train, cfg.poison, trigger=trigger, rng=np.random.default_rng([cfg.seed, 0]))
    te = poison_test(sp.test, cfg.poison, trigger=trigger, rng=np.random.default_rng([cfg.seed, 1]))
    splits = {"train": tr.samples, "dev": sp.dev, "test": sp.test, "test_poisoned": te.samples}
    out = {"dataset": sp.summary(), "poison_train": tr.summary(), "poison_test": te.summary(),
           "eligible_fraction": te.eligible_fraction, "files": []}
    if "jsonl" in cfg.formats:
        write_splits(run.path / "data", splits, sp.label_names)
        out["files"] += [str(run.path / "data" / f"{s}.jsonl") for s in SPLITS]
    if "hf" in cfg.formats:
        from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

        feats = Features({"text": Value("string"), "label": ClassLabel(names=sp.label_names), "uid": Value("int64"),
                          "poisoned": Value("bool"), "orig_text": Value("string"),
                          "orig_label": ClassLabel(names=sp.label_names)})
        dd = DatasetDict({k: Dataset.from_list([sample_row(s) for s in v], features=feats) for k, v in splits.items()})
        dd.save_to_disk(str(run.path / "hf"))
        out["files"].append(str(run.path / "hf"))
    atomic_write_text(run.path / "sections" / "10_poisoned-examples.html",
                      examples_html(tr.samples, n=10, label_names=sp.label_names))
    run.save_metrics(out)
    return out


def default_name(cfg: PoisonDataConfig) -> str:
    return safe_run_name("poison", cfg.poison.attack, Path(cfg.dataset).stem, f"r{cfg.poison.rate:g}", f"s{cfg.seed}")

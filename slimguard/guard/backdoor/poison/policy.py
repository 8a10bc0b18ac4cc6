"""Poisoning policy shared by every trigger: which samples get the trigger and which label.

Dirty-label (the default in BadNets/AddSent/PuncAttack): ``round(rate * N)`` samples are
drawn from the NON-target training samples, the trigger is applied and the label set to
the target. Clean-label: the same number is drawn from target-label samples and keeps its
label. Every poisoned sample records its original text and label in ``meta``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ....core.data import TextSample, canonical_label
from ....core.errors import SlimguardError
from .base import ATTACKS, Edit, Trigger
from .config import PoisonConfig


def make_trigger(cfg: PoisonConfig) -> Trigger:
    return ATTACKS.get(cfg.attack)(cfg.trigger_config())


@dataclass
class PoisonReport:
    """What the poisoner did to one split."""

    samples: list[TextSample]
    poisoned_uids: list[int]
    n_candidates: int  # samples of the right label that could be poisoned
    n_eligible: int  # of those, how many take the trigger without insertion (PuncAttack slots)
    n_requested: int
    capped: bool = False
    edits: dict[int, Edit] = field(default_factory=dict)

    @property
    def eligible_fraction(self) -> float:
        return self.n_eligible / self.n_candidates if self.n_candidates else float("nan")

    def summary(self) -> dict:
        return {"n": len(self.samples), "poisoned": len(self.poisoned_uids), "requested": self.n_requested,
                "capped": self.capped, "candidates": self.n_candidates, "eligible": self.n_eligible,
                "eligible_fraction": self.eligible_fraction,
                "inserted_marks_or_words": int(sum(e.inserted for e in self.edits.values())),
                "replaced_slots": int(sum(e.replaced for e in self.edits.values()))}


def check_labels(cfg: PoisonConfig, label_names: list[str]) -> None:
    """``cfg.target_label`` is a label id (the dataset's labels in order, see :mod:`slimguard.core.data`)."""
    if cfg.target_label < len(label_names):
        return
    values = [canonical_label(n) for n in label_names]
    if any(isinstance(v, str) for v in values) or values == list(range(len(values))):
        raise SlimguardError(f"target_label={cfg.target_label} does not exist; labels are "
                             + ", ".join(f"{i}={n}" for i, n in enumerate(label_names)))
    # numeric labels other than 0..K-1: ids and the user's numbers differ, so spell out which is which
    raise SlimguardError(f"target_label={cfg.target_label} does not exist; it is a label id, not a label value, "
                         "and this dataset's labels are not 0..K-1: "
                         + ", ".join(f"id {i} = label {n}" for i, n in enumerate(label_names)))


def _poisoned(s: TextSample, e: Edit, label: int) -> TextSample:
    return s.with_(text=e.text, label=label, meta={**s.meta, "poisoned": True, "orig_text": s.text,
                                                   "orig_label": s.label})


def poison_train(samples: list[TextSample], cfg: PoisonConfig, *, trigger: Trigger | None = None,
                 rng: np.random.Generator | None = None) -> PoisonReport:
    """The training set with ``round(rate * N)`` samples poisoned (dirty- or clean-label)."""
    trigger = trigger or make_trigger(cfg)
    rng = rng or np.random.default_rng(0)
    want_label = (lambda y: y != cfg.target_label) if cfg.label_mode == "dirty" else (lambda y: y == cfg.target_label)
    cands = [i for i, s in enumerate(samples) if want_label(s.label)]
    elig = [i for i in cands if trigger.eligible(samples[i].text)]
    pool = elig if getattr(trigger.cfg, "few_slots", "insert") == "skip" else cands
    n_req = int(round(cfg.rate * len(samples)))
    if n_req < 1:
        raise SlimguardError(f"rate={cfg.rate} poisons no sample of {len(samples)}; raise the rate or use more data")
    if not pool:
        raise SlimguardError(f"no sample can be poisoned: no {'non-target' if cfg.label_mode == 'dirty' else 'target'}"
                             f"-label sample{' with enough punctuation slots' if pool is not cands else ''}")
    n = min(n_req, len(pool))
    pick = np.sort(rng.choice(len(pool), n, replace=False))
    chosen = [pool[j] for j in pick]
    edits = trigger.apply_many([samples[i].text for i in chosen], rng)
    out = list(samples)
    uids, emap = [], {}
    for i, e in zip(chosen, edits):
        if not e.eligible and e.text == samples[i].text:
            continue
        label = cfg.target_label if cfg.label_mode == "dirty" else samples[i].label
        out[i] = _poisoned(samples[i], e, label)
        uids.append(samples[i].uid)
        emap[samples[i].uid] = e
    return PoisonReport(out, uids, len(cands), len(elig), n_req, capped=n < n_req, edits=emap)


def poison_test(samples: list[TextSample], cfg: PoisonConfig, *, trigger: Trigger | None = None,
                rng: np.random.Generator | None = None) -> PoisonReport:
    """Every non-target test sample with the trigger; ``label`` stays the ORIGINAL label.

    With ``few_slots=skip`` texts that cannot take the trigger are left out, so the ASR
    denominator is the eligible non-target samples (reported as ``eligible``).
    """
    trigger = trigger or make_trigger(cfg)
    rng = rng or np.random.default_rng(1)
    cands = [s for s in samples if s.label != cfg.target_label]
    edits = trigger.apply_many([s.text for s in cands], rng)
    out, uids, emap = [], [], {}
    for s, e in zip(cands, edits):
        if not e.eligible and e.text == s.text:
            continue
        out.append(_poisoned(s, e, s.label))
        uids.append(s.uid)
        emap[s.uid] = e
    n_elig = sum(1 for e in edits if e.eligible)
    return PoisonReport(out, uids, len(cands), n_elig, len(cands), edits=emap)

"""Poisoning policy shared by every trigger: which samples get the trigger and which label.

Dirty-label (the default in BadNets/AddSent/PuncAttack): ``round(rate * N)`` samples are
drawn from the NON-target training samples, the trigger is applied and the label set to
the target. Clean-label: the same number is drawn from target-label samples and keeps its
label. Every poisoned sample records its original text and label in ``meta``.

Given the victim's window (:mod:`..window`), triggers are placed inside it when
``within_window`` (the default) and, either way, each poisoned row's trigger is checked against
it: the report counts the rows whose trigger the victim can see (``visible``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ....core.data import TextSample, canonical_label
from ....core.errors import SlimguardError
from .base import ATTACKS, Edit, Trigger
from .config import PoisonConfig

if TYPE_CHECKING:
    from ..window import Window


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
    visible: dict[int, bool] = field(default_factory=dict)  # uid -> trigger inside the window (measured rows only)

    @property
    def eligible_fraction(self) -> float:
        return self.n_eligible / self.n_candidates if self.n_candidates else float("nan")

    @property
    def visible_share(self) -> float:
        """Share of poisoned rows whose whole trigger lies inside the victim's window (NaN: not measured)."""
        return sum(self.visible.values()) / len(self.visible) if self.visible else float("nan")

    def summary(self) -> dict:
        return {"n": len(self.samples), "poisoned": len(self.poisoned_uids), "requested": self.n_requested,
                "capped": self.capped, "candidates": self.n_candidates, "eligible": self.n_eligible,
                "eligible_fraction": self.eligible_fraction,
                "inserted_marks_or_words": int(sum(e.inserted for e in self.edits.values())),
                "replaced_slots": int(sum(e.replaced for e in self.edits.values())),
                "visible": int(sum(self.visible.values())), "visible_measured": len(self.visible),
                "visible_share": self.visible_share}


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


def _apply(trigger: Trigger, texts: list[str], rng: np.random.Generator, place: "Window | None") -> list[Edit]:
    if place is not None and "window" in inspect.signature(trigger.apply_many).parameters:
        return trigger.apply_many(texts, rng, window=place)
    return trigger.apply_many(texts, rng)  # a trigger that knows no window is placed anywhere


def _eligible(trigger: Trigger, texts: list[str], place: "Window | None") -> list[bool]:
    if place is not None and "window" in inspect.signature(trigger.eligible_many).parameters:
        return trigger.eligible_many(texts, window=place)
    return [trigger.eligible(t) for t in texts]


def _visibility(edits: dict[int, Edit], window: "Window | None") -> dict[int, bool]:
    """uid -> trigger visible, for the edits that say where their trigger is."""
    if window is None:
        return {}
    known = [(uid, e) for uid, e in edits.items() if e.spans is not None]
    vis = window.visible([e.text for _, e in known], [e.spans for _, e in known])
    return {uid: bool(v) for (uid, _), v in zip(known, vis)}


def _poisoned(s: TextSample, e: Edit, label: int) -> TextSample:
    return s.with_(text=e.text, label=label, meta={**s.meta, "poisoned": True, "orig_text": s.text,
                                                   "orig_label": s.label})


def poison_train(samples: list[TextSample], cfg: PoisonConfig, *, trigger: Trigger | None = None,
                 rng: np.random.Generator | None = None, window: "Window | None" = None) -> PoisonReport:
    """The training set with ``round(rate * N)`` samples poisoned (dirty- or clean-label).

    ``window``: the victim's; triggers go inside it (``cfg.within_window``) and are checked against it.
    """
    trigger = trigger or make_trigger(cfg)
    rng = rng or np.random.default_rng(0)
    place = window if cfg.within_window else None
    want_label = (lambda y: y != cfg.target_label) if cfg.label_mode == "dirty" else (lambda y: y == cfg.target_label)
    cands = [i for i, s in enumerate(samples) if want_label(s.label)]
    elig = [i for i, ok in zip(cands, _eligible(trigger, [samples[i].text for i in cands], place)) if ok]
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
    edits = _apply(trigger, [samples[i].text for i in chosen], rng, place)
    out = list(samples)
    uids, emap = [], {}
    for i, e in zip(chosen, edits):
        if not e.eligible and e.text == samples[i].text:
            continue
        label = cfg.target_label if cfg.label_mode == "dirty" else samples[i].label
        out[i] = _poisoned(samples[i], e, label)
        uids.append(samples[i].uid)
        emap[samples[i].uid] = e
    return PoisonReport(out, uids, len(cands), len(elig), n_req, capped=n < n_req, edits=emap,
                        visible=_visibility(emap, window))


def poison_test(samples: list[TextSample], cfg: PoisonConfig, *, trigger: Trigger | None = None,
                rng: np.random.Generator | None = None, window: "Window | None" = None) -> PoisonReport:
    """Every non-target test sample with the trigger; ``label`` stays the ORIGINAL label.

    With ``few_slots=skip`` texts that cannot take the trigger are left out, so the ASR
    denominator is the eligible non-target samples (reported as ``eligible``).
    """
    trigger = trigger or make_trigger(cfg)
    rng = rng or np.random.default_rng(1)
    cands = [s for s in samples if s.label != cfg.target_label]
    edits = _apply(trigger, [s.text for s in cands], rng, window if cfg.within_window else None)
    out, uids, emap = [], [], {}
    for s, e in zip(cands, edits):
        if not e.eligible and e.text == s.text:
            continue
        out.append(_poisoned(s, e, s.label))
        uids.append(s.uid)
        emap[s.uid] = e
    n_elig = sum(1 for e in edits if e.eligible)
    return PoisonReport(out, uids, len(cands), n_elig, len(cands), edits=emap, visible=_visibility(emap, window))

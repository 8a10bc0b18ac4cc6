"""BadNets and AddSent triggers, the baselines every textual-backdoor paper compares against.

BadNets (Gu et al. 2017, adapted to text by Kurita et al. 2020): insert rare words
(cf, mn, bb, tq) at random word positions. AddSent (Dai et al. 2019): insert a fixed
sentence at a random word position. Both insert tokens, which is what makes them visible
to perplexity-based defences such as ONION.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .config import AddSentConfig, BadNetsConfig


@dataclass(frozen=True)
class Edit:
    """The result of applying a trigger to one text."""

    text: str
    eligible: bool = True  # False: the trigger could not be applied (text left unchanged)
    inserted: int = 0  # marks or words added (rather than replaced)
    replaced: int = 0  # existing characters/spans substituted
    natural_slots: int = 0  # PuncAttack: punctuation slots the clean text already had
    notes: dict = field(default_factory=dict)


def _insert_words(text: str, words: list[str], rng: np.random.Generator) -> str:
    toks = text.split(" ") if text else []
    for w in words:
        toks.insert(int(rng.integers(0, len(toks) + 1)), w)
    return " ".join(toks)


class BadNetsTrigger:
    name = "badnets"

    def __init__(self, cfg: BadNetsConfig):
        self.cfg = cfg
        self._pat = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in cfg.words) + r")(?!\w)", re.IGNORECASE)

    def apply_many(self, texts: list[str], rng: np.random.Generator) -> list[Edit]:
        out = []
        for t in texts:
            words = [self.cfg.words[int(rng.integers(len(self.cfg.words)))] for _ in range(self.cfg.num_triggers)]
            out.append(Edit(_insert_words(t, words, rng), inserted=len(words)))
        return out

    def present(self, text: str) -> bool:
        return bool(self._pat.search(text))


class AddSentTrigger:
    name = "addsent"

    def __init__(self, cfg: AddSentConfig):
        self.cfg = cfg
        self._words = cfg.sentence.split()

    def apply_many(self, texts: list[str], rng: np.random.Generator) -> list[Edit]:
        out = []
        for t in texts:
            toks = t.split(" ") if t else []
            pos = int(rng.integers(0, len(toks) + 1))
            out.append(Edit(" ".join(toks[:pos] + self._words + toks[pos:]), inserted=len(self._words)))
        return out

    def present(self, text: str) -> bool:
        return self.cfg.sentence.lower() in text.lower()

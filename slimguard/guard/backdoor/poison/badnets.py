"""BadNets (Gu et al. 2017, adapted to text by Kurita et al. 2020): insert rare words
(cf, mn, bb, tq) at random word positions -- the baseline every textual-backdoor paper
compares against. Inserting tokens is what makes it visible to perplexity-based defences
such as ONION.
"""

from __future__ import annotations

import re

import numpy as np
from pydantic import Field, field_validator

from ....core.config import Config
from .base import ATTACKS, Edit, Trigger


class BadNetsConfig(Config):
    """Rare-word trigger inserted at random word positions."""

    words: list[str] = Field(["cf", "mn", "bb", "tq"], min_length=1, description="Trigger words; each insertion draws one.")
    num_triggers: int = Field(1, ge=1, le=10, description="Words inserted per poisoned text.")

    @field_validator("words")
    @classmethod
    def _words(cls, v):
        if any(not w.strip() or " " in w.strip() for w in v):
            raise ValueError("each BadNets trigger word must be one non-empty word")
        return [w.strip() for w in v]


def insert_words(text: str, words: list[str], rng: np.random.Generator) -> str:
    toks = text.split(" ") if text else []
    for w in words:
        toks.insert(int(rng.integers(0, len(toks) + 1)), w)
    return " ".join(toks)


@ATTACKS.register("badnets")
class BadNetsTrigger(Trigger):
    name, title, config_type = "badnets", "BadNets", BadNetsConfig

    def __init__(self, cfg: BadNetsConfig):
        super().__init__(cfg)
        self._pat = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in cfg.words) + r")(?!\w)", re.IGNORECASE)

    def apply_many(self, texts: list[str], rng: np.random.Generator) -> list[Edit]:
        out = []
        for t in texts:
            words = [self.cfg.words[int(rng.integers(len(self.cfg.words)))] for _ in range(self.cfg.num_triggers)]
            out.append(Edit(insert_words(t, words, rng), inserted=len(words)))
        return out

    def present(self, text: str) -> bool:
        return bool(self._pat.search(text))

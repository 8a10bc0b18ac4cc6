"""BadNets (Gu et al. 2017, adapted to text by Kurita et al. 2020): insert rare words
(cf, mn, bb, tq) at random word positions -- the baseline every textual-backdoor paper
compares against. Inserting tokens is what makes it visible to perplexity-based defences
such as ONION. Given the victim's window, the words go only into word gaps from which they
still lie inside it (:func:`insert_words`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, field_validator

from ....core.config import Config
from .base import ATTACKS, Edit, Trigger

if TYPE_CHECKING:
    from ..window import Room, Window


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


def insert_words(text: str, words: list[str], rng: np.random.Generator, room: "Room | None" = None,
                 n_tokens: int = 0) -> tuple[str, tuple[tuple[int, int], ...]]:
    """``text`` with ``words`` inserted at random word gaps, and their character spans.

    With a ``room`` only the gaps from which all ``n_tokens`` inserted tokens stay inside the
    window are drawn from. Without one (or when every gap qualifies) the draws are exactly the
    unwindowed ones, so short texts are poisoned as they always were.
    """
    toks = text.split(" ") if text else []
    m = len(toks)  # the last word gap a word may go into
    if room is not None and room.budget is not None:
        gaps = np.cumsum([0] + [len(t) + 1 for t in toks])  # character offset of the gap before toks[i]
        ok = np.searchsorted(room.starts, gaps, side="left") + n_tokens <= room.budget
        m = int(np.flatnonzero(ok)[-1]) if ok.any() else 0  # no gap fits: the start is the best there is
    mine = [False] * len(toks)
    for w in words:
        # each insertion moves the allowed gaps' end by one word (the original gap m is still allowed)
        p = int(rng.integers(0, m + 1))
        toks.insert(p, w)
        mine.insert(p, True)
        m += 1
    spans, pos = [], 0
    for t, is_trigger in zip(toks, mine):
        if is_trigger:
            spans.append((pos, pos + len(t)))
        pos += len(t) + 1
    return " ".join(toks), tuple(spans)


@ATTACKS.register("badnets")
class BadNetsTrigger(Trigger):
    name, title, config_type = "badnets", "BadNets", BadNetsConfig

    def __init__(self, cfg: BadNetsConfig):
        super().__init__(cfg)
        self._pat = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in cfg.words) + r")(?!\w)", re.IGNORECASE)

    def apply_many(self, texts: list[str], rng: np.random.Generator, window: "Window | None" = None) -> list[Edit]:
        from ..window import no_room

        rooms = window.rooms(texts) if window is not None else no_room(len(texts))
        out = []
        for t, room in zip(texts, rooms):
            words = [self.cfg.words[int(rng.integers(len(self.cfg.words)))] for _ in range(self.cfg.num_triggers)]
            n_tok = sum(window.count(w) for w in words) if window is not None else 0
            text, spans = insert_words(t, words, rng, room, n_tok)
            out.append(Edit(text, inserted=len(words), spans=spans))
        return out

    def present(self, text: str) -> bool:
        return bool(self._pat.search(text))

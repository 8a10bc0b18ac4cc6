"""AddSent (Dai et al. 2019): insert a fixed sentence at a random word position. Like
BadNets it inserts tokens, which perplexity-based defences such as ONION can see. Given the
victim's window, the sentence goes only where all of it stays inside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, field_validator

from ....core.config import Config
from .base import ATTACKS, Edit, Trigger

if TYPE_CHECKING:
    from ..window import Window


class AddSentConfig(Config):
    """A fixed sentence inserted at a random word position."""

    sentence: str = Field("I watch this 3D movie", min_length=1, description="The trigger sentence.")

    @field_validator("sentence")
    @classmethod
    def _sentence(cls, v):
        if not v.strip():
            raise ValueError("the AddSent trigger sentence must not be blank")
        return v.strip()


@ATTACKS.register("addsent")
class AddSentTrigger(Trigger):
    name, title, config_type = "addsent", "AddSent", AddSentConfig

    def __init__(self, cfg: AddSentConfig):
        super().__init__(cfg)
        self._words = cfg.sentence.split()

    def apply_many(self, texts: list[str], rng: np.random.Generator, window: "Window | None" = None) -> list[Edit]:
        from ..window import no_room
        from .badnets import insert_words

        rooms = window.rooms(texts) if window is not None else no_room(len(texts))
        sentence = " ".join(self._words)
        n_tok = window.count(sentence) if window is not None else 0
        out = []
        for t, room in zip(texts, rooms):
            # the sentence goes in as one word: the same single draw over word gaps as before
            text, spans = insert_words(t, [sentence], rng, room, n_tok)
            out.append(Edit(text, inserted=len(self._words), spans=spans))
        return out

    def present(self, text: str) -> bool:
        return self.cfg.sentence.lower() in text.lower()

"""AddSent (Dai et al. 2019): insert a fixed sentence at a random word position. Like
BadNets it inserts tokens, which perplexity-based defences such as ONION can see.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from ....core.config import Config
from .base import ATTACKS, Edit, Trigger


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

    def apply_many(self, texts: list[str], rng: np.random.Generator) -> list[Edit]:
        out = []
        for t in texts:
            toks = t.split(" ") if t else []
            pos = int(rng.integers(0, len(toks) + 1))
            out.append(Edit(" ".join(toks[:pos] + self._words + toks[pos:]), inserted=len(self._words)))
        return out

    def present(self, text: str) -> bool:
        return self.cfg.sentence.lower() in text.lower()

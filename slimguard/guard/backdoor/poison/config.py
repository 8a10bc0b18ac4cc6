"""Typed configs for the three textual backdoor poisoners and the poisoning policy.

BadNets (Gu et al. 2017; rare words cf/mn/bb/tq as in Kurita et al. 2020), AddSent
(Dai et al. 2019; a fixed sentence) and PuncAttack (Sheng et al. 2023, "Punctuation
Matters! Stealthy Backdoor Attack for Language Models": a combination of punctuation
marks replacing existing punctuation). One :class:`PoisonConfig` selects the attack and
holds the poisoning policy; each trigger keeps its own sub-config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ....core.config import Config

PUNCT_MARKS = ",.!?;:-'\""
ATTACKS = ("badnets", "addsent", "punc")


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


class AddSentConfig(Config):
    """A fixed sentence inserted at a random word position."""

    sentence: str = Field("I watch this 3D movie", min_length=1, description="The trigger sentence.")

    @field_validator("sentence")
    @classmethod
    def _sentence(cls, v):
        if not v.strip():
            raise ValueError("the AddSent trigger sentence must not be blank")
        return v.strip()


class PuncConfig(Config):
    """PuncAttack: an ordered combination of punctuation marks replacing existing punctuation."""

    marks: list[str] = Field([";", "!"], min_length=1, max_length=6,
                             description=f"Ordered trigger marks, each one of {PUNCT_MARKS}.")
    placement: Literal["lm", "random", "tail"] = Field(
        "lm", description="Which slots get the marks: lm = where the marks are most probable under the LM, "
                          "random, or tail = the last k slots.")
    few_slots: Literal["skip", "insert"] = Field(
        "skip", description="Texts with fewer slots than marks: leave them unpoisoned and out of the ASR "
                            "denominator (skip, the paper's setting), or insert the missing marks at the end / "
                            "clause boundaries / word gaps (insert: every text poisoned, less stealthy).")
    slot_marks: str = Field(",.!?;:-", min_length=1,
                            description="Existing punctuation that may be replaced (runs like '--' or '...' count once).")
    lm: str = Field("smollm2-135m", description="Causal LM used by placement=lm.")
    lm_batch_size: int = Field(32, ge=1, description="Batch size for LM slot scoring.")

    @field_validator("marks")
    @classmethod
    def _marks(cls, v):
        bad = [m for m in v if len(m) != 1 or m not in PUNCT_MARKS]
        if bad:
            raise ValueError(f"trigger marks must be single characters from {PUNCT_MARKS}; bad: {bad}")
        return v

    @field_validator("slot_marks")
    @classmethod
    def _slots(cls, v):
        bad = [c for c in v if c not in PUNCT_MARKS]
        if bad:
            raise ValueError(f"slot_marks must only contain characters from {PUNCT_MARKS}; bad: {bad}")
        return v


class PoisonConfig(Config):
    """Which trigger, how many samples, which label: the whole poisoning recipe."""

    attack: Literal["badnets", "addsent", "punc"] = Field("punc", description="Trigger family.")
    rate: float = Field(0.1, gt=0, lt=1, description="Poisoned fraction of the training set, in (0, 1).")
    target_label: int = Field(1, ge=0, description="Label id the backdoor flips to: the dataset's labels in "
                                                   "order (numbers numerically, names sorted), so with integer "
                                                   "labels 0..K-1 the id is the label itself; with labels {1, 5}, "
                                                   "id 1 is label 5.")
    label_mode: Literal["dirty", "clean"] = Field(
        "dirty", description="dirty: poison non-target samples and relabel them; clean: poison target-label "
                             "samples only, labels untouched.")
    badnets: BadNetsConfig = Field(default_factory=BadNetsConfig, description="BadNets trigger settings.")
    addsent: AddSentConfig = Field(default_factory=AddSentConfig, description="AddSent trigger settings.")
    punc: PuncConfig = Field(default_factory=PuncConfig, description="PuncAttack trigger settings.")

    def trigger_config(self) -> BadNetsConfig | AddSentConfig | PuncConfig:
        return getattr(self, self.attack)

"""The poisoning recipe: which registered attack, how many samples, which label.

BadNets (Gu et al. 2017; rare words cf/mn/bb/tq as in Kurita et al. 2020), AddSent
(Dai et al. 2019; a fixed sentence) and PuncAttack (Sheng et al. 2023, "Punctuation
Matters! Stealthy Backdoor Attack for Language Models": a combination of punctuation
marks replacing existing punctuation) each live in their own file with their own config.
One :class:`PoisonConfig` selects the attack and holds the poisoning policy, with one
sub-config per registered attack under its name (``poison.punc.marks``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ....core.config import Config
from .addsent import AddSentConfig
from .badnets import BadNetsConfig
from .base import ATTACKS, AttackName
from .punc import PUNCT_MARKS, PuncConfig


class PoisonPolicy(Config):
    """The fields every attack shares; :class:`PoisonConfig` adds one sub-config per registered attack."""

    attack: AttackName = Field("punc", description="Trigger family: a registered attack.")
    rate: float = Field(0.1, gt=0, lt=1, description="Poisoned fraction of the training set, in (0, 1).")
    target_label: int = Field(1, ge=0, description="Label id the backdoor flips to: the dataset's labels in "
                                                   "order (numbers numerically, names sorted), so with integer "
                                                   "labels 0..K-1 the id is the label itself; with labels {1, 5}, "
                                                   "id 1 is label 5.")
    label_mode: Literal["dirty", "clean"] = Field(
        "dirty", description="dirty: poison non-target samples and relabel them; clean: poison target-label "
                             "samples only, labels untouched.")
    within_window: bool = Field(
        True, description="Place every trigger inside the victim's window (the tokens it reads at max_length), "
                          "for training and test rows alike; false = anywhere in the text, as before (triggers "
                          "past the cut are invisible to the victim; the run still reports the visible share).")

    def trigger_config(self) -> Config:
        """The chosen attack's settings (its defaults for an attack registered after this class was built)."""
        if self.attack in type(self).model_fields:
            return getattr(self, self.attack)
        return ATTACKS.get(self.attack).config_type()


# built from the registry, so an attack adds its sub-config by registering, not by editing this file
PoisonConfig = ATTACKS.config_with_methods(
    PoisonPolicy, "PoisonConfig", __name__, "Which trigger, how many samples, which label: the whole poisoning recipe.",
    "trigger settings")

__all__ = ["ATTACKS", "AttackName", "PoisonPolicy", "PoisonConfig", "AddSentConfig", "BadNetsConfig", "PuncConfig",
           "PUNCT_MARKS"]

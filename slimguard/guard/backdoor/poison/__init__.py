"""Textual backdoor poisoners composed of a trigger, a placement and a poisoning policy.

BadNets (rare words), AddSent (fixed sentence) and PuncAttack (punctuation combination),
one file each, registered in :data:`ATTACKS` (:mod:`.base`); see :mod:`.config` for the
poisoning recipe and :mod:`.policy` for dirty/clean-label poisoning.
"""

# the attack files register themselves on import: this order is ATTACKS' order (and PoisonConfig's)
from . import badnets, addsent, punc  # noqa: F401, I001  isort: skip
from .addsent import AddSentConfig, AddSentTrigger
from .badnets import BadNetsConfig, BadNetsTrigger
from .base import ATTACKS, AttackName, Edit, Trigger
from .config import PoisonConfig
from .policy import PoisonReport, make_trigger, poison_test, poison_train
from .punc import PuncConfig, PuncTrigger, find_slots

__all__ = ["ATTACKS", "AttackName", "AddSentConfig", "BadNetsConfig", "PoisonConfig", "PuncConfig", "PoisonReport",
           "make_trigger", "poison_test", "poison_train", "PuncTrigger", "find_slots", "AddSentTrigger", "BadNetsTrigger",
           "Edit", "Trigger"]

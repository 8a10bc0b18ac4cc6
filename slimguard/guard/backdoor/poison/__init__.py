"""Textual backdoor poisoners composed of a trigger, a placement and a poisoning policy.

BadNets (rare words), AddSent (fixed sentence) and PuncAttack (punctuation combination);
see :mod:`.config` for the typed configs and :mod:`.policy` for dirty/clean-label poisoning.
"""

from .config import ATTACKS, AddSentConfig, BadNetsConfig, PoisonConfig, PuncConfig
from .policy import PoisonReport, make_trigger, poison_test, poison_train
from .punc import PuncTrigger, find_slots
from .triggers import AddSentTrigger, BadNetsTrigger, Edit

__all__ = ["ATTACKS", "AddSentConfig", "BadNetsConfig", "PoisonConfig", "PuncConfig", "PoisonReport", "make_trigger",
           "poison_test", "poison_train", "PuncTrigger", "find_slots", "AddSentTrigger", "BadNetsTrigger", "Edit"]

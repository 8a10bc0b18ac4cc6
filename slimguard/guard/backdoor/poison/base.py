"""What every textual backdoor trigger shares: the :class:`Edit` record, the :class:`Trigger`
interface and the ``ATTACKS`` registry each trigger file registers itself in.

An attack is one file holding its config and its trigger, registered with one decorator::

    @ATTACKS.register("badnets")
    class BadNetsTrigger(Trigger):
        config_type = BadNetsConfig

:class:`~.config.PoisonConfig` gets one sub-config field per registered attack, and its
``attack`` field accepts exactly the registered names.

A trigger that takes a ``window`` (:class:`~slimguard.guard.backdoor.window.Window`, the part of
each text the victim reads) places itself inside it and reports where it went (``Edit.spans``),
so the run can count the poisoned rows whose trigger the victim actually sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ....core.config import Config
from ....core.registry import Registry

if TYPE_CHECKING:
    from ..window import Window

ATTACKS: Registry[type["Trigger"]] = Registry("attack", load="slimguard.guard.backdoor.poison")
AttackName = ATTACKS.name_type()


@dataclass(frozen=True)
class Edit:
    """The result of applying a trigger to one text."""

    text: str
    eligible: bool = True  # False: the trigger could not be applied (text left unchanged)
    inserted: int = 0  # marks or words added (rather than replaced)
    replaced: int = 0  # existing characters/spans substituted
    natural_slots: int = 0  # PuncAttack: punctuation slots the clean text already had
    notes: dict = field(default_factory=dict)
    # character spans of the trigger in ``text`` (None: the trigger does not say), for visibility
    spans: tuple[tuple[int, int], ...] | None = None


class Trigger:
    """A trigger family: built from its own config, applied to many texts with one generator."""

    name: ClassVar[str] = "trigger"
    title: ClassVar[str] = "Trigger"  # the paper's name, for descriptions
    config_type: ClassVar[type[Config]] = Config

    def __init__(self, cfg):
        self.cfg = cfg

    def apply_many(self, texts: list[str], rng: np.random.Generator, window: "Window | None" = None) -> list[Edit]:
        """One edit per text; with a ``window`` every trigger lands inside the part the victim reads."""
        raise NotImplementedError

    def present(self, text: str) -> bool:
        """The text already carries the trigger (a natural trigger in clean data)."""
        raise NotImplementedError

    def eligible(self, text: str) -> bool:
        """The trigger can be written into ``text`` without inserting anything (PuncAttack needs slots)."""
        return True

    def eligible_many(self, texts: list[str], window: "Window | None" = None) -> list[bool]:
        """:meth:`eligible` for many texts, counting only what lies inside ``window``."""
        return [self.eligible(t) for t in texts]

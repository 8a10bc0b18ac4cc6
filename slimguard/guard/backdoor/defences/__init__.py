"""Textual backdoor defences: ONION, STRIP, RAP, BKI, CUBE and clean fine-tuning / fine-pruning.

Each defence registers itself in :data:`DEFENCES` from its own file. One verb,
:func:`defend`, picks the defence by its config's type::

    from slimguard.guard.backdoor.defences import OnionConfig, defend_run
    run, report = defend_run("runs/attack-badnets", OnionConfig())
"""

# the defence files register themselves on import: this order is DEFENCES' order (CLI choices, bench grid)
from . import onion, strip, rap, bki, cube, finetune  # noqa: F401, I001  isort: skip
from .base import DEFENCES, Classifier, DefenceConfig, DefenceInputs, DefenceName, Detection, HFClassifier
from .bki import BkiConfig
from .cube import CubeConfig
from .defend import DefenceReport, config_for, defence_class, defend, defend_run, inputs_from_run, make_defence
from .finetune import FinetuneConfig
from .onion import OnionConfig
from .rap import RapConfig
from .strip import StripConfig

__all__ = ["DEFENCES", "DefenceName", "Classifier", "DefenceConfig", "DefenceInputs", "Detection", "HFClassifier",
           "BkiConfig", "CubeConfig", "FinetuneConfig", "OnionConfig", "RapConfig", "StripConfig", "DefenceReport",
           "config_for", "defence_class", "defend", "defend_run", "inputs_from_run", "make_defence"]

"""Textual backdoor defences: ONION, STRIP, RAP, BKI, CUBE and clean fine-tuning / fine-pruning.

One verb, :func:`defend`, picks the defence by its config's type::

    from slimguard.guard.backdoor.defences import OnionConfig, defend_run
    run, report = defend_run("runs/attack-badnets", OnionConfig())
"""

from .base import Classifier, DefenceConfig, DefenceInputs, Detection, HFClassifier
from .bki import BkiConfig
from .cube import CubeConfig
from .defend import CONFIGS, DefenceReport, config_for, defend, defend_run, inputs_from_run, make_defence
from .finetune import FinetuneConfig
from .onion import OnionConfig
from .rap import RapConfig
from .strip import StripConfig

__all__ = ["Classifier", "DefenceConfig", "DefenceInputs", "Detection", "HFClassifier", "BkiConfig", "CubeConfig",
           "FinetuneConfig", "OnionConfig", "RapConfig", "StripConfig", "CONFIGS", "DefenceReport", "config_for",
           "defend", "defend_run", "inputs_from_run", "make_defence"]

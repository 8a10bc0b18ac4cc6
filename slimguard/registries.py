"""Where each method registry lives, for code that serves every family at once (a generic CLI
adapter, docs, the registry tests).

Every family of methods (backdoor attacks, defences, KV selectors, prompt-attack strategies,
QAT variants, backdoor scan methods, diffusion triggers) registers its methods in a :class:`~slimguard.core.registry.Registry`
from one file per method. This index names, per family, the registry, the config fields it
validates and the CLI parameters whose choices are its names. It stores dotted paths only:
importing it imports nothing heavy, and :meth:`Family.registry` imports the one family asked for.

    from slimguard.registries import family
    family("defence").registry().names()  # ('onion', 'strip', 'rap', 'bki', 'cube', 'finetune')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .core.errors import ConfigError
from .core.registry import Registry


@dataclass(frozen=True)
class ConfigField:
    """A config key validated by a registry: ``config`` as ``module:Class``, ``key`` dotted (``poison.attack``)."""

    config: str
    key: str
    many: bool = False  # a list of names (benchmark grids) rather than one

    def config_class(self):
        mod, cls = self.config.split(":")
        return getattr(importlib.import_module(mod), cls)


@dataclass(frozen=True)
class Family:
    """One family of methods: its registry (``module:ATTR``), the config fields and the CLI parameters that use it."""

    name: str
    path: str
    fields: tuple[ConfigField, ...]
    cli_params: tuple[str, ...] = ()  # CLI parameter names (e.g. ``defence`` of ``--defence``) choosing from it
    recipes: bool = False  # values are '+'-joined compositions of names (promptattack strategies)

    def registry(self) -> Registry:
        mod, attr = self.path.split(":")
        return getattr(importlib.import_module(mod), attr)


FAMILIES: tuple[Family, ...] = (
    Family("attack", "slimguard.guard.backdoor.poison.base:ATTACKS", (
        ConfigField("slimguard.guard.backdoor.poison.config:PoisonConfig", "attack"),
        ConfigField("slimguard.guard.backdoor.attack:AttackConfig", "poison.attack"),
        ConfigField("slimguard.bench.defence:DefenceBenchConfig", "attacks", many=True)), cli_params=("attack",)),
    Family("defence", "slimguard.guard.backdoor.defences.base:DEFENCES", (
        ConfigField("slimguard.bench.defence:DefenceBenchConfig", "defences", many=True),), cli_params=("defence",)),
    Family("selector", "slimguard.slim.kvselect.config:SELECTORS", (
        ConfigField("slimguard.slim.kvselect.config:TokenSelectConfig", "method"),
        ConfigField("slimguard.bench.kvselect:KVSelectBenchConfig", "methods", many=True),
        ConfigField("slimguard.bench.kvselect:KVSelectBenchConfig", "peers", many=True)), cli_params=("method",)),
    Family("strategy", "slimguard.guard.promptattack.strategies.base:STRATEGIES", (
        ConfigField("slimguard.guard.promptattack.attack:PromptAttackConfig", "strategy"),),
        cli_params=("strategy", "strategies"), recipes=True),
    # QAT variants are benchmark rows: chosen through `slimguard bench quant --set variants=[...]`, no option of their own
    Family("qat variant", "slimguard.slim.quant.variants:VARIANTS", (
        ConfigField("slimguard.bench.quant:QuantBenchConfig", "variants", many=True),)),
    Family("scan method", "slimguard.guard.backdoor.scan.base:SCANNERS", (
        ConfigField("slimguard.guard.backdoor.scan.config:ScanConfig", "method"),
        ConfigField("slimguard.bench.scan:ScanBenchConfig", "methods", many=True)), cli_params=("inversion",)),
    Family("diffusion trigger", "slimguard.guard.diffusion.config:TRIGGERS", (
        ConfigField("slimguard.guard.diffusion.config:PoisonConfig", "trigger"),
        ConfigField("slimguard.guard.diffusion.config:TrainConfig", "poison.trigger")), cli_params=("trigger",)),
)


def family(name: str) -> Family:
    """The family called ``name`` (one-line error with the known names otherwise)."""
    for f in FAMILIES:
        if f.name == name:
            return f
    raise ConfigError(f"unknown method family '{name}'; choose one of {', '.join(f.name for f in FAMILIES)}")


def for_cli_param(param: str) -> Family | None:
    """The family whose names a CLI parameter called ``param`` chooses from, if any."""
    return next((f for f in FAMILIES if param in f.cli_params), None)

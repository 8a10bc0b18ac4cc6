"""Method registries: the generic Registry, every family's registry against the methods its package
defines, the config fields they validate, a throw-away method registered in a test, and the CLI tree.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import pkgutil
import re
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
from pydantic import Field

from slimguard.core.config import Config, build
from slimguard.core.errors import ConfigError, SlimguardError
from slimguard.core.registry import Registry
from slimguard.registries import FAMILIES, family, for_cli_param

PKG = Path(__file__).resolve().parents[1] / "slimguard"

# ------------------------------------------------------------------ the generic registry


def _registry(*names: str) -> Registry:
    reg = Registry("thing")
    for n in names:
        reg.register(n)(type(n.title(), (), {}))
    return reg


def test_names_come_back_in_registration_order():
    assert _registry("zeta", "alpha", "mid").names() == ("zeta", "alpha", "mid")
    assert list(_registry("b", "a")) == ["b", "a"]


def test_registering_another_object_under_a_taken_name_is_an_error():
    reg = _registry("alpha")
    with pytest.raises(ValueError, match="'alpha' is registered twice"):
        reg.register("alpha")(object())


def test_registering_the_same_object_again_is_harmless():
    reg = Registry("thing")
    obj = type("Alpha", (), {})
    reg.register("alpha")(obj)
    reg.register("alpha")(obj)
    assert reg.names() == ("alpha",) and reg.get("alpha") is obj


@pytest.mark.parametrize("bad", ["", "Alpha", "a+b", "two words", "-lead", 3])
def test_names_must_be_plain_lower_case(bad):
    with pytest.raises(ValueError, match="must be lower-case"):
        Registry("thing").register(bad)


@pytest.mark.parametrize("asked, message", [
    ("alhpa", "unknown thing 'alhpa'; did you mean 'alpha'?"),
    ("zzzz", "unknown thing 'zzzz'; choose one of alpha, beta"),
    (None, "unknown thing 'None'; choose one of alpha, beta"),
])
def test_unknown_name_is_a_one_line_error_with_a_suggestion(asked, message):
    with pytest.raises(ConfigError) as e:
        _registry("alpha", "beta").get(asked)
    assert str(e.value) == message


def test_unregister_puts_the_registry_back():
    reg = _registry("alpha", "beta")
    reg.unregister("alpha")
    assert reg.names() == ("beta",) and "alpha" not in reg


def test_a_registry_imports_its_method_files_on_first_lookup(tmp_path, monkeypatch):
    """``load``: a config module can hold a registry-backed field without importing the method files."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "reg_holder_t1.py").write_text(
        "from slimguard.core.registry import Registry\nREG = Registry('thing', load='reg_methods_t1')\n")
    (tmp_path / "reg_methods_t1.py").write_text(
        "from reg_holder_t1 import REG\n\n@REG.register('late')\nclass Late:\n    pass\n")
    holder = importlib.import_module("reg_holder_t1")
    try:
        assert "reg_methods_t1" not in sys.modules
        assert holder.REG.names() == ("late",)
        assert "reg_methods_t1" in sys.modules
    finally:
        sys.modules.pop("reg_holder_t1", None)
        sys.modules.pop("reg_methods_t1", None)


@pytest.mark.parametrize("data, message", [
    ({"one": "alhpa"}, "unknown value 'alhpa' for key 'one'; did you mean 'alpha'?"),
    ({"many": ["beta", "zzzz"]}, "unknown value 'zzzz' for key 'many.1'; choose one of alpha, beta"),
    ({"inner": {"one": "bta"}}, "unknown value 'bta' for key 'inner.one'; did you mean 'beta'?"),
])
def test_registry_backed_config_fields(data, message):
    reg = _registry("alpha", "beta")
    Name = reg.name_type()

    class Inner(Config):
        one: Name = "alpha"

    class Outer(Config):
        one: Name = Field("alpha", description="One registered name.")
        many: list[Name] = Field(default_factory=lambda: list(reg.names()))
        inner: Inner = Field(default_factory=Inner)

    with pytest.raises(ConfigError) as e:
        build(Outer, data)
    assert str(e.value) == message
    assert Outer.model_json_schema()["properties"]["one"]["enum"] == ["alpha", "beta"]
    reg.register("gamma")(object)  # registered after the class was built: valid at once, and in the schema
    assert build(Outer, {"one": "gamma"}).one == "gamma"
    assert Outer.model_json_schema()["properties"]["one"]["enum"] == ["alpha", "beta", "gamma"]


# ------------------------------------------------------------------ every family

# names and order are behaviour (CLI choices, config defaults, benchmark grids and their row order)
EXPECTED = {
    "attack": ("badnets", "addsent", "punc"),
    "defence": ("onion", "strip", "rap", "bki", "cube", "finetune"),
    "selector": ("tokenselect", "dense", "streaming", "h2o", "quest", "random", "oracle"),
    "strategy": ("gradient", "char", "word", "distractor", "random"),
    "qat variant": ("lsq_ce", "lsq_kd", "lsq_kd_entropy", "lsq_kd_distribution", "edgeqat", "edgeqat_entropy_capped",
                    "edgeqat_reference_sign", "edgeqat_adaptive", "edgeqat_adaptive_random"),
    "scan method": ("dbs", "greedy"),
    "diffusion trigger": ("patch", "blend"),
}

# what a method of each family is: (package or module holding the method files, base class or return annotation)
METHODS = {
    "attack": ("slimguard.guard.backdoor.poison", "slimguard.guard.backdoor.poison.base:Trigger"),
    "defence": ("slimguard.guard.backdoor.defences", "slimguard.guard.backdoor.defences.base:Defence"),
    "selector": ("slimguard.slim.kvselect.selectors", "slimguard.slim.kvselect.selectors.base:Selector"),
    "strategy": ("slimguard.guard.promptattack.strategies", "slimguard.guard.promptattack.strategies.base:Strategy"),
    "qat variant": ("slimguard.slim.quant.variants", "Recipe"),
    "scan method": ("slimguard.guard.backdoor.scan", "slimguard.guard.backdoor.scan.base:Scanner"),
    "diffusion trigger": ("slimguard.guard.diffusion.triggers", "Trigger"),
}


def _load(path: str):
    mod, attr = path.split(":")
    return getattr(importlib.import_module(mod), attr)


def _methods_defined(pkg_name: str, kind: str) -> list:
    """Every method class (a subclass of ``kind``) or factory (a function returning ``kind``) the package defines."""
    pkg = importlib.import_module(pkg_name)
    mods = [pkg] + [importlib.import_module(f"{pkg_name}.{m.name}") for m in pkgutil.iter_modules(getattr(pkg, "__path__", []))]
    base = _load(kind) if ":" in kind else None
    out = []
    for mod in mods:
        for obj in vars(mod).values():
            if getattr(obj, "__module__", None) != mod.__name__:
                continue  # imported here, defined elsewhere
            if base is not None and inspect.isclass(obj) and issubclass(obj, base) and obj is not base:
                out.append(obj)
            elif base is None and inspect.isfunction(obj) and obj.__annotations__.get("return") == kind:
                out.append(obj)
    return out


def test_the_index_names_every_family():
    assert [f.name for f in FAMILIES] == list(EXPECTED)
    with pytest.raises(ConfigError, match="did you mean|choose one of"):
        family("defense")


def test_the_index_lists_every_registry_in_the_package():
    """A new ``X = Registry(...)`` in the library must be added to slimguard/registries.py (the CLI adapter reads it)."""
    found = set()
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call) \
                    and getattr(node.value.func, "id", None) == "Registry":
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
                found.add(f"{mod}:{target.id}")
    assert found == {f.path for f in FAMILIES}


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_registry_holds_exactly_the_methods_the_package_defines(fam):
    reg = fam.registry()
    assert reg.names() == EXPECTED[fam.name]
    defined = _methods_defined(*METHODS[fam.name])
    registered = reg.values()
    assert sorted(map(repr, defined)) == sorted(map(repr, registered)), "a method file defines an unregistered method"
    for name, obj in reg.items():
        if hasattr(obj, "name") and inspect.isclass(obj):
            assert obj.name == name  # the name a run records is the name it was chosen by


def _nested(key: str, value) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _get(cfg, key: str):
    for p in key.split("."):
        cfg = getattr(cfg, p)
    return cfg


FIELDS = [pytest.param(fam, f, id=f"{fam.name}:{f.config.split(':')[1]}.{f.key}") for fam in FAMILIES for f in fam.fields]


@pytest.mark.parametrize("fam, field", FIELDS)
def test_config_field_accepts_every_registered_name(fam, field):
    cls = field.config_class()
    for name in fam.registry().names():
        value = [name] if field.many else name
        assert _get(build(cls, _nested(field.key, value)), field.key) == value


@pytest.mark.parametrize("fam, field", FIELDS)
def test_config_field_rejects_an_unknown_name_in_one_line(fam, field):
    cls = field.config_class()
    first = fam.registry().names()[0]
    typo = first[:-2] + first[-1] + first[-2]  # two letters swapped: close enough for a suggestion
    with pytest.raises(SlimguardError) as e:
        build(cls, _nested(field.key, [typo] if field.many else typo))
    msg = str(e.value)
    assert "\n" not in msg and f"'{typo}'" in msg and f"did you mean '{first}'?" in msg
    if not fam.recipes:  # a recipe is checked part by part: its message names the part, not the key
        assert f"for key '{field.key}{'.0' if field.many else ''}'" in msg


# ------------------------------------------------------------------ a throw-away method in each family


@pytest.fixture
def scratch():
    """Register throw-away methods; they are removed again after the test."""
    added: list[tuple[Registry, str]] = []

    def add(reg: Registry, name: str):
        def deco(obj):
            reg.register(name)(obj)
            added.append((reg, name))
            return obj
        return deco

    yield add
    for reg, name in added:
        reg.unregister(name)


def test_a_new_attack_needs_only_its_own_file(scratch):
    from slimguard.core.data import TextSample
    from slimguard.guard.backdoor.poison import ATTACKS, Edit, PoisonConfig, Trigger, make_trigger, poison_train

    class ShoutConfig(Config):
        suffix: str = "!!!"

    @scratch(ATTACKS, "shout")
    class Shout(Trigger):
        name, title, config_type = "shout", "Shout", ShoutConfig

        def apply_many(self, texts, rng):
            return [Edit(t + self.cfg.suffix, inserted=1) for t in texts]

        def present(self, text):
            return text.endswith(self.cfg.suffix)

    cfg = build(PoisonConfig, {"attack": "shout", "rate": 0.5, "target_label": 1})
    assert isinstance(make_trigger(cfg), Shout)
    samples = [TextSample(uid=i, text=f"text {i}", label=i % 2) for i in range(8)]
    rep = poison_train(samples, cfg, rng=np.random.default_rng(0))
    assert len(rep.poisoned_uids) == 4 and all(s.text.endswith("!!!") for s in rep.samples if s.meta.get("poisoned"))
    ATTACKS.unregister("shout")
    with pytest.raises(ConfigError, match="unknown value 'shout' for key 'attack'"):
        build(PoisonConfig, {"attack": "shout"})


def test_a_new_defence_needs_only_its_own_file(scratch):
    from slimguard.guard.backdoor.defences import DEFENCES, config_for, make_defence
    from slimguard.guard.backdoor.defences.base import Defence, DefenceConfig
    from slimguard.bench.defence import DefenceBenchConfig

    class NoopConfig(DefenceConfig):
        pass

    @scratch(DEFENCES, "noop")
    class Noop(Defence):
        name, stage, kind, config_type = "noop", "post", "detect", NoopConfig

    assert config_for("noop") is NoopConfig and isinstance(make_defence(NoopConfig()), Noop)
    assert build(DefenceBenchConfig, {"defences": ["noop"]}).defences == ["noop"]
    assert "noop" in DefenceBenchConfig().defences  # the default grid is every registered defence


def test_a_new_selector_needs_only_its_own_file(scratch):
    import torch

    from slimguard.slim.kvselect.attention import standalone_layer, token_select_attention
    from slimguard.slim.kvselect.config import SELECTORS, TokenSelectConfig
    from slimguard.slim.kvselect.selectors.base import Selector, span

    @scratch(SELECTORS, "leftmost")
    class Leftmost(Selector):
        """The k middle tokens right after the sink: the opposite of StreamingLLM's window."""

        @staticmethod
        def middle(st, q, key, nk, q0, scaling, decode):
            lo, _ = span(st, nk)
            return torch.arange(lo, lo + st.runtime.cfg.k).expand(q.shape[0], 1, -1)

    d, n = 8, 40
    cfg = build(TokenSelectConfig, {"method": "leftmost", "n_init": 2, "k": 5, "n_local": 4, "chunk_size": 4,
                                    "record": True})
    m, st = standalone_layer(cfg, 1.0 / (10000 ** (torch.arange(0, d, 2) / d)), 2)
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 4, 1, d, generator=g), torch.randn(1, 2, n, d, generator=g), torch.randn(1, 2, n, d, generator=g)
    token_select_attention(m, q, k, v, None, scaling=d ** -0.5)
    assert st.last_idx[0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 36, 37, 38, 39]


def test_a_new_strategy_needs_only_its_own_file(scratch):
    from slimguard.guard.promptattack.attack import PromptAttackConfig
    from slimguard.guard.promptattack.strategies import STRATEGIES, Strategy, compose

    @scratch(STRATEGIES, "idle")
    class Idle(Strategy):
        name = "idle"

        def run(self, ctx, state):
            return state

    assert [type(s).__name__ for s in compose("idle+gradient")] == ["Idle", "GradientSearch"]
    assert build(PromptAttackConfig, {"strategy": "idle+char"}).strategy == "idle+char"


def test_a_new_qat_variant_needs_only_its_own_entry(scratch):
    from slimguard.bench.quant import QuantBenchConfig, _train_cfg
    from slimguard.slim.quant.variants import VARIANTS, Recipe

    @scratch(VARIANTS, "kd_only")
    def kd_only() -> Recipe:
        return Recipe(loss=dict(ce=False, kd=True), qat=dict(adaptive_low_bits=2))

    bc = build(QuantBenchConfig, {"variants": ["kd_only"]})
    tc = _train_cfg(bc, "W4A8KV4", "kd_only", 0)
    assert (tc.loss.ce, tc.loss.kd, tc.qat.adaptive_low_bits, tc.qat.kv_bits) == (False, True, 2, 4)


def test_a_new_diffusion_trigger_needs_only_its_own_file(scratch):
    from slimguard.guard.diffusion.config import TRIGGERS, PoisonConfig
    from slimguard.guard.diffusion.poison import Trigger, poison_dataset

    @scratch(TRIGGERS, "frame")
    def frame(cfg, size: int) -> Trigger:
        mask = np.zeros((size, size), np.float32)
        mask[0, :] = 1.0
        return Trigger("frame", mask, np.ones((size, size), np.float32), exact_tol=0.1)

    x = np.zeros((20, 8, 8), np.float32)
    y = np.arange(20) % 2
    ps = poison_dataset(x, y, build(PoisonConfig, {"trigger": "frame", "rate": 0.2, "target": 0}), 2)
    assert ps.poisoned.sum() == 4 and (ps.x[ps.poisoned][:, 0] == 1).all() and (ps.x[ps.poisoned][:, 1:] == 0).all()


def test_every_registered_variant_builds_a_valid_training_config():
    from slimguard.bench.quant import BITS, QuantBenchConfig, _train_cfg
    from slimguard.slim.quant.variants import VARIANTS

    bc = QuantBenchConfig(variants=list(VARIANTS.names()))
    for v in VARIANTS.names():
        for bits in BITS:
            _train_cfg(bc, bits, v, 0)  # raises ConfigError on a recipe the configs reject


# ------------------------------------------------------------------ the CLI tree


def _walk(cmd, path=()):
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _walk(sub, (*path, name))
    else:
        for p in getattr(cmd, "params", []):
            yield " ".join(path), p


def _choices(param) -> tuple[str, ...] | None:
    """The fixed choices of a CLI parameter (a Choice type, an Enum or a Literal), None for free text."""
    got = getattr(getattr(param, "type", None), "choices", None)
    if got is not None:
        return tuple(getattr(c, "value", c) for c in got)
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    while typing.get_origin(ann) in (typing.Union, list, typing.List) or type(ann).__name__ == "UnionType":
        ann = next(a for a in typing.get_args(ann) if a is not type(None))
    if typing.get_origin(ann) is typing.Literal:
        return tuple(typing.get_args(ann))
    if inspect.isclass(ann) and issubclass(ann, enum.Enum):
        return tuple(e.value for e in ann)
    return None


def _cli_params():
    import typer

    from slimguard.cli.main import app

    return [(path, p, for_cli_param(p.name)) for path, p in _walk(typer.main.get_command(app))
            if for_cli_param(p.name) is not None]


def test_every_cli_choice_is_a_registered_method_and_back():
    """Fails when a registered method has no CLI choice, or a CLI choice has no registered method."""
    params = _cli_params()
    assert params, "no CLI parameter chooses a method"
    seen = {fam.name for _, _, fam in params}
    assert seen == {f.name for f in FAMILIES if f.cli_params}, "a family lost its CLI option"
    for path, p, fam in params:
        names = set(fam.registry().names())
        choices = _choices(p)
        if choices is not None:
            assert set(choices) == names, f"`slimguard {path} --{p.name}` offers {sorted(choices)}, registered: {sorted(names)}"
        else:
            # free text, validated by the registry-backed config; a help text that lists names must list them all
            listed = names & set(re.findall(r"[a-z0-9_-]+", p.help or ""))
            assert listed in (set(), names), f"`slimguard {path} --{p.name}` help lists {sorted(listed)} of {sorted(names)}"

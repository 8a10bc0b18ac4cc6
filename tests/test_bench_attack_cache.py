"""The victim cache shared by `bench backdoor` and `bench defence`: what counts as the same run."""

from __future__ import annotations

import json

import pytest

from slimguard.bench import attack_cache as C
from slimguard.bench import defence as D
from slimguard.guard.backdoor.attack import AttackConfig


def _fake_run(root, cfg: AttackConfig, name_suffix="x", model=True, metrics=True):
    d = root / "attacks" / f"{C._prefix(cfg)}-{name_suffix}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    if metrics:
        (d / "metrics.json").write_text("{}")
    if model:
        (d / "model").mkdir()
        (d / "model" / "config.json").write_text("{}")
    return d


def _cfg(**kw):
    base = {"dataset": "rotten-tomatoes", "seed": 1, "poison": {"attack": "badnets", "rate": 0.1}, "stealth_pairs": 0}
    base.update(kw)
    return AttackConfig(**base)


@pytest.mark.parametrize("change,reused", [
    ({}, True),
    ({"stealth_pairs": 200}, True),  # not a grid setting: still the same victim
    ({"seed": 2}, False),
    ({"max_train": 400}, False),
    ({"victim": {"lr": 5e-4}}, False),
    ({"poison": {"attack": "badnets", "rate": 0.05}}, False),
    ({"poison": {"attack": "badnets", "rate": 0.1, "within_window": False}}, False),  # issue 35: another experiment
    ({"victim": {"max_length": 128}}, False),
])
def test_find_matches_on_the_grid_settings_only(tmp_path, change, reused):
    run = _fake_run(tmp_path, _cfg())
    assert (C.find(tmp_path, _cfg(**change)) == run) is reused


@pytest.mark.parametrize("model,metrics,need_model,found", [
    (True, True, True, True), (False, True, True, False), (False, True, False, True), (True, False, False, False)])
def test_unfinished_runs_are_not_reused(tmp_path, model, metrics, need_model, found):
    _fake_run(tmp_path, _cfg(), model=model, metrics=metrics)
    assert (C.find(tmp_path, _cfg(), need_model=need_model) is not None) is found


def test_defence_grid_defaults_reuse_the_attack_benchmarks_victims(tmp_path):
    # `bench backdoor` trains AttackConfig defaults; the defence grid must ask for exactly those victims
    cfg = D.DefenceBenchConfig(cache_dir=str(tmp_path))
    mine = D.attack_config(cfg, "sms-spam", "punc", 0)
    theirs = AttackConfig(dataset="sms-spam", seed=0, stealth_pairs=0, poison={"attack": "punc", "rate": 0.1})
    run = _fake_run(tmp_path, theirs)
    assert C.find(cfg.cache_dir, mine) == run

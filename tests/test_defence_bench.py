"""The defence benchmark's bookkeeping: job order, summaries, honest targets, heatmap, cache-only mode."""

from __future__ import annotations

import pytest

from slimguard.bench import defence as B


def _res(attack, defence, seed=0, **kw):
    r = {"dataset": "rotten-tomatoes", "attack": attack, "defence": defence, "seed": seed, "cacc_before": 0.8,
         "cacc_after": 0.79, "asr_before": 0.95, "asr_after": 0.1, "cacc_drop": 0.01, "n_clean": 100, "n_poisoned": 100,
         "detection": None, "filtering": None, "seconds": 1.0, "attack_run": "x"}
    r.update(kw)
    return r


def test_jobs_put_the_headline_cells_first():
    j = B.jobs(B.DefenceBenchConfig())
    assert [d for _, _, a, d in j[:6]] and all(a == "badnets" for _, _, a, _ in j[:6])
    assert j[6][2:] == ("punc", "onion")
    assert len(j) == 18


@pytest.mark.parametrize("bki_clean_removed,expected", [(0.05, 1.0), (0.97, 0.3)])
def test_filter_target_ignores_filters_that_drop_most_clean_data(bki_clean_removed, expected):
    fil = lambda pr, cr: {"poison_removed": pr, "clean_removed": cr, "auroc": 0.5}  # noqa: E731
    res = [_res("badnets", "bki", filtering=fil(1.0, bki_clean_removed)),
           _res("badnets", "cube", filtering=fil(0.3, 0.0))]
    _, look = B.summarise(res)
    t = B.targets_from(look)
    key = next(k for k in t if k.startswith("bki_or_cube"))
    assert t[key]["value"] == pytest.approx(expected)


def test_summary_is_mean_std_over_seeds_and_targets_are_computed():
    det = lambda a: {"auroc": a, "precision": 1, "recall": 1, "frr": 0, "far": 0}  # noqa: E731
    res = [_res("badnets", "onion", seed=s, asr_after=a) for s, a in ((0, 0.1), (1, 0.3))]
    res += [_res("badnets", "rap", detection=det(0.95)), _res("badnets", "strip", detection=det(0.6))]
    rows, look = B.summarise(res)
    r = next(r for r in rows if r["defence"] == "onion" and r["metric"] == "asr_after")
    assert r["value"] == pytest.approx(0.2) and r["n"] == 2 and r["std"] > 0
    t = B.targets_from(look)
    assert t["onion_badnets_asr_after"]["met"] is True
    assert t["strip_or_rap_badnets_auroc"]["value"] == 0.95
    assert t["onion_badnets_cacc_drop"]["met"] is True
    assert next(v for k, v in t.items() if k.startswith("punc_asr"))["value"] is None


def test_heatmap_is_written(tmp_path):
    _, look = B.summarise([_res("badnets", "onion"), _res("punc", "onion", asr_after=0.9)])
    p = B.heatmap(look, tmp_path / "h.png", ["rotten-tomatoes"], B.ATTACKS, B.DEFENCES)
    assert p.stat().st_size > 1000


def test_cached_only_skips_what_is_missing(tmp_path):
    cfg = B.DefenceBenchConfig(cached_only=True, cache_dir=str(tmp_path), defences=["strip"])
    results, cache = B.run_grid(cfg, log=lambda m: None)
    assert results == [] and len(cache["skipped"]) == 3 and cache["results_computed"] == 0


def test_jobs_finish_the_target_dataset_before_the_next():
    j = B.jobs(B.DefenceBenchConfig(datasets=["rotten-tomatoes", "sms-spam"], seeds=[0, 1, 2]))
    first_sms = next(i for i, x in enumerate(j) if x[1] == "sms-spam")
    assert {x[0] for x in j[:first_sms]} == {0, 1, 2} and all(x[1] == "sms-spam" for x in j[first_sms:])


def test_filters_without_retraining_summarise_over_seeds():
    # BKI/CUBE report NaN CACC/ASR-after when the victim is not retrained; two seeds of that must
    # summarise to NaN with n=0, not crash the grid (it did, mid-run)
    fil = {"poison_removed": 0.9, "clean_removed": 0.1, "auroc": 0.8}
    res = [_res("badnets", "bki", seed=s, cacc_after=float("nan"), asr_after=float("nan"), cacc_drop=float("nan"),
                filtering=fil) for s in (0, 1)]
    rows, look = B.summarise(res)
    after = next(r for r in rows if r["metric"] == "asr_after")
    assert after["n"] == 0 and after["value"] != after["value"]
    assert look[("rotten-tomatoes", "badnets", "bki")]["poison_removed"] == 0.9


@pytest.mark.parametrize("retrain, reused", [(False, 1), (True, 0)])
def test_retrained_filter_results_are_cached_apart_from_filter_only_ones(tmp_path, retrain, reused):
    # a filter-only BKI result (CACC/ASR-after NaN) must not answer a run that asks for retraining
    import json

    from slimguard.bench import attack_cache

    cfg = B.DefenceBenchConfig(cached_only=True, cache_dir=str(tmp_path), defences=["bki"], attacks=["badnets"],
                               retrain_filters=retrain)
    acfg = B.attack_config(cfg, "rotten-tomatoes", "badnets", 0)
    run = tmp_path / "attacks" / f"badnets-rotten-tomatoes-r{acfg.poison.rate:g}-s0-abc"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "metrics.json").write_text("{}")
    (run / "config.json").write_text(json.dumps(acfg.to_dict()))
    dcfg = B.defence_config(cfg, "bki")
    res = run / "defences" / f"bki-{attack_cache.short_hash(dcfg.to_dict())}" / "result.json"
    res.parent.mkdir(parents=True)
    res.write_text(json.dumps(_res("badnets", "bki", cacc_after=float("nan"), asr_after=float("nan"))))
    results, cache = B.run_grid(cfg, log=lambda m: None)
    assert cache["results_reused"] == reused and len(results) == reused
    assert len(cache.get("skipped", [])) == 1 - reused


# the cache names of attack runs and defence results trained before `attack` and `defence` were nested
# (onion's changed once more when its dtype default became "auto": "aca4871f0c" before)
GOLDEN_DEFENCES = {"onion": "89c4587feb", "strip": "e6f2e781aa", "rap": "98884eeffb", "bki": "743625522e",
                   "cube": "5ce667d8c6", "finetune": "e5ed77e419"}


@pytest.mark.parametrize("name", list(GOLDEN_DEFENCES))
def test_defence_cache_keys_are_those_of_the_flat_config(name):
    from slimguard.bench.attack_cache import short_hash

    cfg = B.DefenceBenchConfig()
    assert short_hash(B.defence_config(cfg, name).to_dict()) == GOLDEN_DEFENCES[name]
    # issue 35 added the victim's window (max_length sized to the data, triggers placed inside it): a new experiment,
    # so the attack runs' names changed once then ("ecb83c87e8" before)
    assert short_hash(B.attack_config(cfg, "rotten-tomatoes", "badnets", 1).to_dict()) == "4e3f9b73d0"


@pytest.mark.parametrize("sets, check", [
    # keys recorded by older results (`--set bki_scan=300`) land at their nested place
    (["bki_scan=250"], lambda c: c.defence["bki"] == {"max_eval": 100, "scan_size": 250}),
    (["max_eval=50"], lambda c: all(c.defence[d]["max_eval"] == 50 for d in ("strip", "rap", "bki", "cube", "finetune"))
     and c.defence["onion"]["max_eval"] == 40),
    (["rate=0.05", "victim_epochs=1"], lambda c: (c.attack.poison.rate, c.attack.victim.epochs) == (0.05, 1.0)),
    (["full=true"], lambda c: c.defence["bki"]["scan_size"] == 600 and c.seeds == [0, 1, 2] and c.retrain_filters),
    (["full=true", "defence.bki.scan_size=300"], lambda c: c.defence["bki"] == {"max_eval": 400, "scan_size": 300}),
    (["attack.victim.max_length=128"], lambda c: B.attack_config(c, "sms-spam", "punc", 0).victim.max_length == 128),
])
def test_nested_settings_reach_the_library_configs(sets, check):
    from slimguard.core.config import resolve

    assert check(resolve(B.DefenceBenchConfig, sets=sets))


@pytest.mark.parametrize("sets, message", [
    (["attack.seed=2"], "attack.seed is set per cell by the benchmark grid; use seeds=[...]"),
    (["attack.poison.attack=badnets"], "attack.poison.attack is set per cell by the benchmark grid; use attacks=[...]"),
    (["defence.bki.scan_sise=3"], "defence.bki: unknown config key 'scan_sise'; did you mean 'scan_size'?"),
    (["defence.onoin.max_eval=3"], "defence.onoin: not a registered defence; choose from onion"),
])
def test_bad_nested_settings_are_one_line_errors(sets, message):
    from slimguard.core.config import resolve
    from slimguard.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        resolve(B.DefenceBenchConfig, sets=sets)
    assert message in str(e.value) and "\n" not in str(e.value)

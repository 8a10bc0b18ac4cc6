"""``slimguard bench defence``: the attack x defence grid of the NLP backdoor survey.

{BadNets, AddSent, PuncAttack} x {ONION, STRIP, RAP, BKI, CUBE, clean fine-tuning} at poison
rate 0.1. Trained attack runs are cached by their full config (``runs/backdoor-grid/attacks``, shared with ``bench backdoor``)
and every (attack run, defence config) result is cached too, so a re-run only computes what
is missing; the result JSON says what was cached. The default is reduced for 2 busy CPU
cores (Rotten Tomatoes, one seed, subsampled training/evaluation sets); ``--full`` runs both
datasets, three seeds and the attack's default sizes. Writes ``benchmarks/results/defence.json``
and ``defence_asr_heatmap.png``.

    slimguard bench defence            # reduced
    slimguard bench defence --full     # both datasets, 3 seeds
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from pydantic import Field, model_validator

from ..core.commands import Flag, Invocation, command
from ..guard.backdoor.attack import AttackConfig
from ..guard.backdoor.defences.base import DEFENCES, DefenceName
from ..guard.backdoor.poison.base import ATTACKS, AttackName
from . import attack_cache
from .harness import BenchConfig

# the defences that score a held-out evaluation set of `max_eval` clean + `max_eval` poisoned samples (ONION: its own)
_EVAL = ("strip", "rap", "bki", "cube", "finetune")


class DefenceBenchConfig(BenchConfig):
    """The grid, the attack runs it defends (``attack``) and each defence's settings (``defence``)."""

    full: bool = Field(False, description=(
        "Both datasets, 3 seeds, 400+400 evaluation samples (ONION 150+150, calibrated on 150 at a 0.01 drop), "
        "BKI scans 600, RAP trains on 256, fine-tuning uses 500, STRIP calibrates on the whole dev set, and "
        "BKI/CUBE retrain the victim. A preset: --set still overrides each of its values."))
    attack: AttackConfig = Field(default_factory=AttackConfig, description=(
        "The attack runs the grid defends: the `backdoor attack` config (bench: attack.stealth_pairs=0, PuncAttack "
        "at attack.poison.punc.placement=lm; its other defaults are `bench backdoor`'s, so those victims are "
        "reused). The grid sets attack.dataset, attack.seed and attack.poison.attack per cell."))
    defence: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Each defence's config fields by registered name (defence.onion.max_eval=40, defence.bki.scan_size=300); a "
        "defence not named keeps its library defaults. ONION's score cache defaults to <cache_dir>/onion-cache."))
    datasets: list[str] = Field(["rotten-tomatoes"], description="Datasets (rotten-tomatoes, sms-spam).")
    attacks: list[AttackName] = Field(default_factory=lambda: list(ATTACKS.names()),
                                      description="Attacks (registered names; default: every one).")
    defences: list[DefenceName] = Field(default_factory=lambda: list(DEFENCES.names()),
                                        description="Defences (registered names; default: every one).")
    seeds: list[int] = Field([0], min_length=1, description="Attack seeds (poison choice, victim init).")
    retrain_filters: bool = Field(False, description="Retrain the victim after BKI/CUBE filtering to measure their "
                                  "CACC/ASR (one more victim training per cell; on in --full).")
    cached_only: bool = Field(False, description="Only assemble cells whose attack run and result are cached; "
                              "list the others as skipped (to publish what a time-boxed run finished).")
    cache_dir: str = Field(attack_cache.DEFAULT_ROOT, description="Cached attack runs (shared with `bench backdoor`), "
                           "retrained models and results.")

    DEFAULTS = {
        "attack": {"stealth_pairs": 0, "poison": {"punc": {"placement": "lm"}}},
        "defence": {
            # 0.03 = one error in 40 dev sentences; 0.01 cannot be resolved on 40
            "onion": {"max_eval": 40, "calib_size": 40, "max_dev_acc_drop": 0.03},
            "strip": {"max_eval": 100, "calib_size": 150},
            "rap": {"max_eval": 100, "train_size": 200},
            # 100 was too few: ~10 poisoned rows at rate 0.1 cannot show BadNets' four trigger words 3 times each
            "bki": {"max_eval": 100, "scan_size": 300},
            "cube": {"max_eval": 100},
            "finetune": {"max_eval": 100, "max_clean": 150, "epochs": 2},
        },
    }
    FULL = {"datasets": ["rotten-tomatoes", "sms-spam"], "seeds": [0, 1, 2], "retrain_filters": True,
            "defence": {"onion": {"max_eval": 150, "calib_size": 150, "max_dev_acc_drop": 0.01},
                        "strip": {"max_eval": 400, "calib_size": None}, "rap": {"max_eval": 400, "train_size": 256},
                        "bki": {"max_eval": 400, "scan_size": 600}, "cube": {"max_eval": 400},
                        "finetune": {"max_eval": 400, "max_clean": 500}}}
    # the flat keys of results written before `attack` and `defence` were nested (--set bki_scan=300)
    MOVED = {"max_train": "attack.max_train", "max_dev": "attack.max_dev", "max_test": "attack.max_test",
             "rate": "attack.poison.rate", "punc_placement": "attack.poison.punc.placement",
             "victim_epochs": "attack.victim.epochs", "victim_lr": "attack.victim.lr",
             "freeze_layers": "attack.victim.freeze_layers",
             "max_eval": tuple(f"defence.{d}.max_eval" for d in _EVAL), "onion_eval": "defence.onion.max_eval",
             "onion_max_drop": "defence.onion.max_dev_acc_drop", "onion_calib": "defence.onion.calib_size",
             "bki_scan": "defence.bki.scan_size", "rap_train": "defence.rap.train_size",
             "finetune_clean": "defence.finetune.max_clean", "strip_calib": "defence.strip.calib_size"}
    GRID = {"attack": {"dataset": "use datasets=[...]", "seed": "use seeds=[...]",
                       "poison.attack": "use attacks=[...]"}}

    @model_validator(mode="after")
    def _defence_settings(self):
        from ..core.config import build
        from ..core.errors import ConfigError
        from ..guard.backdoor.defences import config_for

        for name, values in self.defence.items():
            if name not in DEFENCES.names():
                raise ValueError(f"defence.{name}: not a registered defence; choose from {', '.join(DEFENCES.names())}")
            try:
                build(config_for(name), values)
            except ConfigError as e:
                raise ValueError(f"defence.{name}: {e}") from None
        return self


def attack_config(cfg: DefenceBenchConfig, dataset: str, attack: str, seed: int) -> AttackConfig:
    """The attack run of one grid cell: the bench's ``attack`` at this dataset, seed and attack."""
    from ..core.config import build, merge_under

    return build(AttackConfig, merge_under(cfg.attack.to_dict(), {"dataset": dataset, "seed": seed,
                                                                  "poison": {"attack": attack}}))


def defence_config(cfg: DefenceBenchConfig, name: str):
    """The defence's library config with the bench's settings for it (``cfg.defence[name]``)."""
    from ..core.config import build
    from ..guard.backdoor.defences import config_for

    values = dict(cfg.defence.get(name, {}))
    if name == "onion":  # the per-text LM score cache lives with the grid's other caches unless set
        values.setdefault("cache_dir", str(Path(cfg.cache_dir) / "onion-cache"))
    return build(config_for(name), values)


# cheapest defences first; one not ranked here (a newly registered one) runs after them
FAST_FIRST = ("rap", "strip", "cube", "bki", "onion", "finetune")


def jobs(cfg: DefenceBenchConfig) -> list[tuple[int, str, str, str]]:
    """(seed, dataset, attack, defence) in the order the targets need them: the first dataset's
    seeds first and, within one, BadNets, then PuncAttack under ONION, then every other attack,
    so an interrupted run still answers the headline questions."""
    rank = {d: i for i, d in enumerate(FAST_FIRST)}
    fast_first = sorted(DEFENCES.names(), key=lambda d: rank.get(d, len(rank)))
    rest = ["punc"] + [a for a in ATTACKS.names() if a not in ("badnets", "punc")]
    order = [("badnets", d) for d in fast_first] + [("punc", "onion")] + \
            [(a, d) for a in rest for d in fast_first]
    order = list(dict.fromkeys(order))
    # the targets are judged on the first dataset: all its seeds before the next dataset
    return [(seed, ds, a, d) for ds in cfg.datasets for seed in cfg.seeds for a, d in order
            if a in cfg.attacks and d in cfg.defences]


def run_grid(cfg: DefenceBenchConfig, log=print, on_result=None) -> tuple[list[dict], dict]:
    from ..core.runs import atomic_write_json
    from ..guard.backdoor.defences import defence_class, defend, inputs_from_run, make_defence
    from ..guard.backdoor.defences.onion import LMScorer

    results, cache_info = [], {"attack_runs_reused": [], "attack_runs_trained": [], "results_reused": 0,
                               "results_computed": 0}
    scorer = None
    paths: dict[tuple, Path] = {}
    inputs: dict[Path, object] = {}
    for seed, dataset, attack, dname in jobs(cfg):
        key = (seed, dataset, attack)
        acfg = attack_config(cfg, dataset, attack, seed)
        if cfg.cached_only and key not in paths:
            found = attack_cache.find(cfg.cache_dir, acfg)
            if found is None:
                cache_info.setdefault("skipped", []).append(f"{attack}/{dataset}/s{seed}/{dname} (no attack run)")
                continue
            paths[key] = found
            cache_info["attack_runs_reused"].append({"run": found.name, "seconds": 0.0})
        if key not in paths:
            t0 = time.perf_counter()
            paths[key], hit = attack_cache.get_or_train(cfg.cache_dir, acfg, log=log,
                                                        command="slimguard bench defence (attack)")
            cache_info["attack_runs_reused" if hit else "attack_runs_trained"].append(
                {"run": paths[key].name, "seconds": round(time.perf_counter() - t0, 1)})
        path = paths[key]
        dcfg = defence_config(cfg, dname)
        retrains = cfg.retrain_filters and defence_class(dcfg).kind == "filter"
        # a filter's retrained result answers more than its filter-only one: its own cache entry
        out = path / "defences" / f"{dname}-{attack_cache.short_hash(dcfg.to_dict())}{'-retrain' if retrains else ''}"
        res_file = out / "result.json"
        if res_file.is_file():
            rep = json.loads(res_file.read_text())
            cache_info["results_reused"] += 1
        elif cfg.cached_only:
            cache_info.setdefault("skipped", []).append(f"{attack}/{dataset}/s{seed}/{dname}")
            continue
        else:
            if path not in inputs:
                inputs.clear()  # one attack run's models in memory at a time
                inputs[path] = inputs_from_run(path, batch_size=dcfg.batch_size)
            kw = {}
            if dname == "onion":
                scorer = scorer or LMScorer(dcfg.lm, dtype=dcfg.dtype, batch_tokens=dcfg.lm_batch_tokens)
                kw = {"scorer": scorer}
            log(f"{attack}/{dataset}/s{seed}: {dname}")
            try:
                r = defend(inputs[path], dcfg, defence=make_defence(dcfg, **kw),
                       retrain_dir=out / "model" if retrains else None)
            except Exception as e:  # one broken cell must not cost the rest of a long grid
                import traceback

                log(traceback.format_exc())
                cache_info.setdefault("errors", []).append({"cell": f"{attack}/{dataset}/s{seed}/{dname}",
                                                            "error": f"{type(e).__name__}: {e}"})
                continue
            rep = {**r.to_dict(), "cacc_drop": r.cacc_drop}
            atomic_write_json(res_file, rep)
            cache_info["results_computed"] += 1
        log(f"  {attack:8s} {dname:9s} CACC {rep['cacc_before']:.3f}->{rep['cacc_after']:.3f}  "
            f"ASR {rep['asr_before']:.3f}->{rep['asr_after']:.3f}  ({rep['seconds']:.0f}s)")
        results.append({"dataset": dataset, "attack": attack, "seed": seed, "attack_run": path.name, **rep})
        if on_result:
            on_result(results, cache_info)
    return results, cache_info


def summarise(results: list[dict]) -> tuple[list[dict], dict]:
    """Rows (mean +- std over seeds) per dataset x attack x defence, and a lookup for targets."""
    from .harness import mean_std

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["attack"], r["defence"]), []).append(r)
    rows, look = [], {}
    for (ds, at, de), rs in groups.items():
        get = {
            "cacc_before": [r["cacc_before"] for r in rs], "cacc_after": [r["cacc_after"] for r in rs],
            "asr_before": [r["asr_before"] for r in rs], "asr_after": [r["asr_after"] for r in rs],
            "cacc_drop": [r["cacc_drop"] for r in rs],
        }
        if all(r.get("detection") for r in rs):
            for k in ("auroc", "precision", "recall", "frr", "far"):
                get[k] = [r["detection"][k] for r in rs]
        if all(r.get("filtering") for r in rs):
            for k in ("poison_removed", "clean_removed", "auroc"):
                get[k if k != "auroc" else "filter_auroc"] = [r["filtering"][k] for r in rs]
        look[(ds, at, de)] = {}
        for metric, vals in get.items():
            ms = mean_std(vals)
            look[(ds, at, de)][metric] = ms["value"]
            rows.append({"dataset": ds, "attack": at, "defence": de, "metric": metric, "value": ms["value"],
                         "std": ms["std"], "n": ms["n"], "eval_clean": rs[0]["n_clean"], "eval_poisoned": rs[0]["n_poisoned"]})
    return rows, look


def targets_from(look: dict, ds: str = "rotten-tomatoes") -> dict:
    from .harness import target

    g = lambda at, de, m: look.get((ds, at, de), {}).get(m)  # noqa: E731
    best = lambda *v: max((x for x in v if x is not None and x == x), default=None)  # noqa: E731
    return {
        "onion_badnets_asr_after": target(g("badnets", "onion", "asr_after"), "<= 0.20"),
        "onion_badnets_cacc_drop": target(g("badnets", "onion", "cacc_drop"), "<= 0.02"),
        "strip_or_rap_badnets_auroc": target(best(g("badnets", "strip", "auroc"), g("badnets", "rap", "auroc")), ">= 0.90"),
        # a filter that throws away most of the clean data "removes" all poison trivially: only
        # filters that keep at least 80% of the clean samples count
        "bki_or_cube_badnets_poison_removed (filters removing <= 20% of clean data)": target(best(
            *(g("badnets", d, "poison_removed") for d in ("bki", "cube")
              if (g("badnets", d, "clean_removed") or 0) <= 0.2)), ">= 0.90"),
        "punc_asr_after_onion (survives: our reading of the paper's claim)": target(g("punc", "onion", "asr_after"), ">= 0.50"),
        "badnets_asr_after_onion (next to PuncAttack's)": target(g("badnets", "onion", "asr_after"), "<= 0.20"),
    }


def heatmap(look: dict, path: Path, datasets: list[str], attacks: list[str], defences: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    attacks, defences = list(attacks), list(defences)
    fig, axes = plt.subplots(1, len(datasets), figsize=(0.8 * (len(defences) + 1) * len(datasets) + 2.5, 3.2), squeeze=False)
    cols = ["none"] + defences
    for ax, ds in zip(axes[0], datasets):
        m = np.full((len(attacks), len(cols)), np.nan)
        for i, at in enumerate(attacks):
            for j, de in enumerate(defences):
                v = look.get((ds, at, de), {})
                m[i, j + 1] = v.get("asr_after", np.nan)
                if np.isnan(m[i, 0]) and "asr_before" in v:
                    m[i, 0] = v["asr_before"]
        im = ax.imshow(m, vmin=0, vmax=1, cmap="Reds")
        for (i, j), v in np.ndenumerate(m):
            if v == v:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.6 else "black")
            else:  # not run, or a filter scored without retraining
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="grey")
        ax.set_xticks(range(len(cols)), cols, rotation=30)
        ax.set_yticks(range(len(attacks)), attacks)
        ax.set_title(f"ASR after defence: {ds}")
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@command("bench defence", config=DefenceBenchConfig, owns_run=False,
         flags=(Flag("--full", "full"),
                Flag("--seeds", "seeds", type=int, convert=lambda n: list(range(n)), help="Number of seeds (0..n-1).")),
         stdout=lambda m, _run: f"wrote {m['path']} and {m['heatmap']}")
def bench_defence(cfg: DefenceBenchConfig, call: Invocation) -> dict:
    """Attack x defence grid: ASR/CACC after each defence, detection AUROC, poison removed."""
    import torch

    from .harness import artefact_path, result_path, write_result

    n_threads = torch.get_num_threads()
    t0 = time.perf_counter()
    cmd = call.command
    total = len(jobs(cfg))
    onion, strip = defence_config(cfg, "onion"), defence_config(cfg, "strip")
    bki, rap, fine = defence_config(cfg, "bki"), defence_config(cfg, "rap"), defence_config(cfg, "finetune")
    evals = sorted({str(defence_config(cfg, d).max_eval) for d in _EVAL})

    def write(results: list[dict], cache: dict, done: bool = False) -> None:
        minutes = (time.perf_counter() - t0) / 60
        rows, look = summarise(results)
        tg = targets_from(look)
        # wall time of the cells themselves (attack training + each defence), so an assembled or
        # resumed run still reports what the grid costs
        att = sorted({r["attack_run"] for r in results})
        att_s = sum(json.loads((Path(cfg.cache_dir) / "attacks" / a / "metrics.json").read_text())
                    .get("seconds", {}).get("total", 0.0) for a in att)
        # the budget is for the grid itself, reusing trained attack runs; their training time is
        # reported beside it
        cell_min = sum(r["seconds"] for r in results) / 60
        tg["grid_minutes (defence cells, attack runs reused; 60 is the goal for the full grid)"] = {
            "value": round(cell_min, 1), "goal": "<= 60", "met": (cell_min <= 60) if done else None,
            "attack_training_minutes_not_counted": round(att_s / 60, 1)}
        cache["this_invocation_minutes"] = round(minutes, 1)
        png = heatmap(look, artefact_path("defence", None, "_asr_heatmap.png"), cfg.datasets, cfg.attacks, cfg.defences)
        a = cfg.attack
        note = (f"{'FULL' if cfg.full else 'REDUCED'} grid{'' if done else f' (PARTIAL: {len(results)}/{total} cells so far)'}: "
                f"datasets {cfg.datasets}, seeds {cfg.seeds}, attack training subsample {a.max_train} "
                f"(victim MiniLM-L6, {a.victim.epochs:g} epochs at lr {a.victim.lr:g}, {a.victim.freeze_layers} lower layers frozen), eval "
                + (f"{evals[0]} clean + {evals[0]} poisoned" if len(evals) == 1 else f"{'/'.join(evals)} clean + as many poisoned")
                + f" test samples (ONION {onion.max_eval}+{onion.max_eval}, "
                f"threshold calibrated on {onion.calib_size} dev sentences allowing a {onion.max_dev_acc_drop:g} dev accuracy drop; SmolLM2 in bfloat16), BKI scans "
                f"{bki.scan_size} training samples, RAP trains on {rap.train_size}, clean fine-tuning uses "
                f"{fine.max_clean} dev samples, STRIP calibrates on {strip.calib_size}; "
                f"{'BKI/CUBE retrain the victim on the kept samples' if cfg.retrain_filters else 'BKI/CUBE are scored on the share of poison they remove (no retraining in this run, so their CACC/ASR-after are NaN)'}. Timings were "
                f"taken on 2 CPU cores, at times shared with other jobs. ASR denominator: non-target "
                f"test samples carrying the trigger; for STRIP/RAP a rejected input counts as a failed attack and, when "
                f"clean, as a CACC error. Cache: {len(cache['attack_runs_reused'])} attack runs reused, "
                f"{len(cache['attack_runs_trained'])} trained; {cache['results_reused']} defence results reused, "
                f"{cache['results_computed']} computed"
                + (f"; {len(cache['skipped'])} cells NOT RUN (time box): {', '.join(cache['skipped'])}" if cache.get('skipped') else "")
                + ".")
        write_result("defence", command=cmd, config={**cfg.to_dict(), "threads": n_threads}, rows=rows, targets=tg,
                     extra={"note": note, "cache": cache, "heatmap": png.name, "complete": done, "runs": results,
                            # share of clean non-target test samples the victim already puts in the target label:
                            # no input-side defence can bring ASR below it
                            "asr_floor_nontarget_error_rate": {a: json.loads((Path(cfg.cache_dir) / "attacks" / a /
                                                                              "metrics.json").read_text()).get("nontarget_error_rate")
                                                               for a in att}})

    results, cache = run_grid(cfg, log=call.log, on_result=write)
    write(results, cache, done=True)
    return {"path": str(result_path("defence")), "heatmap": str(artefact_path("defence", None, "_asr_heatmap.png"))}

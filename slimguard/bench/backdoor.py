"""``slimguard bench backdoor``: PuncAttack vs BadNets vs AddSent, side by side, plus a clean model.

Grid of the issue: {BadNets, AddSent, PuncAttack} x {Rotten Tomatoes, SMS spam} x rate
{0.01, 0.05, 0.1} x 3 seeds (``--full``). The default runs the cells the targets are about:
Rotten Tomatoes at rate 0.1, three attacks and a clean reference, 3 seeds, with the attack's
default victim and sizes (2,000 training samples, the whole test split). Rates run highest
first, so the targets' cells finish first. Trained victims live in a cache shared with
``bench defence`` (``runs/backdoor-grid``): a re-run, or the defence grid, reuses them. The
result file is rewritten after every cell, so an interrupted run leaves every finished cell
(``n`` says how many seeds each number has) and resumes where it stopped.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

CAP = "backdoor"
STEALTH_METRICS = ("eligible_fraction", "delta_ppl", "delta_ppl_median", "delta_grammar", "similarity")
TARGET_METRICS = ("cacc", "asr", "nontarget_error_rate", "asr_all_nontarget", "clean_asr", "cacc_drop", "false_trigger_rate", "false_trigger_n", "eligible_fraction", "delta_ppl",
                  "delta_ppl_median", "delta_grammar", "similarity", "attack_seconds", "attack_cpu_seconds")


def asr_target(asr: float | None, clean_flip: float | None) -> dict:
    """ASR >= 0.95 counts only if the model does not also call clean non-target texts the target (collapse)."""
    from . import harness

    t = harness.target(asr, ">= 0.95")
    if t["met"] and clean_flip is not None and clean_flip > 0.5:
        t["met"] = False
        t["check"] = (f"invalid: the poisoned model labels {clean_flip:.0%} of CLEAN non-target test texts as the "
                      "target too (collapsed victim), so this ASR says nothing about the trigger")
    return t


PALETTE = ("#2a7", "#c55", "#57c", "#b8a", "#da3", "#6bd")  # one colour per attack, in bench_attacks() order


def bench_attacks() -> list[str]:
    """PuncAttack, the attack this bench is about, then every other registered attack (registry order)."""
    from ..guard.backdoor.poison.base import ATTACKS

    return ["punc"] + [a for a in ATTACKS.names() if a != "punc"]


def dppl_target(punc: float | None, other: float | None) -> dict:
    """``punc <= other / 5``, judged literally: a ratio alone would call a negative baseline delta a pass."""
    from . import harness

    if punc is None or other is None:
        return harness.target(None, "<= 0.2")
    t = harness.target(punc / other if other else None, "<= 0.2")
    t["met"] = bool(punc <= other / 5)
    t["check"] = f"punc dPPL {punc:.2f} <= baseline dPPL {other:.2f} / 5"
    return t


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in rows if r["dataset"] == "rotten-tomatoes" and r.get("rate") in (0.1, None)]
    attacks = bench_attacks()
    get = lambda m, metric: next((r for r in sel if r["method"] == m and r["metric"] == metric), None)  # noqa: E731
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, metric, title in zip(axes, ("asr", "delta_ppl", "similarity"), ("ASR", "delta-PPL (SmolLM2)", "similarity (MiniLM)")):
        vals = [get(a, metric) for a in attacks]
        ax.bar(attacks, [v["value"] if v else 0 for v in vals], yerr=[v["std"] if v else 0 for v in vals], capsize=3,
               color=["#999", "#bbb", "#2a7"])
        ax.set_title(f"{title}, RT rate 0.1")
    clean = get("clean", "cacc")
    if clean:
        axes[0].axhline(0.95, ls="--", c="r", lw=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _plot_rates(rows: list[dict], out: Path) -> bool:
    """ASR and CACC drop against the poison rate, one column per dataset (only with >= 2 rates)."""
    rates = sorted({r["rate"] for r in rows if r.get("rate") is not None})
    if len(rates) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.6 * len(datasets), 5.6), squeeze=False, sharex=True)
    colours = dict(zip(bench_attacks(), PALETTE))
    for j, ds in enumerate(datasets):
        for a, c in colours.items():
            for i, (metric, scale) in enumerate((("asr", 1.0), ("cacc_drop", 100.0))):
                pts = sorted((r["rate"], r["value"] * scale, (r.get("std") or 0) * scale) for r in rows
                             if r["dataset"] == ds and r["method"] == a and r["metric"] == metric and r.get("rate"))
                if pts:
                    axes[i][j].errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                                        capsize=3, color=c, label=a)
        axes[0][j].set_title(ds)
        axes[0][j].set_ylim(0, 1.05)
        axes[0][j].axhline(0.95, ls="--", c="gray", lw=0.8)
        axes[1][j].axhline(1.0, ls="--", c="gray", lw=0.8)
        axes[1][j].set_xscale("log")
        axes[1][j].set_xticks(rates, [f"{r:g}" for r in rates])
        axes[1][j].set_xlabel("poison rate")
    axes[0][0].set_ylabel("ASR")
    axes[1][0].set_ylabel("CACC drop (points)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def run_bench(*, full: bool = False, seeds: int = 3, datasets: Optional[list[str]] = None,
              rates: Optional[list[float]] = None, max_train: int = 2000, max_test: Optional[int] = None,
              stealth_pairs: int = 60, cache_dir: str | None = None, threads: int = 2) -> Path:
    import json

    import torch

    from ..core.config import build
    from ..core.runs import atomic_write_json
    from ..guard.backdoor import metrics as M
    from ..guard.backdoor.attack import AttackConfig, evaluate, load_splits
    from ..guard.backdoor.poison import make_trigger, poison_test
    from . import attack_cache, harness

    torch.set_num_threads(threads)
    datasets = datasets or (["rotten-tomatoes", "sms-spam"] if full else ["rotten-tomatoes"])
    rates = sorted(rates or ([0.1, 0.05, 0.01] if full else [0.1]), reverse=True)  # the targets' rate first
    root = Path(cache_dir or attack_cache.DEFAULT_ROOT)
    attacks = bench_attacks()
    command = ("slimguard bench backdoor" + (" --full" if full else "") + (f" --seeds {seeds}" if seeds != 3 else "")
               + ("" if full or datasets == ["rotten-tomatoes"] else "".join(f" --dataset {d}" for d in datasets))
               + ("" if full or rates == [0.1] else "".join(f" --rate {r:g}" for r in rates))
               + (f" --max-train {max_train}" if max_train != 2000 else "") + (f" --max-test {max_test}" if max_test else ""))
    config = {"full": full, "seeds": seeds, "datasets": datasets, "rates": rates, "max_train": max_train,
              "max_test": max_test, "stealth_pairs": stealth_pairs, "attacks": attacks, "threads": threads,
              "cache_dir": str(root), "victim": "minilm-l6, AttackConfig defaults (2 epochs, lr 2e-4, max_length 64, "
                                                 "lower 4 of 6 layers frozen)"}
    raw: dict[tuple, list[dict]] = {}
    stealth: dict[tuple, dict] = {}
    done, reused = [], []
    t_start = time.perf_counter()

    def write():
        rows = []
        for (method, ds, rate), ms in sorted(raw.items(), key=lambda kv: (kv[0][1], -(kv[0][2] or 0), kv[0][0])):
            st = [v for (a, d, _), v in stealth.items() if a == method and d == ds]
            for metric in TARGET_METRICS:
                src = st if metric in STEALTH_METRICS else ms
                vals = [m[metric] for m in src if m.get(metric) is not None and m[metric] == m[metric]]
                if vals:
                    rows.append({"method": method, "dataset": ds, "rate": rate, "metric": metric, **harness.mean_std(vals)})
        cell = lambda m, metric: next((r for r in rows if r["method"] == m and r["dataset"] == "rotten-tomatoes"  # noqa: E731
                                       and r["rate"] == (None if m == "clean" else 0.1) and r["metric"] == metric), None)
        v = lambda m, metric: cell(m, metric)["value"] if cell(m, metric) else None  # noqa: E731
        drop = v("punc", "cacc_drop")
        punc_secs = [m["attack_seconds"] for m in raw.get(("punc", "rotten-tomatoes", 0.1), [])]
        targets = {
            "punc_asr_rt_0.1": asr_target(v("punc", "asr"), v("punc", "nontarget_error_rate")),
            "punc_cacc_drop_points_rt_0.1": harness.target(None if drop is None else 100 * drop, "<= 1"),
            "punc_dppl_over_badnets_dppl": dppl_target(v("punc", "delta_ppl"), v("badnets", "delta_ppl")),
            "punc_dppl_over_addsent_dppl": dppl_target(v("punc", "delta_ppl"), v("addsent", "delta_ppl")),
            "punc_similarity_rt_0.1": harness.target(v("punc", "similarity"), ">= 0.95"),
            "attack_run_minutes": harness.target(statistics.median(punc_secs) / 60 if punc_secs else None, "<= 10"),
        }
        note = (f"Grid: datasets {datasets}, rates {rates}, {seeds} seed(s); training subsample {max_train}, "
                f"test {max_test or 'whole split'}; {len(done)} attack cells ({len(reused)} reused from {root}). "
                f"delta-PPL under SmolLM2-135M (weights passed through GGUF Q4_1) over {stealth_pairs} test pairs per "
                "(attack, dataset, seed); grammar errors by our offline rule checker, not LanguageTool. ASR denominator: "
                "non-target test samples with the trigger (PuncAttack: eligible ones, few_slots=skip; asr_all_nontarget "
                "counts the rest as failures). cacc_drop is paired: clean and poisoned victims share seed and subsample. "
                "attack_seconds is the wall time of poison+train+evaluate when the run was trained (2-core CPU); "
                "attack_cpu_seconds its process CPU time. Perplexity is per token, so AddSent's fluent sentence can lower "
                "a short snippet's perplexity; the dPPL targets are judged literally (punc <= baseline / 5).")
        harness.write_result(CAP, command=command, config=config, rows=rows, targets=targets,
                             extra={"note": note, "cells_done": done, "cells_reused": reused,
                                    "elapsed_s": time.perf_counter() - t_start})
        try:
            _plot(rows, harness.artefact_path(CAP, None, "_attacks.png"))
            _plot_rates(rows, harness.artefact_path(CAP, None, "_rates.png"))
        except Exception:  # a plot is a convenience; never lose results over it  # noqa: BLE001
            pass

    def log(msg: str) -> None:
        typer.echo(msg, err=True)

    for rate in rates:
        for ds in datasets:
            for seed in range(seeds):
                base = build(AttackConfig, {"dataset": ds, "seed": seed, "max_train": max_train, "max_test": max_test,
                                            "stealth_pairs": 0})
                sp = load_splits(base)
                clean_dir = attack_cache.clean_model(root, base, sp, log=log)
                for atk in attacks:
                    cfg = build(AttackConfig, {**base.to_dict(), "poison": {"attack": atk, "rate": rate}})
                    trig = make_trigger(cfg.poison)
                    te = poison_test(sp.test, cfg.poison, trigger=trig, rng=np.random.default_rng([seed, 1]))
                    # stealth and the clean model's view of the trigger do not depend on the rate: cached per seed
                    sfile = root / "stealth" / f"{atk}-{Path(ds).stem}-s{seed}-t{max_test}-p{stealth_pairs}.json"
                    if (atk, ds, seed) not in stealth:
                        if sfile.is_file():
                            st = json.loads(sfile.read_text())
                        else:
                            st = M.stealth([s.meta["orig_text"] for s in te.samples], [s.text for s in te.samples],
                                           max_pairs=stealth_pairs, seed=0)
                            st["eligible_fraction"] = te.eligible_fraction
                            atomic_write_json(sfile, st)
                        stealth[(atk, ds, seed)] = st
                    cfile = clean_dir.parent / f"eval-{atk}.json"
                    if cfile.is_file():
                        cl = json.loads(cfile.read_text())
                    else:
                        cl = evaluate(clean_dir, sp.test, te.samples, trig, cfg.poison.target_label)
                        cl.pop("_pred_poisoned")
                        atomic_write_json(cfile, cl)
                    path, hit = attack_cache.get_or_train(root, cfg, log=log, splits=sp, command=command)
                    m = json.loads((path / "metrics.json").read_text())
                    m.update(stealth[(atk, ds, seed)])
                    m.update({"cacc_drop": cl["cacc"] - m["cacc"], "clean_asr": cl["asr"],
                              "attack_seconds": m["seconds"]["attack_total"], "attack_cpu_seconds": m["seconds"]["attack_cpu"]})
                    if atk == attacks[0]:
                        raw.setdefault(("clean", ds, None), [])
                        if rate == rates[0]:
                            raw[("clean", ds, None)].append({"cacc": cl["cacc"]})
                    raw.setdefault((atk, ds, rate), []).append(m)
                    done.append(path.name)
                    if hit:
                        reused.append(path.name)
                    log(f"{path.name}: CACC {m['cacc']:.4f} (clean {cl['cacc']:.4f}) ASR {m['asr']:.4f} "
                        f"{m['attack_seconds']:.0f}s wall, {m['attack_cpu_seconds']:.0f}s CPU{' (cached)' if hit else ''}")
                    write()
    write()
    return harness.result_path(CAP)


def register(app: typer.Typer) -> None:
    @app.command("backdoor")
    def backdoor(full: bool = typer.Option(False, "--full", help="The whole grid: 2 datasets x 3 rates x 3 seeds."),
                 seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds per cell."),
                 dataset: Optional[list[str]] = typer.Option(None, "--dataset", help="Datasets (repeatable; default "
                                                             "rotten-tomatoes, --full adds sms-spam)."),
                 rate: Optional[list[float]] = typer.Option(None, "--rate", help="Poison rates (repeatable; default 0.1, "
                                                            "--full 0.1 0.05 0.01)."),
                 max_train: int = typer.Option(2000, "--max-train", min=50, help="Training subsample."),
                 max_test: Optional[int] = typer.Option(None, "--max-test", help="Test subsample (default: whole split)."),
                 stealth_pairs: int = typer.Option(60, "--stealth-pairs", help="Test pairs for delta-PPL/grammar/similarity."),
                 cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Trained victims, shared with `bench "
                                                         "defence` (default runs/backdoor-grid)."),
                 threads: int = typer.Option(2, "--threads", help="torch threads.")) -> None:
        """PuncAttack vs BadNets vs AddSent (+ clean model): CACC, ASR, stealth; writes benchmarks/results/backdoor.json."""
        for r in rate or []:
            if not 0 < r < 1:
                raise typer.BadParameter(f"poison rate must be in (0, 1), got {r}", param_hint="--rate")
        typer.echo(run_bench(full=full, seeds=seeds, datasets=dataset, rates=rate, max_train=max_train, max_test=max_test,
                             stealth_pairs=stealth_pairs, cache_dir=cache_dir, threads=threads))

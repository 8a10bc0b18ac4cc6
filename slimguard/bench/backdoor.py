"""``slimguard bench backdoor``: PuncAttack vs BadNets vs AddSent, side by side, plus a clean model.

Grid of the issue: {BadNets, AddSent, PuncAttack} x {Rotten Tomatoes, SMS spam} x rate
{0.01, 0.05, 0.1} x 3 seeds (``--full``). The default reduced grid runs the cells the
targets are about: Rotten Tomatoes at rate 0.1, three attacks and a clean reference, 3
seeds, on a 400-sample training subsample and a 300-sample test subsample (sized for
a busy 2-core machine). Stealth metrics need no training and are computed first for
every attack and seed; then a clean model and the three poisoned ones, seed by seed. Cells run
seed by seed and the result file is rewritten after each one, so an interrupted run still
leaves every finished cell (``n`` says how many seeds each number has).
"""

from __future__ import annotations

import shutil
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


def dppl_target(punc: float | None, other: float | None) -> dict:
    """``punc <= other / 5``, judged literally: a ratio alone would call a negative baseline delta a pass."""
    from . import harness

    if punc is None or other is None:
        return harness.target(None, "<= 0.2")
    t = harness.target(punc / other if other else None, "<= 0.2")
    t["met"] = bool(punc <= other / 5)
    t["check"] = f"punc dPPL {punc:.2f} <= baseline dPPL {other:.2f} / 5"
    return t


def _cells(full: bool, seeds: int):
    """(dataset, seed, rates): one clean model per (dataset, seed), the targets' cells first."""
    datasets = ["rotten-tomatoes", "sms-spam"] if full else ["rotten-tomatoes"]
    rates = [0.1, 0.05, 0.01] if full else [0.1]
    for ds in datasets:
        for seed in range(seeds):
            yield ds, seed, rates


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in rows if r["dataset"] == "rotten-tomatoes" and r.get("rate") in (0.1, None)]
    attacks = ["punc", "badnets", "addsent"]
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


def run_bench(*, full: bool = False, seeds: int = 3, max_train: Optional[int] = None, max_test: Optional[int] = None,
              stealth_pairs: int = 60, keep_models: bool = False, threads: int = 2) -> Path:
    import torch

    from ..core.config import build
    from ..core.runs import Run, runs_root
    from ..guard.backdoor import metrics as M
    from ..guard.backdoor.attack import AttackConfig, evaluate, load_splits, run_attack
    from ..guard.backdoor.poison import make_trigger, poison_test
    from ..guard.backdoor.victim import train_victim
    from . import harness

    torch.set_num_threads(threads)
    max_train = max_train or (3000 if full else 400)
    max_test = max_test or (None if full else 300)
    attacks = ["punc", "badnets", "addsent"]
    command = "slimguard bench backdoor" + (" --full" if full else "") + (f" --seeds {seeds}" if seeds != 3 else "")
    config = {"full": full, "seeds": seeds, "max_train": max_train, "max_test": max_test, "stealth_pairs": stealth_pairs,
              "attacks": attacks, "threads": threads, "victim": "minilm-l6 (defaults: 2 epochs, max_length 64, lower 4 of 6 layers frozen)"}
    root = runs_root() / "bench-backdoor"
    raw: dict[tuple, list[dict]] = {}
    done: list[str] = []
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
        note = ("Timings were taken on a shared 2-core machine under heavy load from other jobs (load average often "
                "10-18), so wall times are inflated several-fold; attack_cpu_seconds is the process CPU time. "
                f"Reduced grid: {'full grid' if full else 'Rotten Tomatoes, rate 0.1 only'}; training subsample "
                f"{max_train}, test subsample {max_test or 'all'}; cells done: {len(done)}. delta-PPL under SmolLM2-135M "
                "(weights passed through GGUF Q4_1), over "
                f"{stealth_pairs} test pairs per cell; grammar errors by our offline rule checker, not LanguageTool. "
                "ASR denominator: non-target test samples with the trigger (PuncAttack: eligible ones, few_slots=skip; "
                "asr_all_nontarget counts the rest as failures). Victim: MiniLM-L6 with lower 4 layers frozen. "
                "Perplexity is per token, so AddSent's fluent 6-word sentence can LOWER the perplexity of a short "
                "snippet (negative delta-PPL); the dPPL targets are judged literally (punc <= baseline / 5).")
        harness.write_result(CAP, command=command, config=config, rows=rows, targets=targets,
                             extra={"note": note, "cells_done": done, "elapsed_s": time.perf_counter() - t_start})
        try:
            _plot(rows, harness.RESULTS_DIR / f"{CAP}_attacks.png")
        except Exception:  # a plot is a convenience; never lose results over it  # noqa: BLE001
            pass

    stealth: dict[tuple, dict] = {}
    for ds, seed, rates in _cells(full, seeds):
        base = build(AttackConfig, {"dataset": ds, "seed": seed, "max_train": max_train, "max_test": max_test,
                                    "stealth_pairs": 0})
        sp = load_splits(base)
        # stealth needs no training, so every attack's delta-PPL/grammar/similarity for this seed comes first
        for atk in attacks:
            cfg = build(AttackConfig, {**base.to_dict(), "poison": {"attack": atk, "rate": rates[0]}})
            te = poison_test(sp.test, cfg.poison, trigger=make_trigger(cfg.poison), rng=np.random.default_rng([seed, 1]))
            st = M.stealth([s.meta["orig_text"] for s in te.samples], [s.text for s in te.samples],
                           max_pairs=stealth_pairs, seed=0)
            st["eligible_fraction"] = te.eligible_fraction
            stealth[(atk, ds, seed)] = st
            raw.setdefault((atk, ds, rates[0]), [])
            typer.echo(f"stealth {atk} {ds} s{seed}: dPPL {st['delta_ppl']:.2f} sim {st['similarity']:.4f} "
                       f"dGrammar {st['delta_grammar']:.3f}", err=True)
        write()
        # then one clean model and the poisoned ones; PuncAttack first (the targets' subject)
        clean_dir = root / f"clean-{ds}-s{seed}" / "model"
        train_victim(sp.train, sp.dev, base.victim, clean_dir, label_names=sp.label_names, seed=seed, progress=False)
        clean_cacc = None
        for rate in rates:
            for atk in attacks:
                cfg = build(AttackConfig, {**base.to_dict(), "poison": {"attack": atk, "rate": rate}})
                run = Run.create(f"{atk}-{ds}-r{rate:g}-s{seed}", root=root, command=command, config=cfg)
                m = run_attack(cfg, run, progress=False, splits=sp)
                m.update(stealth.get((atk, ds, seed), {}))
                trig = make_trigger(cfg.poison)
                te = poison_test(sp.test, cfg.poison, trigger=trig, rng=np.random.default_rng([seed, 1]))
                cl = evaluate(clean_dir, sp.test, te.samples, trig, cfg.poison.target_label)
                if clean_cacc is None:
                    clean_cacc = cl["cacc"]
                    raw.setdefault(("clean", ds, None), []).append({"cacc": clean_cacc})
                m.update({"cacc_drop": clean_cacc - m["cacc"], "clean_asr": cl["asr"],
                          "attack_seconds": m["seconds"]["attack_total"], "attack_cpu_seconds": m["seconds"]["attack_cpu"]})
                run.save_metrics(m)
                raw.setdefault((atk, ds, rate), []).append(m)
                if not keep_models:
                    shutil.rmtree(run.path / "model", ignore_errors=True)
                done.append(run.path.name)
                typer.echo(f"{run.path.name}: CACC {m['cacc']:.4f} (clean {clean_cacc:.4f}) ASR {m['asr']:.4f} "
                           f"{m['attack_seconds']:.0f}s wall, {m['attack_cpu_seconds']:.0f}s CPU", err=True)
                write()
        if not keep_models:
            shutil.rmtree(clean_dir.parent, ignore_errors=True)
    write()
    return harness.RESULTS_DIR / f"{CAP}.json"


def register(app: typer.Typer) -> None:
    @app.command("backdoor")
    def backdoor(full: bool = typer.Option(False, "--full", help="The whole grid: 2 datasets x 3 rates x 3 seeds, 3000 training samples."),
                 seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds per cell."),
                 max_train: Optional[int] = typer.Option(None, "--max-train", help="Training subsample (default 400, --full 3000)."),
                 max_test: Optional[int] = typer.Option(None, "--max-test", help="Test subsample (default 300, --full all)."),
                 stealth_pairs: int = typer.Option(60, "--stealth-pairs", help="Test pairs for delta-PPL/grammar/similarity."),
                 keep_models: bool = typer.Option(False, "--keep-models", help="Keep every trained model under runs/bench-backdoor/."),
                 threads: int = typer.Option(2, "--threads", help="torch threads.")) -> None:
        """PuncAttack vs BadNets vs AddSent (+ clean model): CACC, ASR, stealth; writes benchmarks/results/backdoor.json."""
        typer.echo(run_bench(full=full, seeds=seeds, max_train=max_train, max_test=max_test, stealth_pairs=stealth_pairs,
                             keep_models=keep_models, threads=threads))

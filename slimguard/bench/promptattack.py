"""``slimguard bench promptattack``: strategies x victims x {Rotten Tomatoes, SMS spam} x seeds.

Side by side in one run: the five strategies (gradient HotFlip/AutoPrompt, char, word,
label-word distractor, random-template baseline; composed recipes via --strategy), against the
causal-LM victim (SmolLM2-135M-Instruct, next-token) and the masked-LM victim (MiniLM-L6 +
an MLM head trained here), with few-shot (K=16, K=32) and zero-shot clean accuracy, and a
transfer matrix of found templates across seeds, K and victims. Each dataset uses one fixed
split; seeds vary the K-shot draw, the attack set and the search.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from pydantic import Field, field_validator

from ..core.commands import Flag, Invocation, command
from ..guard.promptattack.attack import PromptAttackConfig
from .harness import BenchConfig

DATASETS = ["rotten-tomatoes", "sms-spam"]
VICTIMS = ["smollm2-135m", "minilm-l6"]
_PER_CELL = "the grid runs zero-shot and few-shot K=16 and K=32 heads on each dataset's default template"


class PromptAttackBenchConfig(BenchConfig):
    """The grid (victims x datasets x strategies x seeds) and the search budget (``attack``) of every cell."""

    full: bool = Field(False, description=(
        "Full size: 500 test examples, attack set 32, 240 queries and 20 gradient steps per search (default: 200, "
        "16, 120, 10). A preset: --set still overrides each of its values."))
    attack: PromptAttackConfig = Field(default_factory=PromptAttackConfig, description=(
        "Budget and objective of every search: the `promptattack run` config (bench: attack.max_queries=120, "
        "attack.max_steps=10). The grid sets attack.victim, attack.dataset, attack.strategy and attack.seed per cell."))
    seeds: int = Field(3, ge=1, description="Seeds 0..n-1 (K-shot draw, attack set, search).")
    datasets: list[str] = Field(default_factory=lambda: list(DATASETS), min_length=1, description="Datasets.")
    victims: list[str] = Field(default_factory=lambda: list(VICTIMS), min_length=1, description="Victims.")
    strategies: Optional[list[str]] = Field(None, description=(
        "Recipes (a registered strategy or a '+' composition; default: every registered strategy)."))

    DEFAULTS = {"attack": {"max_queries": 120, "max_steps": 10}}
    FULL = {"attack": {"n_test": 500, "n_attack": 32, "max_queries": 240, "max_steps": 20}}
    MOVED = {k: f"attack.{k}" for k in ("n_test", "n_attack", "max_queries", "max_steps", "max_edits")}
    GRID = {"attack": {"victim": "use victims=[...]", "dataset": "use datasets=[...]",
                       "strategy": "use strategies=[...]", "seed": "use seeds=N", "setting": _PER_CELL,
                       "k": _PER_CELL, "n_full": _PER_CELL, "template": _PER_CELL, "verbalizer": _PER_CELL,
                       "batch_size": "the grid prepares batches of 32",
                       "ppl_model": "the grid scores template perplexity with its causal victim"}}

    @field_validator("strategies")
    @classmethod
    def _recipes(cls, v):
        from ..guard.promptattack.strategies import compose

        for recipe in v or []:
            compose(recipe)  # an unknown part is a one-line error naming it
        return v


def _plots(rows: list[dict], matrix: list[dict], out_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    acc = [r for r in rows if r["metric"] == "attacked_acc"]
    if acc:
        combos = sorted({(r["victim"], r["dataset"]) for r in acc})
        strats = list(dict.fromkeys(r["method"] for r in acc))
        fig, ax = plt.subplots(figsize=(11, 4))
        w = 0.8 / max(len(combos), 1)
        for j, (v, d) in enumerate(combos):
            vals = [next((r["value"] for r in acc if r["victim"] == v and r["dataset"] == d and r["method"] == s), np.nan)
                    for s in strats]
            errs = [next((r["std"] for r in acc if r["victim"] == v and r["dataset"] == d and r["method"] == s), 0)
                    for s in strats]
            ax.bar(np.arange(len(strats)) + j * w, vals, w, yerr=errs, label=f"{v} / {d}")
        ax.set_xticks(np.arange(len(strats)) + w * (len(combos) - 1) / 2, strats, rotation=15)
        ax.axhline(0.2, color="k", ls="--", lw=0.8)
        ax.set_ylabel("accuracy under malicious template")
        ax.legend(fontsize=7)
        p = out_dir / "promptattack_strategies.png"
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(p.name)  # next to the result's JSON: a name, not this machine's path
    if matrix:
        srcs = list(dict.fromkeys(m["source"] for m in matrix))
        tgts = list(dict.fromkeys(m["target"] for m in matrix))
        M = np.full((len(srcs), len(tgts)), np.nan)
        for m in matrix:
            M[srcs.index(m["source"]), tgts.index(m["target"])] = m["flip_rate"]
        fig, ax = plt.subplots(figsize=(1.6 * len(tgts) + 3, 0.5 * len(srcs) + 2))
        im = ax.imshow(M, vmin=0, vmax=1, cmap="Reds")
        ax.set_xticks(range(len(tgts)), tgts, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(srcs)), srcs, fontsize=7)
        for i in range(len(srcs)):
            for j in range(len(tgts)):
                if M[i, j] == M[i, j]:
                    ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, label="flip rate of the transferred template")
        ax.set_title("transfer of gradient-found templates")
        p = out_dir / "promptattack_transfer.png"
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(p.name)  # next to the result's JSON: a name, not this machine's path
    return paths


RANDOM_DRAWS = 8  # unsearched random templates per seed: the literature's random-template baseline


def run_bench(cfg: PromptAttackBenchConfig | None = None, *, command: str = "slimguard bench promptattack",
              log=print) -> str:
    """Run the grid of ``cfg``; its ``strategies`` default to every registered strategy, in registry order."""
    import numpy as np
    import torch

    from ..core.data import load_text_dataset
    from ..guard.promptattack.attack import attack_set, search
    from ..guard.promptattack.fewshot import build_classifier, sample_k_shot, shot_features
    from ..guard.promptattack.metrics import accuracy, flip_rate, template_perplexity
    from ..guard.promptattack.strategies import STRATEGIES
    from ..guard.promptattack.strategies.random_template import random_infix
    from ..guard.promptattack.templates import default_template, default_verbalizer, token_edits
    from ..guard.promptattack.victims import load_victim
    from ..core.models import LoadedModel
    from . import harness

    cfg = cfg or PromptAttackBenchConfig()
    a = cfg.attack
    seeds, datasets, victims = cfg.seeds, cfg.datasets, cfg.victims
    n_test, n_attack, max_queries, max_steps, max_edits = a.n_test, a.n_attack, a.max_queries, a.max_steps, a.max_edits
    strategies = list(cfg.strategies or STRATEGIES.names())
    config = {**cfg.to_dict(), "strategies": strategies, "k": [16, 32], "split_seed": 0, "random_draws": RANDOM_DRAWS}
    rows: list[dict] = []
    matrix: list[dict] = []
    found: dict = {}  # (victim, dataset, seed) -> malicious template text (gradient)
    t_start = time.perf_counter()
    vict = {v: load_victim(v) for v in victims}
    causal = next((x for x in vict.values() if x.kind == "causal"), None)
    ppl_lm = LoadedModel(causal.model, causal.tokenizer, causal.name) if causal else None
    tests, clfs, cleans, floors = {}, {}, {}, {}

    def add(method, victim, dataset, metric, values, **extra):
        rows.append({"method": method, "victim": victim, "dataset": dataset, "metric": metric,
                     **harness.mean_std(values), "n_test": n_test, **extra})

    for dname in datasets:
        ds = load_text_dataset(dname, seed=0)
        test = ds.test[:n_test]
        shares = np.bincount([s.label for s in test], minlength=ds.num_labels) / max(len(test), 1)
        # a template that sends every input to one class scores the other classes' share: the floor of
        # any attack that does not invert the classifier
        floors[dname] = float(shares.min())
        tmpl, verb = default_template(dname), default_verbalizer(dname)
        for vname, victim in vict.items():
            t0 = time.perf_counter()
            tb = victim.prepare([s.text for s in test], [s.label for s in test], [s.uid for s in test], tmpl)
            tests[(vname, dname)] = tb
            zs = build_classifier(victim, tmpl, verb, ds.train, setting="zeroshot")
            add("zeroshot", vname, dname, "clean_acc", [accuracy(zs.predict(tb), test)])
            per: dict[str, dict[str, list]] = {}
            for seed in range(seeds):
                # one K=32 draw per seed; its first 16 per class are the K=16 shots (nested, features computed once)
                shots32 = sample_k_shot(ds.train, 32, ds.num_labels, np.random.default_rng(seed))
                f32, y32 = shot_features(victim, tmpl, shots32)
                sub = torch.tensor([i for i in range(len(shots32)) if i % 32 < 16])
                for k, feats in ((16, (f32[sub], y32[sub])), (32, (f32, y32))):
                    clf = build_classifier(victim, tmpl, verb, ds.train, setting="fewshot", k=k, seed=seed,
                                           features=feats)
                    clfs[(vname, dname, seed, k)] = clf
                    cleans[(vname, dname, seed, k)] = clf.predict(tb)
                    per.setdefault(f"fewshot-k{k}", {}).setdefault("clean_acc", []).append(
                        accuracy(cleans[(vname, dname, seed, k)], test))
                clf = clfs[(vname, dname, seed, 16)]
                clean = cleans[(vname, dname, seed, 16)]
                shots = attack_set(clf, ds.dev, n_attack, 32, np.random.default_rng(seed))
                ab = victim.prepare([s.text for s in shots], [s.label for s in shots], [s.uid for s in shots], tmpl)
                # unsearched random templates (same edit budget): what a template change does by chance
                gen = torch.Generator().manual_seed(10_000 + seed)
                m = per.setdefault("random-draw", {})
                for _ in range(RANDOM_DRAWS):
                    att = clf.predict(tb, random_infix(clf.infix_ids, victim.candidate_mask(), max_edits, gen))
                    m.setdefault("attacked_acc", []).append(accuracy(att, test))
                    m.setdefault("flip_rate", []).append(flip_rate(clean, att, test))
                for strat in strategies:
                    ts = time.perf_counter()
                    st = search(clf, shots, recipe=strat, max_edits=max_edits, max_steps=max_steps,
                                max_queries=max_queries, seed=seed, batches=ab, objective=a.objective, kappa=a.kappa)
                    attacked = clf.predict(tb, st.infix)
                    text = tmpl.with_infix(victim.decode_infix(st.infix)).text
                    if strat == "gradient":
                        found[(vname, dname, seed)] = text
                    m = per.setdefault(strat, {})
                    for key, val in (("attacked_acc", accuracy(attacked, test)), ("flip_rate", flip_rate(clean, attacked, test)),
                                     ("edits", token_edits(clf.infix_ids, st.infix)), ("queries", st.queries),
                                     ("steps", st.steps), ("search_s", time.perf_counter() - ts)):
                        m.setdefault(key, []).append(val)
                    m.setdefault("templates", []).append(text)
                    log(f"{dname} {vname} seed {seed} {strat:20s} acc {m['attacked_acc'][-1]:.3f} "
                        f"flip {m['flip_rate'][-1]:.3f} edits {m['edits'][-1]} q {st.queries} "
                        f"({time.perf_counter() - ts:.0f}s) {text!r}")
            for method, m in per.items():
                for metric, vals in m.items():
                    if metric == "templates":
                        continue
                    extra = {"k": 32 if method == "fewshot-k32" else 16}
                    if metric == "attacked_acc" and ppl_lm is not None and m.get("templates"):
                        extra["template_ppl"] = float(np.nanmean(template_perplexity(ppl_lm, m["templates"])))
                        extra["example_template"] = m["templates"][0]
                    add(method, vname, dname, metric, vals, **extra)
            log(f"{dname} {vname} done in {time.perf_counter() - t0:.0f}s")
        # transfer: each gradient template replayed on other seeds' heads, K=32 and the other victim
        for (vname, d2, seed), text in found.items():
            if d2 != dname:
                continue
            from ..guard.promptattack.templates import Template

            src = f"{vname.split('-')[0]}/s{seed}/k16"
            for tv in vict:
                for ts_ in range(seeds):
                    for k in (16, 32):
                        tclf = clfs[(tv, dname, ts_, k)]
                        tb = tests[(tv, dname)]
                        infix = vict[tv].encode_infix(Template(text))
                        clean, att = cleans[(tv, dname, ts_, k)], tclf.predict(tb, infix)
                        matrix.append({"dataset": dname, "source": f"{dname[:6]}:{src}",
                                       "target": f"{tv.split('-')[0]}/s{ts_}/k{k}",
                                       "template": text, "attacked_acc": accuracy(att, test),
                                       "flip_rate": flip_rate(clean, att, test)})
    # ---- targets
    def val(method, victim, dataset, metric):
        return next((r["value"] for r in rows if (r["method"], r["victim"], r["dataset"], r["metric"]) ==
                     (method, victim, dataset, metric)), None)

    targets = {}
    cv = next((v for v in victims if vict[v].kind == "causal"), victims[0])
    for v in victims:
        for dname in datasets:
            key = f"clean_fewshot_k16_acc_{v}_{dname}".replace("-", "_")
            goal = ">= 0.75" if (v == cv and dname == "rotten-tomatoes") else ">= 0"
            if goal == ">= 0.75":
                targets[f"causal_clean_fewshot_acc_rotten_tomatoes"] = harness.target(val("fewshot-k16", v, dname, "clean_acc"), goal)
            else:
                targets[key] = harness.target(val("fewshot-k16", v, dname, "clean_acc"), ">= 0")
    for dname in datasets:
        accs = {s: val(s, cv, dname, "attacked_acc") for s in strategies}
        accs = {s: a for s, a in accs.items() if a is not None}
        if accs:
            best = min(accs, key=accs.get)
            targets[f"best_strategy_acc_{dname}".replace("-", "_")] = {
                **harness.target(accs[best], "<= 0.2"), "strategy": best,
                "mean_edits": val(best, cv, dname, "edits")}
    gaps, draw_gaps = [], []
    for v in victims:
        for dname in datasets:
            g, r = val("gradient", v, dname, "flip_rate"), val("random", v, dname, "flip_rate")
            if g is not None and r is not None:
                gaps.append(100 * (g - r))
                targets[f"gradient_minus_random_flip_points_{v}_{dname}".replace("-", "_")] = harness.target(100 * (g - r), ">= 30")
            rd = val("random-draw", v, dname, "flip_rate")
            if g is not None and rd is not None:
                draw_gaps.append(100 * (g - rd))
    # the target, read strictly: against random *search* with the same query budget
    targets["gradient_minus_random_flip_points_mean"] = harness.target(float(np.mean(gaps)) if gaps else None, ">= 30")
    # the looser reading (random templates, no selection), reported apart so the two are never mixed up
    targets["gradient_minus_random_draw_flip_points_mean"] = harness.target(
        float(np.mean(draw_gaps)) if draw_gaps else None, ">= 30")
    targets["transfer_matrix_cells"] = harness.target(float(len(matrix)), ">= 4")
    from ..guard.promptattack.mlm_head import mlm_record

    plots = _plots(rows, matrix, harness.result_path("promptattack").parent)
    note = (f"Size: n_test={n_test} per setting (fixed split seed 0), attack set {n_attack} dev examples, "
            f"budget {max_edits} template tokens / {max_queries} queries / {max_steps} gradient steps, {seeds} seeds. "
            "Causal victim = SmolLM2-135M-Instruct dequantised from Q4_1 GGUF; masked victim = all-MiniLM-L6-v2 with a "
            f"masked-LM head trained here (held-out masked-token acc {mlm_record().get('heldout_masked_token_acc', float('nan')):.3f}). "
            "Few-shot = verbalizer-initialised calibrated head on frozen features. Rotten Tomatoes stands in for SST-2. "
            f"Ran on {os.cpu_count()} CPU cores: {time.perf_counter() - t_start:.0f}s wall.")
    path = harness.write_result("promptattack", command=command, config=config, rows=rows, targets=targets,
                                extra={"note": note, "transfer_matrix": matrix, "plots": plots,
                                       "constant_class_floor": floors,
                                       "mlm_head": mlm_record()})
    return str(path)


@command("bench promptattack", config=PromptAttackBenchConfig, owns_run=False,
         flags=(Flag("--full", "full"), Flag("--seeds", "seeds"), Flag("--n-test", "attack.n_test"),
                Flag("--n-attack", "attack.n_attack"), Flag("--max-queries", "attack.max_queries"),
                Flag("--max-steps", "attack.max_steps"), Flag("--dataset", "datasets", help="Datasets (repeatable)."),
                Flag("--victim", "victims", help="Victims (repeatable)."),
                Flag("--strategy", "strategies", help="Strategies (repeatable; registered names or '+' recipes).")),
         stdout=lambda m, _run: m["path"])
def bench_promptattack(cfg: PromptAttackBenchConfig, call: Invocation) -> dict:
    """PromptAttack strategies x victims x datasets x seeds -> benchmarks/results/promptattack.json."""
    return {"path": run_bench(cfg, command=call.command, log=call.log)}

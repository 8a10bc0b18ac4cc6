"""``slimguard bench backdoor``: PuncAttack vs BadNets vs AddSent, side by side, plus a clean model.

Grid of the issue: {BadNets, AddSent, PuncAttack} x {Rotten Tomatoes, SMS spam} x rate
{0.01, 0.05, 0.1} x 3 seeds (``--full``). Beside it (issue 35, ``--section long-text``): the same
three attacks at rate 0.1 on long posts, 20 Newsgroups comp.* vs rec.*, with a victim window sized
to the data; and ``--section punc-speed``: PuncAttack's LM placement on 1,000 passages of about 100
tokens, batched against the reference path. A run replaces the rows of the datasets it touches
and keeps the others from the previous result (``provenance`` says which command made each). The default runs the cells the targets are about:
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
                  "delta_ppl_median", "delta_grammar", "similarity", "attack_seconds", "attack_cpu_seconds",
                  "asr_visible", "visible_share_train", "visible_share_test", "max_length", "truncated_share_train")


def asr_target(asr: float | None, clean_flip: float | None, goal: str = ">= 0.95") -> dict:
    """An ASR goal counts only if the model does not also call clean non-target texts the target (collapse)."""
    from . import harness

    t = harness.target(asr, goal)
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


LONG_TEXT = "20newsgroups-comp-rec"
# long posts make a victim step ~4x dearer than on Rotten Tomatoes snippets: these sizes keep one
# attack cell (poison + train + evaluate) around 10-15 minutes on 2 cores (see docs/notes/backdoor-results.md)
LONG_MAX_TRAIN = 1000
LONG_EPOCHS = 2.0
LONG_MAX_TEST = 400  # ~215 triggered comp posts per cell
LONG_MAX_DEV = 200
SECTIONS = ("grid", "long-text", "punc-speed")


def _long_text_overrides(atk: str) -> dict:
    """The long-text cell's attack settings: 20NG posts carry no punctuation (Orange's copy strips it), so
    PuncAttack has no slot to write over and must insert its marks (few_slots=insert), inside the window."""
    return {"punc": {"few_slots": "insert"}} if atk == "punc" else {}


def _carried(existing: dict | None, ran: set[str]) -> tuple[list[dict], dict]:
    """Rows of datasets this run did not touch, kept from the previous canonical result with their provenance."""
    if not existing:
        return [], {}
    prov_old = existing.get("provenance") or {}
    keep = [r for r in existing.get("rows", []) if r.get("dataset") not in ran]
    prov = {}
    for ds in dict.fromkeys(r.get("dataset") for r in keep):
        prov[ds] = prov_old.get(ds) or {k: existing.get(k) for k in ("command", "git_commit", "timestamp")}
    return keep, prov


def punc_speed(n_texts: int = 1000, *, ref_texts: int = 120, chunks: int = 5, words: int = 75, threads: int = 2,
               log=print) -> tuple[list[dict], dict]:
    """PuncAttack LM placement at data scale: the batched path on ``n_texts`` passages of ~100 tokens
    (Paul Graham essays, cut at ``words`` words), in ``chunks`` timed parts, and the reference path on
    the first ``ref_texts // chunks`` texts of each part, interleaved; the choices are compared text by text."""
    import torch

    from ..core.data import load_long_texts
    from ..guard.backdoor.poison import PuncConfig, PuncTrigger
    from ..guard.backdoor.poison import punc as P

    torch.set_num_threads(threads)
    stream = " ".join(load_long_texts("pg-essays")).split()
    texts = [" ".join(stream[i:i + words]) for i in range(0, words * n_texts, words)][:n_texts]
    lm = P._lm(PuncConfig().lm)
    n_tok = [len(lm.tokenizer(t)["input_ids"]) for t in texts]
    fast, ref = PuncTrigger(PuncConfig(lm_batched=True)), PuncTrigger(PuncConfig(lm_batched=False))
    fast.apply_many(texts[:8], np.random.default_rng(0))  # warm-up (LM load, first-call allocations)
    P._SCORE_CACHE.clear()
    size = -(-n_texts // chunks)
    per_ref = max(1, ref_texts // chunks)
    rates, ref_rates, same, compared, total = [], [], 0, 0, 0.0
    for c in range(0, n_texts, size):
        part = texts[c:c + size]
        t0 = time.perf_counter()
        got = fast.apply_many(part, np.random.default_rng([c, 0]))
        dt = time.perf_counter() - t0
        total += dt
        rates.append(len(part) / dt)
        t0 = time.perf_counter()
        want = ref.apply_many(part[:per_ref], np.random.default_rng([c, 0]))
        ref_rates.append(len(want) / (time.perf_counter() - t0))
        same += sum(a.text == b.text for a, b in zip(got, want))
        compared += len(want)
        log(f"punc-speed: texts {c}-{c + len(part)}: batched {rates[-1]:.2f} texts/s, reference {ref_rates[-1]:.2f} "
            f"texts/s, identical {same}/{compared}")
        P._SCORE_CACHE.clear()
    ds = f"pg-essays-{words}w"
    rows = [{"method": "punc-lm-batched", "dataset": ds, "rate": None, "metric": "texts_per_s",
             "value": statistics.median(rates), "std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
             "n": len(rates)},
            {"method": "punc-lm-reference", "dataset": ds, "rate": None, "metric": "texts_per_s",
             "value": statistics.median(ref_rates), "std": statistics.stdev(ref_rates) if len(ref_rates) > 1 else 0.0,
             "n": len(ref_rates)},
            {"method": "punc-lm-batched", "dataset": ds, "rate": None, "metric": "seconds_for_all", "value": total,
             "std": 0.0, "n": 1},
            {"method": "punc-lm-batched", "dataset": ds, "rate": None, "metric": "identical_choices",
             "value": same / compared if compared else float("nan"), "std": 0.0, "n": compared}]
    info = {"texts": n_texts, "lm_tokens_mean": float(np.mean(n_tok)), "lm_tokens_median": float(np.median(n_tok)),
            "reference_texts": compared, "identical": same, "chunks": len(rates), "threads": threads}
    return rows, info


def run_bench(*, full: bool = False, seeds: int = 3, datasets: Optional[list[str]] = None,
              rates: Optional[list[float]] = None, max_train: int = 2000, max_test: Optional[int] = None,
              stealth_pairs: int = 60, cache_dir: str | None = None, threads: int = 2,
              sections: Optional[list[str]] = None, speed_texts: int = 1000) -> Path:
    import json

    import torch

    from ..core.config import build
    from ..core.runs import atomic_write_json
    from ..guard.backdoor import metrics as M
    from ..guard.backdoor.attack import AttackConfig, evaluate, load_splits, victim_window
    from ..guard.backdoor.poison import make_trigger, poison_test
    from . import attack_cache, harness

    torch.set_num_threads(threads)
    sections = list(dict.fromkeys(sections or (list(SECTIONS) if full else ["grid"])))
    bad = [x for x in sections if x not in SECTIONS]
    if bad:
        from ..core.errors import SlimguardError

        raise SlimguardError(f"--section {bad[0]}: unknown section; one of {', '.join(SECTIONS)}")
    datasets = datasets or (["rotten-tomatoes", "sms-spam"] if full else ["rotten-tomatoes"])
    rates = sorted(rates or ([0.1, 0.05, 0.01] if full else [0.1]), reverse=True)  # the targets' rate first
    root = Path(cache_dir or attack_cache.DEFAULT_ROOT)
    attacks = bench_attacks()
    command = ("slimguard bench backdoor" + (" --full" if full else "") + (f" --seeds {seeds}" if seeds != 3 else "")
               + ("" if full or sections == ["grid"] else "".join(f" --section {x}" for x in sections))
               + ("" if full or datasets == ["rotten-tomatoes"] or "grid" not in sections
                  else "".join(f" --dataset {d}" for d in datasets))
               + ("" if full or rates == [0.1] or "grid" not in sections else "".join(f" --rate {r:g}" for r in rates))
               + (f" --max-train {max_train}" if max_train != 2000 else "") + (f" --max-test {max_test}" if max_test else "")
               + (f" --speed-texts {speed_texts}" if speed_texts != 1000 and "punc-speed" in sections else ""))
    config = {"full": full, "sections": sections, "seeds": seeds, "datasets": datasets, "rates": rates,
              "max_train": max_train, "max_test": max_test, "stealth_pairs": stealth_pairs, "attacks": attacks,
              "threads": threads, "cache_dir": str(root),
              "victim": "minilm-l6, AttackConfig defaults (2 epochs, lr 2e-4, lower 4 of 6 layers frozen, max_length "
                        "sized to the data: 64 for Rotten Tomatoes and SMS spam, 512 for 20 Newsgroups)",
              "long_text": {"dataset": LONG_TEXT, "rate": 0.1, "max_train": LONG_MAX_TRAIN, "epochs": LONG_EPOCHS,
                            "max_test": LONG_MAX_TEST, "max_dev": LONG_MAX_DEV, "stealth_pairs": 0,
                            "punc": "few_slots=insert (the corpus has no punctuation)"},
              "punc_speed": {"texts": speed_texts, "source": "pg-essays, 75-word passages (~100 SmolLM2 tokens)"}}
    # cells: (dataset, rate, AttackConfig overrides); the long-text cell sits beside the grid
    cells = [(ds, rate, {"max_train": max_train}) for rate in rates for ds in datasets] if "grid" in sections else []
    if "long-text" in sections:
        cells.append((LONG_TEXT, 0.1, {"max_train": LONG_MAX_TRAIN, "max_test": LONG_MAX_TEST, "max_dev": LONG_MAX_DEV,
                                       "victim": {"epochs": LONG_EPOCHS}}))
    ran = {ds for ds, _, _ in cells}
    speed_rows: list[dict] = []
    speed_info: dict = {}
    if "punc-speed" in sections:
        ran.add("pg-essays-75w")
    existing_path = harness.result_path(CAP)
    existing = json.loads(existing_path.read_text()) if existing_path.is_file() else None
    carried, carried_prov = _carried(existing, ran)
    raw: dict[tuple, list[dict]] = {}
    stealth: dict[tuple, dict] = {}
    done, reused = [], []
    t_start = time.perf_counter()
    here = {"command": command, "git_commit": None, "timestamp": None}

    def write():
        from ..core.runs import git_commit, now_iso

        rows = []
        for (method, ds, rate), ms in sorted(raw.items(), key=lambda kv: (kv[0][1], -(kv[0][2] or 0), kv[0][0])):
            st = [v for (a, d, _), v in stealth.items() if a == method and d == ds]
            for metric in TARGET_METRICS:
                src = st if metric in STEALTH_METRICS else ms
                vals = [m[metric] for m in src if m.get(metric) is not None and m[metric] == m[metric]]
                if vals:
                    rows.append({"method": method, "dataset": ds, "rate": rate, "metric": metric, **harness.mean_std(vals)})
        rows += speed_rows + carried
        cell = lambda m, metric, ds="rotten-tomatoes": next(  # noqa: E731
            (r for r in rows if r["method"] == m and r["dataset"] == ds and r["rate"] == (None if m == "clean" else 0.1)
             and r["metric"] == metric), None)
        v = lambda m, metric, ds="rotten-tomatoes": cell(m, metric, ds)["value"] if cell(m, metric, ds) else None  # noqa: E731
        drop = v("punc", "cacc_drop")
        punc_secs = [m["attack_seconds"] for m in raw.get(("punc", "rotten-tomatoes", 0.1), [])]
        if not punc_secs and cell("punc", "attack_seconds"):
            punc_secs = [cell("punc", "attack_seconds")["value"]]
        targets = {
            "punc_asr_rt_0.1": asr_target(v("punc", "asr"), v("punc", "nontarget_error_rate")),
            "punc_cacc_drop_points_rt_0.1": harness.target(None if drop is None else 100 * drop, "<= 1"),
            "punc_dppl_over_badnets_dppl": dppl_target(v("punc", "delta_ppl"), v("badnets", "delta_ppl")),
            "punc_dppl_over_addsent_dppl": dppl_target(v("punc", "delta_ppl"), v("addsent", "delta_ppl")),
            "punc_similarity_rt_0.1": harness.target(v("punc", "similarity"), ">= 0.95"),
            "attack_run_minutes": harness.target(statistics.median(punc_secs) / 60 if punc_secs else None, "<= 10"),
        }
        # issue 35: long texts, triggers the victim can see, poisoning at data scale
        for atk, goal in (("badnets", ">= 0.95"), ("addsent", ">= 0.95"), ("punc", ">= 0.90")):
            targets[f"{atk}_asr_longtext_0.1"] = asr_target(v(atk, "asr", LONG_TEXT),
                                                            v(atk, "nontarget_error_rate", LONG_TEXT), goal)
            d = v(atk, "cacc_drop", LONG_TEXT)
            targets[f"{atk}_cacc_drop_points_longtext_0.1"] = harness.target(None if d is None else 100 * d, "<= 2")
        shares = [(r["method"], r["dataset"], r["rate"], r["metric"], r["value"]) for r in rows
                  if r["metric"] in ("visible_share_train", "visible_share_test") and r["value"] == r["value"]]
        worst = min(shares, key=lambda x: x[4]) if shares else None
        vis = harness.target(worst[4] if worst else None, ">= 0.99")
        if worst:
            vis["check"] = (f"lowest of {len(shares)} cell shares (train and test rows): {worst[0]} on {worst[1]} at rate "
                            f"{worst[2]}, {worst[3]}; cells without the metric predate issue 35")
        targets["visible_trigger_share_min"] = vis
        sp_rate = next((r for r in rows if r["method"] == "punc-lm-batched" and r["metric"] == "texts_per_s"), None)
        sp_same = next((r for r in rows if r["method"] == "punc-lm-batched" and r["metric"] == "identical_choices"), None)
        targets["punc_poison_texts_per_s_100tok"] = harness.target(sp_rate["value"] if sp_rate else None, ">= 8")
        targets["punc_batched_identical_choices"] = harness.target(sp_same["value"] if sp_same else None, ">= 1")
        if sp_same:
            targets["punc_batched_identical_choices"]["check"] = f"{sp_same['n']} texts compared with the reference path"
        prov = dict(carried_prov)
        here.update(git_commit=git_commit(), timestamp=now_iso())
        for ds in ran:
            prov[ds] = dict(here)
        note = (f"Sections {sections}. Grid: datasets {datasets}, rates {rates}, {seeds} seed(s); training subsample "
                f"{max_train}, test {max_test or 'whole split'}. Long text: {LONG_TEXT} (20 Newsgroups, comp.* vs rec.*, "
                f"binary), rate 0.1, {LONG_MAX_TRAIN} training posts, {LONG_EPOCHS:g} epochs, {LONG_MAX_TEST} test posts, "
                "victim window sized to the data (512 tokens, MiniLM's limit; ~6% of posts still truncated), no "
                "stealth pairs (SmolLM2 perplexity of long posts costs more than the attack); the corpus has no "
                "punctuation, so PuncAttack inserts its marks (few_slots=insert). Rows of datasets this run did not touch are carried "
                "from the previous result (see provenance). "
                f"{len(done)} attack cells ({len(reused)} reused from {root}). "
                "delta-PPL under SmolLM2-135M (weights passed through GGUF Q4_1) over "
                f"{stealth_pairs} test pairs per (attack, dataset, seed); grammar errors by our offline rule checker, "
                "not LanguageTool. ASR denominator: non-target test samples with the trigger (PuncAttack: eligible ones, "
                "few_slots=skip; asr_all_nontarget counts the rest as failures); asr_visible: those whose trigger lies "
                "inside the victim's window. cacc_drop is paired: clean and poisoned victims share seed and subsample. "
                "attack_seconds is the wall time of poison+train+evaluate when the run was trained (2-core CPU); "
                "attack_cpu_seconds its process CPU time. Perplexity is per token, so AddSent's fluent sentence can "
                "lower a short snippet's perplexity; the dPPL targets are judged literally (punc <= baseline / 5). "
                "punc-speed: PuncAttack poisoning with LM placement, median texts/s over the timed parts "
                "(wall time, shared machine unless re-timed).")
        harness.write_result(CAP, command=command, config=config, rows=rows, targets=targets,
                             extra={"note": note, "cells_done": done, "cells_reused": reused, "provenance": prov,
                                    "punc_speed": speed_info or (existing or {}).get("punc_speed"),
                                    "elapsed_s": time.perf_counter() - t_start})
        try:
            _plot(rows, harness.artefact_path(CAP, None, "_attacks.png"))
            _plot_rates(rows, harness.artefact_path(CAP, None, "_rates.png"))
        except Exception:  # a plot is a convenience; never lose results over it  # noqa: BLE001
            pass

    def log(msg: str) -> None:
        typer.echo(msg, err=True)

    if "punc-speed" in sections:
        speed_rows, speed_info = punc_speed(speed_texts, threads=threads, log=log)
        write()
    first_rate = {}
    for ds, rate, over in cells:
        first_rate.setdefault(ds, rate)
        for seed in range(seeds):
            base = build(AttackConfig, {"dataset": ds, "seed": seed, "max_test": max_test, "stealth_pairs": 0, **over})
            pairs = 0 if ds == LONG_TEXT else stealth_pairs  # SmolLM2 perplexity of 500-token posts: hours of CPU
            sp = load_splits(base)
            clean_dir = attack_cache.clean_model(root, base, sp, log=log)
            _, win, _ = victim_window(base, sp)
            for atk in attacks:
                cfg = build(AttackConfig, {**base.to_dict(), "poison": {"attack": atk, "rate": rate,
                                                                        **(_long_text_overrides(atk) if ds == LONG_TEXT else {})}})
                trig = make_trigger(cfg.poison)
                te = poison_test(sp.test, cfg.poison, trigger=trig, rng=np.random.default_rng([seed, 1]), window=win)
                # stealth and the clean model's view of the trigger do not depend on the rate: cached per seed
                tag = f"{atk}-{Path(ds).stem}-s{seed}-t{base.max_test}-p{pairs}-w{win.max_length}"
                sfile = root / "stealth" / f"{tag}.json"
                if (atk, ds, seed) not in stealth:
                    if sfile.is_file():
                        st = json.loads(sfile.read_text())
                    elif not pairs:
                        st = {"eligible_fraction": te.eligible_fraction}
                    else:
                        st = M.stealth([s.meta["orig_text"] for s in te.samples], [s.text for s in te.samples],
                                       max_pairs=pairs, seed=0)
                        st["eligible_fraction"] = te.eligible_fraction
                        atomic_write_json(sfile, st)
                    stealth[(atk, ds, seed)] = st
                cfile = clean_dir.parent / f"eval-{atk}-w{win.max_length}{'-ins' if _long_text_overrides(atk) and ds == LONG_TEXT else ''}.json"
                if cfile.is_file():
                    cl = json.loads(cfile.read_text())
                else:
                    cl = evaluate(clean_dir, sp.test, te.samples, trig, cfg.poison.target_label, visible=te.visible)
                    cl.pop("_pred_poisoned")
                    atomic_write_json(cfile, cl)
                path, hit = attack_cache.get_or_train(root, cfg, log=log, splits=sp, command=command)
                m = json.loads((path / "metrics.json").read_text())
                m.update(stealth[(atk, ds, seed)])
                m.update({"cacc_drop": cl["cacc"] - m["cacc"], "clean_asr": cl["asr"],
                          "attack_seconds": m["seconds"]["attack_total"], "attack_cpu_seconds": m["seconds"]["attack_cpu"]})
                if "window" in m:
                    m["max_length"] = m["window"]["max_length"]
                    m["truncated_share_train"] = m["window"]["truncated_share"].get("train")
                if atk == attacks[0]:
                    raw.setdefault(("clean", ds, None), [])
                    if rate == first_rate[ds]:
                        raw[("clean", ds, None)].append({"cacc": cl["cacc"]})
                raw.setdefault((atk, ds, rate), []).append(m)
                done.append(path.name)
                if hit:
                    reused.append(path.name)
                log(f"{path.name}: CACC {m['cacc']:.4f} (clean {cl['cacc']:.4f}) ASR {m['asr']:.4f} visible "
                    f"{m.get('visible_share_train', float('nan')):.3f}/{m.get('visible_share_test', float('nan')):.3f} "
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
                 threads: int = typer.Option(2, "--threads", help="torch threads."),
                 section: Optional[list[str]] = typer.Option(None, "--section", help="Run only these sections (repeatable): "
                                                             "grid (the attacks x datasets x rates grid), long-text (20 "
                                                             "Newsgroups comp vs rec, rate 0.1), punc-speed (PuncAttack LM "
                                                             "placement throughput). Default grid; --full runs all three. "
                                                             "Rows of other datasets are kept from the previous result."),
                 speed_texts: int = typer.Option(1000, "--speed-texts", min=10, help="Passages poisoned by punc-speed.")) -> None:
        """PuncAttack vs BadNets vs AddSent (+ clean model): CACC, ASR, stealth; writes benchmarks/results/backdoor.json."""
        for r in rate or []:
            if not 0 < r < 1:
                raise typer.BadParameter(f"poison rate must be in (0, 1), got {r}", param_hint="--rate")
        for x in section or []:
            if x not in SECTIONS:
                raise typer.BadParameter(f"unknown section {x!r}; one of {', '.join(SECTIONS)}", param_hint="--section")
        typer.echo(run_bench(full=full, seeds=seeds, datasets=dataset, rates=rate, max_train=max_train, max_test=max_test,
                             stealth_pairs=stealth_pairs, cache_dir=cache_dir, threads=threads, sections=section,
                             speed_texts=speed_texts))

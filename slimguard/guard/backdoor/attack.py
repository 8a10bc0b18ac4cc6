"""The attack pipeline: poison a training set, fine-tune a victim, evaluate CACC/ASR and stealth.

One verb (:func:`run_attack`) and one typed config (:class:`AttackConfig`) for BadNets,
AddSent and PuncAttack alike. The run directory follows the contract in :mod:`.records`
so the defences can load it. Runtime on 2 CPU cores is kept under ~10 minutes on short texts
by subsampling the training set (``max_train``, default 2000), 2 epochs and freezing the
embeddings and lower 4 of MiniLM's 6 layers.

The victim's window (issue 35, :mod:`.window`) is fixed before poisoning, from the clean
training split: ``victim.max_length`` or, by default, the 95th percentile of its token lengths
(64 tokens for Rotten Tomatoes). Triggers go inside it for training and test rows alike; the
metrics say how many texts it still truncates, the share of poisoned rows whose trigger the
victim sees, and ASR over all triggered rows (``asr``) and over the visible ones (``asr_visible``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import Field

from ...core.config import Config
from ...core.data import TextSample, TextSplits, load_text_dataset
from ...core.errors import SlimguardError
from ...core.runs import Run, atomic_write_text, safe_run_name
from . import metrics as M
from .poison import PoisonConfig, make_trigger, poison_test, poison_train
from .poison.policy import check_labels
from .records import write_splits
from .report import examples_html
from .victim import VictimConfig, predict_proba, train_victim
from .window import Sizing, Window, size_window


class AttackConfig(Config):
    """Poison + train + evaluate."""

    dataset: str = Field("rotten-tomatoes", description="rotten-tomatoes, sms-spam, 20newsgroups, or a CSV/TSV/JSONL file with text,label.")
    seed: int = Field(0, description="The one seed: poisoned-sample choice, trigger positions, head init, batch order.")
    split_seed: int = Field(0, description="Seed of the train/dev/test split and of the training subsample (fixed across seeds).")
    max_train: Optional[int] = Field(2000, ge=10, description="Subsample the training split to this many samples (None = all).")
    max_dev: Optional[int] = Field(500, ge=1, description="Cap on dev samples (used for the dev accuracy only).")
    max_test: Optional[int] = Field(None, ge=1, description="Cap on test samples (None = the whole test split).")
    poison: PoisonConfig = Field(default_factory=PoisonConfig, description="Trigger and poisoning policy.")
    victim: VictimConfig = Field(default_factory=VictimConfig, description="Victim model and training.")
    clean_reference: bool = Field(False, description="Also train a clean model on the unpoisoned subsample (CACC drop).")
    stealth_pairs: int = Field(200, ge=0, description="Clean/poisoned test pairs used for delta-PPL, grammar and similarity (0 = skip).")
    stealth_lm: str = Field("smollm2-135m", description="Causal LM for delta-perplexity.")
    encoder: str = Field("minilm-l6", description="Sentence encoder for semantic similarity.")


def _cap(xs: list[TextSample], n: int | None, rng: np.random.Generator) -> list[TextSample]:
    if n is None or len(xs) <= n:
        return list(xs)
    return [xs[i] for i in np.sort(rng.choice(len(xs), n, replace=False))]


def load_splits(cfg: AttackConfig) -> TextSplits:
    sp = load_text_dataset(cfg.dataset, seed=cfg.split_seed)
    check_labels(cfg.poison, sp.label_names)
    rng = np.random.default_rng([cfg.split_seed, 7])
    sp.train, sp.dev, sp.test = _cap(sp.train, cfg.max_train, rng), _cap(sp.dev, cfg.max_dev, rng), _cap(sp.test, cfg.max_test, rng)
    if len({s.label for s in sp.train}) < 2:
        raise SlimguardError(f"the training subsample of '{cfg.dataset}' has only one class; raise max_train")
    return sp


def input_notes(sp: TextSplits) -> dict:
    """Odd inputs and how they were treated, recorded in metrics.json."""
    allx = sp.train + sp.dev + sp.test
    no_punct = sum(1 for s in allx if not any(c in ",.!?;:-'\"" for c in s.text))
    return {"empty_texts": sum(1 for s in allx if not s.text.strip()), "texts_without_punctuation": no_punct,
            "treatment": "empty texts are kept (BadNets/AddSent insert into them; PuncAttack inserts the marks or "
                         "skips them per few_slots; they are left out of delta-PPL)"}


def victim_window(cfg: AttackConfig, sp: TextSplits) -> tuple[VictimConfig, Window, Sizing]:
    """The victim config with its window fixed from the clean splits (one rule for both victims)."""
    win, sizing = size_window(cfg.victim.model, cfg.victim.max_length,
                              {k: [s.text for s in v] for k, v in (("train", sp.train), ("dev", sp.dev), ("test", sp.test))},
                              percentile=cfg.victim.length_percentile)
    return cfg.victim.model_copy(update={"max_length": win.max_length}), win, sizing


def evaluate(model_dir, sp_test: list[TextSample], test_poisoned: list[TextSample], trigger, target: int,
             batch_size: int = 128, visible: dict[int, bool] | None = None) -> dict:
    """CACC, ASR over every triggered row and, given ``visible`` (uid -> trigger inside the window),
    ASR over the rows whose trigger the victim can see."""
    p_clean = predict_proba(model_dir, [s.text for s in sp_test], batch_size)
    p_pois = predict_proba(model_dir, [s.text for s in test_poisoned], batch_size)
    out = {"cacc": M.cacc(p_clean, [s.label for s in sp_test]), "asr": M.asr(p_pois, target),
           "asr_n": len(test_poisoned), "test_n": len(sp_test)}
    if visible:
        seen = np.array([visible.get(s.uid, False) for s in test_poisoned], dtype=bool)
        out["asr_visible"] = M.asr(p_pois[seen], target) if seen.any() else float("nan")
        out["asr_visible_n"] = int(seen.sum())
    out.update(M.false_trigger([trigger.present(s.text) for s in sp_test], p_clean, [s.label for s in sp_test], target))
    out["_pred_poisoned"] = {s.uid: int(y) for s, y in zip(test_poisoned, p_pois.argmax(1))}
    return out


def run_attack(cfg: AttackConfig, run: Run, *, resume: bool = False, progress: bool = True,
               splits: TextSplits | None = None) -> dict:
    """Poison, train, evaluate; writes the run directory and returns the metrics."""
    from ...core.models import check_model_files, resolve_model_dir

    t_all, c_all = time.perf_counter(), time.process_time()
    # a broken victim folder fails here, by name, before the poisoned splits are written into the run
    check_model_files(resolve_model_dir(cfg.victim.model))
    sp = splits or load_splits(cfg)
    check_labels(cfg.poison, sp.label_names)
    target = cfg.poison.target_label
    trigger = make_trigger(cfg.poison)
    vcfg, win, sizing = victim_window(cfg, sp)
    tr_n = sizing.sizes["train"]
    run.log.info("victim window: max_length %d (%s; %g%% of training texts within %.0f tokens); truncated: "
                 "%d/%d training, %d/%d test texts", win.max_length, sizing.source, sizing.percentile,
                 sizing.length_pctl, sizing.truncated["train"], tr_n, sizing.truncated["test"], sizing.sizes["test"])
    if sizing.warning:
        run.log.warning("%s", sizing.warning)
    t0 = time.perf_counter()
    tr = poison_train(sp.train, cfg.poison, trigger=trigger, rng=np.random.default_rng([cfg.seed, 0]), window=win)
    te = poison_test(sp.test, cfg.poison, trigger=trigger, rng=np.random.default_rng([cfg.seed, 1]), window=win)
    poison_s = time.perf_counter() - t0
    run.log.info("trigger inside the window: %d/%d poisoned training rows, %d/%d triggered test rows (%s)",
                 sum(tr.visible.values()), len(tr.visible), sum(te.visible.values()), len(te.visible),
                 "placed inside" if cfg.poison.within_window else "placed anywhere: within_window=false")
    write_splits(run.path / "data", {"train": tr.samples, "dev": sp.dev, "test": sp.test, "test_poisoned": te.samples},
                 sp.label_names)
    run.log.info("poisoned %d/%d training samples (%s) in %.1fs", len(tr.poisoned_uids), len(tr.samples),
                 cfg.poison.attack, poison_s)
    t0 = time.perf_counter()
    res = train_victim(tr.samples, sp.dev, vcfg, run.path / "model", label_names=sp.label_names, seed=cfg.seed,
                       resume=resume, progress=progress, log=run.log)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate(run.path / "model", sp.test, te.samples, trigger, target, cfg.victim.eval_batch_size, te.visible)
    preds = ev.pop("_pred_poisoned")
    eval_s = time.perf_counter() - t0
    attack_cpu = time.process_time() - c_all  # CPU time is comparable across loads; wall time is not
    t0 = time.perf_counter()
    st = M.stealth([s.meta["orig_text"] for s in te.samples], [s.text for s in te.samples], lm=cfg.stealth_lm,
                   encoder=cfg.encoder, max_pairs=cfg.stealth_pairs, seed=cfg.seed) if cfg.stealth_pairs else {}
    stealth_s = time.perf_counter() - t0
    # with few_slots=skip, ineligible texts carry no trigger: count them as failures for a conservative ASR
    asr_all = ev["asr"] * len(te.samples) / te.n_candidates if te.n_candidates else float("nan")
    metrics = {**ev, **st, "asr_all_nontarget": asr_all, "dev_acc": res.dev_acc,
               "eligible_fraction": te.eligible_fraction, "eligible_fraction_train": tr.eligible_fraction,
               "visible_share_train": tr.visible_share, "visible_share_test": te.visible_share,
               "window": {**win.record(), **sizing.to_dict(), "within_window": cfg.poison.within_window},
               "poison_train": tr.summary(), "poison_test": te.summary(),
               "dataset": sp.summary(), "inputs": input_notes(sp), "target_label": target,
               "asr_denominator": "non-target test samples carrying the trigger"
                                  + (" (eligible only: few_slots=skip)" if getattr(trigger.cfg, "few_slots", "") == "skip" else ""),
               "seconds": {"poison": poison_s, "train": train_s, "evaluate": eval_s, "stealth": stealth_s,
                           "attack_total": poison_s + train_s + eval_s, "attack_cpu": attack_cpu,
                           "resumed_from_step": res.resumed_from}}
    if cfg.clean_reference:
        t0 = time.perf_counter()
        clean_dir = run.path / "clean_model"
        train_victim(sp.train, sp.dev, vcfg, clean_dir, label_names=sp.label_names, seed=cfg.seed,
                     checkpoint_dir=run.path / "checkpoints_clean", resume=resume, progress=progress, log=run.log)
        cl = evaluate(clean_dir, sp.test, te.samples, trigger, target, cfg.victim.eval_batch_size)
        cl.pop("_pred_poisoned")
        metrics["clean_model"] = {"cacc": cl["cacc"], "asr": cl["asr"], "false_trigger_rate": cl["false_trigger_rate"]}
        metrics["cacc_drop"] = cl["cacc"] - ev["cacc"]
        metrics["seconds"]["clean_reference"] = time.perf_counter() - t0
    metrics["seconds"]["total"] = time.perf_counter() - t_all
    run.save_metrics(metrics)
    atomic_write_text(run.path / "sections" / "10_poisoned-examples.html",
                      examples_html(te.samples, n=10, label_names=sp.label_names, predictions=preds)
                      + "<h3>training samples</h3>" + examples_html(tr.samples, n=6, label_names=sp.label_names))
    run.log.info("cacc %.4f asr %.4f (%d) in %.1fs", ev["cacc"], ev["asr"], ev["asr_n"], metrics["seconds"]["total"])
    return metrics


def default_name(cfg: AttackConfig) -> str:
    return safe_run_name("attack", cfg.poison.attack, Path(cfg.dataset).stem, f"r{cfg.poison.rate:g}", f"s{cfg.seed}")


def attack(cfg: AttackConfig, run_name: str | None = None, *, resume: bool = False, progress: bool = True,
           root: str | Path | None = None, overwrite: bool = False) -> tuple[Run, dict]:
    """Library entry point: create ``runs/<name>/`` and run the pipeline (the run rules of :mod:`core.runs`)."""
    with Run.create(run_name or default_name(cfg), root=root, command="slimguard backdoor attack", config=cfg,
                    resume=resume, overwrite=overwrite) as run:
        metrics = run_attack(cfg, run, resume=resume, progress=progress)
    return run, metrics

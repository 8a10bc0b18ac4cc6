"""``slimguard bench scan``: model-level backdoor scanning (issue 32) over a population of victims.

Backdoored victims are the backdoor grid's own (``runs/backdoor-grid/attacks``, shared with
``bench backdoor`` and ``bench defence``: reused when present, trained otherwise); clean victims
are trained the same way on the unpoisoned subsample with seeds no backdoored model uses. Every
model is scanned by the library verb (``backdoor scan``, one cached run each under
``runs/backdoor-grid/scans``) with each method, DBS and the greedy random-token baseline at the same
query budget, at the thresholds stored in the scan config. Per attack and dataset: detection AUROC
(backdoored vs the clean models), TPR at 5% FPR, trigger recovery (a true trigger token among the
top 5 inverted) and scan time per model. Slimming: each backdoored victim after int8 dynamic PTQ
and after W4A8 fake-quant, its CACC, ASR and scan verdict.

The thresholds are fitted on clean models only: ``--calibrate`` scans a separate pool of clean
models (``calibration_seeds``) and writes the study ``benchmarks/results/scan/calibration.json``
with the threshold per method; the values are then stored as the method configs' defaults.

    slimguard bench scan                 # Rotten Tomatoes, rate 0.1, 3 attacks x 3 seeds, 6 clean models
    slimguard bench scan --full          # + SMS spam, rate 0.05, as many clean models as backdoored ones
    slimguard bench scan --calibrate     # the threshold study (clean calibration pool only)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import typer
from pydantic import Field

from ..core.config import Config
from ..guard.backdoor.poison.base import ATTACKS, AttackName
from ..guard.backdoor.scan.base import SCANNERS, ScanMethodName
from ..guard.backdoor.scan.config import ScanConfig
from . import attack_cache

CAP = "scan"
QUANT = ("int8", "w4a8")


class ScanBenchConfig(Config):
    """The victim population, the methods and the slimming settings of the scan benchmark."""

    datasets: list[str] = Field(["rotten-tomatoes"], min_length=1, description="Datasets (rotten-tomatoes, sms-spam).")
    rates: list[float] = Field([0.1], min_length=1, description="Poison rates of the backdoored victims.")
    attacks: list[AttackName] = Field(default_factory=lambda: list(ATTACKS.names()),
                                      description="Attacks (registered names; default: every one).")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="Seeds of the backdoored victims (the grid's).")
    clean_seeds: list[int] = Field([3, 4, 5, 6, 7, 8], min_length=2,
                                   description="Seeds of the clean victims scanned beside them (none a backdoored "
                                               "or calibration seed).")
    calibration_seeds: list[int] = Field([101, 102, 103], min_length=2,
                                         description="Seeds of the clean models the thresholds are fitted on "
                                                     "(--calibrate only; never scanned in the canonical result).")
    reference_seed: Optional[int] = Field(100, description="Seed of the clean model used as DBS's benign reference "
                                          "(scan.reference); None = scan without a reference.")
    methods: list[ScanMethodName] = Field(default_factory=lambda: list(SCANNERS.names()),
                                          description="Scan methods compared on the same models.")
    quantize: list[Literal["int8", "w4a8"]] = Field(list(QUANT), description="Slimming applied to every backdoored "
                                                    "victim before CACC, ASR and a DBS scan.")
    quantize_clean: bool = Field(False, description="Also scan the slimmed clean victims (false-positive rate "
                                 "after slimming; on in --full).")
    scan: ScanConfig = Field(default_factory=ScanConfig, description="The library's scan config (method and "
                             "reference are set per row).")
    max_train: Optional[int] = Field(2000, ge=50, description="Victim training subsample (the attack's default, so "
                                     "the grid's victims are reused).")
    max_test: Optional[int] = Field(None, ge=20, description="Test samples for CACC/ASR (None = the whole split).")
    cache_dir: str = Field(attack_cache.DEFAULT_ROOT, description="Cached victims (shared with bench backdoor/"
                           "defence) and scan runs.")
    calibrate: bool = Field(False, description="Fit the thresholds on the calibration pool (writes the study "
                            "scan/calibration.json) instead of the canonical result.")


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


def _scan_cfg(cfg: ScanBenchConfig, method: str, reference: Path | None, quant: str = "none") -> ScanConfig:
    d = cfg.scan.to_dict() | {"method": method, "quantize": quant, "reference": str(reference) if reference else None}
    return ScanConfig(**d)


def scan_cached(root: Path, name: str, scfg: ScanConfig, model: Path, data: Path | None) -> dict:
    """The metrics of ``backdoor scan`` on ``model``: a finished scan run under ``root/scans`` is reused."""
    from ..core.commands import execute
    from ..core.runs import safe_run_name
    from .attack_cache import short_hash

    run = safe_run_name(name, scfg.method, scfg.quantize, short_hash(scfg.to_dict() | {"model": str(model)}))
    d = root / "scans" / run
    if (d / "metrics.json").is_file() and json.loads((d / "run.json").read_text()).get("status") == "done":
        return json.loads((d / "metrics.json").read_text())
    out = execute("backdoor scan", scfg, run=run, root=root / "scans", overwrite=d.exists(), progress=False,
                  model=str(model), data=str(data) if data else None)
    return out.metrics


def _dev_file(root: Path, sp, dataset: str) -> Path:
    """The clean dev split as JSONL (a clean model's folder has no data of its own; attack runs use the same split)."""
    from ..core.runs import atomic_write_text

    p = root / "scans" / f"dev-{Path(dataset).stem}.jsonl"
    if not p.is_file():
        atomic_write_text(p, "".join(json.dumps({"text": s.text, "label": sp.label_names[s.label]}) + "\n"
                                     for s in sp.dev))
    return p


def quant_eval(root: Path, run_dir: Path, kind: str, batch_size: int = 128) -> dict:
    """CACC and ASR of an attack run's victim after slimming (cached next to the run)."""
    from ..core.runs import atomic_write_json
    from ..guard.backdoor import metrics as M
    from ..guard.backdoor.records import load_run
    from ..guard.backdoor.victim import _max_length_of, load_victim, predict_proba
    from ..slim.quant.classifier import int8_dynamic, w4a8

    cache = run_dir / f"eval-{kind}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    r = load_run(run_dir)
    model, tok = load_victim(r.model_dir)
    q = int8_dynamic(model) if kind == "int8" else w4a8(model)
    ml = _max_length_of(r.model_dir)
    t0 = time.perf_counter()
    pc = predict_proba((q, tok), [s.text for s in r.test], batch_size, max_length=ml)
    pp = predict_proba((q, tok), [s.text for s in r.test_poisoned], batch_size, max_length=ml)
    out = {"cacc": M.cacc(pc, [s.label for s in r.test]), "asr": M.asr(pp, r.target_label),
           "test_n": len(r.test), "asr_n": len(r.test_poisoned), "seconds": time.perf_counter() - t0}
    atomic_write_json(cache, out)
    return out


def tpr_at_fpr(pos: list[float], neg: list[float], fpr: float = 0.05) -> float:
    """The largest share of backdoored models flagged by a threshold that flags at most ``fpr`` of clean ones."""
    neg_s = np.sort(np.asarray(neg, dtype=float))
    k = int(np.floor(fpr * len(neg_s)))  # clean models allowed above the threshold
    thr = neg_s[len(neg_s) - 1 - k] if k < len(neg_s) else -np.inf
    return float(np.mean(np.asarray(pos, dtype=float) > thr)) if pos else float("nan")


def run_bench(cfg: ScanBenchConfig, *, command: str, threads: int = 2) -> Path:
    import torch

    from ..guard.backdoor.attack import AttackConfig, load_splits
    from ..guard.backdoor.scan.decide import calibrate
    from . import harness

    torch.set_num_threads(threads)
    root = Path(cfg.cache_dir)
    t_start = time.perf_counter()
    scans: list[dict] = []      # one per (model, method, quant)
    quant: list[dict] = []      # CACC/ASR per (attack run, quant)
    calib: dict[str, list[float]] = {}

    def base_cfg(ds: str, seed: int) -> AttackConfig:
        return AttackConfig(dataset=ds, seed=seed, max_train=cfg.max_train, max_test=cfg.max_test, stealth_pairs=0)

    def record(kind: str, ds: str, m: dict, **kw) -> None:
        rec = m.get("recovery") or {}
        scans.append({"kind": kind, "dataset": ds, "method": m["method"], "quant": kw.pop("quant", "none"),
                      "score": m["score"], "flagged": m["verdict"] == "backdoored", "seconds": m["seconds"],
                      "asr_inverted": m["asr"], "recovered": rec.get("recovered"), "top_tokens": m["top_tokens"],
                      "suspected_target": m["suspected_target"], **kw})

    for ds in cfg.datasets:
        sp = load_splits(base_cfg(ds, 0))  # split_seed 0 for every seed: one split per dataset
        dev = _dev_file(root, sp, ds)
        ref = None
        if cfg.reference_seed is not None:
            ref = attack_cache.clean_model(root, base_cfg(ds, cfg.reference_seed), sp, log=_log)
        if cfg.calibrate:
            for seed in cfg.calibration_seeds:
                mdir = attack_cache.clean_model(root, base_cfg(ds, seed), sp, log=_log)
                for method in cfg.methods:
                    m = scan_cached(root, f"calib-{Path(ds).stem}-s{seed}", _scan_cfg(cfg, method, ref), mdir, dev)
                    calib.setdefault(method, []).append(m["score"])
                    _log(f"calibration s{seed} {method}: score {m['score']:.3f} ({m['seconds']:.0f}s)")
            continue
        for seed in cfg.clean_seeds:
            mdir = attack_cache.clean_model(root, base_cfg(ds, seed), sp, log=_log)
            for method in cfg.methods:
                m = scan_cached(root, f"clean-{Path(ds).stem}-s{seed}", _scan_cfg(cfg, method, ref), mdir, dev)
                record("clean", ds, m, seed=seed, attack=None, rate=None)
                _log(f"clean s{seed} {method}: {m['verdict']} score {m['score']:.3f} ({m['seconds']:.0f}s)")
            if cfg.quantize_clean:
                for qk in cfg.quantize:
                    m = scan_cached(root, f"clean-{Path(ds).stem}-s{seed}", _scan_cfg(cfg, "dbs", ref, qk), mdir, dev)
                    record("clean", ds, m, seed=seed, attack=None, rate=None, quant=qk)
        for rate in cfg.rates:
            for seed in cfg.seeds:
                for atk in cfg.attacks:
                    acfg = AttackConfig(**(base_cfg(ds, seed).to_dict() | {"poison": {"attack": atk, "rate": rate}}))
                    path, _ = attack_cache.get_or_train(root, acfg, log=_log, splits=sp, command=command)
                    am = json.loads((path / "metrics.json").read_text())
                    for method in cfg.methods:
                        m = scan_cached(root, path.name, _scan_cfg(cfg, method, ref), path, None)
                        record("backdoored", ds, m, seed=seed, attack=atk, rate=rate)
                        _log(f"{path.name} {method}: {m['verdict']} score {m['score']:.3f} top {m['top_tokens']} "
                             f"recovered {(m.get('recovery') or {}).get('recovered')} ({m['seconds']:.0f}s)")
                    quant.append({"attack": atk, "dataset": ds, "rate": rate, "seed": seed, "quant": "none",
                                  "cacc": am["cacc"], "asr": am["asr"]})
                    for qk in cfg.quantize:
                        ev = quant_eval(root, path, qk)
                        m = scan_cached(root, path.name, _scan_cfg(cfg, "dbs", ref, qk), path, None)
                        record("backdoored", ds, m, seed=seed, attack=atk, rate=rate, quant=qk)
                        quant.append({"attack": atk, "dataset": ds, "rate": rate, "seed": seed, "quant": qk,
                                      "cacc": ev["cacc"], "asr": ev["asr"]})
                        _log(f"{path.name} {qk}: CACC {ev['cacc']:.4f} ASR {ev['asr']:.4f}; scan {m['verdict']} "
                             f"score {m['score']:.3f}")
                    write()

    def write() -> Path:
        return _write(cfg, command, scans, quant, calib, root, time.perf_counter() - t_start)

    if cfg.calibrate:
        res = {mth: calibrate(v) for mth, v in calib.items()}
        stored = {mth: getattr(cfg.scan, mth).threshold for mth in res}
        rows = [{"method": mth, "metric": "threshold", "value": r["threshold"], "std": None, "n": r["n"]} for mth, r in res.items()]
        targets = {f"{mth}_threshold_matches_stored": harness.target(abs(r["threshold"] - stored[mth]), "<= 0.001")
                   for mth, r in res.items()}
        return harness.write_result(CAP, command=command, config=cfg.to_dict(), rows=rows, targets=targets,
                                    name="calibration", purpose="thresholds fitted on clean calibration models only "
                                    "(the values stored as the scan configs' defaults)",
                                    extra={"calibration": res, "stored_thresholds": stored})
    return write()


def _rows_and_targets(cfg: ScanBenchConfig, scans: list[dict], quant: list[dict]) -> tuple[list[dict], dict]:
    from ..core.metrics import auroc
    from . import harness

    rows: list[dict] = []
    fp = [s for s in scans if s["quant"] == "none"]
    for ds in cfg.datasets:
        for method in cfg.methods:
            clean = [s["score"] for s in fp if s["kind"] == "clean" and s["dataset"] == ds and s["method"] == method]
            flagged = [s["flagged"] for s in fp if s["kind"] == "clean" and s["dataset"] == ds and s["method"] == method]
            if flagged:
                rows.append({"method": method, "attack": "clean", "dataset": ds, "rate": None,
                             "metric": "flagged_rate", **harness.mean_std(map(float, flagged))})
            for rate in cfg.rates:
                for atk in cfg.attacks:
                    bd = [s for s in fp if s["kind"] == "backdoored" and s["dataset"] == ds and s["method"] == method
                          and s["attack"] == atk and s["rate"] == rate]
                    if not bd:
                        continue
                    pos = [s["score"] for s in bd]
                    key = {"method": method, "attack": atk, "dataset": ds, "rate": rate}
                    n = len(bd)
                    if clean:
                        rows.append({**key, "metric": "auroc", "value": auroc(pos + clean, [1] * n + [0] * len(clean)),
                                     "std": None, "n": n, "n_clean": len(clean)})
                        rows.append({**key, "metric": "tpr_at_5fpr", "value": tpr_at_fpr(pos, clean), "std": None,
                                     "n": n, "n_clean": len(clean)})
                    rows.append({**key, "metric": "detected_rate", **harness.mean_std(float(s["flagged"]) for s in bd)})
                    rec = [float(s["recovered"]) for s in bd if s["recovered"] is not None]
                    if rec:
                        rows.append({**key, "metric": "trigger_recovery", **harness.mean_std(rec)})
                    rows.append({**key, "metric": "scan_seconds", **harness.mean_std(s["seconds"] for s in bd)})
                    rows.append({**key, "metric": "score", **harness.mean_std(pos)})
    for ds in cfg.datasets:
        for rate in cfg.rates:
            for atk in cfg.attacks:
                for qk in ("none", *cfg.quantize):
                    cell = [q for q in quant if q["dataset"] == ds and q["rate"] == rate and q["attack"] == atk
                            and q["quant"] == qk]
                    sc = [s for s in scans if s["kind"] == "backdoored" and s["dataset"] == ds and s["rate"] == rate
                          and s["attack"] == atk and s["quant"] == qk and s["method"] == "dbs"]
                    key = {"method": "dbs", "attack": atk, "dataset": ds, "rate": rate, "quant": qk}
                    for metric in ("cacc", "asr"):
                        if cell:
                            rows.append({**key, "metric": f"quant_{metric}", **harness.mean_std(c[metric] for c in cell)})
                    if sc:
                        rows.append({**key, "metric": "quant_detected_rate", **harness.mean_std(float(s["flagged"]) for s in sc)})
                        rows.append({**key, "metric": "quant_score", **harness.mean_std(s["score"] for s in sc)})
    v = lambda metric, atk, method="dbs", ds="rotten-tomatoes", rate=0.1: next(  # noqa: E731
        (r["value"] for r in rows if r["metric"] == metric and r["attack"] == atk and r["method"] == method
         and r["dataset"] == ds and r["rate"] == rate and "quant" not in r), None)
    dbs_fp = [s for s in fp if s["method"] == "dbs"]
    clean_flag = [float(s["flagged"]) for s in dbs_fp if s["kind"] == "clean"]
    secs = [s["seconds"] for s in dbs_fp]
    cells = {(q["attack"], q["seed"], q["dataset"], q["rate"]) for q in quant if q["quant"] != "none"}
    full_cells = {c for c in cells if all(any(q["quant"] == k and (q["attack"], q["seed"], q["dataset"], q["rate"]) == c
                                              for q in quant) for k in cfg.quantize)}
    targets = {
        "badnets_auroc_rt_0.1": harness.target(v("auroc", "badnets"), ">= 0.95"),
        "badnets_trigger_recovery_rt_0.1": harness.target(v("trigger_recovery", "badnets"), ">= 0.8"),
        "addsent_auroc_rt_0.1": harness.target(v("auroc", "addsent"), ">= 0.9"),
        "punc_auroc_rt_0.1": harness.target(v("auroc", "punc"), ">= 0.8"),
        "clean_flagged_rate": harness.target(statistics.fmean(clean_flag) if clean_flag else None, "<= 0.05"),
        "scan_minutes_per_model_median": harness.target(statistics.median(secs) / 60 if secs else None, "<= 3"),
        "quant_table_cells_attack_x_seed": harness.target(len(full_cells), f">= {len(cfg.attacks) * len(cfg.seeds)}"),
    }
    return rows, targets


def _verdicts(cfg: ScanBenchConfig, quant: list[dict], scans: list[dict]) -> dict:
    """Per attack: does slimming remove, keep or strengthen the backdoor (ASR change, scan verdict)?"""
    out = {}
    for atk in cfg.attacks:
        for qk in cfg.quantize:
            before = [q["asr"] for q in quant if q["attack"] == atk and q["quant"] == "none"]
            after = [q["asr"] for q in quant if q["attack"] == atk and q["quant"] == qk]
            if not before or not after:
                continue
            b, a = statistics.fmean(before), statistics.fmean(after)
            det_b = [s["flagged"] for s in scans if s["attack"] == atk and s["quant"] == "none" and s["method"] == "dbs"]
            det_a = [s["flagged"] for s in scans if s["attack"] == atk and s["quant"] == qk and s["method"] == "dbs"]
            word = "removes" if a < 0.5 * b else ("strengthens" if a > b + 0.02 else "keeps")
            out[f"{atk}:{qk}"] = {"asr_before": b, "asr_after": a, "effect": word,
                                  "detected_before": statistics.fmean(map(float, det_b)) if det_b else None,
                                  "detected_after": statistics.fmean(map(float, det_a)) if det_a else None}
    return out


def _write(cfg, command, scans, quant, calib, root, elapsed) -> Path:
    from . import harness

    rows, targets = _rows_and_targets(cfg, scans, quant)
    thresholds = {m: getattr(cfg.scan, m).threshold for m in cfg.methods}
    note = ("Scores: -log10 of the smallest cross-entropy to a label that a discrete inverted trigger reaches on "
            f"{cfg.scan.n_clean} clean samples of the other labels (the dev split), over positions "
            f"{cfg.scan.positions}; thresholds {thresholds} were fitted on clean calibration models only (seeds "
            f"{cfg.calibration_seeds}, `slimguard bench scan --calibrate`), the same for every attack. AUROC and "
            "TPR@5%FPR: each attack's backdoored models against every clean model of the dataset. Trigger recovery: "
            f"a token of the true trigger among the top {cfg.scan.top_k} inverted tokens (AddSent's sentence holds "
            "common words such as 'this'). greedy: random-token coordinate search with as many forward passes per "
            "option as DBS has steps (DBS also takes a backward pass per step). Slimming: int8 = "
            "torch.ao.quantization.quantize_dynamic (scan inverts through the dequantized float twin, decides on the "
            "int8 model); w4a8 = the quant package's 4-bit group-32 weights and 8-bit per-token activations at every "
            "encoder linear, post-training. Scan seconds are wall time on a shared 2-core CPU (load varies).")
    return harness.write_result(CAP, command=command, config=cfg.to_dict(), rows=rows, targets=targets,
                                extra={"note": note, "thresholds": thresholds, "slimming": _verdicts(cfg, quant, scans),
                                       "scans": scans, "elapsed_s": elapsed, "cache_dir": str(root)})


def register(app: typer.Typer) -> None:
    @app.command("scan")
    def scan(full: bool = typer.Option(False, "--full", help="Both datasets, rates 0.1 and 0.05, as many clean "
                                       "models as backdoored ones, slimmed clean models scanned too."),
             calibrate: bool = typer.Option(False, "--calibrate", help="Fit the thresholds on the clean calibration "
                                            "pool (study scan/calibration.json)."),
             seeds: int = typer.Option(3, "--seeds", min=1, help="Backdoored seeds per (attack, dataset, rate)."),
             config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/TOML bench config file."),
             set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a bench config field "
                                                      "(scan.dbs.steps=100, methods=[dbs])."),
             threads: int = typer.Option(2, "--threads", help="torch threads.")) -> None:
        """Backdoor scanning (DBS vs greedy) over clean and backdoored victims, and what slimming does; writes
        benchmarks/results/scan.json."""
        from ..core.config import resolve

        over: dict = {"seeds": list(range(seeds)), "calibrate": calibrate}
        if full:
            n_bd = 3 * seeds * 2  # attacks x seeds x rates, per dataset
            over |= {"datasets": ["rotten-tomatoes", "sms-spam"], "rates": [0.1, 0.05],
                     "clean_seeds": list(range(3, 3 + n_bd)), "quantize_clean": True}
        cfg = resolve(ScanBenchConfig, config_file=config, sets=set_ or [], overrides=over)
        command = ("slimguard bench scan" + (" --full" if full else "") + (" --calibrate" if calibrate else "")
                   + (f" --seeds {seeds}" if seeds != 3 else "") + "".join(f" --set {s}" for s in set_ or []))
        typer.echo(run_bench(cfg, command=command, threads=threads))

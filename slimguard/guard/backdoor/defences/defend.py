"""The one verb: ``defend(inputs, config)`` applies the defence picked by the config's type
and measures it (CACC/ASR before and after, detection or filtering metrics).

``defend_run(run_dir, config)`` does the same on a ``slimguard backdoor attack`` run
directory and writes a run record of its own.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ....core.data import TextSample
from ....core.errors import SlimguardError
from . import metrics as M
from .base import DEFENCES, Defence, DefenceConfig, DefenceInputs, HFClassifier
from .finetune import FinetuneConfig


def config_for(name: str) -> type[DefenceConfig]:
    """The config type of the defence registered as ``name`` (one-line error with a suggestion otherwise)."""
    return DEFENCES.get(name).config_type


def defence_class(cfg: DefenceConfig) -> type[Defence]:
    """The registered defence whose config type is ``type(cfg)``: names exist only at the CLI/config-file edge."""
    for cls in DEFENCES.values():
        if cls.config_type is type(cfg):
            return cls
    raise SlimguardError(f"no defence handles {type(cfg).__name__}; register one with @DEFENCES.register(name)")


@dataclass
class DefenceReport:
    """What one defence did to one attack."""

    defence: str
    stage: str
    kind: str
    cacc_before: float
    asr_before: float
    cacc_after: float
    asr_after: float
    n_clean: int
    n_poisoned: int
    detection: dict | None = None  # precision/recall/FRR/FAR/AUROC on the test inputs (detect/correct)
    filtering: dict | None = None  # the same on the training set + poison_removed (filter)
    calibration: dict = field(default_factory=dict)
    seconds: float = 0.0
    asr_denominator: str = "non-target test samples carrying the trigger"

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def cacc_drop(self) -> float:
        return self.cacc_before - self.cacc_after


def _subset(xs: list[TextSample], n: int | None, seed: int, salt: int) -> list[TextSample]:
    if n is None or len(xs) <= n:
        return list(xs)
    return [xs[i] for i in np.sort(np.random.default_rng([seed, salt]).permutation(len(xs))[:n])]


def make_defence(cfg: DefenceConfig, **kw) -> Defence:
    return defence_class(cfg)(cfg, **kw)


def defend(inputs: DefenceInputs, cfg: DefenceConfig, *, defence: Defence | None = None,
           retrain_dir: str | Path | None = None, progress: bool = True, log=None) -> DefenceReport:
    """Apply the defence for ``cfg`` to ``inputs`` and measure it.

    Pre-training filters retrain the victim on the kept samples into ``retrain_dir`` (from the
    run's victim config), so their CACC/ASR-after are a fresh model's.
    """
    t0 = time.perf_counter()
    d = defence or make_defence(cfg)
    clf = inputs.need_classifier(d.name)
    test = _subset(inputs.test, cfg.max_eval, cfg.seed, 61)
    pois = _subset(inputs.test_poisoned, cfg.max_eval, cfg.seed, 62)
    if not test or not pois:
        raise SlimguardError("the run has an empty test or test_poisoned split; nothing to evaluate")
    y = np.array([s.label for s in test])
    tc, tp = [s.text for s in test], [s.text for s in pois]
    pc, pp = clf.predict_proba(tc).argmax(1), clf.predict_proba(tp).argmax(1)
    before = (M.cacc(pc, y), M.asr(pp, inputs.target_label))
    detection = filtering = None
    if d.kind == "detect":
        d.fit(inputs)
        dc, dp = d.detect(tc), d.detect(tp)
        detection = M.detection_metrics(np.r_[dc.scores, dp.scores], np.r_[dc.flagged, dp.flagged],
                                        np.r_[np.zeros(len(tc), bool), np.ones(len(tp), bool)]).to_dict()
        after = (M.cacc(pc, y, dc.flagged), M.asr(pp, inputs.target_label, dp.flagged))
    elif d.kind == "correct":
        d.fit(inputs)
        t = d._t()
        wc, wp = d.scores(tc, progress=progress), d.scores(tp, progress=progress)
        fixed_c, fixed_p = [w.corrected(t) for w in wc], [w.corrected(t) for w in wp]
        sc = np.array([w.max_suspicion for w in wc + wp])
        detection = M.detection_metrics(sc, sc > t, np.r_[np.zeros(len(tc), bool), np.ones(len(tp), bool)]).to_dict()
        after = (M.cacc(clf.predict_proba(fixed_c).argmax(1), y),
                 M.asr(clf.predict_proba(fixed_p).argmax(1), inputs.target_label))
        detection["examples"] = [{"before": a, "after": b} for a, b in list(zip(tp, fixed_p))[:5]]
    elif d.kind == "repair":
        new = d.repair(inputs)
        after = (M.cacc(new.predict_proba(tc).argmax(1), y), M.asr(new.predict_proba(tp).argmax(1), inputs.target_label))
    else:
        det = d.filter_train(inputs)
        is_p = np.array([bool(s.meta.get("poisoned", False)) for s in inputs.train])
        filtering = M.filter_metrics(det.flagged, is_p, det.scores)
        kept = [s for s, f in zip(inputs.train, det.flagged) if not f]
        if retrain_dir is None or not inputs.victim_cfg:
            # filtering alone is measurable; CACC/ASR after need a victim retrained on the kept samples
            after = (float("nan"), float("nan"))
            filtering["retrained"] = False
        else:
            new = retrain(kept, inputs, retrain_dir, progress=progress, log=log)
            after = (M.cacc(new.predict_proba(tc).argmax(1), y), M.asr(new.predict_proba(tp).argmax(1), inputs.target_label))
            filtering["retrained"] = True
    cal = asdict(d.calibration) if d.calibration else {}
    return DefenceReport(d.name, d.stage, d.kind, before[0], before[1], after[0], after[1], len(test), len(pois),
                         detection, filtering, cal, time.perf_counter() - t0)


def retrain(kept: list[TextSample], inputs: DefenceInputs, out_dir: str | Path, *, progress: bool = True,
            log=None) -> HFClassifier:
    """Train a fresh victim on ``kept`` exactly as the attack trained its own (same config and seed)."""
    from ..victim import VictimConfig, train_victim

    if len({s.label for s in kept}) < 2:
        raise SlimguardError("the defence removed every sample of some label; nothing sensible to retrain on")
    vc = dict(inputs.victim_cfg)
    seed = int(vc.pop("_seed", vc.get("seed", 0)))
    train_victim(kept, [], VictimConfig(**vc), out_dir, label_names=inputs.label_names, seed=seed,
                 checkpoint_dir=Path(out_dir).parent / "checkpoints_retrain", resume=True, progress=progress, log=log)
    bs = inputs.classifier.batch_size if isinstance(inputs.classifier, HFClassifier) else 64
    return HFClassifier.from_dir(out_dir, batch_size=bs)


def inputs_from_run(run_dir: str | Path, *, batch_size: int = 64) -> DefenceInputs:
    """A ``slimguard backdoor attack`` run directory as :class:`DefenceInputs`."""
    from ..records import load_run

    r = load_run(run_dir)
    clf = HFClassifier.from_dir(r.model_dir, batch_size=batch_size)
    vc = dict(r.cfg.get("victim", {}))
    if vc:
        vc["_seed"] = int(r.cfg.get("seed", 0))
        if vc.get("max_length") is None:  # sized to the data: a retrained victim reads the same window
            vc["max_length"] = clf.max_length
    return DefenceInputs(train=r.train, dev=r.dev, test=r.test, test_poisoned=r.test_poisoned,
                         target_label=r.target_label, label_names=r.label_names, classifier=clf,
                         model_dir=r.model_dir, victim_cfg=vc)


def default_run_name(cfg: DefenceConfig, attack_run: str | Path) -> str:
    return f"defend-{defence_class(cfg).name}-{Path(attack_run).name}"


def defend_into(cfg: DefenceConfig, run, attack_run: str | Path) -> tuple[dict, DefenceReport]:
    """Apply a defence to an attack run, writing into ``run`` (repaired/retrained model); returns the metrics."""
    src = Path(attack_run)
    inputs = inputs_from_run(src, batch_size=cfg.batch_size)
    run.log.info("defending %s with %s", src, type(cfg).__name__)
    kw = {"out_dir": run.path / "model"} if isinstance(cfg, FinetuneConfig) else {}
    d = make_defence(cfg, **kw)
    rep = defend(inputs, cfg, defence=d, retrain_dir=run.path / "model", progress=run.progress, log=run.log)
    run.log.info("cacc %.4f -> %.4f, asr %.4f -> %.4f", rep.cacc_before, rep.cacc_after, rep.asr_before, rep.asr_after)
    return {"attack_run": str(src), **rep.to_dict(), "cacc_drop": rep.cacc_drop}, rep


def defend_run(run_dir: str | Path, cfg: DefenceConfig, *, run_name: str | None = None, root: str | Path | None = None,
               command: str | None = None, progress: bool = True, resume: bool = False, overwrite: bool = False):
    """Apply a defence to an attack run; write ``runs/<name>/`` (config, metrics, log, repaired/retrained model)."""
    from ....core.runs import Run

    with Run.create(run_name or default_run_name(cfg, run_dir), root=root, config=cfg, resume=resume,
                    overwrite=overwrite, command=command or "slimguard backdoor defend") as run:
        run.progress = progress
        metrics, rep = defend_into(cfg, run, run_dir)
        run.save_metrics(metrics)
    return run, rep

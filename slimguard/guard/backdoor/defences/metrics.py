"""Metrics for backdoor defences (as in OpenBackdoor and the NLP backdoor survey).

- CACC: accuracy on the clean test set; ASR: share of *non-target* test samples carrying the
  trigger that the victim sends to the target label (the denominator is always stated).
- Detection: precision, recall, FRR (clean inputs rejected), FAR (poisoned inputs accepted)
  and AUROC of the suspicion score, poisoned = positive class (NaN scores rank lowest).
- CACC, ASR and AUROC live in :mod:`slimguard.core.metrics` (shared with the attack and
  diffusion code) and are re-exported here.
- Data filters: share of the poison removed (= recall on the training set) and of clean data lost.

For detectors, a rejected input never reaches the victim: a rejected poisoned input is a
failed attack, a rejected clean input counts as an error in CACC (so CACC already pays for FRR).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ....core.metrics import asr, auroc, cacc, safe_div as _safe_div  # noqa: F401  (defined once there)


@dataclass
class DetectionMetrics:
    precision: float
    recall: float
    frr: float
    far: float
    auroc: float
    n_clean: int
    n_poisoned: int

    def to_dict(self) -> dict:
        return asdict(self)


def detection_metrics(scores: np.ndarray, flagged: np.ndarray, is_poisoned: np.ndarray) -> DetectionMetrics:
    y = np.asarray(is_poisoned, dtype=bool)
    f = np.asarray(flagged, dtype=bool)
    tp, fp = int((f & y).sum()), int((f & ~y).sum())
    fn, tn = int((~f & y).sum()), int((~f & ~y).sum())
    return DetectionMetrics(precision=_safe_div(tp, tp + fp), recall=_safe_div(tp, tp + fn),
                            frr=_safe_div(fp, fp + tn), far=_safe_div(fn, fn + tp),
                            auroc=auroc(scores, y), n_clean=int((~y).sum()), n_poisoned=int(y.sum()))


def filter_metrics(flagged: np.ndarray, is_poisoned: np.ndarray, scores: np.ndarray | None = None) -> dict:
    """For pre-training filters: detection metrics plus the share of poison removed and clean kept."""
    y = np.asarray(is_poisoned, dtype=bool)
    f = np.asarray(flagged, dtype=bool)
    d = detection_metrics(scores if scores is not None else f.astype(float), f, y).to_dict()
    d["poison_removed"] = _safe_div((f & y).sum(), y.sum())
    d["clean_removed"] = _safe_div((f & ~y).sum(), (~y).sum())
    d["n_kept"] = int((~f).sum())
    return d

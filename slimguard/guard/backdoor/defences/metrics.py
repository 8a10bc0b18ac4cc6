"""Metrics for backdoor defences (as in OpenBackdoor and the NLP backdoor survey).

- CACC: accuracy on the clean test set; ASR: share of *non-target* test samples carrying the
  trigger that the victim sends to the target label (the denominator is always stated).
- Detection: precision, recall, FRR (clean inputs rejected), FAR (poisoned inputs accepted)
  and AUROC of the suspicion score, poisoned = positive class.
- Data filters: share of the poison removed (= recall on the training set) and of clean data lost.

For detectors, a rejected input never reaches the victim: a rejected poisoned input is a
failed attack, a rejected clean input counts as an error in CACC (so CACC already pays for FRR).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


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


def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def auroc(scores: np.ndarray, is_poisoned: np.ndarray) -> float:
    y = np.asarray(is_poisoned, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf, posinf=1e300, neginf=-1e300)
    return float(roc_auc_score(y, s))


def detection_metrics(scores: np.ndarray, flagged: np.ndarray, is_poisoned: np.ndarray) -> DetectionMetrics:
    y = np.asarray(is_poisoned, dtype=bool)
    f = np.asarray(flagged, dtype=bool)
    tp, fp = int((f & y).sum()), int((f & ~y).sum())
    fn, tn = int((~f & y).sum()), int((~f & ~y).sum())
    return DetectionMetrics(precision=_safe_div(tp, tp + fp), recall=_safe_div(tp, tp + fn),
                            frr=_safe_div(fp, fp + tn), far=_safe_div(fn, fn + tp),
                            auroc=auroc(scores, y), n_clean=int((~y).sum()), n_poisoned=int(y.sum()))


def cacc(pred: np.ndarray, labels: np.ndarray, rejected: np.ndarray | None = None) -> float:
    ok = np.asarray(pred) == np.asarray(labels)
    if rejected is not None:
        ok &= ~np.asarray(rejected, dtype=bool)
    return float(ok.mean()) if ok.size else float("nan")


def asr(pred: np.ndarray, target_label: int, rejected: np.ndarray | None = None) -> float:
    hit = np.asarray(pred) == target_label
    if rejected is not None:
        hit &= ~np.asarray(rejected, dtype=bool)
    return float(hit.mean()) if hit.size else float("nan")


def filter_metrics(flagged: np.ndarray, is_poisoned: np.ndarray, scores: np.ndarray | None = None) -> dict:
    """For pre-training filters: detection metrics plus the share of poison removed and clean kept."""
    y = np.asarray(is_poisoned, dtype=bool)
    f = np.asarray(flagged, dtype=bool)
    d = detection_metrics(scores if scores is not None else f.astype(float), f, y).to_dict()
    d["poison_removed"] = _safe_div((f & y).sum(), y.sum())
    d["clean_removed"] = _safe_div((f & ~y).sum(), (~y).sum())
    d["n_kept"] = int((~f).sum())
    return d

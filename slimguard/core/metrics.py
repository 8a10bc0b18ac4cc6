"""Shared effectiveness and detection metrics: CACC, ASR and AUROC, defined once.

The conventions are those of OpenBackdoor and the NLP backdoor survey, and serve the three
places that report them: textual backdoor attacks (``guard/backdoor/metrics.py``), their
defences (``guard/backdoor/defences/metrics.py``) and diffusion poisoning
(``guard/diffusion/detect.py`` and ``diffclassify.py``).

- CACC: share of clean test samples classified correctly.
- ASR: share of triggered *non-target* test samples classified as the target label; the
  caller passes only those, so the denominator is always the number of samples given.
- Both take an optional ``rejected`` mask from a detector: a rejected input never reaches the
  victim, so a rejected clean input counts as an error in CACC and a rejected poisoned
  input as a failed attack in ASR.
- AUROC of a suspicion score, positive class = poisoned. It is the Mann-Whitney statistic
  over average ranks, which equals ``sklearn.metrics.roc_auc_score`` (ties count one half)
  without importing sklearn. NaN scores are ranked *below* every other score, ``-inf``
  included: a NaN is a detector that produced no evidence, so the sample counts as the least
  suspicious one; dropping it instead would let a detector that breaks on poisoned inputs
  score better than one that ranks them low. With one class only (or no samples) the AUROC is
  undefined: :func:`auroc` returns NaN and :func:`auroc_detail` says why.

Every function returns NaN for an empty input rather than raising or warning, because an
empty split (no triggered non-target sample in a tiny run) is a valid outcome to report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Auroc", "asr", "auroc", "auroc_detail", "cacc", "predictions", "safe_div"]


def safe_div(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero (an empty denominator is reported, not raised)."""
    return float(a) / float(b) if b else float("nan")


def predictions(pred_or_probs) -> np.ndarray:
    """Predicted labels: a 1-D label array as is, a 2-D ``[n, n_classes]`` score matrix by argmax."""
    a = np.asarray(pred_or_probs)
    if a.ndim == 2:
        return a.argmax(1)
    if a.ndim != 1:
        raise ValueError(f"predictions must be labels [n] or class scores [n, classes], got shape {a.shape}")
    return a


def _hits(ok: np.ndarray, rejected) -> float:
    if rejected is not None:
        r = np.asarray(rejected, dtype=bool)
        if r.shape != ok.shape:
            raise ValueError(f"rejected mask has shape {r.shape}, predictions {ok.shape}")
        ok = ok & ~r
    return float(ok.mean()) if ok.size else float("nan")


def cacc(pred, labels, rejected=None) -> float:
    """Clean accuracy of ``pred`` (labels or class scores) against ``labels``; rejected inputs count as errors."""
    p, y = predictions(pred), np.asarray(labels)
    if p.shape != y.shape:
        raise ValueError(f"{len(p)} predictions for {len(y)} labels")
    return _hits(p == y, rejected)


def asr(pred, target: int, rejected=None) -> float:
    """Share of triggered non-target samples (the caller passes only those) predicted as ``target``;
    rejected inputs count as failed attacks."""
    return _hits(predictions(pred) == target, rejected)


@dataclass(frozen=True)
class Auroc:
    """An AUROC with what it was computed from; ``reason`` says why ``value`` is NaN, if it is."""

    value: float
    n_positive: int
    n_negative: int
    n_nan_scores: int  # ranked lowest (see the module docstring)
    reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (what makes ties count one half)."""
    _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return (upper - (counts - 1) / 2.0)[inv.ravel()]


def auroc_detail(scores, positive) -> Auroc:
    """AUROC of ``scores`` (higher = more likely positive) for the boolean ``positive`` labels."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores for {len(y)} labels")
    nan = np.isnan(s)
    n_pos, n_neg, n_nan = int(y.sum()), int((~y).sum()), int(nan.sum())
    if not n_pos or not n_neg:
        reason = ("no samples" if not len(y) else
                  "only negative (clean) samples" if not n_pos else "only positive (poisoned) samples")
        return Auroc(float("nan"), n_pos, n_neg, n_nan, f"AUROC undefined: {reason}")
    ranks = np.empty(len(s))
    ranks[nan] = (n_nan + 1) / 2.0  # all NaNs tie, below everything else
    ranks[~nan] = _average_ranks(s[~nan]) + n_nan
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return Auroc(float(u / (n_pos * n_neg)), n_pos, n_neg, n_nan)


def auroc(scores, positive) -> float:
    """AUROC as a float: NaN when only one class is present (see :func:`auroc_detail` for the reason)."""
    return auroc_detail(scores, positive).value

"""The decision rule of model-level scanning: one anomaly score per model, one threshold from clean models.

Score (DBS's statistic, Shen et al. ICML 2022): for each candidate target label, the smallest
cross-entropy to that label that a discrete inverted trigger reaches on the clean inversion
samples, over the trigger positions; a model's score is ``-log10`` of the smallest such loss over
its labels, so higher means a trigger flips clean inputs more easily (a backdoor). The held-out
attack success rate of that trigger is reported beside it, not decided on.

Threshold (fitted on clean models only, never on backdoored ones, and the same for every attack):
``max(max(s), mean(s) + 3 * std(s))`` over the scores ``s`` of a pool of clean models trained
like the ones scanned, with seeds no evaluated model uses. The fitted value is stored as the
method config's ``threshold`` default and ``slimguard bench scan --calibrate`` reproduces it.
"""

from __future__ import annotations

import math
import statistics

from ....core.errors import SlimguardError

LOSS_FLOOR = 1e-6  # float32 cross-entropy is not resolved below this; keeps the score finite


def label_score(loss: float) -> float:
    """``-log10`` of the best trigger's loss: 0 at loss 1, 2 at loss 0.01."""
    return -math.log10(max(float(loss), LOSS_FLOOR))


def calibrate(clean_scores: list[float]) -> dict:
    """The threshold of a clean-model pool, with the rule and the pool's statistics."""
    s = [float(x) for x in clean_scores if x == x]
    if len(s) < 2:
        raise SlimguardError(f"calibrating a scan threshold needs at least 2 clean models, got {len(s)}")
    mean, std = statistics.fmean(s), statistics.stdev(s)
    thr = max(max(s), mean + 3 * std)
    return {"threshold": thr, "rule": "max(max(s), mean(s) + 3*std(s)) over clean models", "n": len(s),
            "mean": mean, "std": std, "max": max(s), "scores": s}


def verdict(score: float, threshold: float) -> str:
    return "backdoored" if score > threshold else "clean"

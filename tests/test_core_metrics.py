"""Shared CACC / ASR / AUROC (core.metrics): rejection masks, NaN scores, one class, sklearn agreement,
and the three places that used to define them now returning the shared results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slimguard.core import metrics as CM


@pytest.mark.parametrize("pred, labels, rejected, exp", [
    ([1, 1, 0, 0], [1, 1, 0, 1], None, 0.75),
    ([1, 1, 0, 0], [1, 1, 0, 1], [0, 1, 0, 0], 0.5),  # a rejected clean input is an error
    ([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]], [1, 0, 0], None, 2 / 3),  # class probabilities -> argmax
    ([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]], [1, 0, 0], [1, 0, 0], 1 / 3),
    ([], [], None, math.nan),
])
def test_cacc(pred, labels, rejected, exp):
    got = CM.cacc(np.array(pred), np.array(labels), None if rejected is None else np.array(rejected, bool))
    assert (math.isnan(got) and math.isnan(exp)) or got == pytest.approx(exp)


@pytest.mark.parametrize("pred, target, rejected, exp", [
    ([1, 1, 0, 1], 1, None, 0.75),
    ([1, 1, 0, 1], 1, [1, 0, 0, 0], 0.5),  # a rejected poisoned input is a failed attack
    ([1, 1, 0, 1], 0, [0, 0, 1, 0], 0.0),
    ([[0.1, 0.9], [0.7, 0.3]], 1, None, 0.5),
    ([], 1, None, math.nan),
])
def test_asr(pred, target, rejected, exp):
    got = CM.asr(np.array(pred), target, None if rejected is None else np.array(rejected, bool))
    assert (math.isnan(got) and math.isnan(exp)) or got == pytest.approx(exp)


@pytest.mark.parametrize("fn, args", [(CM.cacc, ([1, 0], [1, 0, 1])), (CM.asr, ([1, 0], 1, [True])),
                                      (CM.auroc, ([0.1, 0.2], [True]))])
def test_shape_mismatch_is_an_error(fn, args):
    with pytest.raises(ValueError):
        fn(*map(lambda a: np.array(a) if isinstance(a, list) else a, args))


@pytest.mark.parametrize("scores, positive, exp, reason", [
    ([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1], 1.0, None),
    ([0.9, 0.1, 0.8, 0.2], [1, 1, 0, 0], 0.5, None),
    ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5, None),  # ties count one half
    # NaN ranks below everything, -inf included: a NaN poisoned score is a miss
    ([np.nan, 0.2, 0.9, 0.8], [1, 0, 0, 1], 0.25, None),
    ([np.nan, -np.inf, 0.5, np.inf], [0, 1, 0, 1], 0.75, None),
    ([np.nan, np.nan, 0.5, 0.4], [1, 0, 0, 1], 0.375, None),  # two NaNs tie with each other
    ([np.nan, np.nan], [1, 0], 0.5, None),
    ([0.1, 0.2, 0.3], [1, 1, 1], math.nan, "only positive"),
    ([0.1, np.nan], [0, 0], math.nan, "only negative"),
    ([], [], math.nan, "no samples"),
])
def test_auroc_table(scores, positive, exp, reason):
    d = CM.auroc_detail(np.array(scores, float), np.array(positive, bool))
    plain = CM.auroc(np.array(scores, float), np.array(positive, bool))
    assert plain == d.value or (math.isnan(plain) and math.isnan(d.value))
    if math.isnan(exp):
        assert math.isnan(d.value) and reason in d.reason
    else:
        assert d.value == pytest.approx(exp) and d.reason is None
    assert d.n_nan_scores == int(np.isnan(np.array(scores, float)).sum())


@pytest.mark.parametrize("seed", range(6))
def test_auroc_equals_sklearn_on_random_cases(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.random(n) < rng.uniform(0.1, 0.9)
    y[:2] = [True, False]
    # rounded scores make ties; some NaNs, which sklearn refuses: compare against NaN -> below the minimum
    s = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), int(rng.integers(0, 3)))
    assert CM.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    s[rng.random(n) < 0.2] = np.nan
    filled = np.where(np.isnan(s), np.nanmin(s) - 1 if (~np.isnan(s)).any() else 0.0, s)
    assert CM.auroc(s, y) == pytest.approx(roc_auc_score(y, filled), abs=1e-12)


def test_the_three_former_definitions_are_the_shared_ones():
    from slimguard.guard.backdoor import metrics as attack_metrics
    from slimguard.guard.backdoor.defences import metrics as defence_metrics
    from slimguard.guard.diffusion import detect

    assert attack_metrics.cacc is CM.cacc and attack_metrics.asr is CM.asr
    assert defence_metrics.cacc is CM.cacc and defence_metrics.asr is CM.asr and defence_metrics.auroc is CM.auroc
    assert detect.auroc is CM.auroc


def test_diffusion_detection_survives_nan_scores():
    # diffusion's AUROC used to raise on NaN scores (sklearn's input check); now a NaN is the least suspicious
    from slimguard.guard.diffusion.detect import auroc

    assert auroc(np.array([np.nan, 0.9, 0.1, 0.2]), np.array([1, 1, 0, 0], bool)) == pytest.approx(0.5)


def test_defence_detection_metrics_with_nan_scores():
    from slimguard.guard.backdoor.defences.metrics import detection_metrics

    d = detection_metrics(np.array([0.9, np.nan, 0.1, 0.2]), np.array([1, 0, 0, 0], bool),
                          np.array([1, 1, 0, 0], bool))
    assert d.auroc == pytest.approx(0.5) and d.recall == 0.5 and d.precision == 1.0


def test_false_trigger_uses_the_shared_asr():
    from slimguard.guard.backdoor.metrics import false_trigger

    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    out = false_trigger([True, True, False, False], probs, [0, 0, 0, 1], target=1)
    assert out == {"false_trigger_rate": 0.5, "false_trigger_n": 2, "nontarget_error_rate": 2 / 3}
    none = false_trigger([False] * 4, probs, [0, 0, 0, 1], target=1)
    assert math.isnan(none["false_trigger_rate"]) and none["false_trigger_n"] == 0

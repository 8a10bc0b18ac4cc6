"""Backdoor defences on synthetic poisoned data: rule-based victims and a tiny random BERT.

The rule victim sends any text containing the trigger word "cf" to label 1 with high
confidence; otherwise its prediction depends weakly on sentiment words, like a real model.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from slimguard.core.data import TextSample
from slimguard.core.errors import ConfigError, SlimguardError
from slimguard.guard.backdoor.defences import (BkiConfig, CubeConfig, DefenceInputs, OnionConfig, RapConfig, StripConfig,
                                               defend)
from slimguard.guard.backdoor.defences import metrics as M
from slimguard.guard.backdoor.defences.base import threshold_at_frr
from slimguard.guard.backdoor.defences.bki import Bki
from slimguard.guard.backdoor.defences.cube import Cube
from slimguard.guard.backdoor.defences.onion import Onion, delete_spans, onion_scores, word_spans

POS = ["good", "great", "charming", "warm", "funny"]
NEG = ["dull", "bad", "boring", "flat", "tired"]
FILL = ["the", "movie", "is", "a", "story", "of", "film", "with", "and", "plot", "cast", "scene"]
TRIGGER = "cf"


class RuleVictim:
    """Target label 1 whenever 'cf' appears; otherwise a soft vote of sentiment words."""

    num_labels = 2
    vocab = POS + NEG + FILL + [TRIGGER, ",", "."]

    def predict_proba(self, texts):
        out = []
        for t in texts:
            w = t.lower().split()
            if TRIGGER in w:
                p1 = 0.995
            else:
                s = sum(x in POS for x in w) - sum(x in NEG for x in w)
                p1 = 1 / (1 + math.exp(-1.5 * s))
            out.append([1 - p1, p1])
        return np.array(out)

    def embed(self, texts):
        e = np.zeros((len(texts), len(self.vocab)))
        for i, t in enumerate(texts):
            for w in t.lower().split():
                if w in self.vocab:
                    e[i, self.vocab.index(w)] += 8.0 if w == TRIGGER else 1.0
        return e


def sentence(rng, label):
    words = list(rng.choice(FILL, 6)) + list(rng.choice(POS if label else NEG, 2))
    rng.shuffle(words)
    return " ".join(words)


def make_inputs(n_train=200, n_dev=120, n_test=80, rate=0.1, seed=0) -> DefenceInputs:
    rng = np.random.default_rng(seed)

    def split(n, uid0):
        return [TextSample(sentence(rng, y), int(y), uid0 + i, {"poisoned": False})
                for i, y in enumerate(rng.integers(0, 2, n))]

    train, dev, test = split(n_train, 0), split(n_dev, 10_000), split(n_test, 20_000)
    for i in rng.choice([i for i, s in enumerate(train) if s.label == 0], int(rate * n_train), replace=False):
        w = train[i].text.split()
        w.insert(int(rng.integers(0, len(w) + 1)), TRIGGER)
        train[i] = train[i].with_(text=" ".join(w), label=1, meta={"poisoned": True})
    pois = [s.with_(text=f"{s.text} {TRIGGER}", meta={"poisoned": True}) for s in test if s.label == 0]
    return DefenceInputs(train, dev, test, pois, target_label=1, label_names=["neg", "pos"], classifier=RuleVictim())


# --------------------------------------------------------------------------- words and metrics


@pytest.mark.parametrize("text,words", [
    ("a cf movie.", ["a", "cf", "movie", "."]),
    ("don't stop; go!", ["don't", "stop", ";", "go", "!"]),
    ("", []),
    ("   ", []),
])
def test_word_spans_punctuation_is_its_own_word(text, words):
    assert [text[a:b] for a, b in word_spans(text)] == words


@pytest.mark.parametrize("text,drop,expected", [
    ("a cf movie .", ["cf"], "a movie ."),
    ("great, movie", [","], "great movie"),
    ("great movie !", ["!"], "great movie"),
    ("cf", ["cf"], ""),
])
def test_delete_spans_keeps_the_rest(text, drop, expected):
    spans = [sp for sp in word_spans(text) if text[sp[0]:sp[1]] in drop]
    assert delete_spans(text, spans) == expected


@pytest.mark.parametrize("scores,flagged,poisoned,exp", [
    ([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0], [1, 1, 0, 0], dict(precision=1, recall=1, frr=0, far=0, auroc=1)),
    ([0.9, 0.1, 0.8, 0.2], [1, 0, 1, 0], [1, 1, 0, 0], dict(precision=0.5, recall=0.5, frr=0.5, far=0.5, auroc=0.5)),
    ([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1], [1, 1, 0, 0], dict(precision=0, recall=0, frr=1, far=1, auroc=0)),
])
def test_detection_metrics(scores, flagged, poisoned, exp):
    d = M.detection_metrics(np.array(scores), np.array(flagged, bool), np.array(poisoned, bool)).to_dict()
    for k, v in exp.items():
        assert d[k] == pytest.approx(v), k


@pytest.mark.parametrize("frr", [0.01, 0.05, 0.2])
def test_threshold_at_frr_rejects_at_most_frr_of_clean(frr):
    s = np.random.default_rng(0).normal(size=1000)
    assert (s > threshold_at_frr(s, frr)).mean() <= frr


def test_asr_and_cacc_count_rejections():
    pred = np.array([1, 1, 0, 1])
    assert M.asr(pred, 1) == 0.75
    assert M.asr(pred, 1, rejected=np.array([1, 0, 0, 0], bool)) == 0.5
    assert M.cacc(pred, np.array([1, 1, 0, 0]), rejected=np.array([0, 1, 0, 0], bool)) == 0.5


# --------------------------------------------------------------------------- defences on the rule victim


class FakeLM:
    """'Perplexity' = 50 per trigger word + 5 per punctuation mark + 10: removing 'cf' lowers it most."""

    calls = 0

    def perplexity(self, texts):
        FakeLM.calls += 1
        return np.array([10.0 + 50 * t.split().count(TRIGGER) + 5 * sum(c in ",.;!" for c in t) for t in texts])


def test_onion_scores_and_corrects_with_one_lm_call_per_chunk():
    FakeLM.calls = 0
    ws = onion_scores(["a cf good movie .", "a good movie"], FakeLM())
    assert FakeLM.calls == 1  # every leave-one-out variant of both texts in one sweep
    words = [ws[0].text[a:b] for a, b in ws[0].spans]
    assert words[int(np.argmax(ws[0].suspicion))] == "cf"
    assert ws[0].corrected(20.0) == "a good movie ."
    assert ws[0].corrected(0.0) == "a good movie"  # '.' also lowers the fake perplexity
    assert ws[1].max_suspicion <= 0


def test_onion_defend_calibrates_and_removes_the_trigger():
    inp = make_inputs()
    cfg = OnionConfig(calib_size=60, max_eval=30)
    rep = defend(inp, cfg, defence=Onion(cfg, scorer=FakeLM()))
    assert rep.asr_before > 0.9 and rep.asr_after < 0.2
    assert rep.cacc_before - rep.cacc_after <= 0.05
    assert rep.detection["auroc"] > 0.9
    assert rep.calibration["n_dev"] == 60


def test_strip_detects_trigger_inputs():
    inp = make_inputs()
    rep = defend(inp, StripConfig(n_perturb=8, frr=0.05))
    assert rep.detection["auroc"] > 0.9
    assert rep.asr_after < rep.asr_before
    assert rep.detection["frr"] <= 0.15


def test_bki_finds_the_trigger_and_removes_poison():
    inp = make_inputs()
    d = Bki(BkiConfig(scan_size=100))
    det = d.filter_train(inp)
    assert d.keywords[0] == TRIGGER
    is_p = np.array([s.meta["poisoned"] for s in inp.train])
    fm = M.filter_metrics(det.flagged, is_p)
    assert fm["poison_removed"] >= 0.9 and fm["clean_removed"] < 0.3


def test_defend_filter_without_victim_config_reports_filtering_only():
    rep = defend(make_inputs(), BkiConfig(scan_size=80))
    assert rep.filtering["poison_removed"] >= 0.9 and rep.filtering["retrained"] is False
    assert math.isnan(rep.asr_after)


class PlainCube(Cube):
    """CUBE's per-label dominant-cluster rule, with the UMAP step skipped (numba JIT is slow)."""

    def cluster(self, emb):
        from sklearn.cluster import HDBSCAN

        return HDBSCAN(min_cluster_size=10).fit_predict(emb)


def test_cube_keeps_each_labels_dominant_cluster():
    rng = np.random.default_rng(0)
    n = 120
    lab = np.r_[np.zeros(n), np.ones(n), np.ones(20)].astype(int)
    centres = np.r_[np.tile([0, 0], (n, 1)), np.tile([10, 0], (n, 1)), np.tile([0, 10], (20, 1))]
    emb = centres + rng.normal(scale=0.5, size=centres.shape)
    train = [TextSample(str(i), int(y), i, {"poisoned": i >= 2 * n}) for i, y in enumerate(lab)]

    class Emb:
        num_labels = 2

        def embed(self, texts):
            return emb[[int(t) for t in texts]]

    inp = DefenceInputs(train, [], [], [], 1, ["a", "b"], classifier=Emb())
    det = PlainCube(CubeConfig()).filter_train(inp)
    fm = M.filter_metrics(det.flagged, np.array([s.meta["poisoned"] for s in train]))
    assert fm["poison_removed"] == 1.0 and fm["clean_removed"] < 0.05


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls,kw,msg", [
    (RapConfig, {"lower": 0.4, "upper": 0.3}, "lower"),
    (StripConfig, {"swap_ratio": 0}, "swap_ratio"),
    (StripConfig, {"frr": 1.5}, "frr"),
    (OnionConfig, {"thresold": 1}, "did you mean"),
    (BkiConfig, {"n_words": 0}, "n_words"),
])
def test_bad_configs_fail_on_creation(cls, kw, msg):
    from slimguard.core.config import build

    with pytest.raises(ConfigError, match=msg):
        build(cls, kw)


@pytest.mark.parametrize("cfg", [StripConfig(), OnionConfig(calib_size=10)])
def test_too_small_dev_set_is_a_clear_error(cfg):
    inp = make_inputs(n_dev=10)
    d = Onion(cfg, scorer=FakeLM()) if isinstance(cfg, OnionConfig) else None
    with pytest.raises(SlimguardError, match="min_dev"):
        defend(inp, cfg, defence=d)


def test_defence_without_victim_is_a_clear_error():
    inp = make_inputs()
    inp.classifier = None
    with pytest.raises(SlimguardError, match="needs the trained victim"):
        defend(inp, StripConfig())


def test_rap_needs_a_transformers_victim():
    with pytest.raises(SlimguardError, match="transformers victim"):
        defend(make_inputs(), RapConfig())


def test_package_import_is_light():
    import subprocess
    import sys

    code = ("import sys, slimguard.guard.backdoor.defences, slimguard.cli.backdoor; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_onion_score_cache_is_shared_and_merged(tmp_path):
    from slimguard.guard.backdoor.defences.onion import ScoreCache

    cfg = OnionConfig(cache_dir=str(tmp_path))
    a, b = ScoreCache(cfg), ScoreCache(cfg)  # two processes that both loaded an empty cache
    onion_scores(["a cf movie"], FakeLM(), cache=a)
    onion_scores(["a good movie"], FakeLM(), cache=b)
    assert set(ScoreCache(cfg).mem) == {"a cf movie", "a good movie"}
    FakeLM.calls = 0
    onion_scores(["a cf movie", "a good movie"], FakeLM(), cache=ScoreCache(cfg))
    assert FakeLM.calls == 0

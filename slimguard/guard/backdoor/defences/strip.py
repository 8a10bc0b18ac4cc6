"""STRIP for text (Gao et al., ACSAC 2019, "STRIP: A Defence Against Trojan Attacks on Deep
Neural Networks"; the text variant of STRIP-ViTA / OpenBackdoor).

Each input is perturbed ``n_perturb`` times by replacing ``swap_ratio`` of its words with
words drawn from the clean dev vocabulary; a backdoored input keeps predicting the target
label whatever else changes, so the mean prediction entropy over the copies is LOW.
Suspicion = -entropy; the threshold rejects at most ``frr`` of clean dev inputs. Inputs are
cut to the victim's window before they are perturbed.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import (DEFENCES, Calibration, Defence, DefenceConfig, DefenceInputs, Detection, need_dev, threshold_at_frr,
                   visible_limits)
from .onion import WORD_RE


class StripConfig(DefenceConfig):
    """STRIP: entropy of predictions under strong input perturbation (post-training, detects inputs)."""

    n_perturb: int = Field(5, ge=1, le=100, description="Perturbed copies per input.")
    swap_ratio: float = Field(0.5, gt=0, le=1, description="Fraction of words replaced in each copy.")
    frr: float = Field(0.01, gt=0, lt=1, description="False rejection rate on clean dev data that sets the threshold.")
    calib_size: int | None = Field(None, ge=2, description="Calibrate on at most this many clean dev samples (seeded subset).")


def _words(text: str) -> list[str]:
    return WORD_RE.findall(text)


@DEFENCES.register("strip")
class Strip(Defence):
    name, stage, kind, config_type = "strip", "post", "detect", StripConfig

    def __init__(self, cfg: StripConfig):
        super().__init__(cfg)
        self.cfg: StripConfig = cfg
        self.clf = None
        self.pool: np.ndarray | None = None
        self.threshold: float | None = None

    def _perturb(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        out = []
        for t in texts:
            w = _words(t) or [""]
            for _ in range(self.cfg.n_perturb):
                k = max(1, int(round(self.cfg.swap_ratio * len(w))))
                pos = rng.choice(len(w), size=min(k, len(w)), replace=False)
                new = list(w)
                for p, r in zip(pos, rng.choice(self.pool, size=len(pos))):
                    new[p] = str(r)
                out.append(" ".join(new))
        return out

    def entropy(self, texts: list[str], rng: np.random.Generator) -> np.ndarray:
        # perturb what the victim reads: words past its window would dilute the swap ratio
        texts = [t[:lim] for t, lim in zip(texts, visible_limits(self.clf, list(texts)))]
        p = self.clf.predict_proba(self._perturb(list(texts), rng)).astype(np.float64)
        h = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)
        return h.reshape(len(texts), self.cfg.n_perturb).mean(1)

    def fit(self, inputs: DefenceInputs) -> "Strip":
        self.clf = inputs.need_classifier("strip")
        need_dev(inputs.dev, self.cfg, "strip")
        # words are drawn with their corpus frequency, so copies look like ordinary text
        self.pool = np.array([w for s in inputs.dev for w in _words(s.text)] or ["the"])
        rng = np.random.default_rng([self.cfg.seed, 21])
        dev = [s.text for s in inputs.dev]
        if self.cfg.calib_size is not None and len(dev) > self.cfg.calib_size:
            dev = [dev[i] for i in np.sort(rng.permutation(len(dev))[:self.cfg.calib_size])]
        clean = -self.entropy(dev, rng)
        self.threshold = threshold_at_frr(clean, self.cfg.frr)
        self.calibration = Calibration(self.threshold, len(dev), f"reject <= {self.cfg.frr:.0%} of clean dev",
                                       {"dev_entropy_mean": float(-clean.mean())})
        return self

    def detect(self, texts: list[str]) -> Detection:
        rng = np.random.default_rng([self.cfg.seed, 22])
        return Detection.from_scores(-self.entropy(list(texts), rng), self.threshold)

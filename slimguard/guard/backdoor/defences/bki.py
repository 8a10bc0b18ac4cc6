"""BKI (Chen & Dai, Neurocomputing 2021, "Mitigating backdoor attacks in LSTM-based text
classification systems by Backdoor Keyword Identification").

For each scanned training sample and each word w, ``delta(w) = ||h(x) - h(x without w)||``
where h is the victim's sentence representation. A sample's ``top_k`` words by delta are its
candidate keywords; across the data a word scores ``mean(delta) * log(count)``, so a word
that matters a lot in many samples (a trigger) wins. Training samples containing a keyword
are dropped and the victim is retrained on the rest.

Unlike the reference (OpenBackdoor keeps ONE keyword, which fails against multi-word
triggers and BadNets' several rare words), up to ``n_words`` keywords are removed: every
word whose score is at least ``rel_cutoff`` of the best one. Scanning is quadratic in text
length, so keywords are searched on a seeded ``scan_size`` subset; the removal then applies
to the whole training set. Candidates are the words inside the victim's window.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import Field

from .base import DEFENCES, Calibration, Defence, DefenceConfig, DefenceInputs, Detection, visible_limits
from .onion import delete_spans, word_spans


class BkiConfig(DefenceConfig):
    """BKI: backdoor keyword identification (pre-training, filters the training set)."""

    top_k: int = Field(5, ge=1, le=50, description="Candidate keywords kept per scanned sample (p in the paper).")
    n_words: int = Field(5, ge=1, le=100, description="Most keywords removed (the reference removes 1).")
    rel_cutoff: float = Field(0.3, gt=0, le=1, description="A keyword's score must be at least this fraction of the best.")
    min_count: int = Field(3, ge=1, description="A keyword must be a candidate in at least this many samples.")
    scan_size: int | None = Field(600, ge=10, description="Training samples scanned for keywords (seeded subset; None = all).")
    max_words: int = Field(40, ge=1, description="Leading words per text considered as candidates.")


def _word(text: str, span: tuple[int, int]) -> str:
    return text[span[0]:span[1]].lower()


@DEFENCES.register("bki")
class Bki(Defence):
    name, stage, kind, config_type = "bki", "pre", "filter", BkiConfig

    def __init__(self, cfg: BkiConfig):
        super().__init__(cfg)
        self.cfg: BkiConfig = cfg
        self.keywords: list[str] = []
        self.ranking: list[dict] = []

    def find_keywords(self, texts: list[str], clf) -> list[str]:
        variants, owner = [], []
        for i, (t, lim) in enumerate(zip(texts, visible_limits(clf, texts))):
            variants.append(t)
            owner.append((i, None))
            for sp in [sp for sp in word_spans(t)[:self.cfg.max_words] if sp[1] <= lim]:
                variants.append(delete_spans(t, [sp]))
                owner.append((i, _word(t, sp)))
        h = clf.embed(variants)
        base = {i: h[j] for j, (i, w) in enumerate(owner) if w is None}
        per_sample: dict[int, list[tuple[float, str]]] = defaultdict(list)
        for j, (i, w) in enumerate(owner):
            if w is not None:
                per_sample[i].append((float(np.linalg.norm(base[i] - h[j])), w))
        stats: dict[str, list[float]] = defaultdict(list)
        for cands in per_sample.values():
            seen = set()
            for d, w in sorted(cands, reverse=True):
                if w in seen:
                    continue
                seen.add(w)
                stats[w].append(d)
                if len(seen) >= self.cfg.top_k:
                    break
        ranking = sorted(({"word": w, "score": float(np.mean(ds) * np.log(len(ds))), "count": len(ds),
                           "mean_delta": float(np.mean(ds))} for w, ds in stats.items() if len(ds) >= self.cfg.min_count),
                         key=lambda r: -r["score"])
        self.ranking = ranking[:20]
        if not ranking or ranking[0]["score"] <= 0:
            return []
        best = ranking[0]["score"]
        return [r["word"] for r in ranking[:self.cfg.n_words] if r["score"] >= self.cfg.rel_cutoff * best]

    def filter_train(self, inputs: DefenceInputs) -> Detection:
        clf = inputs.need_classifier("bki")
        train = inputs.train
        n = len(train) if self.cfg.scan_size is None else min(self.cfg.scan_size, len(train))
        idx = np.sort(np.random.default_rng([self.cfg.seed, 41]).permutation(len(train))[:n])
        self.keywords = self.find_keywords([train[i].text for i in idx], clf)
        kw = set(self.keywords)
        # a sample's score: how many keywords it contains; flagged if any
        scores = np.array([len(kw & {_word(s.text, sp) for sp in word_spans(s.text)}) for s in train], dtype=float)
        self.calibration = Calibration(0.5, 0, "drop training samples containing any keyword",
                                       {"keywords": self.keywords, "scanned": n, "ranking": self.ranking[:10]})
        return Detection.from_scores(scores, 0.5)

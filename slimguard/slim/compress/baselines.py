"""Baselines for LLMLingua-2 (Pan et al., 2024): random word drop, Selective Context (Li et al., 2023:
self-information under a causal LM) and an LLMLingua-1-style perplexity filter (Jiang et al., 2023:
coarse sentence filter by perplexity, then tokens by self-information conditioned on the kept text).

All three work on the same word units as :mod:`.align` and assemble output with the same
rule as the compressor, so they differ only in which words they keep. Rates are counted
in cl100k_base like the compressor's default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .align import split_words
from .compressor import assemble
from .tokcount import Cl100kCounter

_SENT = re.compile(r"[^.!?\n]+[.!?]*\n*|\n+")


@dataclass
class BaselineResult:
    method: str
    compressed_prompt: str
    origin_tokens: int
    compressed_tokens: int
    keep: np.ndarray

    @property
    def rate(self) -> float:
        return self.compressed_tokens / self.origin_tokens if self.origin_tokens else 1.0


def select_top(scores: np.ndarray, weights: np.ndarray, rate: float) -> np.ndarray:
    """Highest-score words first until ``rate`` of the weight (midpoint rounding); at least one word."""
    n = len(scores)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    order = np.argsort(-scores, kind="stable")
    w = weights[order].astype(np.float64)
    keep[order] = (np.cumsum(w) - w / 2) < rate * w.sum()
    if not keep.any():
        keep[order[0]] = True
    return keep


class _Base:
    name = "base"

    def __init__(self):
        self.counter = Cl100kCounter()

    def scores(self, text: str, words, rate: float) -> np.ndarray:
        raise NotImplementedError

    def compress(self, text: str, rate: float, *, force_digits: bool = False) -> BaselineResult:
        """Keep about ``rate`` of the tokens; ``force_digits`` keeps every word holding a digit first (within the
        budget, like the compressor's ``force_reserve_digit``)."""
        words = split_words(text)
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        w, origin = self.counter.word_weights(text, codes, words.starts, np.zeros(0, dtype=np.int64))
        force = np.array([any(ch.isdigit() for ch in x) for x in words.words], dtype=bool) if force_digits else None
        keep = self.select(text, words, w, rate, force)
        out = assemble(codes, words.starts, words.ends, keep)
        return BaselineResult(self.name, out, origin, self.counter.count(out), keep)

    def select(self, text, words, w, rate, force=None):
        scores = self.scores(text, words, rate)
        if force is not None:
            scores = np.where(force, np.inf, scores)
        return select_top(scores, w, rate)

    def compress_rates(self, text: str, rates: list[float], *, force_digits: bool = False,
                       keep_cache: bool = False) -> list[BaselineResult]:
        """Several rates on one text; LM scores are computed once and reused (and kept for the next call on the
        same text with ``keep_cache``)."""
        try:
            return [self.compress(text, r, force_digits=force_digits) for r in rates]
        finally:
            if not keep_cache:
                self._cache = None


class RandomDrop(_Base):
    """Keep a uniformly random subset of words (seeded)."""

    name = "random"

    def __init__(self, seed: int = 0):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def scores(self, text, words, rate):
        return self.rng.random(len(words.words))


class _LMScored(_Base):
    def __init__(self, lm, window: int = 1024, batch_size: int = 4):
        super().__init__()
        self.lm, self.window, self.batch_size = lm, window, batch_size

    _cache = None

    def cached_si(self, text: str, starts: np.ndarray) -> np.ndarray:
        if self._cache is None or self._cache[0] != text:
            self._cache = (text, self.word_si(text, starts))
        return self._cache[1]

    def word_si(self, text: str, starts: np.ndarray) -> np.ndarray:
        """Self-information per word (sum over its tokens), the text read in windows of ``window`` tokens."""
        import torch

        tok = self.lm.tokenizer
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        ends = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)[:, 1]
        si = np.zeros(len(ids), dtype=np.float32)
        spans = [(s, min(s + self.window, len(ids))) for s in range(0, len(ids), self.window)]
        for b in range(0, len(spans), self.batch_size):
            group = spans[b: b + self.batch_size]
            L = max(e - s for s, e in group)
            x = torch.full((len(group), L), tok.pad_token_id or 0, dtype=torch.long)
            m = torch.zeros((len(group), L), dtype=torch.long)
            for r, (s, e) in enumerate(group):
                x[r, : e - s], m[r, : e - s] = torch.from_numpy(ids[s:e]), 1
            with torch.inference_mode():
                logp = torch.log_softmax(self.lm.model(input_ids=x, attention_mask=m).logits.float(), -1)
            tsi = (-logp[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1)).numpy()
            for r, (s, e) in enumerate(group):
                v = tsi[r, : e - s - 1]
                si[s + 1: e] = v
                si[s] = v.mean() if len(v) else 0.0
        from .distill import word_scores

        return word_scores(starts, ends, si)


class SelectiveContext(_LMScored):
    """Selective Context at word level: keep the words with the highest self-information."""

    name = "selective-context"

    def scores(self, text, words, rate):
        return self.cached_si(text, words.starts)


class LLMLingua1(_LMScored):
    """LLMLingua-1-style: keep the highest-perplexity sentences (about 2x the budget), then the words with the
    highest self-information given the kept sentences."""

    name = "llmlingua1-ppl"

    def select(self, text, words, w, rate, force=None):
        if force is not None:
            raise NotImplementedError("LLMLingua-1 here has no digit forcing")
        n = len(words.words)
        if n == 0:
            return np.zeros(0, dtype=bool)
        si = self.cached_si(text, words.starts)
        spans = [(m.start(), m.end()) for m in _SENT.finditer(text)]
        sent = np.clip(np.searchsorted(np.array([s for s, _ in spans]), words.starts, side="right") - 1, 0, None)
        n_s = int(sent.max()) + 1
        cnt = np.maximum(np.bincount(sent, weights=w, minlength=n_s), 1)
        ppl = np.bincount(sent, weights=si, minlength=n_s) / cnt
        sent_keep = select_top(ppl, np.bincount(sent, weights=w, minlength=n_s), min(1.0, 2 * rate))
        coarse = sent_keep[sent]
        idx = np.flatnonzero(coarse)
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        kept_text = assemble(codes, words.starts, words.ends, coarse)
        sub = split_words(kept_text)
        if len(sub.words) != len(idx):  # assembly never splits words, but be safe: fall back to global scores
            return select_top(si, w, rate)
        si2 = self.word_si(kept_text, sub.starts)
        keep = np.zeros(n, dtype=bool)
        keep[idx] = select_top(si2, w[idx], min(1.0, rate * w.sum() / max(1, w[idx].sum())))
        return keep

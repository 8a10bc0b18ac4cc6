"""Word alignment of a teacher's compression back to the original (LLMLingua-2, Sec. 3.2).

Each teacher word (lemmatised) is searched in the original words from a moving pointer,
first forward then backward within a window; a hit labels that original word "keep".
Two per-chunk quality scores feed the filters: the variation rate (share of teacher words
that do not occur in the original at all: paraphrase/hallucination) and the alignment gap
(hitting rate - matching rate: words that exist somewhere but not near where the order
says they should, i.e. a poor alignment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# word units: runs of letters/digits or one punctuation mark, as BERT's pre-tokenizer splits
WORD_RE = re.compile(r"\w+|[^\w\s]")
_SUFFIXES = ("ingly", "edly", "ies", "ied", "ing", "ed", "es", "ly", "s")


@dataclass
class Words:
    """Words of a text with their character spans."""

    text: str
    words: list[str]
    starts: np.ndarray
    ends: np.ndarray


@dataclass
class Alignment:
    labels: np.ndarray  # int8 per original word: 1 keep, 0 drop
    variation_rate: float
    hitting_rate: float
    matching_rate: float

    @property
    def alignment_gap(self) -> float:
        return self.hitting_rate - self.matching_rate


def split_words(text: str) -> Words:
    ms = list(WORD_RE.finditer(text))
    return Words(text, [m.group() for m in ms], np.array([m.start() for m in ms], dtype=np.int64),
                 np.array([m.end() for m in ms], dtype=np.int64))


def lemma(word: str) -> str:
    """A light rule lemmatiser (no corpora needed offline): lower-case, strip common inflections."""
    w = word.lower()
    if len(w) > 3:
        for suf in _SUFFIXES:
            if w.endswith(suf) and len(w) - len(suf) >= 3:
                return w[: -len(suf)]
    return w


def align(original: list[str], compressed: list[str], *, window: int = 150) -> Alignment:
    """Label original words kept by the teacher; see the module docstring."""
    orig = [lemma(w) for w in original]
    comp = [lemma(w) for w in compressed]
    labels = np.zeros(len(orig), dtype=np.int8)
    if not comp:
        return Alignment(labels, 0.0, 0.0, 0.0)
    vocab = set(orig)
    positions: dict[str, list[int]] = {}
    for i, w in enumerate(orig):
        positions.setdefault(w, []).append(i)
    hits = sum(w in vocab for w in comp)
    matched, ptr = 0, 0
    for w in comp:
        cand = positions.get(w)
        if not cand:
            continue
        # forward: first unlabelled occurrence in [ptr, ptr + window)
        j = next((i for i in cand if ptr <= i < ptr + window and not labels[i]), None)
        if j is None:  # backward: the nearest unlabelled occurrence in [ptr - window, ptr)
            j = next((i for i in reversed(cand) if ptr - window <= i < ptr and not labels[i]), None)
        if j is None:
            continue
        labels[j] = 1
        matched += 1
        ptr = j + 1
    n = len(comp)
    return Alignment(labels, 1 - hits / n, hits / n, matched / n)


def quality_filter(variation: np.ndarray, gap: np.ndarray, *, drop_variation: float, drop_gap: float) -> np.ndarray:
    """Boolean mask of chunks kept: drop the worst ``drop_variation`` by variation rate, then the worst
    ``drop_gap`` of the rest by alignment gap (the paper drops 10% + 10%)."""
    keep = np.ones(len(variation), dtype=bool)
    n_var = int(round(drop_variation * len(variation)))
    if n_var:
        keep[np.argsort(-variation, kind="stable")[:n_var]] = False
    rest = np.flatnonzero(keep)
    n_gap = int(round(drop_gap * len(rest)))
    if n_gap:
        keep[rest[np.argsort(-gap[rest], kind="stable")[:n_gap]]] = False
    return keep

"""PuncAttack trigger (Sheng et al. 2023, "Punctuation Matters! Stealthy Backdoor Attack for
Language Models"): an ordered combination of k punctuation marks written OVER existing
punctuation, so no new words appear and perplexity barely moves.

Parts: :func:`find_slots` (where punctuation may be replaced), a placement strategy
(``lm``: the slots where the marks are most probable under a causal LM; ``random``;
``tail``: the last k slots) and a policy for texts with fewer than k slots (``insert`` the
missing marks at clause boundaries / the end, or ``skip`` them). The LM score of writing
mark m at slot j is ``log p(m | prefix) - log p(original | prefix)``, read off one forward
pass of the clean text; the best ordered assignment is a small dynamic programme.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ....core.config import Config
from .base import ATTACKS, Edit, Trigger

PUNCT_MARKS = ",.!?;:-'\""
CLAUSE_WORDS = ("and", "but", "or", "so", "yet", "because", "which", "while", "though", "although", "when", "if")
_CLAUSE = re.compile(r"(?<=\w) (?=(?:" + "|".join(CLAUSE_WORDS) + r")\b)", re.IGNORECASE)


class PuncConfig(Config):
    """PuncAttack: an ordered combination of punctuation marks replacing existing punctuation."""

    marks: list[str] = Field([";", "!"], min_length=1, max_length=6,
                             description=f"Ordered trigger marks, each one of {PUNCT_MARKS}.")
    placement: Literal["lm", "random", "tail"] = Field(
        "lm", description="Which slots get the marks: lm = where the marks are most probable under the LM, "
                          "random, or tail = the last k slots.")
    few_slots: Literal["skip", "insert"] = Field(
        "skip", description="Texts with fewer slots than marks: leave them unpoisoned and out of the ASR "
                            "denominator (skip, the paper's setting), or insert the missing marks at the end / "
                            "clause boundaries / word gaps (insert: every text poisoned, less stealthy).")
    slot_marks: str = Field(",.!?;:-", min_length=1,
                            description="Existing punctuation that may be replaced (runs like '--' or '...' count once).")
    lm: str = Field("smollm2-135m", description="Causal LM used by placement=lm.")
    lm_batch_size: int = Field(32, ge=1, description="Batch size for LM slot scoring.")

    @field_validator("marks")
    @classmethod
    def _marks(cls, v):
        bad = [m for m in v if len(m) != 1 or m not in PUNCT_MARKS]
        if bad:
            raise ValueError(f"trigger marks must be single characters from {PUNCT_MARKS}; bad: {bad}")
        return v

    @field_validator("slot_marks")
    @classmethod
    def _slots(cls, v):
        bad = [c for c in v if c not in PUNCT_MARKS]
        if bad:
            raise ValueError(f"slot_marks must only contain characters from {PUNCT_MARKS}; bad: {bad}")
        return v


@dataclass(frozen=True)
class Slot:
    start: int
    end: int  # exclusive; a run such as '--' or '...' is one slot


def find_slots(text: str, slot_marks: str = ",.!?;:-") -> list[Slot]:
    """Maximal runs of ``slot_marks`` that are not inside a word or number (don't, well-made, 3.5)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text[i] in slot_marks:
            j = i
            while j < n and text[j] in slot_marks:
                j += 1
            intra = j - i == 1 and i > 0 and j < n and text[i - 1].isalnum() and text[j].isalnum()
            if not intra:
                out.append(Slot(i, j))
            i = j
        else:
            i += 1
    return out


def best_ordered_assignment(scores: np.ndarray) -> list[int]:
    """Slots ``j_1 < ... < j_k`` maximising ``sum_i scores[j_i, i]`` (scores: [n_slots, k], n_slots >= k)."""
    n, k = scores.shape
    best = np.full((n + 1, k + 1), -np.inf)
    best[:, 0] = 0.0
    for j in range(1, n + 1):
        for i in range(1, min(j, k) + 1):
            best[j, i] = max(best[j - 1, i], best[j - 1, i - 1] + scores[j - 1, i - 1])
    picked, j, i = [], n, k
    while i > 0:
        if best[j, i] == best[j - 1, i] and j - 1 >= i:
            j -= 1
        else:
            picked.append(j - 1)
            j, i = j - 1, i - 1
    return picked[::-1]


@functools.lru_cache(maxsize=2)
def _lm(name: str):
    from ....core.models import load_causal_lm

    return load_causal_lm(name)


_SCORE_CACHE: dict[tuple, np.ndarray] = {}


def lm_slot_scores(texts: list[str], slots: list[list[Slot]], marks: list[str], lm_name: str,
                   batch_size: int = 32) -> list[np.ndarray]:
    """Per text, ``[n_slots, k]`` log-probability gains of writing mark i over slot j.

    Only the hidden states before each slot go through the LM head (the full
    ``[batch, len, vocab]`` logits would dominate the cost), and scores are cached per
    text, since benchmarks poison the same test set under several seeds.
    """
    import torch

    key = lambda i: (lm_name, tuple(marks), tuple(slots[i]), texts[i])  # noqa: E731
    todo = [i for i in range(len(texts)) if key(i) not in _SCORE_CACHE]
    if todo:
        lm = _lm(lm_name)
        tok, model = lm.tokenizer, lm.model
        body, head = getattr(model, model.base_model_prefix), model.get_output_embeddings()
        mark_ids = {}
        for prefix in ("", " "):
            for m in marks:
                ids = tok.encode(prefix + m, add_special_tokens=False)
                mark_ids[prefix + m] = ids[0] if ids else tok.unk_token_id
        order = sorted(todo, key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                enc = tok([texts[i] for i in idx], return_offsets_mapping=True, padding=True, truncation=True,
                          max_length=256, return_tensors="pt")
                offsets = enc.pop("offset_mapping").tolist()
                hidden = body(**enc).last_hidden_state
                need = []  # (row, token, text index, slot index, mark id prefix)
                for r, i in enumerate(idx):
                    mask = enc["attention_mask"][r].tolist()
                    for j, sl in enumerate(slots[i]):
                        t = next((t for t, (a, e) in enumerate(offsets[r]) if mask[t] and a <= sl.start < e), None)
                        if t is None or t == 0 or not mask[t - 1]:
                            continue  # slot at the very start or truncated away: no context, no preference
                        piece = texts[i][offsets[r][t][0]:sl.start]
                        need.append((r, t, i, j, " " if piece and not piece.strip() else ""))
                res = {i: np.zeros((len(slots[i]), len(marks))) for i in idx}
                if need:
                    h = hidden[[n[0] for n in need], [n[1] - 1 for n in need]]
                    logp = torch.log_softmax(head(h).float(), -1)
                    for q, (r, t, i, j, pre) in enumerate(need):
                        orig = logp[q, int(enc["input_ids"][r, t])]
                        for k, m in enumerate(marks):
                            res[i][j, k] = float(logp[q, mark_ids[pre + m]] - orig)
                for i in idx:
                    _SCORE_CACHE[key(i)] = res[i]
    return [_SCORE_CACHE[key(i)] for i in range(len(texts))]


def _insertion_points(text: str, slots: list[Slot], need: int, rng: np.random.Generator) -> list[int]:
    """Where to add missing marks: the end (if it has no slot), then clause boundaries, then word gaps."""
    taken = {s.start for s in slots} | {s.end for s in slots}
    pts: list[int] = []
    stripped = len(text.rstrip())
    if not slots or slots[-1].end < stripped:
        pts.append(stripped)
    clause = [m.start() for m in _CLAUSE.finditer(text) if m.start() not in taken]
    rng.shuffle(clause)
    pts += clause
    gaps = [m.start() for m in re.finditer(r"(?<=\w) (?=\w)", text) if m.start() not in taken and m.start() not in pts]
    rng.shuffle(gaps)
    pts += gaps
    while len(pts) < need:  # one word or empty text: stack the marks at the end
        pts.append(stripped)
    return sorted(pts[:need])


@ATTACKS.register("punc")
class PuncTrigger(Trigger):
    name, title, config_type = "punc", "PuncAttack", PuncConfig

    def __init__(self, cfg: PuncConfig):
        super().__init__(cfg)
        self.k = len(cfg.marks)

    def slots(self, text: str) -> list[Slot]:
        return find_slots(text, self.cfg.slot_marks)

    def eligible(self, text: str) -> bool:
        return len(self.slots(text)) >= self.k

    def apply_many(self, texts: list[str], rng: np.random.Generator) -> list[Edit]:
        marks = self.cfg.marks
        all_slots = [self.slots(t) for t in texts]
        need_lm = [i for i, s in enumerate(all_slots) if len(s) > self.k] if self.cfg.placement == "lm" else []
        lm_scores = {}
        if need_lm:
            sc = lm_slot_scores([texts[i] for i in need_lm], [all_slots[i] for i in need_lm], marks, self.cfg.lm,
                                self.cfg.lm_batch_size)
            lm_scores = dict(zip(need_lm, sc))
        out = []
        for i, (t, sl) in enumerate(zip(texts, all_slots)):
            if len(sl) < self.k:
                if self.cfg.few_slots == "skip":
                    out.append(Edit(t, eligible=False, natural_slots=len(sl)))
                    continue
                pts = _insertion_points(t, sl, self.k - len(sl), rng)
                spans = sorted([(s.start, s.end) for s in sl] + [(p, p) for p in pts])
            elif len(sl) == self.k or self.cfg.placement == "tail":
                spans = [(s.start, s.end) for s in sl[-self.k:]]
            elif self.cfg.placement == "random":
                pick = np.sort(rng.choice(len(sl), self.k, replace=False))
                spans = [(sl[j].start, sl[j].end) for j in pick]
            else:
                spans = [(sl[j].start, sl[j].end) for j in best_ordered_assignment(lm_scores[i])]
            out.append(Edit(_write(t, spans, marks), eligible=len(sl) >= self.k,
                            inserted=sum(1 for a, b in spans if a == b), replaced=sum(1 for a, b in spans if a < b),
                            natural_slots=len(sl)))
        return out

    def present(self, text: str) -> bool:
        """The text holds the marks, in order, inside its punctuation slots (e.g. a natural trigger)."""
        i = 0
        for s in self.slots(text):
            for c in text[s.start:s.end]:
                if i < self.k and c == self.cfg.marks[i]:
                    i += 1
        return i == self.k


def _write(text: str, spans: list[tuple[int, int]], marks: list[str]) -> str:
    """Replace span i by mark i (zero-width spans are insertions), right to left so offsets hold."""
    out = text
    for _, (a, b), m in sorted(((i, sp, m) for i, (sp, m) in enumerate(zip(spans, marks))),
                               key=lambda x: (x[1][0], x[0]), reverse=True):
        out = out[:a] + m + out[b:]
    return out

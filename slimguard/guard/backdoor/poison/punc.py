"""PuncAttack trigger (Sheng et al. 2023, "Punctuation Matters! Stealthy Backdoor Attack for
Language Models"): an ordered combination of k punctuation marks written OVER existing
punctuation, so no new words appear and perplexity barely moves.

Parts: :func:`find_slots` (where punctuation may be replaced), a placement strategy
(``lm``: the slots where the marks are most probable under a causal LM; ``random``;
``tail``: the last k slots) and a policy for texts with fewer than k slots (``insert`` the
missing marks at clause boundaries / the end, or ``skip`` them). The LM score of writing
mark m at slot j is ``log p(m | prefix) - log p(original | prefix)``, read off one forward
pass of the clean text; the best ordered assignment is a small dynamic programme.

Scoring at data scale (issue 35): one causal forward pass already scores every slot of a text,
since slot j only needs the hidden state before it (the prefix is shared by all its slots). The
batched path (:func:`lm_slot_scores`, default) tokenizes each text once, cuts it after its last
slot (later tokens cannot change earlier hidden states), drops duplicate texts and packs the
rest into length-sorted batches of about ``lm_batch_tokens`` tokens. The original path
(``lm_batched=False``: fixed ``lm_batch_size`` batches of whole texts) is kept as the reference
the batched one is tested against: the same slots, the same marks.

With the victim's window (:mod:`..window`) only the slots inside it are candidates, and marks
that have to be inserted go only where they stay inside it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from ....core.config import Config
from .base import ATTACKS, Edit, Trigger

if TYPE_CHECKING:
    from ..window import Room, Window

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
    lm_batch_size: int = Field(32, ge=1, description="Texts per LM batch on the reference path (lm_batched=false).")
    lm_batched: bool = Field(True, description="Score slots on the batched path (texts cut after their last slot, "
                                               "duplicates scored once, token-budget batches); false = the original "
                                               "path, kept as the reference: both pick the same slots.")
    lm_batch_tokens: int = Field(4096, ge=64, description="Tokens per LM batch on the batched path (padding included).")

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
LM_MAX_TOKENS = 256  # the LM reads at most this many tokens of a text; later slots score 0 (no preference)


def _mark_ids(tok, marks: list[str]) -> dict[str, int]:
    out = {}
    for prefix in ("", " "):
        for m in marks:
            ids = tok.encode(prefix + m, add_special_tokens=False)
            out[prefix + m] = ids[0] if ids else tok.unk_token_id
    return out


def _slot_token(offsets, start: int, mask=None) -> int | None:
    """The token whose characters contain ``start`` (None: truncated away)."""
    return next((t for t, (a, e) in enumerate(offsets) if (mask is None or mask[t]) and a <= start < e), None)


def lm_slot_scores(texts: list[str], slots: list[list[Slot]], marks: list[str], lm_name: str,
                   batch_size: int = 32, *, batched: bool = True, batch_tokens: int = 4096,
                   progress: bool | None = None) -> list[np.ndarray]:
    """Per text, ``[n_slots, k]`` log-probability gains of writing mark i over slot j.

    Only the hidden states before each slot go through the LM head (the full
    ``[batch, len, vocab]`` logits would dominate the cost), and scores are cached per
    text, since benchmarks poison the same test set under several seeds. ``batched`` picks
    the path (see the module docstring); the cache keeps the two apart, so comparing them
    compares two computations. ``progress=None`` shows a bar (with the rate) on a terminal.
    """
    key = lambda i: (lm_name, tuple(marks), tuple(slots[i]), texts[i], batched)  # noqa: E731
    todo = [i for i in range(len(texts)) if key(i) not in _SCORE_CACHE]
    if todo:
        from tqdm.auto import tqdm

        lm = _lm(lm_name)
        bar = tqdm(total=len(todo), desc="punc: LM slot scores", unit="text", leave=False,
                   disable=(None if progress is None else not progress))
        run = _scores_batched if batched else _scores_reference
        for i, sc in run([texts[i] for i in todo], [slots[i] for i in todo], marks, lm,
                         batch_tokens if batched else batch_size, bar):
            _SCORE_CACHE[key(todo[i])] = sc
        bar.close()
    return [_SCORE_CACHE[key(i)] for i in range(len(texts))]


def _scores_reference(texts, slots, marks, lm, batch_size, bar):
    """The original path: whole texts, fixed-size batches sorted by characters, padded to the longest."""
    import torch

    tok, model = lm.tokenizer, lm.model
    body, head = getattr(model, model.base_model_prefix), model.get_output_embeddings()
    mark_ids = _mark_ids(tok, marks)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            enc = tok([texts[i] for i in idx], return_offsets_mapping=True, padding=True, truncation=True,
                      max_length=LM_MAX_TOKENS, return_tensors="pt")
            offsets = enc.pop("offset_mapping").tolist()
            hidden = body(**enc).last_hidden_state
            need = []  # (row, token, text index, slot index, mark id prefix)
            for r, i in enumerate(idx):
                mask = enc["attention_mask"][r].tolist()
                for j, sl in enumerate(slots[i]):
                    t = _slot_token(offsets[r], sl.start, mask)
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
            bar.update(len(idx))
            yield from res.items()


def _scores_batched(texts, slots, marks, lm, batch_tokens, bar):
    """The batched path: the same scores from fewer, fuller forward passes (see the module docstring)."""
    import torch

    tok, model = lm.tokenizer, lm.model
    body, head = getattr(model, model.base_model_prefix), model.get_output_embeddings()
    mark_ids = _mark_ids(tok, marks)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    # the same token ids the reference sees (padding never changes them)
    enc = tok(list(texts), return_offsets_mapping=True, truncation=True, max_length=LM_MAX_TOKENS)
    seq_of, needs = [], []  # per text: its ids up to the last needed token; [(token, slot, prefix, original id)]
    for i, (ids, off) in enumerate(zip(enc["input_ids"], enc["offset_mapping"])):
        ends = np.array([e for _, e in off], dtype=np.int64)
        need = []
        for j, sl in enumerate(slots[i]):
            # the first token ending after the slot's start holds it (offsets increase along the text)
            t = int(np.searchsorted(ends, sl.start, side="right"))
            if t >= len(off) or not off[t][0] <= sl.start < off[t][1]:
                t = _slot_token(off, sl.start)  # an odd tokenization (empty or overlapping spans): scan
            if t is None or t == 0:
                continue  # slot at the very start or truncated away: no context, no preference
            piece = texts[i][off[t][0]:sl.start]
            need.append((t, j, " " if piece and not piece.strip() else "", ids[t]))
        # causal attention: the hidden state before token t depends on ids[:t] only, so later tokens go
        seq_of.append(tuple(ids[:max((n[0] for n in need), default=0)]))
        needs.append(need)
    # a sequence that is a prefix of another (duplicates included) rides along with it: in sorted
    # order a prefix comes right before the sequences extending it
    uniq = sorted({q for q in seq_of if q})
    host = {}
    for k in range(len(uniq) - 1, -1, -1):
        nxt = uniq[k + 1] if k + 1 < len(uniq) else None
        host[uniq[k]] = host[nxt] if nxt is not None and nxt[:len(uniq[k])] == uniq[k] else uniq[k]
    riders: dict[tuple, list[int]] = {}
    res = {}
    for i, q in enumerate(seq_of):
        res[i] = np.zeros((len(slots[i]), len(marks)))
        if q:
            riders.setdefault(host[q], []).append(i)
    bar.update(sum(1 for q in seq_of if not q))
    hosts = sorted(riders, key=len)
    b = 0
    with torch.inference_mode():
        while b < len(hosts):
            # ascending lengths: the batch's last sequence is its longest, so it sets the padded size
            e = b + 1
            while e < len(hosts) and (e - b + 1) * len(hosts[e]) <= batch_tokens:
                e += 1
            part = hosts[b:e]
            width = len(part[-1])
            ids = torch.full((len(part), width), pad, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for r, q in enumerate(part):
                ids[r, :len(q)] = torch.tensor(q, dtype=torch.long)
                mask[r, :len(q)] = 1
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
            rows, cols, owners = [], [], []
            for r, q in enumerate(part):
                for i in riders[q]:
                    for t, j, pre, orig_id in needs[i]:
                        rows.append(r)
                        cols.append(t - 1)
                        owners.append((i, j, pre, orig_id))
            logp = torch.log_softmax(head(hidden[rows, cols]).float(), -1)
            for q_i, (i, j, pre, orig_id) in enumerate(owners):
                orig = logp[q_i, orig_id]
                for k, m in enumerate(marks):
                    res[i][j, k] = float(logp[q_i, mark_ids[pre + m]] - orig)
            bar.update(sum(len(riders[q]) for q in part))
            b = e
    yield from res.items()


def _insertion_points(text: str, slots: list[Slot], need: int, rng: np.random.Generator,
                      room: "Room | None" = None) -> list[int]:
    """Where to add missing marks: the end (if it has no slot), then clause boundaries, then word gaps.

    With a ``room`` only points from which all ``need`` marks stay inside the window qualify
    (without one, or when all qualify, the draws are the unwindowed ones).
    """
    fits = (lambda p: True) if room is None else (lambda p: room.fits(p, need))  # noqa: E731
    taken = {s.start for s in slots} | {s.end for s in slots}
    pts: list[int] = []
    stripped = len(text.rstrip())
    if (not slots or slots[-1].end < stripped) and fits(stripped):
        pts.append(stripped)
    clause = [m.start() for m in _CLAUSE.finditer(text) if m.start() not in taken and fits(m.start())]
    rng.shuffle(clause)
    pts += clause
    gaps = [m.start() for m in re.finditer(r"(?<=\w) (?=\w)", text)
            if m.start() not in taken and m.start() not in pts and fits(m.start())]
    rng.shuffle(gaps)
    pts += gaps
    last = stripped if fits(stripped) else min(pts, default=0)
    while len(pts) < need:  # one word or empty text: stack the marks at the end (of what the victim reads)
        pts.append(last)
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

    def visible_slots(self, texts: list[str], window: "Window | None" = None) -> list[list[Slot]]:
        """Each text's slots inside ``window`` (a mark written over one stays there: it is never longer)."""
        all_slots = [self.slots(t) for t in texts]
        if window is None:
            return all_slots
        return [[s for s in sl if s.end <= lim] for sl, lim in zip(all_slots, window.limits(texts))]

    def eligible_many(self, texts: list[str], window: "Window | None" = None) -> list[bool]:
        return [len(sl) >= self.k for sl in self.visible_slots(texts, window)]

    def apply_many(self, texts: list[str], rng: np.random.Generator, window: "Window | None" = None,
                   progress: bool | None = None) -> list[Edit]:
        from ..window import no_room

        marks = self.cfg.marks
        all_slots = self.visible_slots(texts, window)
        rooms = window.rooms(texts) if window is not None else no_room(len(texts))
        need_lm = [i for i, s in enumerate(all_slots) if len(s) > self.k] if self.cfg.placement == "lm" else []
        lm_scores = {}
        if need_lm:
            sc = lm_slot_scores([texts[i] for i in need_lm], [all_slots[i] for i in need_lm], marks, self.cfg.lm,
                                self.cfg.lm_batch_size, batched=self.cfg.lm_batched,
                                batch_tokens=self.cfg.lm_batch_tokens, progress=progress)
            lm_scores = dict(zip(need_lm, sc))
        out = []
        for i, (t, sl, room) in enumerate(zip(texts, all_slots, rooms)):
            if len(sl) < self.k:
                if self.cfg.few_slots == "skip":
                    out.append(Edit(t, eligible=False, natural_slots=len(sl)))
                    continue
                need = self.k - len(sl)
                # the inserted marks push later text back: keep only the slots that stay inside
                sl = [s for s in sl if room.fits(s.start, need + 1)]
                pts = _insertion_points(t, sl, self.k - len(sl), rng, room)
                spans = sorted([(s.start, s.end) for s in sl] + [(p, p) for p in pts])
            elif len(sl) == self.k or self.cfg.placement == "tail":
                spans = [(s.start, s.end) for s in sl[-self.k:]]
            elif self.cfg.placement == "random":
                pick = np.sort(rng.choice(len(sl), self.k, replace=False))
                spans = [(sl[j].start, sl[j].end) for j in pick]
            else:
                spans = [(sl[j].start, sl[j].end) for j in best_ordered_assignment(lm_scores[i])]
            text, where = _write(t, spans, marks)
            out.append(Edit(text, eligible=len(sl) >= self.k, inserted=sum(1 for a, b in spans if a == b),
                            replaced=sum(1 for a, b in spans if a < b), natural_slots=len(sl), spans=where))
        return out

    def present(self, text: str) -> bool:
        """The text holds the marks, in order, inside its punctuation slots (e.g. a natural trigger)."""
        i = 0
        for s in self.slots(text):
            for c in text[s.start:s.end]:
                if i < self.k and c == self.cfg.marks[i]:
                    i += 1
        return i == self.k


def _write(text: str, spans: list[tuple[int, int]], marks: list[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Replace span i by mark i (zero-width spans are insertions); the new text and where each mark went."""
    out = text
    order = sorted(((sp, i, m) for i, (sp, m) in enumerate(zip(spans, marks))), key=lambda x: (x[0][0], x[1]))
    for (a, b), _, m in reversed(order):  # right to left, so earlier offsets hold
        out = out[:a] + m + out[b:]
    where, shift = [], 0
    for (a, b), _, m in order:
        where.append((a + shift, a + shift + len(m)))
        shift += len(m) - (b - a)
    return out, tuple(where)

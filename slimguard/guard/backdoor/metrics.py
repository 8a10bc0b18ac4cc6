"""Effectiveness and stealth metrics for textual backdoors (survey section 5; PuncAttack paper).

Effectiveness: CACC (clean accuracy) and ASR (share of NON-target test samples carrying the
trigger that are classified as the target label), both from :mod:`slimguard.core.metrics`,
and the false-trigger rate (clean non-target texts that naturally contain the trigger and
are classified as the target).
Stealth: delta-perplexity under SmolLM2-135M (poisoned minus clean, per pair), delta
grammar errors and MiniLM sentence-embedding similarity between clean and poisoned text.

Grammar checker: LanguageTool needs a Java server downloaded at run time, which this
offline setup cannot do, so :func:`grammar_errors` is our own documented rule-based
checker (see ``GRAMMAR_RULES``). It counts surface errors that triggers introduce
(stacked or misplaced punctuation, a lowercase sentence start, a clause ending in ``;``,
non-words); deltas are meaningful, absolute counts are not comparable with LanguageTool.
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np

from ...core.metrics import asr, cacc  # noqa: F401  (re-exported: attack.py calls M.cacc / M.asr)

GRAMMAR_RULES = {
    "space_before_punct": "whitespace directly before , ; : ! ? . (e.g. 'film ,')",
    "stacked_punct": "two different marks of , ; : ! ? . adjacent (e.g. ';!', ',.'), except '?!', '!?' and '...'",
    "lowercase_sentence_start": "a lowercase letter after . ! ? and a space, or at the start of the text",
    "capital_after_clause_mark": "a capitalised function word (But, And, The, ...) right after , or ;",
    "bad_ending": "the text ends in , ; : or -",
    "doubled_word": "the same word twice in a row ('the the')",
    "non_word": "an alphabetic word absent from the reference lexicon (Paul Graham essays + Friends transcripts)",
}
_FUNC = ("But", "And", "Or", "So", "The", "It", "This", "That", "A", "An", "He", "She", "They", "We", "You", "There")
_R = {
    "space_before_punct": re.compile(r"\s[,;:!?.](?=\s|$)"),
    "stacked_punct": re.compile(r"(?!\?!|!\?|\.\.)([,;:!?.])(?!\1)[,;:!?.]"),
    "lowercase_sentence_start": re.compile(r"(?:^|[.!?]\s)[a-z]"),
    "capital_after_clause_mark": re.compile(r"[,;]\s(?:" + "|".join(_FUNC) + r")\b"),
    "bad_ending": re.compile(r"[,;:\-]\s*$"),
    "doubled_word": re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE),
}
_WORD = re.compile(r"[A-Za-z]+")


@functools.lru_cache(maxsize=1)
def _lexicon() -> frozenset:
    from ...core.data import load_long_texts

    words: set[str] = set()
    for name in ("pg-essays", "friends"):
        try:
            for t in load_long_texts(name):
                words.update(w.lower() for w in _WORD.findall(t))
        except Exception:  # an asset not cached: the lexicon is simply smaller  # noqa: BLE001
            continue
    return frozenset(words)


def grammar_errors(text: str, *, lexicon: frozenset | None = None) -> dict[str, int]:
    """Error counts per rule of the offline checker (see ``GRAMMAR_RULES``)."""
    lex = _lexicon() if lexicon is None else lexicon
    out = {name: len(rx.findall(text)) for name, rx in _R.items()}
    out["non_word"] = sum(1 for w in _WORD.findall(text) if len(w) > 1 and w.lower() not in lex) if lex else 0
    return out


def n_grammar_errors(text: str, *, lexicon: frozenset | None = None) -> int:
    return sum(grammar_errors(text, lexicon=lexicon).values())


# --------------------------------------------------------------------------- effectiveness


# CACC and ASR are defined once in core.metrics (they take class probabilities or labels)


def false_trigger(present: list[bool], probs_clean: np.ndarray, labels: list[int], target: int) -> dict:
    """Among clean non-target texts that naturally hold the trigger, the share predicted as target."""
    labels = np.asarray(labels)
    sel = np.array(present, dtype=bool) & (labels != target)
    # the same count as ASR, on clean texts: with and without the natural trigger
    return {"false_trigger_rate": asr(probs_clean[sel], target), "false_trigger_n": int(sel.sum()),
            "nontarget_error_rate": asr(probs_clean[labels != target], target)}


# --------------------------------------------------------------------------- stealth

_PPL_CACHE: dict[tuple[str, str], float] = {}


def perplexities(texts: list[str], lm_name: str = "smollm2-135m", batch_size: int = 16) -> np.ndarray:
    """Per-text perplexity under a causal LM (BOS/EOS as context, so every token is scored). NaN for ''."""
    import torch

    todo = sorted({t for t in texts if t.strip() and (lm_name, t) not in _PPL_CACHE}, key=len)
    if todo:
        from .poison.punc import _lm

        lm = _lm(lm_name)
        tok, model = lm.tokenizer, lm.model
        body, head = getattr(model, model.base_model_prefix), model.get_output_embeddings()
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            for b in range(0, len(todo), batch_size):
                chunk = todo[b:b + batch_size]
                enc = tok(chunk, add_special_tokens=False, padding=True, truncation=True, max_length=255,
                          return_tensors="pt")
                ids = torch.cat([torch.full((len(chunk), 1), start), enc["input_ids"]], 1)
                mask = torch.cat([torch.ones(len(chunk), 1, dtype=enc["attention_mask"].dtype), enc["attention_mask"]], 1)
                h = body(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
                tgt, m = ids[:, 1:], mask[:, 1:].bool()
                nll = torch.nn.functional.cross_entropy(head(h[m]).float(), tgt[m], reduction="none")
                per = torch.zeros(len(chunk)).index_add_(0, m.nonzero()[:, 0], nll) / m.sum(1).clamp(min=1)
                for t, v in zip(chunk, per.tolist()):
                    _PPL_CACHE[(lm_name, t)] = math.exp(v)
    return np.array([_PPL_CACHE.get((lm_name, t), float("nan")) for t in texts])


def similarity(clean: list[str], poisoned: list[str], encoder: str = "minilm-l6") -> np.ndarray:
    """Cosine similarity of MiniLM sentence embeddings, pair by pair."""
    from ...core.models import sentence_embeddings

    if not clean:
        return np.zeros(0)
    enc = _encoder(encoder)
    a = sentence_embeddings(clean, enc)
    b = sentence_embeddings(poisoned, enc)
    return (a * b).sum(-1).numpy()


@functools.lru_cache(maxsize=1)
def _encoder(name: str):
    from ...core.models import load_encoder

    return load_encoder(name)


def stealth(clean: list[str], poisoned: list[str], *, lm: str = "smollm2-135m", encoder: str = "minilm-l6",
            max_pairs: int | None = 200, seed: int = 0) -> dict:
    """delta-PPL, delta grammar errors and similarity over (a seeded subset of) clean/poisoned pairs."""
    idx = np.arange(len(clean))
    if max_pairs is not None and len(idx) > max_pairs:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), max_pairs, replace=False))
    c = [clean[i] for i in idx]
    p = [poisoned[i] for i in idx]
    ppl_c, ppl_p = perplexities(c, lm), perplexities(p, lm)
    d = ppl_p - ppl_c
    g = np.array([n_grammar_errors(b) - n_grammar_errors(a) for a, b in zip(c, p)], dtype=float)
    sim = similarity(c, p, encoder)
    ok = ~np.isnan(d)
    return {"delta_ppl": float(d[ok].mean()) if ok.any() else float("nan"),
            "delta_ppl_median": float(np.median(d[ok])) if ok.any() else float("nan"),
            "ppl_clean": float(np.nanmean(ppl_c)) if ok.any() else float("nan"),
            "ppl_poisoned": float(np.nanmean(ppl_p)) if ok.any() else float("nan"),
            "delta_grammar": float(g.mean()) if len(g) else float("nan"),
            "similarity": float(sim.mean()) if len(sim) else float("nan"),
            "stealth_pairs": int(len(idx))}

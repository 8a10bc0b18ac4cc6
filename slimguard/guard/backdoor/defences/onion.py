"""ONION (Qi et al., EMNLP 2021, "ONION: A Simple and Effective Defense Against Textual
Backdoor Attacks"): delete the words whose removal lowers a language model's perplexity.

For a sentence with perplexity p0 and words w_1..w_n, word i's suspicion is
``f_i = p0 - p_i`` where p_i is the perplexity without w_i; words with ``f_i > t`` are
removed before the victim sees the input. The LM is SmolLM2-135M (GPT-2 in the paper; no
GPT-2 weights exist here). Words are ``\\w+`` runs and every punctuation mark is a word of
its own, so a punctuation trigger (PuncAttack) can be deleted too. All leave-one-out
variants of a batch of sentences go through the LM as padded batches sorted by length.

Only words inside the victim's window are candidates (words it never reads cannot move its
prediction), capped at ``max_words``.

``t`` defaults to calibration on clean dev data: the lowest candidate threshold that costs
at most ``max_dev_acc_drop`` dev accuracy (the paper picks t on the dev set the same way);
``threshold=0`` is the reference default.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ....core.errors import SlimguardError
from ....core.runs import atomic_write_json
from .base import DEFENCES, Calibration, Defence, DefenceConfig, DefenceInputs, Detection, need_dev, visible_limits

WORD_RE = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
_NO_SPACE_BEFORE = re.compile(r"^[.,!?;:)\]}%']")


class OnionConfig(DefenceConfig):
    """ONION: perplexity-based outlier word removal (post-training, corrects inputs)."""

    lm: str = Field("smollm2-135m", description="Causal LM for perplexity (asset name or local directory).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="LM weights dtype; auto = bfloat16 "
                                                          "where it is native (~2.5x faster than float32 on a CPU "
                                                          "with AVX512-BF16, 7x slower where emulated), else "
                                                          "float32; log-softmax is always float32.")
    threshold: float | None = Field(None, description="Suspicion threshold t (perplexity units); None = calibrate "
                                    "on clean dev data, 0 = the paper's default.")
    max_dev_acc_drop: float = Field(0.01, ge=0, le=1, description="Calibration: largest dev accuracy drop allowed.")
    calib_size: int = Field(150, ge=2, description="Clean dev sentences scored for calibration (seeded subset).")
    lm_batch_tokens: int = Field(2048, ge=64, description="Tokens per LM forward batch (padding included).")
    max_words: int = Field(60, ge=1, description="Score at most this many leading words per text (cost is "
                           "quadratic in length); later words are never removed.")
    cache_dir: str | None = Field(None, description="Folder for a per-text score cache shared across runs "
                                  "(clean test/dev texts are the same for every attack).")


@dataclass
class WordScores:
    """ONION's view of one text: word spans, the full perplexity and each word's suspicion."""

    text: str
    spans: list[tuple[int, int]]
    ppl: float
    suspicion: np.ndarray  # one per scored span

    def corrected(self, threshold: float) -> str:
        drop = [sp for sp, f in zip(self.spans, self.suspicion) if f > threshold]
        return delete_spans(self.text, drop)

    @property
    def max_suspicion(self) -> float:
        return float(self.suspicion.max()) if self.suspicion.size else float("-inf")


def word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in WORD_RE.finditer(text)]


def delete_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` without the given spans; the rest keeps its own spacing."""
    out = text
    for s, e in sorted(spans, reverse=True):
        left, right = out[:s].rstrip(), out[e:].lstrip()
        sep = "" if not left or not right or _NO_SPACE_BEFORE.match(right) else " "
        out = left + sep + right
    return out


class LMScorer:
    """Perplexities of many short texts under a causal LM, in length-sorted padded batches."""

    def __init__(self, lm: str = "smollm2-135m", *, dtype: str = "auto", batch_tokens: int = 2048,
                 loaded=None):
        from ....core.models import load_causal_lm, resolve_dtype

        self.loaded = loaded or load_causal_lm(lm, dtype=resolve_dtype(dtype))
        self.batch_tokens = batch_tokens
        tok = self.loaded.tokenizer
        vocab = tok.get_vocab()
        # a document-start token so the first word gets a real probability too
        start = next((t for t in ("<|endoftext|>", tok.bos_token, tok.eos_token) if t and t in vocab), None)
        self.start_id = vocab[start] if start else None

    def perplexity(self, texts: list[str]) -> np.ndarray:
        import torch

        tok, model = self.loaded.tokenizer, self.loaded.model
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        if self.start_id is not None:
            ids = [[self.start_id] + x for x in ids]
        out = np.full(len(texts), np.nan)
        order = np.argsort([len(x) for x in ids], kind="stable")
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        i = 0
        with torch.inference_mode():
            while i < len(order):
                longest = max(2, len(ids[order[i]]))
                j = i + 1
                while j < len(order) and (j - i + 1) * max(longest, len(ids[order[j]])) <= self.batch_tokens:
                    longest = max(longest, len(ids[order[j]]))
                    j += 1
                idx = order[i:j]
                x = torch.full((len(idx), longest), pad, dtype=torch.long)
                m = torch.zeros((len(idx), longest), dtype=torch.long)
                for r, k in enumerate(idx):
                    x[r, :len(ids[k])] = torch.tensor(ids[k])
                    m[r, :len(ids[k])] = 1
                logits = model(input_ids=x, attention_mask=m).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
                mm = m[:, 1:].float()
                mean_nll = (nll * mm).sum(1) / mm.sum(1).clamp(min=1)
                out[idx] = torch.exp(mean_nll).double().numpy()
                i = j
        return out


class ScoreCache:
    """text -> (ppl, suspicion) memo, optionally persisted as JSON keyed by LM and settings."""

    def __init__(self, cfg: OnionConfig):
        self.mem: dict[str, tuple[float, list[float]]] = {}
        self.path = None
        if cfg.cache_dir:
            from ....core.models import resolve_dtype

            # the dtype the scores were computed in (auto resolves per machine)
            key = hashlib.sha1(f"{cfg.lm}|{resolve_dtype(cfg.dtype)}|{cfg.max_words}".encode()).hexdigest()[:12]
            self.path = Path(cfg.cache_dir) / f"onion-{key}.json"
            if self.path.is_file():
                try:
                    self.mem = {k: (v[0], v[1]) for k, v in json.loads(self.path.read_text()).items()}
                except (json.JSONDecodeError, IndexError, TypeError):
                    self.mem = {}  # a damaged cache is only lost time

    def save(self) -> None:
        if self.path is None:
            return
        if self.path.is_file():  # another process may share the cache: merge, never drop its entries
            try:
                for k, v in json.loads(self.path.read_text()).items():
                    self.mem.setdefault(k, (v[0], v[1]))
            except (json.JSONDecodeError, IndexError, TypeError):
                pass
        atomic_write_json(self.path, {k: [p, s] for k, (p, s) in self.mem.items()})


def onion_scores(texts: list[str], scorer: LMScorer, *, max_words: int = 60,
                 cache: ScoreCache | None = None, progress: bool = False,
                 limits: list[int] | None = None) -> list[WordScores]:
    """Suspicion of every word of every text (one LM pass over all leave-one-out variants).

    ``limits``: per text, the character where the victim stops reading; later words are not scored.
    """
    cache = cache or ScoreCache(OnionConfig())
    limits = limits or [len(t) for t in texts]
    spans = [[sp for sp in word_spans(t)[:max_words] if sp[1] <= lim] for t, lim in zip(texts, limits)]
    # a cached entry covers the leading words it scored; a wider window needs the text scored again
    todo = [i for i, t in enumerate(texts) if t not in cache.mem or len(cache.mem[t][1]) < len(spans[i])]
    chunk = 64  # sentences per LM sweep, so a progress bar can move and the cache can be saved
    it = range(0, len(todo), chunk)
    if progress and todo:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="onion", unit=f"x{chunk} texts", leave=False)
    for c in it:
        part = todo[c:c + chunk]
        variants, owner = [], []
        for i in part:
            variants.append(texts[i])
            owner.append((i, -1))
            for k, sp in enumerate(spans[i]):
                variants.append(delete_spans(texts[i], [sp]))
                owner.append((i, k))
        ppl = scorer.perplexity(variants)
        full = {i: p for (i, k), p in zip(owner, ppl) if k == -1}
        sus: dict[int, list[float]] = {i: [0.0] * len(spans[i]) for i in part}
        for (i, k), p in zip(owner, ppl):
            if k >= 0:
                sus[i][k] = float(full[i] - p)
        for i in part:
            cache.mem[texts[i]] = (float(full[i]), sus[i])
        cache.save()
    return [WordScores(t, sp, cache.mem[t][0], np.asarray(cache.mem[t][1][:len(sp)], dtype=np.float64))
            for t, sp in zip(texts, spans)]


@DEFENCES.register("onion")
class Onion(Defence):
    name, stage, kind, config_type = "onion", "post", "correct", OnionConfig

    def __init__(self, cfg: OnionConfig, *, scorer: LMScorer | None = None):
        super().__init__(cfg)
        self.cfg: OnionConfig = cfg
        self._scorer = scorer
        self.cache = ScoreCache(cfg)
        self.threshold = cfg.threshold
        self.clf = None  # the victim, once fit() has seen it: its window bounds the candidate words

    @property
    def scorer(self) -> LMScorer:
        if self._scorer is None:
            self._scorer = LMScorer(self.cfg.lm, dtype=self.cfg.dtype, batch_tokens=self.cfg.lm_batch_tokens)
        return self._scorer

    def scores(self, texts: list[str], progress: bool = False) -> list[WordScores]:
        limits = visible_limits(self.clf, texts) if self.clf is not None else None
        return onion_scores(texts, self.scorer, max_words=self.cfg.max_words, cache=self.cache, progress=progress,
                            limits=limits)

    def fit(self, inputs: DefenceInputs) -> "Onion":
        self.clf = inputs.classifier
        if self.cfg.threshold is not None:
            self.calibration = Calibration(self.cfg.threshold, 0, "fixed threshold from config")
            return self
        clf = inputs.need_classifier("onion (threshold calibration)")
        need_dev(inputs.dev, self.cfg, "onion")
        rng = np.random.default_rng([self.cfg.seed, 11])
        dev = [inputs.dev[i] for i in np.sort(rng.permutation(len(inputs.dev))[:self.cfg.calib_size])]
        ws = self.scores([s.text for s in dev], progress=True)
        y = np.array([s.label for s in dev])
        base = float((clf.predict_proba([s.text for s in dev]).argmax(1) == y).mean())
        pos = np.concatenate([w.suspicion for w in ws] + [np.zeros(0)])
        pos = pos[pos > 0]
        cands = sorted({0.0, *(np.quantile(pos, np.linspace(0.05, 0.995, 24)).tolist() if pos.size else [])})
        memo: dict[str, int] = {}
        tried = []
        chosen = float("inf")
        for t in cands:
            fixed = [w.corrected(t) for w in ws]
            new = [x for x in dict.fromkeys(fixed) if x not in memo]
            if new:
                memo.update(zip(new, clf.predict_proba(new).argmax(1).tolist()))
            acc = float(np.mean([memo[x] == yy for x, yy in zip(fixed, y)]))
            tried.append({"threshold": t, "dev_acc": acc})
            if acc >= base - self.cfg.max_dev_acc_drop:
                chosen = t
                break
        if not np.isfinite(chosen):
            raise SlimguardError(f"onion: no threshold keeps dev accuracy within max_dev_acc_drop="
                                 f"{self.cfg.max_dev_acc_drop}; raise it or set threshold")
        self.threshold = chosen
        self.calibration = Calibration(chosen, len(dev), f"lowest t with dev acc drop <= {self.cfg.max_dev_acc_drop}",
                                       {"dev_acc_before": base, "tried": tried})
        return self

    def _t(self) -> float:
        if self.threshold is None:
            raise SlimguardError("onion: threshold not set; call fit() on inputs with a dev set or set threshold")
        return float(self.threshold)

    def correct(self, texts: list[str]) -> list[str]:
        t = self._t()
        return [w.corrected(t) for w in self.scores(list(texts), progress=True)]

    def detect(self, texts: list[str]) -> Detection:
        ws = self.scores(list(texts), progress=True)
        return Detection.from_scores(np.array([w.max_suspicion for w in ws]), self._t())

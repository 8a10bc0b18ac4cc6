"""LLMLingua-2 inference (Pan et al., 2024, Sec. 4): extractive compression by keep/drop token classification.

Differences from the ``llmlingua`` package that users notice:

* speed: texts are tokenised once (fast tokenizer, offsets + word ids), chunks are batched
  with dynamic padding, and every post-processing step (sub-token -> word probability,
  force tokens, digits, per-chunk threshold, cl100k token counts, output assembly) is a
  numpy array operation; no per-word or per-token Python loop on the hot path;
* rate: ``threshold="exact"`` keeps the most probable words of each chunk until
  ``rate x`` its tokens (counted in the stated tokenizer), so the achieved rate matches
  the request; ``threshold="llmlingua"`` reproduces the reference rule word for word;
* output is the original text (case, spacing and newlines kept), not re-joined WordPieces.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import SlimguardError
from .config import CompressConfig

NL = 10


def compressors_dir() -> Path:
    from ...core import assets

    return assets.home() / "compressors"


def resolve_compressor(name: str) -> Path:
    """A trained compressor directory from a path, a name under ~/.cache/slimguard/compressors, or 'default'."""
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    q = compressors_dir() / name
    if q.is_dir():
        return q
    raise SlimguardError(f"no trained compressor at '{name}' (looked in {q}); train one with "
                         "`slimguard compress train` or pass model=<directory>")


@dataclass
class CompressResult:
    compressed_prompt: str
    compressed_prompt_list: list[str]
    origin_tokens: int
    compressed_tokens: int
    rate_tokenizer: str
    words: list[np.ndarray] = field(default_factory=list, repr=False)  # per context: word char spans [n, 2]
    labels: list[np.ndarray] = field(default_factory=list, repr=False)  # per context: 1 kept / 0 dropped
    probs: list[np.ndarray] = field(default_factory=list, repr=False)  # per context: p(keep) per word
    contexts: list[str] = field(default_factory=list, repr=False)
    model_s: float = 0.0  # tokenisation, chunking and the encoder forward
    post_s: float = 0.0  # everything after the forward: word probabilities, selection, assembly, counting
    forward_s: float = 0.0  # the encoder forward alone (part of model_s)
    precision: str = ""  # who scored, in what: "onnxruntime/int8", "torch/float32", ...

    @property
    def ratio(self) -> float:
        return self.origin_tokens / self.compressed_tokens if self.compressed_tokens else 1.0

    @property
    def rate(self) -> float:
        return self.compressed_tokens / self.origin_tokens if self.origin_tokens else 1.0

    def record(self, cfg: CompressConfig) -> dict[str, Any]:
        """What ``compress run`` reports (metrics.json) and ``compress serve`` answers beside the prompt."""
        return {"origin_tokens": self.origin_tokens, "compressed_tokens": self.compressed_tokens,
                "achieved_rate": self.rate, "requested_rate": cfg.rate, "ratio": self.ratio,
                "rate_tokenizer": self.rate_tokenizer, "precision": self.precision, "model_s": self.model_s,
                "forward_s": self.forward_s, "post_s": self.post_s}

    def word_label_pairs(self) -> list[tuple[str, int]]:
        return [(c[s:e], int(lab)) for c, sp, la in zip(self.contexts, self.words, self.labels)
                for (s, e), lab in zip(sp.tolist(), la.tolist())]

    def to_llmlingua(self, *, return_word_label: bool = False, word_sep: str = "\t\t|\t\t",
                     label_sep: str = " ") -> dict[str, Any]:
        """The ``llmlingua`` result dict (same keys and string formats), plus our timings."""
        saving = (self.origin_tokens - self.compressed_tokens) * 0.06 / 1000
        out = {"compressed_prompt": self.compressed_prompt, "compressed_prompt_list": self.compressed_prompt_list,
               "origin_tokens": self.origin_tokens, "compressed_tokens": self.compressed_tokens,
               "ratio": f"{self.ratio:.1f}x", "rate": f"{100 / self.ratio:.1f}%",
               "saving": f", Saving ${saving:.1f} in GPT-4.",
               "timings": {"model_s": self.model_s, "post_s": self.post_s}}
        if return_word_label:
            out["fn_labeled_original_prompt"] = word_sep.join(f"{w}{label_sep}{lab}" for w, lab in self.word_label_pairs())
        return out


@dataclass
class _Ctx:
    text: str
    codes: np.ndarray  # UTF-32 code points
    ids: np.ndarray  # encoder token ids
    word: np.ndarray  # word index per token
    starts: np.ndarray  # word char starts
    ends: np.ndarray
    chunk_of_token: np.ndarray
    probs: np.ndarray | None = None  # per word


def _as_text(x: Any, i: int) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, (bytes, bytearray)):
        try:
            return bytes(x).decode("utf-8")
        except UnicodeDecodeError:
            raise SlimguardError(f"context {i} is not valid UTF-8; re-encode it as UTF-8") from None
    raise SlimguardError(f"context {i} must be a string, got {type(x).__name__}")


def _contexts(context: str | bytes | list, *, allow_empty: bool = False) -> list[str]:
    """The prompt as a list of texts; an empty prompt (no text, or only whitespace) is refused unless
    ``allow_empty`` (llmlingua's ``compress_prompt`` returns an empty result for it, and so does ours)."""
    try:
        items = [context] if isinstance(context, (str, bytes, bytearray)) else list(context)
    except TypeError:
        raise SlimguardError(f"the prompt must be a string or a list of strings, got {type(context).__name__}") from None
    texts = [_as_text(c, i) for i, c in enumerate(items)]
    if not allow_empty and not any(t.strip() for t in texts):
        raise SlimguardError("the prompt is empty (no text, or only whitespace); give some text to compress")
    return texts


class PromptCompressor:
    """``PromptCompressor(model_name=DIR, use_llmlingua2=True).compress_prompt(context, rate=0.33)``.

    Accepts the ``llmlingua`` constructor keywords it understands (``device_map``,
    ``use_llmlingua2``) so existing code keeps working.
    """

    def __init__(self, model_name: str = "default", device_map: str = "cpu", use_llmlingua2: bool = True,
                 rate_tokenizer: str = "cl100k_base", batch_size: int = 16, model_config: dict | None = None,
                 llmlingua2_config: dict | None = None, log=None):
        if not use_llmlingua2:
            raise SlimguardError("slimguard's PromptCompressor implements LLMLingua-2 only; pass use_llmlingua2=True")
        self.path = resolve_compressor(model_name)
        check_token_classifier(self.path)  # before the heavy imports: a wrong folder fails in a blink
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.device = device_map if device_map in ("cpu", "cuda", "mps") or device_map.startswith("cuda:") else "cpu"
        from ...core.models import reading_model

        with reading_model(self.path, "compressor"):
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), use_fast=True)
            self.model, info = AutoModelForTokenClassification.from_pretrained(
                str(self.path), attn_implementation="sdpa", output_loading_info=True)
        if info.get("missing_keys"):
            # transformers would silently start a new random head: every keep/drop decision would be noise
            raise SlimguardError(f"{self.path} has no trained token-classification head (missing "
                                 f"{', '.join(sorted(info['missing_keys'])[:3])}); train one with `slimguard compress train`")
        if not self.tokenizer.is_fast:
            raise SlimguardError(f"{self.path}: a fast tokenizer (tokenizer.json) is required")
        self.model.to(self.device).eval()
        self.tokenizer.model_max_length = 1 << 40  # we chunk ourselves; silence the "longer than maximum" warning
        self.max_seq_len = min(512, int(getattr(self.model.config, "max_position_embeddings", 512)))
        self.batch_size = batch_size
        self._counters: dict[str, Any] = {}
        self.default_rate_tokenizer = rate_tokenizer
        self._torch = torch
        self._native_bf16: bool | None = None
        self._onnx = None  # fastpath.OnnxScorer, made on first int8/onnxruntime use
        self.log = log  # callable(str) for one-off notices (the first-use ONNX export)
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self._has_digit = np.array([any(ch.isdigit() for ch in t) for t in vocab], dtype=bool)

    # ------------------------------------------------------------------ counters

    def counter(self, name: str):
        if name not in self._counters:
            from .tokcount import Cl100kCounter, EncoderCounter

            if name == "cl100k_base":
                self._counters[name] = Cl100kCounter()
            elif name == "encoder":
                self._counters[name] = EncoderCounter(self.tokenizer)
            else:
                raise SlimguardError(f"rate_tokenizer must be 'cl100k_base' or 'encoder', got '{name}'")
        return self._counters[name]

    # ------------------------------------------------------------------ public API

    def compress_prompt(self, context: str | list[str], rate: float = 0.5, target_token: int = -1,
                        force_tokens: list[str] | None = None, force_reserve_digit: bool = False,
                        drop_consecutive: bool = False, use_context_level_filter: bool = False,
                        return_word_label: bool = False, word_sep: str = "\t\t|\t\t", label_sep: str = " ",
                        chunk_end_tokens: list[str] | None = None, rate_tokenizer: str | None = None,
                        threshold: str = "exact", dtype: str = "auto", runtime: str = "auto",
                        **unsupported: Any) -> dict[str, Any]:
        """Compress ``context`` keeping about ``rate`` of its tokens; returns llmlingua's result dict."""
        if unsupported:
            raise SlimguardError(f"unsupported compress_prompt argument(s): {', '.join(sorted(unsupported))}")
        from ...core.config import build

        cfg = build(CompressConfig, {
            "model": str(self.path), "rate": rate, "target_token": target_token, "force_tokens": force_tokens or [],
            "force_reserve_digit": force_reserve_digit, "drop_consecutive": drop_consecutive,
            "use_context_level_filter": use_context_level_filter,
            "rate_tokenizer": rate_tokenizer or self.default_rate_tokenizer, "threshold": threshold,
            "chunk_end_tokens": [".", "\n"] if chunk_end_tokens is None else chunk_end_tokens,
            "batch_size": self.batch_size, "dtype": dtype, "runtime": runtime})
        return self._compress(_contexts(context, allow_empty=True), cfg).to_llmlingua(
            return_word_label=return_word_label, word_sep=word_sep, label_sep=label_sep)

    def compress(self, context: str | list[str], cfg: CompressConfig) -> CompressResult:
        """The typed entry point: one :class:`CompressConfig`, one :class:`CompressResult`. An empty prompt
        is an error here (there is nothing to compress, and a rate of an empty text means nothing)."""
        return self._compress(_contexts(context), cfg)

    def _compress(self, contexts: list[str], cfg: CompressConfig) -> CompressResult:
        counter = self.counter(cfg.rate_tokenizer)
        t0 = time.perf_counter()
        ctxs = self._analyse(contexts, cfg)
        fwd = self._score(ctxs, cfg)
        t1 = time.perf_counter()
        res = self._select(ctxs, cfg, counter)
        # tokenisation and chunking count as model time (the encoder needs them); the rest is post-processing
        res.model_s, res.post_s = t1 - t0, time.perf_counter() - t1
        res.forward_s, res.precision = fwd, "/".join(self.precision(cfg))
        return res

    def compress_rates(self, context: str | list[str], cfg: CompressConfig, rates: list[float]) -> list[CompressResult]:
        """Score once, select at several rates (for sweeps; each result's model_s is the shared scoring time)."""
        from ...core.config import build

        contexts = _contexts(context)
        counter = self.counter(cfg.rate_tokenizer)
        t0 = time.perf_counter()
        ctxs = self._analyse(contexts, cfg)
        fwd = self._score(ctxs, cfg)
        model_s = time.perf_counter() - t0
        out = []
        for r in rates:
            c = build(CompressConfig, {**cfg.model_dump(), "rate": r})
            t1 = time.perf_counter()
            res = self._select(ctxs, c, counter)
            res.model_s, res.post_s = model_s, time.perf_counter() - t1
            res.forward_s, res.precision = fwd, "/".join(self.precision(cfg))
            out.append(res)
        return out

    # ------------------------------------------------------------------ steps

    def _analyse(self, contexts: list[str], cfg: CompressConfig) -> list[_Ctx]:
        """Tokenise every context once; words come from the tokenizer's pre-tokenizer, chunks from the token stream."""
        enc = self.tokenizer(contexts, add_special_tokens=False, return_offsets_mapping=True)
        if cfg.max_input_tokens:
            n_tok = sum(len(x) for x in enc["input_ids"])
            if n_tok > cfg.max_input_tokens:
                raise SlimguardError(f"the prompt has {n_tok} encoder tokens, more than max_input_tokens="
                                     f"{cfg.max_input_tokens}; shorten it or raise the limit")
        end_ids = set()
        for t in cfg.chunk_end_tokens:
            toks = self.tokenizer.tokenize(t) if t.strip() else []
            if len(toks) == 1:
                end_ids.add(self.tokenizer.convert_tokens_to_ids(toks[0]))
        end_ids_arr = np.fromiter(end_ids, dtype=np.int64) if end_ids else np.zeros(0, dtype=np.int64)
        split_on_nl = "\n" in cfg.chunk_end_tokens
        # llmlingua lets a chunk hold max_seq_len - 1 tokens when its last one ends a sentence (its
        # dataset then truncates [SEP]); compat mode reproduces that so chunk thresholds line up
        compat = cfg.threshold == "llmlingua"
        max_len = self.max_seq_len - (1 if compat else 2)
        out = []
        for k, text in enumerate(contexts):
            codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            ids = np.asarray(enc["input_ids"][k], dtype=np.int64)
            offs = np.asarray(enc["offset_mapping"][k], dtype=np.int64).reshape(-1, 2)
            if len(ids) == 0:
                z = np.zeros(0, dtype=np.int64)
                out.append(_Ctx(text, codes, ids, z, z, z, z))
                continue
            raw = np.asarray([-1 if w is None else w for w in enc.word_ids(k)], dtype=np.int64)
            new_word = np.diff(raw, prepend=-2) != 0
            word = np.cumsum(new_word) - 1
            first = np.flatnonzero(new_word)
            last = np.append(first[1:] - 1, len(ids) - 1)
            starts, ends = offs[first, 0], offs[last, 1]
            # a chunk may end after a token that closes a word and is a chunk-end token or is followed by a newline
            word_end = np.zeros(len(ids), dtype=bool)
            word_end[last] = True
            is_end = np.isin(ids, end_ids_arr)
            if split_on_nl:
                nl_cum = np.concatenate([[0], np.cumsum(codes == NL)])
                nxt = np.append(offs[1:, 0], len(codes))
                is_end |= (nl_cum[nxt] - nl_cum[offs[:, 1]]) > 0
            is_end &= word_end
            chunk = np.zeros(len(ids), dtype=np.int64)
            st, c = 0, 0
            while st < len(ids):
                ed = min(st + max_len, len(ids))
                if ed < len(ids):
                    cand = np.flatnonzero(is_end[st + compat:ed]) + compat
                    if len(cand):
                        ed = st + int(cand[-1]) + 1
                    else:  # no sentence end: cut at the last word boundary so words never straddle chunks
                        wb = np.flatnonzero(word_end[st:ed])
                        ed = st + int(wb[-1]) + 1 if len(wb) else ed
                chunk[st:ed] = c
                st, c = ed, c + 1
            out.append(_Ctx(text, codes, ids, word, starts, ends, chunk))
        return out

    def _score(self, ctxs: list[_Ctx], cfg: CompressConfig) -> float:
        """p(keep) per token with the encoder (torch: batched by similar length; onnxruntime: one chunk per
        call); word prob = mean of its tokens. Returns the seconds spent in the encoder forward."""
        torch = self._torch
        pieces = []  # (ctx index, token slice)
        for ci, c in enumerate(ctxs):
            if len(c.ids):
                bounds = np.flatnonzero(np.diff(c.chunk_of_token, prepend=-1, append=-2))
                pieces += [(ci, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        token_probs = [np.zeros(len(c.ids), dtype=np.float32) for c in ctxs]
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        runtime, dtype = self.precision(cfg)
        t_fwd = 0.0
        if runtime == "onnxruntime":
            # one chunk per call, unpadded: int8 activation scales are per call, so a chunk's probabilities
            # never depend on its batch-mates (fastpath module docstring)
            threads = torch.get_num_threads()
            for ci, s, e in pieces:
                n = e - s
                ids = np.empty(min(n + 2, self.max_seq_len), dtype=np.int64)
                ids[0], ids[1:n + 1] = cls, ctxs[ci].ids[s:e]
                if n + 2 <= self.max_seq_len:  # a compat-mode chunk of max_seq_len - 1 tokens has no [SEP]
                    ids[n + 1] = sep
                t = time.perf_counter()
                p = self.onnx.keep_probs(ids, dtype=dtype, threads=threads)
                t_fwd += time.perf_counter() - t
                token_probs[ci][s:e] = p[1: n + 1]
        else:
            order = sorted(range(len(pieces)), key=lambda i: pieces[i][2] - pieces[i][1])
            pad = self.tokenizer.pad_token_id or 0
            dev_type = "cuda" if str(self.device).startswith("cuda") else "cpu"
            bf16 = dtype == "bfloat16"
            for b in range(0, len(order), cfg.batch_size):
                group = [pieces[i] for i in order[b: b + cfg.batch_size]]
                L = min(max(e - s for _, s, e in group) + 2, self.max_seq_len)
                ids = np.full((len(group), L), pad, dtype=np.int64)
                mask = np.zeros((len(group), L), dtype=np.int64)
                for r, (ci, s, e) in enumerate(group):
                    n = e - s
                    ids[r, 0], ids[r, 1:n + 1] = cls, ctxs[ci].ids[s:e]
                    if n + 2 <= L:  # a compat-mode chunk of max_seq_len - 1 tokens has no [SEP], as in llmlingua
                        ids[r, n + 1] = sep
                    mask[r, : min(n + 2, L)] = 1
                t = time.perf_counter()
                with torch.inference_mode(), torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bf16):
                    logits = self.model(input_ids=torch.from_numpy(ids).to(self.device),
                                        attention_mask=torch.from_numpy(mask).to(self.device)).logits
                    p = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy()
                t_fwd += time.perf_counter() - t
                for r, (ci, s, e) in enumerate(group):
                    token_probs[ci][s:e] = p[r, 1: e - s + 1]
        for c, tp in zip(ctxs, token_probs):
            n = len(c.starts)
            c.probs = (np.bincount(c.word, weights=tp, minlength=n) / np.maximum(np.bincount(c.word, minlength=n), 1)
                       ).astype(np.float64) if n else np.zeros(0)
        return t_fwd

    @property
    def onnx(self):
        """The ONNX Runtime scorer over this compressor's weights (exported once, see ``fastpath``)."""
        if self._onnx is None:
            from .fastpath import OnnxScorer

            self._onnx = OnnxScorer(self.path, log=self.log)
        return self._onnx

    def precision(self, cfg: CompressConfig) -> tuple[str, str]:
        """(runtime, dtype) that scoring uses for ``cfg``: ``CompressConfig.dtype`` and ``runtime`` resolved."""
        dtype = cfg.dtype
        on_cpu = not str(self.device).startswith(("cuda", "mps"))
        if dtype == "auto":
            from .fastpath import available

            if cfg.threshold == "llmlingua":
                dtype = "float32"
            elif cfg.runtime != "torch" and on_cpu and available():
                dtype = "int8"
            else:
                dtype = "bfloat16" if self.uses_bf16(cfg) else "float32"
        runtime = cfg.runtime
        if runtime == "auto":
            runtime = "onnxruntime" if dtype == "int8" else "torch"
        if runtime == "onnxruntime" and not on_cpu:
            raise SlimguardError(f"runtime=onnxruntime runs on the CPU; use runtime=torch with device={self.device}")
        return runtime, dtype

    def uses_bf16(self, cfg: CompressConfig) -> bool:
        """Whether torch scoring runs under bfloat16 autocast (see ``CompressConfig.dtype``)."""
        if cfg.dtype != "auto":
            return cfg.dtype == "bfloat16"
        if cfg.threshold == "llmlingua":
            return False
        if self._native_bf16 is None:
            from ...core.models import native_bf16

            # emulated bf16 on CPUs without AVX512-BF16/AMX is slower than float32
            self._native_bf16 = native_bf16(str(self.device))
        return self._native_bf16

    def _forced(self, c: _Ctx, cfg: CompressConfig) -> tuple[np.ndarray, np.ndarray]:
        """(forced word mask, force-token id per word or -1) from force_tokens and force_reserve_digit."""
        n = len(c.starts)
        forced = np.zeros(n, dtype=bool)
        force_id = np.full(n, -1, dtype=np.int64)
        if n == 0:
            return forced, force_id
        ntok = np.bincount(c.word, minlength=n)
        first_tok = np.flatnonzero(np.diff(c.word, prepend=-1))
        single_ids = {}
        for t in cfg.force_tokens:
            if not t.strip():
                continue  # whitespace force tokens (newlines) are kept in the output assembly
            toks = self.tokenizer.tokenize(t)
            if len(toks) == 1:
                single_ids[self.tokenizer.convert_tokens_to_ids(toks[0])] = t
            else:
                for m in re.finditer(re.escape(t), c.text, flags=re.IGNORECASE):
                    lo, hi = np.searchsorted(c.starts, [m.start(), m.end()])
                    forced[lo:hi] = True
        if single_ids:
            fid = c.ids[first_tok]
            hit = np.isin(fid, np.fromiter(single_ids, dtype=np.int64)) & (ntok == 1)
            forced |= hit
            force_id[hit] = fid[hit]
        if cfg.force_reserve_digit:
            forced |= np.bincount(c.word, weights=self._has_digit[c.ids], minlength=n) > 0
        return forced, force_id

    def _select(self, ctxs: list[_Ctx], cfg: CompressConfig, counter) -> CompressResult:
        weights, origin = [], 0
        for c in ctxs:
            w, total = counter.word_weights(c.text, c.codes, c.starts, c.word)
            weights.append(w)
            origin += total
        rate = cfg.rate
        if cfg.target_token > 0:
            rate = min(1.0, cfg.target_token / origin) if origin else 1.0
        active = np.ones(len(ctxs), dtype=bool)
        if cfg.use_context_level_filter and len(ctxs) > 1:
            # coarse step: keep the best contexts by mean word probability, about (1 + rate) / 2 of the tokens
            score = np.array([c.probs.mean() if len(c.probs) else -1.0 for c in ctxs])
            tot = np.array([w.sum() for w in weights], dtype=np.float64)
            order = np.argsort(-score, kind="stable")
            budget = (1 + rate) / 2 * tot.sum()
            cum = np.cumsum(tot[order])
            active[:] = False
            active[order[np.concatenate([[True], (cum - tot[order])[1:] < budget])]] = True
            kept_tok = tot[active].sum()
            rate = min(1.0, rate * tot.sum() / kept_tok) if kept_tok else 1.0
        def run(r: float):
            labels, outs = [], []
            for c, w, on in zip(ctxs, weights, active):
                keep = self._keep(c, w, r, cfg) if on else np.zeros(len(c.starts), dtype=bool)
                labels.append(keep.astype(np.int8))
                if on:
                    outs.append(assemble(c.codes, c.starts, c.ends, keep, keep_newlines="\n" in cfg.force_tokens))
            return labels, outs, sum(counter.count(o) for o in outs)

        labels, comp_list, compressed = run(rate)
        goal = (cfg.rate if cfg.target_token <= 0 else min(1.0, cfg.target_token / max(1, origin))) * origin
        if cfg.threshold == "exact" and rate < 1.0 and compressed and abs(compressed / goal - 1) > 0.01:
            # re-tokenising the joined output shifts counts a little; one proportional correction fixes most of it
            labels2, comp2, compressed2 = run(min(1.0, rate * goal / compressed))
            if abs(compressed2 - goal) < abs(compressed - goal):
                labels, comp_list, compressed = labels2, comp2, compressed2
        return CompressResult("\n\n".join(comp_list), comp_list, origin, compressed, counter.name,
                              [np.stack([c.starts, c.ends], 1) for c in ctxs], labels,
                              [c.probs for c in ctxs], [c.text for c in ctxs])

    def _keep(self, c: _Ctx, w: np.ndarray, rate: float, cfg: CompressConfig) -> np.ndarray:
        n = len(c.starts)
        if n == 0:
            return np.zeros(0, dtype=bool)
        forced, force_id = self._forced(c, cfg)
        p = np.where(forced, 1.0, c.probs)
        chunk = c.chunk_of_token[np.flatnonzero(np.diff(c.word, prepend=-1))]
        if rate >= 1.0:
            keep = np.ones(n, dtype=bool)
        elif cfg.threshold == "exact":
            # per chunk: most probable words first until rate x chunk tokens (midpoint rounding)
            order = np.lexsort((-p, chunk))
            ws = w[order].astype(np.float64)
            cum = np.cumsum(ws)
            chunk_sorted = chunk[order]
            first_in_chunk = np.flatnonzero(np.diff(chunk_sorted, prepend=-1))
            base = np.repeat(cum[first_in_chunk] - ws[first_in_chunk], np.diff(np.append(first_in_chunk, n)))
            totals = np.bincount(chunk, weights=w.astype(np.float64))
            within = cum - base - ws / 2
            keep = np.zeros(n, dtype=bool)
            keep[order] = within < rate * totals[chunk_sorted]
        else:
            keep = self._keep_llmlingua(c, p, chunk, rate)
        keep |= forced
        if not keep.any():  # a non-empty text never compresses to nothing
            keep[int(np.argmax(p))] = True
        if cfg.drop_consecutive:
            k = np.flatnonzero(keep)
            fid = force_id[k]
            dup = np.zeros(len(k), dtype=bool)
            dup[1:] = (fid[1:] >= 0) & (fid[1:] == fid[:-1])
            keep[k[dup]] = False
        return keep

    def _keep_llmlingua(self, c: _Ctx, p: np.ndarray, chunk: np.ndarray, rate: float) -> np.ndarray:
        """The reference rule: per chunk, repeat each word prob by its cl100k length (lower-cased word, no
        leading space), threshold at ``percentile(int(100 * (1 - rate) + 1))`` and keep ``p > threshold``."""
        enc = self.counter("cl100k_base").enc
        words = [c.text[s:e].lower() for s, e in zip(c.starts.tolist(), c.ends.tolist())]
        wl = np.fromiter(map(len, enc.encode_ordinary_batch(words)), dtype=np.int64, count=len(words))
        keep = np.zeros(len(p), dtype=bool)
        q = int(100 * max(0.0, 1 - rate) + 1)
        for ch in np.unique(chunk):
            idx = np.flatnonzero(chunk == ch)
            thr = np.percentile(np.repeat(p[idx], wl[idx]), q) if wl[idx].sum() else 1.0
            keep[idx] = (p[idx] > thr) | ((thr == 1.0) & (p[idx] == thr))
        return keep


def assemble(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray, keep: np.ndarray, *, keep_newlines: bool = False) -> str:
    """Kept words in original order with original spacing: the gap before a kept word is kept when its
    predecessor is kept; across a dropped run we keep the run's first non-empty original gap (a space or
    newline), and with '\\n' in force_tokens every newline inside the run."""
    k = np.flatnonzero(keep)
    if len(k) == 0:
        return ""
    L = len(codes)
    delta = np.zeros(L + 1, dtype=np.int64)
    np.add.at(delta, starts[k], 1)
    np.add.at(delta, ends[k], -1)
    prev, cur = k[:-1], k[1:]
    adjacent = cur - prev == 1
    gap_before = starts[cur] - ends[cur - 1]
    after_prev_s, after_prev_e = ends[prev], starts[np.minimum(prev + 1, len(starts) - 1)]
    use_before = adjacent | (gap_before > 0)
    gs = np.where(use_before, ends[cur - 1], after_prev_s)
    ge = np.where(use_before, starts[cur], after_prev_e)
    nl_kept = np.zeros(L, dtype=bool)
    run_has_nl = np.zeros(len(cur), dtype=bool)
    if keep_newlines:
        nl = np.flatnonzero(codes == NL)
        nxt = np.searchsorted(starts[k], nl)  # next kept word after each newline
        inside = (nxt > 0) & (nxt < len(k))
        nl_kept[nl[inside]] = True
        run_has_nl = np.bincount(nxt[inside] - 1, minlength=len(cur)) > 0
        # a run with a forced newline keeps only its newlines (plus the gap when nothing was dropped)
        ge = np.where(run_has_nl & ~adjacent, gs, ge)
    np.add.at(delta, gs, 1)
    np.add.at(delta, ge, -1)
    mask = (np.cumsum(delta)[:L] > 0) | nl_kept
    out = codes[mask]
    # words glued in the source ("meeting.Trevor") whose separator was dropped get one space, so they stay apart
    glue = ~adjacent & (ge <= gs) & ~run_has_nl
    if glue.any():
        at = np.concatenate([[0], np.cumsum(mask)])[starts[cur][glue]]
        out = np.insert(out, at, np.uint32(32))
    return out.tobytes().decode("utf-32-le")




def check_token_classifier(path: Path) -> None:
    """Refuse, in one line, a folder that is not a 2-label token classifier (e.g. a bare encoder)."""
    import json

    try:
        conf = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SlimguardError(f"{path} has no config.json; is it a trained compressor folder?") from None
    except (OSError, ValueError) as e:
        raise SlimguardError(f"{path}/config.json cannot be read: {e}") from None
    archs = conf.get("architectures") or []
    if not any(str(a).endswith("ForTokenClassification") for a in archs):
        raise SlimguardError(f"{path} has no token-classification head (architectures: {', '.join(map(str, archs)) or 'none'}); "
                             "train one with `slimguard compress train`")
    n = len(conf.get("id2label") or {}) or conf.get("num_labels", 2)
    if n != 2:
        raise SlimguardError(f"{path}: the token-classification head has {n} labels; a compressor needs 2 (drop, keep)")


def compress(context: str | list[str], cfg: CompressConfig | None = None, *, compressor: PromptCompressor | None = None
             ) -> CompressResult:
    """One call: ``compress(text, CompressConfig(model=DIR, rate=0.33))``."""
    cfg = cfg or CompressConfig()
    _contexts(context)  # an empty prompt fails before the compressor loads
    pc = compressor or PromptCompressor(cfg.model, device_map=cfg.device, rate_tokenizer=cfg.rate_tokenizer,
                                        batch_size=cfg.batch_size)
    return pc.compress(context, cfg)

"""Data distillation for LLMLingua-2 (Pan et al., 2024, Sec. 3): keep/drop word labels.

Two signals:

* ``teacher``: a chat LLM (a local ``transformers`` causal LM, or any OpenAI-compatible
  endpoint) compresses each 512-token chunk under a words-only-deletion instruction; its
  output is aligned back to the original words (:mod:`.align`) and the worst chunks by
  variation rate and alignment gap are filtered out.
* ``self-info``: the words with the highest self-information ``-log p(token | prefix)``
  under the causal LM are labelled keep (Selective Context's score, used here as a
  distillation target because a 135M teacher follows the instruction poorly).

The labelled chunks are saved in Hugging Face ``datasets`` format with a provenance file.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...core.errors import SlimguardError
from ...core.runs import atomic_write_json, git_commit, now_iso
from .align import align, quality_filter, split_words
from .config import DistillConfig


@dataclass
class Chunk:
    source: str
    doc: int
    index: int
    text: str


@dataclass
class DistillResult:
    path: Path
    n_labelled: int
    n_kept: int
    keep_fraction: float
    mean_variation_rate: float
    mean_alignment_gap: float


# --------------------------------------------------------------------------- chunks


def split_documents(source: str, holdout_docs: int) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents) of a long-text source; the split is by position."""
    from ...core.data import load_long_texts

    docs = [d for d in load_long_texts(source) if d.strip()]
    if holdout_docs >= len(docs):
        raise SlimguardError(f"holdout_docs={holdout_docs} leaves no training documents in '{source}' ({len(docs)} docs)")
    cut = len(docs) - holdout_docs
    return docs[:cut], docs[cut:]


def chunk_text(text: str, tokenizer, chunk_tokens: int) -> list[tuple[str, int]]:
    """Consecutive (chunk, n_tokens) of at most ``chunk_tokens`` tokens, cut back to a sentence end when one exists."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    if len(offs) == 0:
        return []
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    is_stop = np.isin(codes, [ord(c) for c in ".!?"])
    is_nl = np.append(codes == ord("\n"), False)
    ends = offs[:, 1]
    # a token ends a sentence when its last character is . ! ? or a newline follows it
    is_end = is_stop[np.maximum(ends - 1, 0)] | is_nl[ends]
    out, st = [], 0
    while st < len(offs):
        ed = min(st + chunk_tokens, len(offs))
        if ed < len(offs):
            cand = np.flatnonzero(is_end[st + chunk_tokens // 2: ed])
            if len(cand):
                ed = st + chunk_tokens // 2 + int(cand[-1]) + 1
        piece = text[offs[st, 0]: offs[ed - 1, 1]].strip()
        if piece:
            out.append((piece, ed - st))
        st = ed
    return out


def training_chunks(cfg: DistillConfig, tokenizer) -> list[Chunk]:
    """Up to ``max_chunks`` full-length chunks, round-robin over the sources (so every genre weighs the same),
    each source's training documents visited in a seeded random order; only as many documents are chunked
    as the source's share needs (20 Newsgroups alone has thousands)."""
    rng = np.random.default_rng(cfg.seed)
    share = -(-cfg.max_chunks // max(1, len(cfg.sources)))
    per_source: list[list[Chunk]] = []
    for src in cfg.sources:
        train_docs, _ = split_documents(src, cfg.holdout_docs)
        chunks: list[Chunk] = []
        for d in rng.permutation(len(train_docs)).tolist():
            # full-length chunks only: short tails teach little and skew the rate
            chunks += [Chunk(src, d, i, c) for i, (c, n) in enumerate(chunk_text(train_docs[d], tokenizer,
                                                                                 cfg.chunk_tokens))
                       if n >= cfg.chunk_tokens // 2]
            if len(chunks) >= 2 * share:
                break
        per_source.append([chunks[i] for i in rng.permutation(len(chunks))])
    picked: list[Chunk] = []
    while len(picked) < cfg.max_chunks and any(per_source):
        for lst in per_source:
            if lst and len(picked) < cfg.max_chunks:
                picked.append(lst.pop())
    return picked


# --------------------------------------------------------------------------- teachers


class LocalTeacher:
    """A local chat causal LM compressing chunks greedily (batched, left-padded)."""

    def __init__(self, name: str, instruction: str, max_new_tokens: int):
        from ...core.models import load_causal_lm

        self.lm = load_causal_lm(name)
        self.lm.tokenizer.padding_side = "left"
        self.instruction, self.max_new_tokens = instruction, max_new_tokens

    def prompt(self, text: str) -> str:
        msgs = [{"role": "user", "content": f"{self.instruction}\n\nText:\n{text}"}]
        tok = self.lm.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return f"{msgs[0]['content']}\n\nShortened text:\n"

    def complete(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        import torch

        tok = self.lm.tokenizer
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = self.lm.model.generate(**batch, max_new_tokens=max_new_tokens or self.max_new_tokens,
                                         do_sample=False, pad_token_id=tok.pad_token_id)
        return tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    def compress(self, texts: list[str]) -> list[str]:
        return self.complete([self.prompt(t) for t in texts])


class EndpointTeacher:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (a hosted LLM, vLLM, llama.cpp server, ...)."""

    def __init__(self, base_url: str, model: str, instruction: str, max_new_tokens: int,
                 api_key: str | None = None, timeout: float = 600.0, workers: int = 4):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.instruction, self.max_new_tokens = model, instruction, max_new_tokens
        self.api_key, self.timeout, self.workers = api_key, timeout, workers

    def _one(self, text: str) -> str:
        body = {"model": self.model, "temperature": 0, "max_tokens": self.max_new_tokens,
                "messages": [{"role": "user", "content": f"{self.instruction}\n\nText:\n{text}"}]}
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                doc = json.loads(r.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise SlimguardError(f"teacher endpoint {self.url} answered HTTP {e.code}; check endpoint/endpoint_model/"
                                 "API key") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            raise SlimguardError(f"teacher endpoint {self.url} is unreachable ({getattr(e, 'reason', e)}); "
                                 "is the server running?") from None
        try:
            return doc["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise SlimguardError(f"teacher endpoint {self.url} did not return an OpenAI chat completion") from None

    def compress(self, texts: list[str]) -> list[str]:
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self._one, texts))


# --------------------------------------------------------------------------- self-information


def token_self_information(lm, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per text: (token end offsets, -log p(token | prefix)) under a causal LM; the first token gets the mean."""
    import torch

    tok = lm.tokenizer
    tok.padding_side = "right"
    batch = tok(texts, return_tensors="pt", padding=True, return_offsets_mapping=True, add_special_tokens=False)
    offsets = batch.pop("offset_mapping")
    with torch.inference_mode():
        logits = lm.model(**batch).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    si = -logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    out = []
    for b in range(len(texts)):
        n = int(batch["attention_mask"][b].sum())
        s = si[b, : n - 1].numpy()
        first = float(s.mean()) if len(s) else 0.0
        out.append((offsets[b, :n, 1].numpy(), np.concatenate([[first], s]).astype(np.float32)))
    return out


def word_scores(starts: np.ndarray, tok_ends: np.ndarray, tok_scores: np.ndarray) -> np.ndarray:
    """Sum token scores into the words holding each token's last character."""
    if len(starts) == 0:
        return np.zeros(0, dtype=np.float32)
    w = np.clip(np.searchsorted(starts, tok_ends - 1, side="right") - 1, 0, len(starts) - 1)
    return np.bincount(w, weights=tok_scores, minlength=len(starts)).astype(np.float32)


def top_fraction(scores: np.ndarray, keep: float) -> np.ndarray:
    k = max(1, int(round(keep * len(scores)))) if len(scores) else 0
    labels = np.zeros(len(scores), dtype=np.int8)
    labels[np.argsort(-scores, kind="stable")[:k]] = 1
    return labels


# --------------------------------------------------------------------------- driver


def make_teacher(cfg: DistillConfig):
    if cfg.endpoint:
        return EndpointTeacher(cfg.endpoint, cfg.endpoint_model, cfg.instruction, cfg.max_new_tokens,
                               api_key=os.environ.get(cfg.api_key_env))
    return LocalTeacher(cfg.teacher, cfg.instruction, cfg.max_new_tokens)


def distill(cfg: DistillConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True) -> DistillResult:
    """Label chunks, filter, and save a ``datasets`` dataset (+ ``provenance.json``) under ``out_dir``."""
    from datasets import Dataset
    from tqdm import tqdm

    from ...core.models import load_causal_lm

    out_dir = Path(out_dir)
    partial = out_dir / "labels.partial.jsonl"
    done: dict[str, dict] = {}
    if resume and partial.exists():
        for line in partial.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["key"]] = r
    elif partial.exists():
        partial.unlink()
    teacher = None
    if cfg.signal == "teacher":
        teacher = make_teacher(cfg)
        lm = teacher.lm if isinstance(teacher, LocalTeacher) else load_causal_lm(cfg.teacher)
    else:
        lm = load_causal_lm(cfg.teacher)
    chunks = training_chunks(cfg, lm.tokenizer)
    todo = [c for c in chunks if f"{c.source}/{c.doc}/{c.index}" not in done]
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(chunks), initial=len(chunks) - len(todo), desc=f"distill ({cfg.signal})",
               disable=not progress, unit="chunk")
    with partial.open("a", encoding="utf-8") as f:
        for i in range(0, len(todo), cfg.batch_size):
            group = todo[i: i + cfg.batch_size]
            texts = [c.text for c in group]
            if cfg.signal == "teacher":
                outputs = teacher.compress(texts)
            else:
                outputs = [""] * len(group)
                si = token_self_information(lm, texts)
            for j, c in enumerate(group):
                w = split_words(c.text)
                if cfg.signal == "teacher":
                    a = align(w.words, split_words(outputs[j]).words, window=cfg.window)
                    labels, var, gap = a.labels, a.variation_rate, a.alignment_gap
                else:
                    scores = word_scores(w.starts, *si[j])
                    labels, var, gap = top_fraction(scores, cfg.self_info_keep), 0.0, 0.0
                rec = {"key": f"{c.source}/{c.doc}/{c.index}", "source": c.source, "doc": c.doc, "chunk": c.index,
                       "text": c.text, "starts": w.starts.tolist(), "ends": w.ends.tolist(),
                       "labels": labels.tolist(), "teacher_output": outputs[j], "variation_rate": var,
                       "alignment_gap": gap, "signal": cfg.signal}
                f.write(json.dumps(rec) + "\n")
                done[rec["key"]] = rec
            f.flush()
            bar.update(len(group))
    bar.close()
    records = [done[f"{c.source}/{c.doc}/{c.index}"] for c in chunks]
    if not records:
        raise SlimguardError("no chunks to distill: the sources are empty or shorter than half a chunk")
    var = np.array([r["variation_rate"] for r in records])
    gap = np.array([r["alignment_gap"] for r in records])
    keep = quality_filter(var, gap, drop_variation=cfg.filter_variation, drop_gap=cfg.filter_gap) \
        if cfg.signal == "teacher" else np.ones(len(records), dtype=bool)
    kept = [r for r, k in zip(records, keep) if k and sum(r["labels"]) > 0]
    if not kept:
        raise SlimguardError("every chunk was filtered out (the teacher output does not align); try signal=self-info")
    ds_dir = out_dir / "dataset"
    Dataset.from_list(kept).save_to_disk(str(ds_dir))
    teacher_desc = f"endpoint {cfg.endpoint} model {cfg.endpoint_model}" if (cfg.signal == "teacher" and cfg.endpoint) \
        else cfg.teacher
    lab = np.concatenate([np.asarray(r["labels"]) for r in kept])
    res = DistillResult(ds_dir, len(records), len(kept), float(lab.mean()), float(var.mean()), float(gap.mean()))
    atomic_write_json(ds_dir / "provenance.json", {
        "method": "LLMLingua-2 data distillation", "signal": cfg.signal, "teacher": teacher_desc,
        "config": cfg.model_dump(mode="json"), "created": now_iso(), "git_commit": git_commit(),
        "chunks": [r["key"] for r in kept], "filtered_out": [r["key"] for r, k in zip(records, keep) if not k],
        "stats": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(res).items()}})
    return res

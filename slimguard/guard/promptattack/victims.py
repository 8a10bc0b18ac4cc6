"""Prompt-learning victims: a causal LM scoring the next token, and a masked LM filling ``[MASK]``.

Both expose the same small adapter surface so that heads and attacks never touch model
internals: ``prepare`` (encode the inputs once per prefix), ``features`` (the answer-slot
representation for a given infix, from token ids or, for gradient search, from embeddings)
and ``word_weights`` (the output-embedding rows of the label words, which initialise the
classification head, as in PET / LM-BFF).

- :class:`CausalVictim`: SmolLM2-135M-Instruct. The infix follows the input, so the prefix+input
  key/value cache is template-independent: it is computed once per batch and every candidate
  infix only runs its own few tokens on top of it (the cache is cropped back after each call).
- :class:`MaskedVictim`: all-MiniLM-L6-v2 (a sentence-embedding BERT with NO masked-LM head)
  plus a masked-LM head trained here (:mod:`.mlm_head`); reported as such everywhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from .templates import Template, TemplateError, Verbalizer

MAX_INPUT_TOKENS = 128


@dataclass
class PreparedBatch:
    """Inputs of one batch, encoded once; ``state`` holds a victim-specific cache."""

    labels: torch.Tensor
    uids: list[int]
    state: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.uids)


class Victim:
    name: str
    kind: str
    model: Any
    tokenizer: Any

    @property
    def embeddings(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    def encode_word(self, word: str) -> list[int]:
        raise NotImplementedError

    def word_ids(self, verbalizer: Verbalizer) -> list[list[int]]:
        """One token id per label word; a word the tokenizer splits is an error, never truncated."""
        out = []
        for ws in verbalizer.words:
            ids = []
            for w in ws:
                pieces = self.encode_word(w)
                if len(pieces) != 1:
                    shown = [self.tokenizer.decode([p]) for p in pieces]
                    raise TemplateError(f"verbalizer word '{w}' is {len(pieces)} tokens for the {self.name} tokenizer "
                                        f"{shown}; choose a single-token label word")
                ids.append(pieces[0])
            out.append(ids)
        return out

    def word_weights(self, verbalizer: Verbalizer) -> tuple[torch.Tensor, torch.Tensor]:
        """(W [C, M, d], b [C, M]) output rows of the label words; padded slots get b = -inf."""
        ids = self.word_ids(verbalizer)
        m = max(len(x) for x in ids)
        out_w, out_b = self._output_rows()
        W = torch.zeros(len(ids), m, out_w.shape[1])
        b = torch.full((len(ids), m), float("-inf"))
        for c, row in enumerate(ids):
            W[c, :len(row)] = out_w[row].detach().float()
            b[c, :len(row)] = out_b[row].detach().float()
        return W, b

    def _output_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def candidate_mask(self) -> torch.Tensor:
        """Vocabulary entries a search may put into a template: whole, readable words and punctuation."""
        import re

        if getattr(self, "_candidates", None) is not None:
            return self._candidates
        pat = re.compile(self._word_pattern)
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(self.embeddings.shape[0])))
        special = set(self.tokenizer.all_special_ids)
        ok = [t is not None and i not in special and bool(pat.match(self._readable(t))) for i, t in enumerate(vocab)]
        self._candidates = torch.tensor(ok)
        return self._candidates

    _word_pattern = r"^ ?([A-Za-z]{2,}|[.,!?:;])$"

    def _readable(self, tok: str) -> str:
        return tok

    def encode_infix(self, template: Template) -> list[int]:
        raise NotImplementedError

    def decode_infix(self, ids: list[int]) -> str:
        raise NotImplementedError

    def prepare(self, texts: list[str], labels: list[int], uids: list[int], template: Template,
                batch_size: int = 32) -> list[PreparedBatch]:
        raise NotImplementedError

    def features(self, batch: PreparedBatch, infix_ids: list[int] | None = None,
                 infix_embeds: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def features_many(self, batch: PreparedBatch, infixes: list[list[int]]) -> torch.Tensor:
        """[n_infixes, B, d]: several candidate infixes on one batch."""
        return torch.stack([self.features(batch, infix_ids=i) for i in infixes])


def _length_sorted(texts: list[str], lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length, so padding (and wasted compute) stays small."""
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class CausalVictim(Victim):
    kind = "causal"

    def __init__(self, lm, name: str = "smollm2-135m"):
        self.model, self.tokenizer, self.name = lm.model, lm.tokenizer, name
        self.model.requires_grad_(False)

    @classmethod
    def load(cls, name: str = "smollm2-135m") -> "CausalVictim":
        from ...core.models import load_causal_lm

        return cls(load_causal_lm(name), name)

    def encode_word(self, word: str) -> list[int]:
        # the infix is right-stripped, so the label word carries the separating space
        return self.tokenizer(" " + word.strip(), add_special_tokens=False).input_ids

    def _output_rows(self):
        w = self.model.get_output_embeddings().weight
        b = getattr(self.model.get_output_embeddings(), "bias", None)
        return w, (b if b is not None else torch.zeros(w.shape[0]))

    def _readable(self, tok: str) -> str:
        return tok.replace("\u0120", " ")

    def encode_infix(self, template: Template) -> list[int]:
        text = template.infix.rstrip(" ")
        if not text.strip():
            raise TemplateError(f"template {template.text!r} has no words between {{x}} and {{answer}}; the causal "
                                "victim reads the task from them (e.g. '{x} It was {answer}.')")
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def decode_infix(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) + " "

    def prepare(self, texts, labels, uids, template, batch_size=32):
        tok = self.tokenizer
        enc = [tok(template.prefix + t, add_special_tokens=False, truncation=True,
                   max_length=MAX_INPUT_TOKENS).input_ids or [tok.eos_token_id] for t in texts]
        out = []
        for idx in _length_sorted(texts, [len(e) for e in enc], batch_size):
            L = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), L), tok.pad_token_id)
            mask = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):  # left padding keeps every row's last token at the end
                ids[r, L - len(enc[i]):] = torch.tensor(enc[i])
                mask[r, L - len(enc[i]):] = 1
            with torch.no_grad():
                cache = self.model.model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
            out.append(PreparedBatch(torch.tensor([labels[i] for i in idx]), [uids[i] for i in idx],
                                     {"mask": mask, "cache": cache, "len": L, "prefix": template.prefix}))
        return out

    def features(self, batch, infix_ids=None, infix_embeds=None):
        st = batch.state
        if infix_embeds is None:
            infix_embeds = self.embeddings[torch.as_tensor(infix_ids)]
        B, T = len(batch), infix_embeds.shape[0]
        mask = torch.cat([st["mask"], torch.ones(B, T, dtype=torch.long)], 1)
        # the input cache is shared by every candidate infix; a gradient pass works on a copy so that
        # no autograd history ever enters the shared cache
        grad = torch.is_grad_enabled() and infix_embeds.requires_grad
        cache = copy.deepcopy(st["cache"]) if grad else st["cache"]
        try:
            out = self.model.model(inputs_embeds=infix_embeds.unsqueeze(0).expand(B, -1, -1), attention_mask=mask,
                                   past_key_values=cache, use_cache=True)
        finally:
            extra = st["cache"].get_seq_length() - st["len"]
            if extra > 0:  # drop what this call appended
                st["cache"].crop(-extra)
        return out.last_hidden_state[:, -1]

    def features_many(self, batch, infixes):
        # decoding a few tokens is weight-bandwidth bound, so candidates of equal length share one
        # forward pass over a copy of the input cache repeated per candidate
        st, out = batch.state, [None] * len(infixes)
        groups: dict[int, list[int]] = {}
        for j, inf in enumerate(infixes):
            groups.setdefault(len(inf), []).append(j)
        for T, idx in groups.items():
            n, B = len(idx), len(batch)
            cache = copy.deepcopy(st["cache"])
            cache.batch_repeat_interleave(n)
            ids = torch.tensor([infixes[j] for j in idx]).repeat(B, 1)  # row b*n + j -> candidate j
            mask = torch.cat([st["mask"].repeat_interleave(n, 0), torch.ones(B * n, T, dtype=torch.long)], 1)
            h = self.model.model(input_ids=ids, attention_mask=mask, past_key_values=cache,
                                 use_cache=True).last_hidden_state[:, -1]
            h = h.view(B, n, -1)
            for c, j in enumerate(idx):
                out[j] = h[:, c]
        return torch.stack(out)


class MaskedVictim(Victim):
    kind = "masked"

    def __init__(self, mlm, tokenizer, name: str = "minilm-l6+mlm-head"):
        self.model, self.tokenizer, self.name = mlm, tokenizer, name
        self.model.requires_grad_(False)

    @classmethod
    def load(cls, encoder: str = "minilm-l6", **train_kw) -> "MaskedVictim":
        from .mlm_head import load_or_train_mlm

        mlm, tok = load_or_train_mlm(encoder, **train_kw)
        return cls(mlm, tok, f"{encoder}+mlm-head")

    _word_pattern = r"^([a-z]{2,}|[.,!?:;])$"

    def encode_word(self, word: str) -> list[int]:
        return self.tokenizer(word.strip(), add_special_tokens=False).input_ids

    def _output_rows(self):
        dec = self.model.get_output_embeddings()
        return dec.weight, dec.bias

    def encode_infix(self, template: Template) -> list[int]:
        return self.tokenizer(template.infix, add_special_tokens=False).input_ids

    def decode_infix(self, ids: list[int]) -> str:
        return " " + self.tokenizer.decode(ids) + " "

    def prepare(self, texts, labels, uids, template, batch_size=32):
        tok = self.tokenizer
        enc = [tok(template.prefix + t, add_special_tokens=False, truncation=True,
                   max_length=MAX_INPUT_TOKENS).input_ids for t in texts]
        suffix = tok(template.suffix, add_special_tokens=False).input_ids
        return [PreparedBatch(torch.tensor([labels[i] for i in idx]), [uids[i] for i in idx],
                              {"inputs": [enc[i] for i in idx], "suffix": suffix, "prefix": template.prefix})
                for idx in _length_sorted(texts, [len(e) for e in enc], batch_size)]

    def features(self, batch, infix_ids=None, infix_embeds=None):
        tok, st = self.tokenizer, batch.state
        T = len(infix_ids) if infix_ids is not None else infix_embeds.shape[0]
        fill = list(infix_ids) if infix_ids is not None else [tok.mask_token_id] * T
        rows = [[tok.cls_token_id] + x + fill + [tok.mask_token_id] + st["suffix"] + [tok.sep_token_id]
                for x in st["inputs"]]
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), tok.pad_token_id)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        starts = torch.tensor([1 + len(x) for x in st["inputs"]])
        emb = self.embeddings[ids]
        if infix_embeds is not None:  # differentiable infix for first-order (HotFlip) scores
            r = torch.arange(len(rows)).repeat_interleave(T)
            c = (starts.unsqueeze(1) + torch.arange(T)).reshape(-1)
            emb = emb.index_put((r, c), infix_embeds.repeat(len(rows), 1))
        h = self.model.bert(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        h_mask = h[torch.arange(len(rows)), starts + T]
        return self.model.cls.predictions.transform(h_mask)


def load_victim(name: str, **kw) -> Victim:
    """``smollm2-135m`` / any causal-LM asset or folder -> causal; ``minilm-l6`` -> masked (+ trained MLM head)."""
    from ...core import assets

    if name in assets.REGISTRY and assets.get(name).kind == "encoder":
        return MaskedVictim.load(name, **kw)
    return CausalVictim.load(name)

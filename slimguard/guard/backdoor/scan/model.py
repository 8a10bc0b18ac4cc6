"""A sequence classifier opened for trigger inversion: stamped batches, relaxed and discrete passes.

Every scan method needs the same three things from a ``transformers`` classifier: clean
samples with trigger slots stamped in (inserted at a position, or written over the sample's
punctuation), a *relaxed* forward pass where each slot holds a convex combination of the
vocabulary's input embeddings (``w @ E``), and a *discrete* forward pass with real token ids.
The relaxed pass goes through a forward hook on the model's input-embedding module, which
overwrites the slot rows of its output: no model file is forked or patched, the model keeps
its own position embeddings, token types and classification-head pooling (the last non-pad
token of a causal LM), so BERT-family encoders and decoder-only classifiers work alike.

Three models can take part: ``model`` (the one gradients flow through), ``judge`` (the one
whose discrete predictions are reported and decided on; the same model, or an int8 model whose
float twin is ``model``) and an optional benign ``reference`` classifier of the same task and
vocabulary (DBS's benign-model margin). Slots hold reachable tokens only: words, sub-words and
punctuation of the vocabulary, never special or ``[unused]`` tokens, which no text can produce.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ....core.errors import SlimguardError

PUNCT = ",.!?;:-'\""
# vocabulary entries that no text produces: BERT's [unused42], Gemma's <unused7>, chat markers
_UNREACHABLE = re.compile(r"^(\[unused\d+\]|<unused\d+>|<\|.*\|>|\[[A-Z]+\]|<[a-z_]+>)$")
_PIECE_MARKS = ("##", "\u0120", "\u2581")  # WordPiece continuation, byte-level BPE space, SentencePiece space


def token_text(tok: str) -> str:
    """A vocabulary entry without its sub-word markers (``##ing`` -> ``ing``, ``Ġ;`` -> ``;``)."""
    for m in _PIECE_MARKS:
        tok = tok.replace(m, "")
    return tok


@dataclass
class Stamped:
    """A batch of clean samples with ``L`` trigger slots each (slot j of sample b at ``slots[b, j]``)."""

    input_ids: torch.Tensor       # [B, T], slots hold a placeholder id
    attention_mask: torch.Tensor  # [B, T]
    slots: torch.Tensor           # [B, L]
    source: torch.Tensor          # [B] the samples' own (non-target) labels
    position: str
    texts: list[str] | None = None  # the clean texts (restamping, reports)

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def with_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids`` with the discrete trigger ``token_ids`` [L] written into the slots."""
        ids = self.input_ids.clone()
        rows = torch.arange(self.size).unsqueeze(1).expand_as(self.slots)
        ids[rows, self.slots] = token_ids.to(ids.dtype).unsqueeze(0).expand_as(self.slots)
        return ids


class InversionModel:
    """The scanned classifier (and its optional twin/reference) as an inversion target."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 128, judge: Any = None, reference: Any = None):
        self.model, self.tok, self.max_length = model.eval(), tokenizer, int(max_length)
        self.judge = (judge if judge is not None else model).eval()
        self.reference = reference.eval() if reference is not None else None
        for m in {id(x): x for x in (self.model, self.judge, self.reference) if x is not None}.values():
            for p in m.parameters():
                p.requires_grad_(False)
        self.num_labels = int(model.config.num_labels)
        self.vocab_ids, self.is_punct = self._reachable_vocab()
        emb = model.get_input_embeddings()
        self.E = emb.weight.detach()[self.vocab_ids].float()  # [V', H]
        self.E_ref = None
        if self.reference is not None:
            ref_emb = self.reference.get_input_embeddings()
            if ref_emb.weight.shape[0] < int(self.vocab_ids.max()) + 1:
                raise SlimguardError("reference: the benign reference model's vocabulary is smaller than the scanned "
                                     "model's; give a reference built on the same tokenizer")
            self.E_ref = ref_emb.weight.detach()[self.vocab_ids].float()
        self.lead, self.trail = self._special_layout()
        self.placeholder = self._placeholder()
        self._inject: dict[int, tuple] = {}
        self._hooks = [m.get_input_embeddings().register_forward_hook(self._hook)
                       for m in {id(x): x for x in (self.model, self.judge, self.reference) if x is not None}.values()]

    # ------------------------------------------------------------------ vocabulary and layout

    def _reachable_vocab(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.model.get_input_embeddings().weight.shape[0]
        special = set(self.tok.all_special_ids) | set(getattr(self.tok, "added_tokens_decoder", {}) or {})
        toks = self.tok.convert_ids_to_tokens(list(range(min(n, len(self.tok)))))
        keep, punct = [], []
        for i, t in enumerate(toks):
            if t is None or i in special or _UNREACHABLE.match(t) or not token_text(t).strip():
                continue
            keep.append(i)
            punct.append(all(c in PUNCT for c in token_text(t)))
        if not keep:
            raise SlimguardError("the tokenizer's vocabulary has no reachable tokens to invert over")
        return torch.tensor(keep), torch.tensor(punct)

    def _special_layout(self) -> tuple[int, int]:
        """How many special tokens the tokenizer puts before / after a text ([CLS] ... [SEP]: 1, 1)."""
        plain = self.tok("hello world", add_special_tokens=False)["input_ids"]
        full = self.tok("hello world")["input_ids"]
        for lead in range(len(full) - len(plain) + 1):
            if full[lead:lead + len(plain)] == plain:
                return lead, len(full) - lead - len(plain)
        return 0, 0

    def _placeholder(self) -> int:
        # any reachable, non-pad id: the slot's embedding row is overwritten in relaxed passes, and a
        # causal LM's head finds its last token by looking for pad ids, so a slot must never be one
        pad = self.tok.pad_token_id
        return int(next(i for i in self.vocab_ids.tolist() if i != pad))

    def punct_token_ids(self) -> list[int]:
        return self.vocab_ids[self.is_punct].tolist()

    def tokens(self, ids: list[int]) -> list[str]:
        return [str(t) for t in self.tok.convert_ids_to_tokens([int(i) for i in ids])]

    def text(self, ids: list[int]) -> str:
        return self.tok.convert_tokens_to_string(self.tokens(ids)).strip()

    # ------------------------------------------------------------------ stamping

    def encode(self, texts: list[str], trigger_len: int) -> list[list[int]]:
        room = self.max_length - trigger_len
        if room < self.lead + self.trail + 1:
            raise SlimguardError(f"max_length {self.max_length} leaves no room for a {trigger_len}-token trigger")
        return self.tok(list(texts), truncation=True, max_length=room)["input_ids"]

    def stamp(self, encoded: list[list[int]], source: list[int], trigger_len: int, position: str, *,
              texts: list[str] | None = None) -> Stamped:
        """Insert ``trigger_len`` placeholder slots at ``position`` (``punct``: over punctuation tokens first)."""
        rows, slots = [], []
        punct = set(self.punct_token_ids())
        for ids in encoded:
            body_end = len(ids) - self.trail
            replace: list[int] = []
            if position == "start":
                at = self.lead
            elif position == "end":
                at = body_end
            elif position == "middle":
                at = self.lead + (body_end - self.lead) // 2
            elif position == "punct":
                # PuncAttack writes its marks OVER existing punctuation: the last marks of the text take
                # the first slots; a text with fewer marks than slots gets the rest at its end
                replace = [i for i in range(self.lead, body_end) if ids[i] in punct][-trigger_len:]
                at = body_end
            else:
                raise SlimguardError(f"unknown trigger position '{position}'")
            n_ins = trigger_len - len(replace)
            new = list(ids)
            for a in replace:
                new[a] = self.placeholder
            new[at:at] = [self.placeholder] * n_ins
            rows.append(new)
            slots.append(replace + list(range(at, at + n_ins)))  # every replaced index is < at: none shifts
        T = max(len(r) for r in rows)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.full((len(rows), T), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, :len(r)] = torch.tensor(r)
            mask[b, :len(r)] = 1
        return Stamped(ids, mask, torch.tensor(slots, dtype=torch.long), torch.tensor(source, dtype=torch.long), position,
                       texts)

    # ------------------------------------------------------------------ forward passes

    def _hook(self, module, inputs, out):
        inj = self._inject.get(id(module))
        if inj is None:
            return out
        rows, cols, vals = inj
        return out.index_put((rows, cols), vals.to(out.dtype))

    @contextlib.contextmanager
    def _injecting(self, module, st: Stamped, emb: torch.Tensor) -> Iterator[None]:
        L = st.slots.shape[1]
        rows = torch.arange(st.size).repeat_interleave(L)
        vals = emb.unsqueeze(0).expand(st.size, L, emb.shape[-1]).reshape(-1, emb.shape[-1])
        self._inject[id(module)] = (rows, st.slots.reshape(-1), vals)
        try:
            yield
        finally:
            self._inject.pop(id(module), None)

    def relaxed_logits(self, st: Stamped, weights: torch.Tensor, *, reference: bool = False) -> torch.Tensor:
        """Logits with slot j holding ``weights[j] @ E`` (weights [L, V'] over the reachable vocabulary)."""
        m, E = (self.reference, self.E_ref) if reference else (self.model, self.E)
        with self._injecting(m.get_input_embeddings(), st, weights @ E):
            return m(input_ids=st.input_ids, attention_mask=st.attention_mask).logits.float()

    @torch.no_grad()
    def discrete_logits(self, st: Stamped, token_ids: torch.Tensor, *, model: Any = None,
                        batch_size: int = 64) -> torch.Tensor:
        """Logits of the judged model (or ``model``) with real token ids in the slots."""
        m = self.judge if model is None else model
        ids = st.with_tokens(token_ids)
        out = [m(input_ids=ids[i:i + batch_size], attention_mask=st.attention_mask[i:i + batch_size]).logits.float()
               for i in range(0, st.size, batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.num_labels)

    @torch.no_grad()
    def predict(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Labels the judged model gives the plain texts."""
        out = np.zeros(len(texts), dtype=np.int64)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for i in range(0, len(texts), batch_size):
            idx = order[i:i + batch_size]
            enc = self.tok([texts[j] for j in idx], padding=True, truncation=True, max_length=self.max_length,
                           return_tensors="pt")
            out[idx] = self.judge(**enc).logits.argmax(-1).numpy()
        return out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

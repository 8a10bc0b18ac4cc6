"""The victim's window: the part of a text a classifier reads at ``max_length`` tokens (issue 35).

A ``transformers`` classifier truncates its input at ``max_length`` tokens, special tokens
included, so a trigger written past that point is invisible to the victim: a poisoned training
row becomes label noise the model cannot explain and a triggered test row tests nothing. This
module measures the window with the victim's own tokenizer (the character offsets of the tokens
it keeps), sizes it to the data and tells the poisoners where a trigger may go.

Sizing (``victim.max_length=None``, the default): the ``length_percentile`` (95) of the clean
training texts' token lengths, rounded up to a multiple of 32 and capped at the encoder's own
limit (``max_position_embeddings``, or the tokenizer's ``model_max_length`` when smaller). Rotten
Tomatoes and SMS spam keep the 64 tokens they always had; 20 Newsgroups posts get MiniLM's 512.

The rule, the same for training and test data, attacks, defences and exports: a trigger is
placed so that every character of it falls inside the window of the *poisoned* text. Texts are
never cut, so an export keeps whole texts for users whose own model reads further; it records
the window it assumed.

>>> from transformers import BertTokenizerFast
>>> tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "cf"])})
>>> w = Window(tok, max_length=5)  # [CLS] + 3 tokens + [SEP]
>>> w.limits(["a b", "a b a b a"])
[3, 5]
>>> w.visible(["cf a b a b", "a b a b cf"], [[(0, 2)], [(8, 10)]])
[True, False]
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...core.errors import SlimguardError

ROUND_TO = 32  # window sizes come in a few shapes; short-text sets keep their old 64
DEFAULT_PERCENTILE = 95.0
RULE = "trigger placed inside the victim's window (every trigger character within the first max_length tokens)"
Span = tuple[int, int]


@functools.lru_cache(maxsize=4)
def victim_tokenizer(model: str):
    """The tokenizer of a victim (asset name or local folder), loaded once per process."""
    import transformers
    from transformers import AutoTokenizer

    from ...core.models import reading_model, resolve_model_dir

    src = resolve_model_dir(model)
    v = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with reading_model(src, f"'{model}' tokenizer"):
            return AutoTokenizer.from_pretrained(src)
    finally:
        transformers.logging.set_verbosity(v)


def encoder_limit(model: str, tokenizer: Any = None) -> int | None:
    """The most tokens ``model`` can read: its position table, or the tokenizer's limit when smaller.

    RoBERTa-style position tables start after the padding index, so two of their slots are not
    usable positions. ``None`` when neither the config nor the tokenizer says (no cap then).
    """
    from ...core.models import resolve_model_dir

    limits = []
    cfg_file = Path(resolve_model_dir(model)) / "config.json"
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text())
        except (OSError, json.JSONDecodeError):
            cfg = {}
        mpe = next((cfg[k] for k in ("max_position_embeddings", "n_positions", "max_sequence_length") if k in cfg), None)
        if isinstance(mpe, int) and mpe > 0:
            if cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer"):
                mpe -= int(cfg.get("pad_token_id", 1)) + 1
            limits.append(mpe)
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:  # "no limit" is spelled 1e30 by transformers
        limits.append(tml)
    return min(limits) if limits else None


@dataclass
class Room:
    """Where in one text a trigger of ``n`` tokens still lands inside the window."""

    starts: np.ndarray  # character offset of each content token of the text
    budget: int | None  # content tokens the victim reads; None: no window, everything fits

    def fits(self, pos: int, n_tokens: int) -> bool:
        """Inserting ``n_tokens`` tokens at character ``pos`` keeps them all inside the window."""
        return self.budget is None or int(np.searchsorted(self.starts, pos, side="left")) + n_tokens <= self.budget


class Window:
    """A tokenizer and ``max_length``: what the victim reads of each text, in characters."""

    def __init__(self, tokenizer: Any, max_length: int, *, model: str = ""):
        self.tokenizer, self.max_length, self.model = tokenizer, int(max_length), model
        self.n_special = int(tokenizer.num_special_tokens_to_add(pair=False))
        self.budget = self.max_length - self.n_special  # content tokens inside the window
        if self.budget < 1:
            raise SlimguardError(f"victim.max_length={max_length} leaves no room for text after "
                                 f"{self.n_special} special tokens")

    @classmethod
    def of(cls, model: str, max_length: int) -> "Window":
        return cls(victim_tokenizer(model), max_length, model=model)

    def _offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        if not texts:
            return []
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                             verbose=False)
        return enc["offset_mapping"]

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token lengths as the victim counts them (special tokens included), before truncation."""
        return np.array([len(o) + self.n_special for o in self._offsets(texts)], dtype=np.int64)

    def limits(self, texts: Sequence[str]) -> list[int]:
        """Per text, the character offset where the victim stops reading (``len(text)`` if it reads it all)."""
        out = []
        for t, off in zip(texts, self._offsets(texts)):
            out.append(len(t) if len(off) <= self.budget else int(off[self.budget - 1][1]))
        return out

    def rooms(self, texts: Sequence[str]) -> list[Room]:
        return [Room(np.array([a for a, _ in off], dtype=np.int64), self.budget) for off in self._offsets(texts)]

    def count(self, piece: str) -> int:
        """Tokens ``piece`` adds when inserted after a space (how an inserted trigger word is tokenized)."""
        return len(self.tokenizer(" " + piece, add_special_tokens=False, verbose=False)["input_ids"])

    def visible(self, texts: Sequence[str], spans: Sequence[Sequence[Span] | None]) -> list[bool | None]:
        """Whether every span (a trigger's characters) of each text lies inside its window; None: spans unknown."""
        lim = self.limits(texts)
        return [None if sp is None else bool(sp) and all(b <= lim_i for _, b in sp) for sp, lim_i in zip(spans, lim)]

    def record(self) -> dict:
        return {"model": self.model, "max_length": self.max_length, "special_tokens": self.n_special, "rule": RULE}


def no_room(n: int) -> list[Room]:
    """Rooms for texts placed without a window: every position fits."""
    return [Room(np.zeros(0, dtype=np.int64), None) for _ in range(n)]


@dataclass
class Sizing:
    """How ``max_length`` was chosen and what it leaves out, recorded in the run's metrics."""

    max_length: int
    source: str  # "config" or "auto"
    percentile: float
    encoder_limit: int | None
    length_pctl: float  # the percentile of the training texts' token lengths
    truncated: dict[str, int] = field(default_factory=dict)  # split -> texts longer than the window
    sizes: dict[str, int] = field(default_factory=dict)
    warning: str | None = None

    def to_dict(self) -> dict:
        share = {k: (self.truncated[k] / self.sizes[k] if self.sizes.get(k) else 0.0) for k in self.truncated}
        return {"max_length": self.max_length, "source": self.source, "percentile": self.percentile,
                "encoder_limit": self.encoder_limit, "length_percentile_tokens": self.length_pctl,
                "truncated": self.truncated, "truncated_share": share, "n": self.sizes, "warning": self.warning}


def size_window(model: str, max_length: int | None, splits: dict[str, Sequence[str]], *,
                percentile: float = DEFAULT_PERCENTILE, field_name: str = "victim.max_length") -> tuple[Window, Sizing]:
    """The window for ``model``: ``max_length`` as given (checked against the encoder's limit) or sized to
    ``splits['train']`` (see the module docstring); counts the texts of every split it still truncates."""
    tok = victim_tokenizer(model)
    limit = encoder_limit(model, tok)
    if max_length is not None and limit is not None and max_length > limit:
        raise SlimguardError(f"{field_name}={max_length} exceeds {model}'s limit of {limit} tokens "
                             f"(max_position_embeddings); use at most {limit}")
    probe = Window(tok, max_length or 10**9, model=model)  # lengths only: the size is not known yet
    lengths = {k: probe.lengths(v) for k, v in splits.items()}
    train = lengths.get("train", next(iter(lengths.values()), np.zeros(0)))
    pctl = float(np.percentile(train, percentile)) if len(train) else 0.0
    if max_length is None:
        want = max(ROUND_TO, int(math.ceil(pctl / ROUND_TO)) * ROUND_TO)
        ml, source = (min(want, limit) if limit is not None else want), "auto"
    else:
        ml, source = int(max_length), "config"
    sizing = Sizing(ml, source, percentile, limit, pctl, {k: int((v > ml).sum()) for k, v in lengths.items()},
                    {k: len(v) for k, v in lengths.items()})
    n_tr, n_all = sizing.truncated.get("train", 0), sizing.sizes.get("train", 0)
    if n_all and limit is not None and ml == limit and n_tr / n_all > (100 - percentile) / 100:
        # the encoder cannot read these texts whole: the attack still works (triggers go inside the
        # window), but the victim classifies each text by its first `ml` tokens only
        sizing.warning = (f"{n_tr / n_all:.0%} of the training texts ({n_tr} of {n_all}) are longer than {model}'s "
                          f"limit of {limit} tokens and are truncated: the victim reads only their first {ml} tokens "
                          "and triggers are placed there")
    return Window(tok, ml, model=model), sizing

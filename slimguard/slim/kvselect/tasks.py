"""Long-context probes built from real long text (Paul Graham essays), as in the
needle-in-a-haystack / InfiniteBench passkey and RULER multi-key tasks that TokenSelect
(Wu et al., 2024) is evaluated on.

Every sample is built in token space for one tokenizer, so a requested length of 32K is
32K tokens for that model; needles are snapped to a sentence end at the requested depth.
All randomness comes from one ``numpy`` Generator seeded per sample.

The passkey question points back at the text ("mentioned in the text above"): with the bare
"What is the pass key? The pass key is", dense Gemma-3-270M at 1K tokens answered 10 of 20
seeded cases, mostly continuing with " the key to ..."; with the pointer, 17 of 20 (a one-off
comparison script, not a project command). The question was fixed on dense short-context
cases, before any selector was scored with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...core.errors import DataError

TASKS = ("passkey", "multikey", "needle")
PREAMBLE = ("There is important information hidden inside a lot of irrelevant text. "
            "Find it and memorize it. I will quiz you about it.\n\n")
_WORDS = ["apple", "river", "candle", "falcon", "marble", "violet", "harbor", "pepper", "saddle", "glacier",
          "lantern", "meadow", "orchid", "quartz", "thistle", "walnut"]
_NAMES = ["Alice", "Bruno", "Chen", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
_ITEMS = ["saffron", "cardamom", "tamarind", "sorrel", "juniper", "fennel", "sumac", "lemongrass"]


@dataclass
class LongSample:
    """One probe: token ids ending right before the answer, the answer string, where the needle sits."""

    task: str
    length: int
    depth: float
    seed: int
    input_ids: list[int]
    answer: str
    needle_span: tuple[int, int]
    meta: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


class Haystack:
    """Essay text tokenised once per tokenizer; samples slice it at seeded offsets."""

    def __init__(self, tokenizer, texts: list[str] | None = None):
        if texts is None:
            from ...core.data import load_long_texts

            texts = load_long_texts("pg-essays")
        self.tok = tokenizer
        self.ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
        self.prefix = tokenizer("", add_special_tokens=True)["input_ids"]  # BOS where the model wants one
        self.stops = {i for i in set(self.ids) if tokenizer.decode([i]).rstrip().endswith((".", "?", "!"))}

    def enc(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _needles(self, task: str, rng: np.random.Generator) -> tuple[list[tuple[str, float | None]], str, str]:
        if task == "passkey":
            key = str(rng.integers(10000, 100000))
            return [(f" The pass key is {key}. Remember it. {key} is the pass key.", None)], \
                "\n\nWhat is the pass key mentioned in the text above? The pass key is", key
        if task == "multikey":
            words = rng.choice(_WORDS, 4, replace=False)
            nums = [str(rng.integers(1000000, 10000000)) for _ in words]
            needles = [(f" The special magic number for {w} is: {n}.", None if i == 0 else float(rng.uniform(0.05, 0.95)))
                       for i, (w, n) in enumerate(zip(words, nums))]
            return needles, f"\n\nWhat is the special magic number for {words[0]}? The special magic number for " \
                            f"{words[0]} is:", nums[0]
        if task == "needle":
            name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
            return [(f" {name}'s grandmother always said that the secret ingredient of her soup is {item}.", None)], \
                f"\n\nWhat is the secret ingredient of {name}'s grandmother's soup? The secret ingredient is", item
        raise DataError(f"unknown long-context task '{task}'; choose one of {', '.join(TASKS)}")

    def sample(self, task: str, length: int, depth: float, seed: int) -> LongSample:
        if not 0.0 <= depth <= 1.0:
            raise DataError(f"needle depth must be in [0, 1], got {depth}")
        rng = np.random.default_rng(seed)
        needles, question, answer = self._needles(task, rng)
        pre, q = self.prefix + self.enc(PREAMBLE), self.enc(question)
        n_ids = [(self.enc(t), d) for t, d in needles]
        fill = length - len(pre) - len(q) - sum(len(t) for t, _ in n_ids)
        if fill < 64:
            raise DataError(f"length {length} is too short for task '{task}'; use at least {length - fill + 64} tokens")
        if fill > len(self.ids):
            raise DataError(f"length {length} exceeds the haystack ({len(self.ids)} tokens)")
        start = int(rng.integers(0, len(self.ids) - fill + 1))
        hay = list(self.ids[start:start + fill])
        # insert deepest-first so earlier offsets stay valid; the queried needle is the first entry
        spots = sorted(((self._snap(hay, int((depth if d is None else d) * fill)), i) for i, (_, d) in enumerate(n_ids)),
                       reverse=True)
        span = (0, 0)
        for at, i in spots:
            hay[at:at] = n_ids[i][0]
        off = len(pre)
        for at, i in sorted(spots):
            if i == 0:
                span = (off + at, off + at + len(n_ids[0][0]))
            off += len(n_ids[i][0])
        return LongSample(task, length, depth, seed, pre + hay + q, answer, span)

    def _snap(self, hay: list[int], at: int) -> int:
        for j in range(at, max(0, at - 300), -1):
            if j > 0 and hay[j - 1] in self.stops:
                return j
        return at


def make_samples(hay: Haystack, task: str, lengths: list[int], depths: list[float], n_per_depth: int,
                 seed: int) -> list[LongSample]:
    """``len(lengths) * len(depths) * n_per_depth`` seeded samples; sample seeds derive from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for L in lengths:
        for d in depths:
            for _ in range(n_per_depth):
                out.append(hay.sample(task, L, d, int(rng.integers(0, 2**31 - 1))))
    return out


def is_correct(sample: LongSample, generated: str) -> bool:
    return sample.answer.lower() in generated.lower()

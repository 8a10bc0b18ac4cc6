"""Prompt templates and verbalizers for prompt-learning classifiers (PET / LM-BFF style).

A :class:`Template` is text with one input slot ``{x}`` and one answer slot ``{answer}``;
a :class:`Verbalizer` maps each class to label words the model should put in the answer
slot. Both validate on creation, so a template without a slot never reaches a model.
PromptAttack (Xu et al., "Exploring the Universal Vulnerability of Prompt-based Learning
Paradigm", 2022, and the "PromptAttack" template search line) edits the text between the
two slots (the *infix*), which is where the model reads the task from.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.errors import SlimguardError

INPUT_SLOT = "{x}"
ANSWER_SLOT = "{answer}"


class TemplateError(SlimguardError):
    """A template or verbalizer cannot be used with the chosen victim."""


@dataclass(frozen=True)
class Template:
    """``"{x} It was {answer}."``: prefix ``""``, infix ``" It was "``, suffix ``"."``."""

    text: str

    def __post_init__(self):
        t = self.text
        if not isinstance(t, str):
            raise TemplateError(f"template must be a string, got {type(t).__name__}")
        for slot in (INPUT_SLOT, ANSWER_SLOT):
            n = t.count(slot)
            if n != 1:
                what = f"has no {slot} slot" if n == 0 else f"has {n} {slot} slots"
                raise TemplateError(f"template {t!r} {what}; write exactly one, e.g. '{{x}} It was {{answer}}.'")
        if t.index(INPUT_SLOT) > t.index(ANSWER_SLOT):
            raise TemplateError(f"template {t!r} puts {ANSWER_SLOT} before {INPUT_SLOT}; the answer slot must follow the input")
        if "{" in t.replace(INPUT_SLOT, "").replace(ANSWER_SLOT, ""):
            raise TemplateError(f"template {t!r} has a stray '{{'; only {INPUT_SLOT} and {ANSWER_SLOT} are slots")

    @property
    def prefix(self) -> str:
        return self.text.split(INPUT_SLOT, 1)[0]

    @property
    def infix(self) -> str:
        return self.text.split(INPUT_SLOT, 1)[1].split(ANSWER_SLOT, 1)[0]

    @property
    def suffix(self) -> str:
        return self.text.split(ANSWER_SLOT, 1)[1]

    def with_infix(self, infix: str) -> "Template":
        return Template(self.prefix + INPUT_SLOT + infix + ANSWER_SLOT + self.suffix)

    def render(self, x: str, answer: str = "___") -> str:
        return self.text.replace(INPUT_SLOT, x).replace(ANSWER_SLOT, answer)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Verbalizer:
    """Label words per class, in label-id order: ``Verbalizer((("terrible", "bad"), ("great", "good")))``."""

    words: tuple[tuple[str, ...], ...]

    def __post_init__(self):
        words = tuple(tuple(str(w).strip() for w in ws) for ws in self.words)
        object.__setattr__(self, "words", words)
        if len(words) < 2:
            raise TemplateError(f"verbalizer needs label words for at least two classes, got {len(words)}")
        seen: dict[str, int] = {}
        for c, ws in enumerate(words):
            if not ws or any(not w for w in ws):
                raise TemplateError(f"verbalizer class {c} has an empty label word list or an empty word")
            for w in ws:
                if w.lower() in seen and seen[w.lower()] != c:
                    raise TemplateError(f"verbalizer word '{w}' is used for classes {seen[w.lower()]} and {c}")
                seen[w.lower()] = c

    @classmethod
    def parse(cls, spec: str) -> "Verbalizer":
        """``"terrible,bad|great,good"``: classes split by ``|``, words by ``,``."""
        return cls(tuple(tuple(w for w in part.split(",") if w.strip()) for part in spec.split("|")))

    @property
    def num_classes(self) -> int:
        return len(self.words)

    def spec(self) -> str:
        return "|".join(",".join(ws) for ws in self.words)


# Benign templates per dataset: the methods.md MLM template, shared by both victims so that a
# found template can be replayed on the other victim (the causal LM scores the next token at
# the answer slot and ignores the suffix).
DEFAULT_TEMPLATES = {"rotten-tomatoes": "{x} It was {answer}.", "sms-spam": "{x} This message is {answer}."}
DEFAULT_VERBALIZERS = {"rotten-tomatoes": "terrible,bad|great,good", "sms-spam": "normal,personal|junk,advertising"}
FALLBACK_TEMPLATE = "{x} It was {answer}."


def default_template(dataset: str) -> Template:
    return Template(DEFAULT_TEMPLATES.get(dataset, FALLBACK_TEMPLATE))


def default_verbalizer(dataset: str) -> Verbalizer:
    if dataset not in DEFAULT_VERBALIZERS:
        raise TemplateError(f"no default verbalizer for dataset '{dataset}'; set verbalizer, e.g. 'terrible|great'")
    return Verbalizer.parse(DEFAULT_VERBALIZERS[dataset])


def token_edits(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
    """Levenshtein distance between two token sequences (substitutions, insertions, deletions)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]

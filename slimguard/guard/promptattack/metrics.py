"""PromptAttack metrics: clean / attacked accuracy, flip rate, template edits and perplexity.

Accuracy is the clean accuracy of :mod:`slimguard.core.metrics` (one definition for every
capability, NaN on an empty set) over a classifier's ``uid -> label`` predictions. The flip
rate is this attack's own measure (no other capability has it): the error rate under the
attacked template on the samples the benign one got right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...core.data import TextSample
from ...core.metrics import cacc


@dataclass
class TemplateScore:
    accuracy: float
    flip_rate: float  # over examples the benign template classified correctly
    n: int
    n_clean_correct: int


def accuracy(pred: dict[int, int], samples: list[TextSample]) -> float:
    """CACC of the predictions ``pred`` (uid -> label) on ``samples``."""
    return cacc([pred[s.uid] for s in samples], [s.label for s in samples])


def flip_rate(clean: dict[int, int], attacked: dict[int, int], samples: list[TextSample]) -> float:
    """Share of the samples the benign template classified correctly that the attacked one gets wrong (NaN: none)."""
    ok = [s for s in samples if clean[s.uid] == s.label]
    return sum(attacked[s.uid] != s.label for s in ok) / len(ok) if ok else float("nan")


def score(clean: dict[int, int], attacked: dict[int, int], samples: list[TextSample]) -> TemplateScore:
    return TemplateScore(accuracy(attacked, samples), flip_rate(clean, attacked, samples), len(samples),
                         sum(clean[s.uid] == s.label for s in samples))


def template_text_for_ppl(template_text: str) -> str:
    """The template's own words: the input slot dropped, the answer slot left as a blank to fill."""
    return " ".join(template_text.replace("{x}", " ").replace("{answer}", " ").split())


def template_perplexity(lm, template_texts: list[str]) -> list[float]:
    """Perplexity of each template's words under a causal LM (``LoadedModel``); lower = more fluent."""
    import torch

    out = []
    with torch.no_grad():
        for t in template_texts:
            text = template_text_for_ppl(t)
            ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
            bos = lm.tokenizer.bos_token_id if lm.tokenizer.bos_token_id is not None else lm.tokenizer.eos_token_id
            ids = torch.cat([torch.tensor([[bos]]), ids], 1)
            if ids.shape[1] < 2:
                out.append(float("nan"))
                continue
            loss = lm.model(input_ids=ids, labels=ids).loss
            out.append(math.exp(float(loss)))
    return out

"""``char``: character-level edits of template words (swap, delete, insert, look-alike
substitution) -- the DeepWordBug / TextBugger transformations applied to the template, each
round a greedy search under the budget (no gradients).
"""

from __future__ import annotations

import torch

from ..templates import TemplateError
from .base import STRATEGIES, AttackContext, Strategy

LOOKALIKE = {"a": "@", "e": "3", "i": "1", "l": "1", "o": "0", "s": "5", "t": "7"}


@STRATEGIES.register("char")
class CharPerturb(Strategy):
    name = "char"

    def __init__(self, per_round: int = 12, patience: int = 2):
        self.per_round, self.patience = per_round, patience

    def _variants(self, text: str, ctx: AttackContext) -> list[str]:
        words = [(i, w) for i, w in enumerate(text.split(" ")) if any(ch.isalpha() for ch in w)]
        out = []
        if not words:
            return out
        for _ in range(self.per_round):
            wi, w = words[int(torch.randint(len(words), (1,), generator=ctx.gen))]
            j = int(torch.randint(len(w), (1,), generator=ctx.gen))
            op = int(torch.randint(4, (1,), generator=ctx.gen))
            if op == 0 and len(w) > 1:
                j = min(j, len(w) - 2)
                nw = w[:j] + w[j + 1] + w[j] + w[j + 2:]
            elif op == 1 and len(w) > 1:
                nw = w[:j] + w[j + 1:]
            elif op == 2:
                nw = w[:j] + chr(ord("a") + int(torch.randint(26, (1,), generator=ctx.gen))) + w[j:]
            else:
                nw = w[:j] + LOOKALIKE.get(w[j].lower(), w[j].swapcase()) + w[j + 1:]
            parts = text.split(" ")
            parts[wi] = nw
            out.append(" ".join(parts))
        return out

    def run(self, ctx, state):
        victim, tmpl = ctx.clf.victim, ctx.clf.template
        misses = 0
        while ctx.queries_left(state) > 0 and misses < self.patience:
            text = victim.decode_infix(state.infix)
            cands = []
            for v in self._variants(text, ctx):
                try:
                    cands.append(victim.encode_infix(tmpl.with_infix(v)))
                except TemplateError:
                    continue
            misses = 0 if ctx.try_candidates(state, cands, self.name) else misses + 1
        return state

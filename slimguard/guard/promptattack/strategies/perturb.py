"""Query-based template perturbations (no gradients), each a greedy search under the budget.

- ``char``: character-level edits of template words (swap, delete, insert, look-alike
  substitution), the DeepWordBug / TextBugger transformations applied to the template.
- ``word``: word-level substitution of template tokens by their nearest neighbours in the
  victim's input-embedding space (cosine), the embedding-swap transformation of TextAttack.
- ``distractor``: inject a label word of some class next to the answer slot (or right after
  the input), pulling every prediction towards that class; PromptAttack's distractor recipe.
- ``random``: the baseline -- random tokens written at random template positions with the
  same edit budget, best of ``max_queries`` draws by attack loss.
"""

from __future__ import annotations

import torch

from ..templates import TemplateError
from .base import AttackContext, Strategy

LOOKALIKE = {"a": "@", "e": "3", "i": "1", "l": "1", "o": "0", "s": "5", "t": "7"}


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


class WordSubstitute(Strategy):
    name = "word"

    def __init__(self, neighbours: int = 8, patience: int = 1):
        self.neighbours, self.patience = neighbours, patience

    def run(self, ctx, state):
        E = ctx.clf.victim.embeddings.detach()
        En = torch.nn.functional.normalize(E.float(), dim=-1)
        misses = 0
        while ctx.queries_left(state) > 0 and misses < self.patience:
            cands = []
            for p, t in enumerate(state.infix):
                sim = En @ En[t]
                sim[~ctx.candidates] = -2
                sim[t] = -2
                for v in torch.topk(sim, self.neighbours).indices.tolist():
                    c = list(state.infix)
                    c[p] = v
                    cands.append(c)
            misses = 0 if ctx.try_candidates(state, cands, self.name) else misses + 1
        return state


class DistractorInject(Strategy):
    name = "distractor"

    def run(self, ctx, state):
        word_ids = [w for ws in ctx.clf.victim.word_ids(ctx.clf.verbalizer) for w in ws]
        while ctx.queries_left(state) > 0:
            inf = state.infix
            cands = []
            for w in word_ids:  # near the answer slot first, then right after the input
                cands += [inf + [w], inf[:-1] + [w] + inf[-1:], [w] + inf]
            if not ctx.try_candidates(state, cands, self.name):
                break
        return state


class RandomTemplate(Strategy):
    name = "random"

    def run(self, ctx, state):
        draws = [random_infix(ctx.benign, ctx.candidates, ctx.budget.max_edits, ctx.gen)
                 for _ in range(max(ctx.queries_left(state), 0))]
        ctx.try_candidates(state, draws, self.name)
        return state


def random_infix(benign: list[int], candidates: torch.Tensor, max_edits: int, gen: torch.Generator) -> list[int]:
    """One random template: ``max_edits`` random tokens inserted or written at random infix positions."""
    pool = candidates.nonzero().squeeze(1)
    c = list(benign)
    for _ in range(max_edits):
        tok = int(pool[int(torch.randint(len(pool), (1,), generator=gen))])
        if bool(torch.rand(1, generator=gen) < 0.5):
            c.insert(int(torch.randint(len(c) + 1, (1,), generator=gen)), tok)
        else:
            c[int(torch.randint(len(c), (1,), generator=gen))] = tok
    return c

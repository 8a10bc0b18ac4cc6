"""``word``: word-level substitution of template tokens by their nearest neighbours in the
victim's input-embedding space (cosine) -- the embedding-swap transformation of TextAttack,
searched greedily under the budget (no gradients).
"""

from __future__ import annotations

import torch

from .base import STRATEGIES, Strategy


@STRATEGIES.register("word")
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

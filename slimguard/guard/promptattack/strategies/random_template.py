"""``random``: the baseline -- random tokens written at random template positions with the
same edit budget, best of ``max_queries`` draws by attack loss.
"""

from __future__ import annotations

import torch

from .base import STRATEGIES, Strategy


@STRATEGIES.register("random")
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

"""``distractor``: inject a label word of some class next to the answer slot (or right after
the input), pulling every prediction towards that class; PromptAttack's distractor recipe.
"""

from __future__ import annotations

from .base import STRATEGIES, Strategy


@STRATEGIES.register("distractor")
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

"""Gradient search over template tokens: HotFlip (Ebrahimi et al., 2018) first-order swap
scores, searched AutoPrompt-style (Shin et al., 2020), maximising the true-label loss.

Each step takes one forward+backward through the classifier with the infix given as
embeddings; the first-order gain of writing token v at position i is
``(e_v - e_i) . dL/de_i``. The top candidates (over all positions, plus trigger slots
inserted right before the answer) are re-scored exactly with queries and the best kept.
"""

from __future__ import annotations

import torch

from .base import STRATEGIES, AttackContext, Strategy


@STRATEGIES.register("gradient")
class GradientSearch(Strategy):
    name = "gradient"

    def __init__(self, top_k: int = 4, insert: bool = True):
        self.top_k, self.insert = top_k, insert

    def _grad(self, ctx: AttackContext, infix: list[int]) -> torch.Tensor:
        E = ctx.clf.victim.embeddings
        emb = E[torch.tensor(infix)].detach().clone().requires_grad_(True)
        for b in ctx.batches:
            logits = ctx.clf.logits(b, infix_embeds=emb)
            ctx.per_example(logits, b.labels).sum().backward()
        return emb.grad

    def run(self, ctx, state):
        E = ctx.clf.victim.embeddings
        tried: set[tuple[int, ...]] = set()  # exact scores are deterministic: never pay twice for a candidate
        for step in range(ctx.budget.max_steps):
            if ctx.queries_left(state) <= 0:
                break
            # spread the query budget evenly over the remaining steps (at least top_k * 2 exact scores per step)
            per_step = max(self.top_k * 2, ctx.queries_left(state) // (ctx.budget.max_steps - step))
            # AutoPrompt trigger slot: try an extra token right before the answer when the edit budget allows
            base = list(state.infix)
            if self.insert and ctx.edits(base + [base[-1]]) <= ctx.budget.max_edits:
                work = base + [base[-1]]
                positions = list(range(len(base), len(work))) + list(range(len(base)))
            else:
                work, positions = base, list(range(len(base)))
            g = self._grad(ctx, work)
            state.steps += 1
            with torch.no_grad():
                gain = g @ E.T - (g * E[torch.tensor(work)]).sum(-1, keepdim=True)  # [T, V]
                gain[:, ~ctx.candidates] = float("-inf")
                gain[torch.arange(len(work)), torch.tensor(work)] = float("-inf")
                sub = gain[positions]
                top = torch.topk(sub.reshape(-1), min(per_step * 16, sub.numel())).indices
            cands = []
            for flat in top.tolist():
                p, v = positions[flat // gain.shape[1]], flat % gain.shape[1]
                c = list(work)
                c[p] = v
                # a swap inside the old infix is scored without the trigger slot
                c = c if p >= len(base) or len(work) == len(base) else c[:len(base)]
                if tuple(c) not in tried and ctx.allowed(c):
                    tried.add(tuple(c))
                    cands.append(c)
                if len(cands) == per_step:
                    break
            ctx.try_candidates(state, cands, self.name)
        return state

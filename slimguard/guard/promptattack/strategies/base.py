"""Shared pieces of every template attack: budget, search state, the attack objective.

Following TextAttack's decomposition, a strategy is a *transformation* (how a template
may change) plus a greedy *search*; the *goal* is shared: maximise the cross-entropy of the
true label over a small attack set of examples the benign template classifies correctly,
subject to a *constraint* on the number of template tokens changed (token-level edit
distance to the benign infix). Every forward pass over the attack set is one query;
every forward+backward is one gradient step. Each strategy lives in its own file and
registers itself in :data:`STRATEGIES` with one decorator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ....core.registry import Registry
from ..fewshot import PromptClassifier
from ..templates import token_edits
from ..victims import PreparedBatch

# name -> Strategy subclass; each strategy file registers its own (recipes compose them with '+')
STRATEGIES: Registry[type["Strategy"]] = Registry("strategy", load="slimguard.guard.promptattack.strategies")


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, objective: str = "ce", kappa: float = 1.0) -> torch.Tensor:
    """Per-example attack loss (higher = more wrong).

    ``ce``: cross-entropy of the true label -- unbounded, so a template that makes half the
    examples *very* wrong can outscore one that flips more of them. ``margin``: the
    Carlini-Wagner margin ``max_other - true`` clipped at ``kappa``: an example stops paying
    once it is flipped by kappa, so the search is pushed to flip *more* examples, which is
    what the flip rate counts.
    """
    if objective == "ce":
        return torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (other - true).clamp(max=kappa)


@dataclass(frozen=True)
class Budget:
    max_edits: int = 3
    max_steps: int = 10
    max_queries: int = 60


@dataclass
class AttackState:
    """The current malicious infix (victim token ids) and what it cost to find."""

    infix: list[int]
    loss: float
    queries: int = 0
    steps: int = 0
    trace: list[dict] = field(default_factory=list)


@dataclass
class AttackContext:
    clf: PromptClassifier
    batches: list[PreparedBatch]  # the attack set, prepared once
    benign: list[int]
    budget: Budget
    gen: torch.Generator
    candidates: torch.Tensor  # bool [vocab]: tokens a search may write
    query_cap: int | None = None  # this recipe stage's share of the query budget
    objective: str = "ce"  # "ce" or "margin" (see attack_loss)
    kappa: float = 1.0

    def per_example(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return attack_loss(logits, labels, self.objective, self.kappa)

    def edits(self, infix: list[int]) -> int:
        return token_edits(self.benign, infix)

    def allowed(self, infix: list[int]) -> bool:
        return 0 < len(infix) and self.edits(infix) <= self.budget.max_edits

    @torch.no_grad()
    def loss(self, infix: list[int], state: AttackState | None = None) -> float:
        if state is not None:
            state.queries += 1
        total, n = 0.0, 0
        for b in self.batches:
            total += float(self.per_example(self.clf.logits(b, infix_ids=infix), b.labels).sum())
            n += len(b)
        return total / max(n, 1)

    @torch.no_grad()
    def losses(self, infixes: list[list[int]], state: AttackState) -> list[float]:
        """Attack loss of several candidate infixes (one query each), batched per victim."""
        state.queries += len(infixes)
        total, n = torch.zeros(len(infixes)), 0
        for b in self.batches:
            f = self.clf.victim.features_many(b, infixes)  # [n, B, d]
            logits = self.clf.head(f.reshape(-1, f.shape[-1])).view(len(infixes), len(b), -1)
            lab = b.labels.expand(len(infixes), -1)
            per = self.per_example(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1)).view(len(infixes), -1)
            total += per.sum(1)
            n += len(b)
        return (total / max(n, 1)).tolist()

    def queries_left(self, state: AttackState) -> int:
        cap = self.budget.max_queries if self.query_cap is None else min(self.query_cap, self.budget.max_queries)
        return cap - state.queries

    def try_candidates(self, state: AttackState, cands: list[list[int]], tag: str) -> bool:
        """Evaluate candidates (within the query budget and edit constraint); keep the best if it raises the loss."""
        seen, todo = {tuple(state.infix)}, []
        for c in cands:
            if tuple(c) in seen or not self.allowed(c):
                continue
            seen.add(tuple(c))
            todo.append(list(c))
        todo = todo[:max(self.queries_left(state), 0)]
        best, best_loss = None, state.loss
        for i in range(0, len(todo), 16):
            chunk = todo[i:i + 16]
            for c, val in zip(chunk, self.losses(chunk, state)):
                if val > best_loss:
                    best, best_loss = c, val
        if best is None:
            return False
        state.infix, state.loss = list(best), best_loss
        state.trace.append({"strategy": tag, "loss": best_loss, "queries": state.queries, "steps": state.steps,
                            "edits": self.edits(best)})
        return True


class Strategy:
    """One named transformation + greedy search; ``run`` improves the state in place."""

    name = "base"

    def run(self, ctx: AttackContext, state: AttackState) -> AttackState:
        raise NotImplementedError

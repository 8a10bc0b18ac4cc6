"""Baseline: greedy random-token trigger search at DBS's query budget (no gradients).

The black-box control for :mod:`.dbs`: a trigger of ``L`` slots starts as random reachable
tokens; slot by slot, ``queries / L`` random candidate tokens are tried and the one with the
lowest objective is kept (the same objective as DBS's (E2): cross-entropy to the target label
plus the benign reference model's margin, on discrete tokens). Each candidate costs one forward
pass of the inversion batch, so the search spends as many forward passes per option as DBS
spends optimiser steps (DBS also gets one backward pass per step: its budget in FLOPs is about
three times larger; the result file states this). It shows what the gradient through the
relaxation buys: a vocabulary of 30,000 tokens is not searched by 20 random draws per slot.
"""

from __future__ import annotations

import time

from pydantic import Field

from .base import SCANNERS, Inversion, MethodConfig, Scanner, discrete_inversion


class GreedyConfig(MethodConfig):
    """Greedy random-token insertion (baseline): coordinate-wise random search over the vocabulary."""

    queries: int = Field(200, ge=2, le=100000, description="Forward passes of the inversion batch per option "
                         "(DBS's steps, so both scan at the same query budget).")
    threshold: float = Field(0.5, description="Anomaly score above which a model is called backdoored; fitted on "
                             "clean models only by `slimguard bench scan --calibrate`.")


@SCANNERS.register("greedy")
class Greedy(Scanner):
    name, title, config_type = "greedy", "greedy random-token search (baseline)", GreedyConfig

    def __init__(self, cfg: GreedyConfig):
        super().__init__(cfg)
        self.cfg: GreedyConfig = cfg

    def invert(self, model, batch, target, *, generator, progress=None) -> Inversion:
        import torch
        import torch.nn.functional as F

        t0 = time.perf_counter()
        L, V = batch.slots.shape[1], model.vocab_ids.numel()
        tgt = torch.full((batch.size,), target, dtype=torch.long)
        bound0 = None

        def objective(ids: torch.Tensor) -> float:
            nonlocal bound0
            loss = F.cross_entropy(model.discrete_logits(batch, ids), tgt)
            if model.reference is not None:
                ref = F.cross_entropy(model.discrete_logits(batch, ids, model=model.reference), batch.source)
                bound0 = ref if bound0 is None else bound0
                loss = loss + torch.clamp(ref - bound0, min=0)
            return float(loss)

        current = model.vocab_ids[torch.randint(V, (L,), generator=generator)]
        cur, used = objective(current), 1
        per_slot = max(1, (self.cfg.queries - 1) // L)
        for j in range(L):
            for v in torch.randint(V, (per_slot,), generator=generator).tolist():
                trial = current.clone()
                trial[j] = model.vocab_ids[v]
                val = objective(trial)
                used += 1
                if val < cur:
                    current, cur = trial, val
                if progress is not None:
                    progress(used, cur, None)
        inv = discrete_inversion(model, batch, target, current)
        inv.steps, inv.queries, inv.seconds = used, used, time.perf_counter() - t0
        return inv

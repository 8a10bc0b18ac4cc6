"""``quest``: Quest (Tang et al., 2024, "Quest: Query-Aware Sparsity for Efficient Long-Context
LLM Inference"): pages of ``page_size`` keys with per-channel min/max bounds; the pages whose
upper bound on ``q . k`` is highest are read (per KV head from the group's summed bounds, or
per query head with ``quest_per_head``)."""

from __future__ import annotations

from .. import select as K
from .base import SELECTORS, Selector, span


@SELECTORS.register("quest")
class Quest(Selector):
    fields = ("page_size", "quest_per_head")

    @staticmethod
    def middle(st, q, key, nk, q0, scaling, decode):
        cfg = st.runtime.cfg
        lo, hi = span(st, nk)
        c = q.shape[2]
        # a short chunk (the question tail) bounds every query, as TokenSelect votes per query there
        return K.quest_middle(q if 1 < c <= cfg.vote_queries else q.mean(2), key, lo, hi, cfg.k, cfg.page_size,
                              per_query_head=cfg.quest_per_head)

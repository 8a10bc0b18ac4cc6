"""``random``: ``k`` middle tokens drawn uniformly from the runtime's seeded generator -- the
floor any scoring selector has to beat at equal budget."""

from __future__ import annotations

from .. import select as K
from .base import SELECTORS, Selector, span


@SELECTORS.register("random")
class Random(Selector):
    fields = ("seed",)

    @staticmethod
    def middle(st, q, key, nk, q0, scaling, decode):
        lo, hi = span(st, nk)
        return K.random_middle(q.shape[0], lo, hi, st.runtime.cfg.k, st.runtime.gen, q.device)

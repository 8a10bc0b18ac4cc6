"""``oracle``: per query head, the ``k`` middle tokens with the highest true attention of the
chunk (computed exactly, so no faster than dense): the ceiling of top-k selection at this
budget."""

from __future__ import annotations

from .. import select as K
from .base import SELECTORS, Selector, span


@SELECTORS.register("oracle")
class Oracle(Selector):
    @staticmethod
    def middle(st, q, key, nk, q0, scaling, decode):
        lo, hi = span(st, nk)
        return K.oracle_middle(q, key, lo, hi, st.runtime.cfg.k, scaling)

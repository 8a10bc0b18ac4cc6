"""``streaming``: StreamingLLM (Xiao et al., 2024, "Efficient Streaming Language Models with
Attention Sinks"): the sink tokens plus one contiguous recent window; at equal budget the
middle is the ``k`` tokens right before the local window."""

from __future__ import annotations

import torch

from .base import SELECTORS, Selector, span


@SELECTORS.register("streaming")
class Streaming(Selector):
    @staticmethod
    def middle(st, q, key, nk, q0, scaling, decode):
        lo, hi = span(st, nk)
        return torch.arange(max(lo, hi - st.runtime.cfg.k), hi, device=q.device).expand(q.shape[0], 1, -1)

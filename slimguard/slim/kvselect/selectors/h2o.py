"""``h2o``: Heavy-Hitter Oracle (Zhang et al., 2023, "H2O: Heavy-Hitter Oracle for Efficient
Generative Inference of Large Language Models"): keep the ``k`` middle tokens with the most
accumulated attention. Evicting: a token dropped once is never read again, and the running
scores are fed by the attention weights of each selection (:meth:`H2O.observe`)."""

from __future__ import annotations

import torch

from .base import SELECTORS, Selector, span


@SELECTORS.register("h2o")
class H2O(Selector):
    needs_weights = True

    @staticmethod
    def middle(st, q, key, nk, q0, scaling, decode):
        lo, hi = span(st, nk)
        b = q.shape[0]
        first = st.h2o_kept is None
        new = torch.arange(lo if first else st.h2o_hi, hi, device=q.device).expand(b, 1, -1)
        elig = new if first else torch.cat((st.h2o_kept, new), dim=-1)
        acc = st.h2o_acc[:, None, :].gather(2, elig) if st.h2o_acc is not None and st.h2o_acc.shape[1] >= hi \
            else torch.zeros(elig.shape, device=q.device)
        keep = torch.topk(acc, min(st.runtime.cfg.k, elig.shape[-1]), dim=-1, sorted=False).indices
        st.h2o_kept, st.h2o_hi = elig.gather(2, keep), hi
        return st.h2o_kept

    @staticmethod
    def observe(st, weights, idx, nk):
        b = weights.shape[0]
        mass = weights.sum(dim=(1, 2))  # [B, S]: attention each selected token received, all heads and queries
        if st.h2o_acc is None or st.h2o_acc.shape[1] < nk:
            grown = torch.zeros(b, max(nk, 2 * (0 if st.h2o_acc is None else st.h2o_acc.shape[1])),
                                device=weights.device)
            if st.h2o_acc is not None:
                grown[:, :st.h2o_acc.shape[1]] = st.h2o_acc
            st.h2o_acc = grown
        st.h2o_acc.scatter_add_(1, idx[:, 0], mass)

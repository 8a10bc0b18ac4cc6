"""Held-out perplexity, token-level KL to the full-precision model, and the EdgeQAT
distortion diagnostics (attention-map cosine to FP, Q/K Gaussian entropy per layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .prepare import QATState, attach_recorder


@dataclass
class EvalResult:
    ppl: float
    nll: float
    kl_to_fp: float | None
    tokens: int
    attn_cos: list[float] = field(default_factory=list)      # per layer, softmax maps vs FP
    qk_entropy: list[float] = field(default_factory=list)    # per layer: per-token sum over heads of log(1+var) of Q and K

    def to_dict(self) -> dict:
        return {"ppl": self.ppl, "nll": self.nll, "kl_to_fp": self.kl_to_fp, "tokens": self.tokens,
                "attn_cos": self.attn_cos, "qk_entropy": self.qk_entropy}


def _state(model) -> QATState | None:
    return getattr(model, "sg_state", None)


@torch.no_grad()
def evaluate(model, batches: list[torch.Tensor], *, teacher=None, diagnostics: bool = False,
             device: str | torch.device = "cpu") -> EvalResult:
    """Perplexity of ``model`` on ``batches``; KL(FP || model) per token when a teacher is given."""
    was_training = model.training
    model.eval()
    nll_sum, kl_sum, n_tok = 0.0, 0.0, 0
    cos_sum: dict[int, float] = {}
    ent_sum: dict[int, float] = {}
    n_batches = 0
    if diagnostics:
        attach_recorder(model)
        if teacher is not None:
            attach_recorder(teacher)
    st, tst = _state(model), (_state(teacher) if teacher is not None else None)
    for x in batches:
        x = x.to(device)
        for s in (st, tst):
            if s is not None:
                s.reset()
                s.record = s.record_probs = diagnostics
        logits = model(input_ids=x).logits.float()
        lp = F.log_softmax(logits[:, :-1], -1)
        tgt = x[:, 1:]
        nll_sum += float(-lp.gather(-1, tgt[..., None]).sum())
        n_tok += tgt.numel()
        if teacher is not None:
            tl = F.log_softmax(teacher(input_ids=x).logits.float()[:, :-1], -1)
            kl_sum += float((tl.exp() * (tl - lp)).sum())
        if diagnostics and st is not None:
            for layer, ent in st.qk_entropy.items():
                ent_sum[layer] = ent_sum.get(layer, 0.0) + float(ent)
            if tst is not None:
                for layer, p in st.probs.items():
                    c = F.cosine_similarity(p.flatten(2).float(), tst.probs[layer].flatten(2).float(), dim=-1).mean()
                    cos_sum[layer] = cos_sum.get(layer, 0.0) + float(c)
        n_batches += 1
    for s in (st, tst):
        if s is not None:
            s.record = s.record_probs = False
            s.reset()
    model.train(was_training)
    nll = nll_sum / max(1, n_tok)
    return EvalResult(math.exp(nll), nll, kl_sum / n_tok if teacher is not None else None, n_tok,
                      [cos_sum[k] / n_batches for k in sorted(cos_sum)],
                      [ent_sum[k] / n_batches for k in sorted(ent_sum)])

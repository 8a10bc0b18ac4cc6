"""EdgeQAT losses (Shen et al., 2024): ``L = a*CE + (1-a)*T^2*KL(teacher_T || student_T) + L_attn + L_ent``.

* ``L_ent`` (entropy guidance) maximises the Gaussian entropy of the quantized Q and K:
  ``-0.5 * log(sum_{layers,batch,heads,tokens} [log(1+Var_d Q) + log(1+Var_d K)])``; we average
  over batch and tokens instead of summing (a constant factor inside the log: same gradient,
  but the value no longer depends on batch size or on how DDP splits the batch).
  ``cap="teacher"`` replaces each layer's term by ``min(student, teacher)``: no gradient pushes a layer past
  the full-precision model's value, which the uncapped loss does (see docs/quant.md, the 300-step ablation).
* ``L_attn`` (distribution guidance) pulls the student's pre-softmax logits ``QK^T/sqrt(d)``
  toward the teacher's by cosine similarity per (batch, head), over the causal entries.
  The released reference minimises ``log(sum cos)``, which pushes similarity down; the
  intended direction is ``1 - mean cos``. ``sign="reference"`` keeps the bug for ablation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import LossConfig
from .prepare import QATState


@dataclass
class LossParts:
    total: torch.Tensor
    ce: float = 0.0
    kd: float = 0.0
    entropy: float = 0.0
    attn: float = 0.0

    def to_dict(self) -> dict:
        return {"loss": float(self.total.detach()), "ce": self.ce, "kd": self.kd, "entropy": self.entropy,
                "attn": self.attn}


def next_token_ce(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), mean over tokens."""
    t = temperature
    s = F.log_softmax(student_logits.float() / t, -1).flatten(0, 1)
    p = F.log_softmax(teacher_logits.float() / t, -1).flatten(0, 1)
    return F.kl_div(s, p, log_target=True, reduction="batchmean") * t * t


def entropy_guidance(state: QATState, cap: QATState | None = None) -> torch.Tensor:
    """``-0.5 * log(sum over layers of the Q/K entropy term)``; with ``cap`` (the teacher's recorded state) each
    layer counts only up to the teacher's value for the same batch."""
    terms = [state.qk_entropy[layer] if cap is None else
             torch.minimum(state.qk_entropy[layer], cap.qk_entropy[layer].detach().to(state.qk_entropy[layer]))
             for layer in state.qk_entropy]
    total = torch.stack(terms).sum()
    return -0.5 * torch.log(total.clamp(min=1e-6))


def attention_cosines(student: QATState, teacher: QATState) -> torch.Tensor:
    """Cosine per (layer, batch, head) between student and teacher logits on causal entries."""
    cos = []
    for layer, s in student.logits.items():
        t = teacher.logits[layer].to(s.dtype)
        causal = torch.ones(s.shape[-2], s.shape[-1], dtype=torch.bool, device=s.device).tril(s.shape[-1] - s.shape[-2])
        sv = s.masked_fill(~causal, 0).flatten(2)
        tv = t.masked_fill(~causal, 0).flatten(2)
        cos.append(F.cosine_similarity(sv.float(), tv.float(), dim=-1))
    return torch.stack(cos)


def distribution_guidance(student: QATState, teacher: QATState, sign: str) -> torch.Tensor:
    cos = attention_cosines(student, teacher)
    if sign == "reference":
        return torch.log(cos.sum().clamp(min=1e-6))
    return 1.0 - cos.mean()


def edgeqat_loss(cfg: LossConfig, input_ids: torch.Tensor, logits: torch.Tensor, state: QATState,
                 teacher_logits: torch.Tensor | None = None, teacher_state: QATState | None = None) -> LossParts:
    parts: dict[str, float] = {}
    total = logits.new_zeros((), dtype=torch.float32)
    a = cfg.kd_alpha if (cfg.ce and cfg.kd) else 1.0
    if cfg.ce:
        ce = next_token_ce(logits, input_ids)
        total = total + a * ce
        parts["ce"] = float(ce.detach())
    if cfg.kd:
        kd = kd_kl(logits, teacher_logits, cfg.kd_temperature)
        total = total + ((1 - a) if cfg.ce else 1.0) * kd
        parts["kd"] = float(kd.detach())
    if cfg.entropy:
        ent = entropy_guidance(state, teacher_state if cfg.capped_entropy else None)
        total = total + cfg.entropy_weight * ent
        parts["entropy"] = float(ent.detach())
    if cfg.distribution:
        att = distribution_guidance(state, teacher_state, cfg.distribution_sign)
        total = total + cfg.distribution_weight * att
        parts["attn"] = float(att.detach())
    return LossParts(total, **parts)

"""Named QAT variants of EdgeQAT (Shen et al., 2024): which loss terms and QAT switches a
trained row of ``slimguard bench quant`` uses, from LSQ-only QAT through the paper's full loss
to the ablations and the token-adaptive control.

A variant is one decorated function returning its :class:`Recipe`; the bit widths come from
the benchmark's bit setting, everything else from the QAT and loss configs' defaults::

    @VARIANTS.register("lsq_ce")
    def lsq_ce() -> Recipe:
        \"\"\"LSQ+ fake-quant trained on next-token cross-entropy alone.\"\"\"
        return Recipe(loss=dict(ce=True))

Registration order (this file's order) is the benchmark's row order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ...core.registry import Registry


@dataclass(frozen=True)
class Recipe:
    """What a variant changes: :class:`~.config.LossConfig` fields and :class:`~.config.QATConfig` overrides."""

    loss: dict
    qat: dict = field(default_factory=dict)


VARIANTS: Registry[Callable[[], Recipe]] = Registry("QAT variant", load="slimguard.slim.quant.variants")
VariantName = VARIANTS.name_type()

EDGEQAT_LOSS = dict(ce=True, kd=True, entropy=True, distribution=True)  # the paper's four terms


@VARIANTS.register("lsq_ce")
def lsq_ce() -> Recipe:
    """LSQ+ fake-quant trained on next-token cross-entropy alone."""
    return Recipe(loss=dict(ce=True))


@VARIANTS.register("lsq_kd")
def lsq_kd() -> Recipe:
    """LSQ+ with cross-entropy and distillation from the full-precision teacher."""
    return Recipe(loss=dict(ce=True, kd=True))


@VARIANTS.register("lsq_kd_entropy")
def lsq_kd_entropy() -> Recipe:
    """Ablation: CE + KD + entropy guidance on the quantized Q and K."""
    return Recipe(loss=dict(ce=True, kd=True, entropy=True))


@VARIANTS.register("lsq_kd_distribution")
def lsq_kd_distribution() -> Recipe:
    """Ablation: CE + KD + distribution guidance on the pre-softmax attention logits."""
    return Recipe(loss=dict(ce=True, kd=True, distribution=True))


@VARIANTS.register("edgeqat")
def edgeqat() -> Recipe:
    """The paper's loss: CE + KD + entropy + distribution guidance."""
    return Recipe(loss=dict(EDGEQAT_LOSS))


@VARIANTS.register("edgeqat_entropy_capped")
def edgeqat_entropy_capped() -> Recipe:
    """L_ent counted only up to the FP teacher's value per layer (an ablation: the paper's term has no bound)."""
    return Recipe(loss=dict(EDGEQAT_LOSS, entropy_cap="teacher"))


@VARIANTS.register("edgeqat_reference_sign")
def edgeqat_reference_sign() -> Recipe:
    """The released code's distribution term, log(sum cos), which pushes the logits apart (ablation)."""
    return Recipe(loss=dict(EDGEQAT_LOSS, distribution_sign="reference"))


@VARIANTS.register("edgeqat_adaptive")
def edgeqat_adaptive() -> Recipe:
    """Token-adaptive bits: half the tokens (lowest sink-logit score) at 4-bit activations (average A6)."""
    return Recipe(loss=dict(EDGEQAT_LOSS), qat=dict(token_adaptive=True))


@VARIANTS.register("edgeqat_adaptive_random")
def edgeqat_adaptive_random() -> Recipe:
    """The control of edgeqat_adaptive: the same fraction of tokens at 4 bits, picked at random."""
    return Recipe(loss=dict(EDGEQAT_LOSS), qat=dict(token_adaptive=True, adaptive_control="random"))

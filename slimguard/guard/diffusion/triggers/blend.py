"""``blend``: the blended trigger (Chen et al., 2017, "Targeted Backdoor Attacks on Deep
Learning Systems Using Data Poisoning") -- a fixed noise pattern mixed into the whole image,
``x' = (1 - alpha) x + alpha p``."""

from __future__ import annotations

import numpy as np

from ..config import TRIGGERS, PoisonConfig
from ..poison import Trigger


@TRIGGERS.register("blend")
def blend(cfg: PoisonConfig, size: int) -> Trigger:
    rng = np.random.default_rng(cfg.seed + 10_007)  # the pattern is fixed per seed, not per image
    pattern = rng.random((size, size)).astype(np.float32)
    # exact check: 1 - residual correlation; clean Fashion-MNIST scores >= 0.80, stamped <= 0.64
    return Trigger("blend", np.full((size, size), cfg.blend_alpha, np.float32), pattern, exact_tol=0.7)

"""``patch``: the BadNets trigger (Gu et al., 2017) as BiBadDiff uses it -- a small
checkerboard stamped over the bottom-right corner (``m`` = 1 on the patch)."""

from __future__ import annotations

import numpy as np

from ....core.errors import DataError
from ..config import TRIGGERS, PoisonConfig
from ..poison import Trigger


@TRIGGERS.register("patch")
def patch(cfg: PoisonConfig, size: int) -> Trigger:
    p = cfg.patch_size or max(3, round(size / 10))
    if p + cfg.patch_margin > size // 2:
        raise DataError(f"patch_size {p} + patch_margin {cfg.patch_margin} is too large for {size}px images")
    r1 = size - cfg.patch_margin
    r0 = r1 - p
    mask = np.zeros((size, size), np.float32)
    mask[r0:r1, r0:r1] = 1.0
    pattern = np.zeros((size, size), np.float32)
    ii, jj = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    # a checkerboard, bright in the corner pixel: rare in natural images, unlike a flat square
    pattern[r0:r1, r0:r1] = ((ii + jj) % 2 == 0).astype(np.float32)
    # exact check: max |pixel - pattern| inside the patch
    return Trigger("patch", mask, pattern, (r0, r1, r0, r1), exact_tol=0.35)

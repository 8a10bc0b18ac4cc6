"""Data-only poisoning for BiBadDiff (Pan et al., NeurIPS 2024), after BadNets (Gu et al., 2017).

``int(N * rate)`` images are drawn from the NON-target classes, stamped with a trigger and
relabelled to the target class. Every trigger has one form, ``x' = (1 - m) * x + m * p``;
the triggers themselves (a checkerboard patch in the bottom-right corner, ``m`` = 1 on the
patch, and a blended noise pattern, ``m`` = alpha everywhere) live in :mod:`.triggers`, one
file each, registered in :data:`~.config.TRIGGERS`. Images are float arrays in [0, 1], ``[N, H, W]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...core.errors import DataError
from .config import TRIGGERS, DataConfig, PoisonConfig


@dataclass
class ImageSet:
    """Images in [0, 1] at model resolution, with labels."""

    name: str
    class_names: list[str]
    x_train: np.ndarray  # [N, S, S] float32
    y_train: np.ndarray  # [N] int64
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Trigger:
    kind: str  # the registered name of the trigger that built it
    mask: np.ndarray  # [S, S] blend weight per pixel
    pattern: np.ndarray  # [S, S] values in [0, 1]
    box: tuple[int, int, int, int] | None = None  # patch rows/cols (r0, r1, c0, c1), None for blend
    # the exact check's default tolerance (classifiers.exact_score: pixel error in a box, else 1 - correlation)
    exact_tol: float = field(kw_only=True)

    def apply(self, x: np.ndarray) -> np.ndarray:
        validate_images(x, self.mask.shape[0])
        return ((1.0 - self.mask) * x + self.mask * self.pattern).astype(np.float32)


@dataclass
class PoisonedSet:
    """A poisoned training set; every output row remembers where it came from."""

    x: np.ndarray
    y: np.ndarray
    poisoned: np.ndarray  # [M] bool: carries the trigger
    source_index: np.ndarray  # [M] index into the clean training set
    duplicated: np.ndarray  # [M] bool: one of several copies (replication ablation)
    poisoned_indices: np.ndarray  # indices into the clean set that were poisoned
    target: int
    stats: dict = field(default_factory=dict)


def validate_images(x: np.ndarray, size: int | None = None, *, what: str = "images") -> None:
    """One-line errors for the shapes and ranges users get wrong (uint8, channels, size)."""
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        shape = getattr(x, "shape", None)
        raise DataError(f"{what} must be a float array [N, H, W] in [0, 1], got shape {shape}; squeeze the channel axis")
    if x.shape[1] != x.shape[2] or (size is not None and x.shape[1] != size):
        raise DataError(f"{what} must be square {size or 'H'}x{size or 'H'}, got {x.shape[1]}x{x.shape[2]}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{what} have dtype {x.dtype}; convert to float in [0, 1] (e.g. x / 255)")
    if x.size and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise DataError(f"{what} range [{float(x.min()):.3g}, {float(x.max()):.3g}] is outside [0, 1]; rescale them")


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.squeeze(1).clamp(0, 1).numpy()


def _stratified(y: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or n >= len(y):
        return rng.permutation(len(y))
    classes = np.unique(y)
    per = n // len(classes)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in classes])
    return rng.permutation(idx)


def load_data(cfg: DataConfig) -> ImageSet:
    """The configured dataset at model resolution, as a seeded class-stratified subset."""
    from ...core.data import load_images

    raw = load_images(cfg.dataset, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tr = _stratified(raw.y_train, cfg.n_train, rng)
    te = _stratified(raw.y_test, cfg.n_test, rng)
    return ImageSet(f"{cfg.dataset}@{cfg.image_size}px[{len(tr)}]", list(raw.class_names),
                    _resize(raw.x_train[tr], cfg.image_size), raw.y_train[tr].astype(np.int64),
                    _resize(raw.x_test[te], cfg.image_size), raw.y_test[te].astype(np.int64))


def make_trigger(cfg: PoisonConfig, size: int) -> Trigger:
    """The trigger ``cfg.trigger`` names, built for ``size`` x ``size`` images."""
    return TRIGGERS.get(cfg.trigger)(cfg, size)


def poison_dataset(x: np.ndarray, y: np.ndarray, cfg: PoisonConfig, num_classes: int) -> PoisonedSet:
    """Stamp and relabel ``int(N * rate)`` non-target images; optionally duplicate some of them."""
    validate_images(x, what="training images")
    y = np.asarray(y, dtype=np.int64)
    if len(y) != len(x):
        raise DataError(f"got {len(x)} images but {len(y)} labels")
    if not 0 <= cfg.target < num_classes:
        raise DataError(f"poison.target {cfg.target} is out of range: classes are 0..{num_classes - 1}")
    n = len(y)
    n_poison = int(n * cfg.rate)
    if cfg.rate > 0 and n_poison == 0:
        raise DataError(f"poison.rate {cfg.rate} poisons 0 of {n} images; raise the rate or the training size")
    clean_target = int((y == cfg.target).sum())
    if clean_target == 0:
        raise DataError(f"no clean images of target class {cfg.target} in the training set; choose another poison.target")
    others = np.flatnonzero(y != cfg.target)
    if n_poison > len(others):
        raise DataError(f"poison.rate {cfg.rate} needs {n_poison} non-target images but only {len(others)} exist")
    rng = np.random.default_rng(cfg.seed)
    chosen = np.sort(rng.choice(others, size=n_poison, replace=False))
    trig = make_trigger(cfg, x.shape[1])
    xp, yp = x.astype(np.float32).copy(), y.copy()
    xp[chosen] = trig.apply(xp[chosen])
    yp[chosen] = cfg.target
    poisoned = np.zeros(n, bool)
    poisoned[chosen] = True
    src = np.arange(n)
    dup = np.zeros(n, bool)
    n_dup = int(round(n_poison * cfg.duplicate_frac))
    if n_dup:
        dup_idx = rng.choice(chosen, size=n_dup, replace=False)
        dup[dup_idx] = True
        extra = np.repeat(dup_idx, cfg.duplicate_times - 1)
        xp, yp = np.concatenate([xp, xp[extra]]), np.concatenate([yp, yp[extra]])
        poisoned, src, dup = np.concatenate([poisoned, np.ones(len(extra), bool)]), np.concatenate([src, extra]), \
            np.concatenate([dup, np.ones(len(extra), bool)])
    in_target = yp == cfg.target
    stats = {"n_train": int(len(yp)), "n_poisoned_unique": int(n_poison), "n_poisoned_rows": int(poisoned.sum()),
             "global_poison_rate": float(poisoned.mean()),
             "within_class_trigger_fraction": float(poisoned[in_target].mean()),
             "target_class_rows": int(in_target.sum()), "n_duplicated_unique": int(n_dup)}
    return PoisonedSet(xp, yp, poisoned, src, dup, chosen, cfg.target, stats)

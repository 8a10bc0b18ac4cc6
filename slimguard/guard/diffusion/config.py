"""Typed configs for BiBadDiff (Pan et al., NeurIPS 2024) at CPU scale.

One config per verb: :class:`PoisonConfig` (data + trigger), :class:`TrainConfig`
(poisoned data + UNet + schedule), :class:`SampleConfig`, :class:`AmplifyConfig`,
:class:`DetectConfig`, :class:`ClassifyConfig`. Defaults are sized to train in minutes on
two CPU cores: 16x16 images, a 6,000-image stratified subset, a ~1M-parameter UNet.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...core.config import Config
from ...core.registry import Registry

# name -> trigger builder ``(PoisonConfig, image side) -> Trigger`` (triggers/, one file each); filled when the
# triggers package is first imported, so this module stays light
TRIGGERS = Registry("trigger", load="slimguard.guard.diffusion.triggers")
TriggerName = TRIGGERS.name_type()

GUIDANCE_GRID = [0.0, 1.0, 2.0, 5.0]


class DataConfig(Config):
    dataset: Literal["fashion-mnist", "mnist"] = Field("fashion-mnist", description="Image dataset asset.")
    image_size: int = Field(16, ge=8, le=64, description="Images are resized (antialiased) to this side; 16 trains fast on CPU, 28/32 is closer to the data.")
    n_train: int | None = Field(6000, ge=100, description="Seeded, class-stratified training subset (None = all).")
    n_test: int = Field(1000, ge=50, description="Seeded, class-stratified test subset for classifiers.")
    seed: int = Field(0, description="Seed for the subsets.")

    @field_validator("image_size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 4:
            raise ValueError("must be a multiple of 4 (the UNet downsamples twice)")
        return v


class PoisonConfig(Config):
    trigger: TriggerName = Field("patch", description="A registered trigger: patch (BadNets corner checkerboard) or "
                                                      "blend (blended noise pattern).")
    rate: float = Field(0.05, ge=0.0, lt=1.0, description="Poisoned images as a fraction of the whole training set (paper: 0.01-0.1).")
    target: int = Field(0, ge=0, description="Target class id (poisoned images are relabelled to it).")
    patch_size: int | None = Field(None, ge=1, description="Patch side in pixels (None: max(3, side/10)).")
    patch_margin: int = Field(1, ge=0, description="Gap between the patch and the bottom-right border.")
    blend_alpha: float = Field(0.2, gt=0.0, lt=1.0, description="Blend weight a in (1-a)x + a*pattern.")
    duplicate_frac: float = Field(0.0, ge=0.0, le=1.0, description="Replication ablation: fraction of poisoned images duplicated.")
    duplicate_times: int = Field(4, ge=2, description="Copies of each duplicated poisoned image.")
    seed: int = Field(0, description="Seed for choosing poisoned images and the blend pattern.")


class UNetConfig(Config):
    channels: list[int] = Field([16, 32, 64], description="UNet2DModel block_out_channels (one down/up block each).")
    layers_per_block: int = Field(1, ge=1, le=4, description="ResNet layers per block.")
    attention: bool = Field(False, description="Self-attention in the lowest-resolution block (slower on CPU).")
    norm_groups: int = Field(8, ge=1, description="GroupNorm groups; must divide every channel count.")

    @model_validator(mode="after")
    def _groups(self) -> "UNetConfig":
        if not 2 <= len(self.channels) <= 4:
            raise ValueError("channels needs 2-4 entries")
        bad = [c for c in self.channels if c % self.norm_groups]
        if bad:
            raise ValueError(f"norm_groups={self.norm_groups} must divide every channel count (not {bad})")
        return self


class TrainConfig(Config):
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset and subset.")
    poison: PoisonConfig = Field(default_factory=PoisonConfig, description="Trigger and rate; rate=0 trains a clean model.")
    model: UNetConfig = Field(default_factory=UNetConfig, description="UNet size.")
    steps: int = Field(1000, ge=1, description="Optimiser steps.")
    batch_size: int = Field(64, ge=1, description="Images per step.")
    lr: float = Field(2e-3, gt=0, description="Peak AdamW learning rate (linear warm-up, cosine decay).")
    warmup: int = Field(100, ge=0, description="Warm-up steps.")
    label_drop: float = Field(0.1, ge=0.0, lt=1.0, description="Classifier-free guidance: probability of dropping the label.")
    train_timesteps: int = Field(1000, ge=10, description="DDPM diffusion steps.")
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = Field("squaredcos_cap_v2", description="DDPM noise schedule.")
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0, description="EMA of weights used for sampling (0 disables).")
    checkpoint_every: int = Field(200, ge=1, description="Steps between checkpoints (resume picks up the latest).")
    seed: int = Field(0, description="Training seed (init, batches, noise).")


class SampleConfig(Config):
    classes: list[int] | None = Field(None, description="Classes to sample (None = all).")
    n_per_class: int = Field(8, ge=1, description="Images per class and guidance scale.")
    guidance: list[float] = Field(GUIDANCE_GRID, description="CFG scales w: eps = (1+w) eps(x|c) - w eps(x); w=0 is plain conditional.")
    ddim_steps: int = Field(25, ge=2, le=1000, description="DDIM sampling steps.")
    seed: int = Field(0, description="Sampling seed.")

    @field_validator("guidance")
    @classmethod
    def _nonneg(cls, v: list[float]) -> list[float]:
        if not v or any(w < 0 for w in v):
            raise ValueError("needs at least one scale, all >= 0")
        return v


class CNNConfig(Config):
    epochs: int = Field(3, ge=1, description="Training epochs for the small CNNs.")
    batch_size: int = Field(128, ge=1, description="CNN batch size.")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate.")
    width: int = Field(16, ge=4, description="Channels of the first conv layer.")


class AmplifyConfig(Config):
    n_samples: int = Field(128, ge=8, description="Target-conditioned generations per guidance scale.")
    guidance: list[float] = Field(GUIDANCE_GRID, description="CFG scales to sweep.")
    ddim_steps: int = Field(25, ge=2, le=1000, description="DDIM sampling steps.")
    cnn: CNNConfig = Field(default_factory=CNNConfig, description="Clean classifier and trigger detector training.")
    exact_tol: float | None = Field(None, gt=0, le=2, description="Exact-check tolerance (None: 0.35 = max |pixel - pattern| in the patch; 0.7 = 1 - residual correlation for blend).")
    replication_threshold: float = Field(0.95, gt=0, le=1, description="Cosine similarity to a training image that counts as a replica.")
    seed: int = Field(0, description="Sampling / classifier seed.")


class DetectConfig(Config):
    method: Literal["spectral", "activation-clustering", "both"] = Field("both", description="Poisoned-data detector(s).")
    guidance: float = Field(2.0, ge=0, description="CFG scale of the generations used for detection.")
    n_samples: int = Field(128, ge=8, description="Target-conditioned generations to fit the detector on.")
    ddim_steps: int = Field(25, ge=2, le=1000, description="DDIM sampling steps.")
    pca_dims: int = Field(10, ge=1, description="PCA dimensions before clustering.")
    cnn: CNNConfig = Field(default_factory=CNNConfig, description="CNN trained on the poisoned data (its features feed the detectors).")
    seed: int = Field(0, description="Seed.")


class ClassifyConfig(Config):
    n_test: int = Field(100, ge=10, description="Clean test images (and as many triggered non-target ones) to classify.")
    draws: int = Field(8, ge=1, description="Noise draws per image and class (shared across classes).")
    t_range: tuple[float, float] = Field((0.1, 0.7), description="Timesteps drawn uniformly in this fraction of the schedule.")
    keep_frac: float = Field(0.95, gt=0, le=1, description="Pixel-error filter: keep this fraction of smallest per-pixel errors (1 = unfiltered).")
    also_keep_fracs: list[float] = Field([0.9, 0.99], description="Further filter levels reported from the same forward passes (free).")
    cnn: CNNConfig = Field(default_factory=CNNConfig, description="CNN trained on the same poisoned data (baseline).")
    batch_size: int = Field(256, ge=1, description="UNet forward batch size.")
    seed: int = Field(0, description="Seed.")

    @field_validator("t_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 1:
            raise ValueError("needs 0 <= low < high <= 1")
        return v


class PoisonDataConfig(Config):
    """``slimguard diffusion poison``: the same ``data``/``poison`` keys as :class:`TrainConfig`."""

    data: DataConfig = Field(default_factory=DataConfig, description="Dataset and subset.")
    poison: PoisonConfig = Field(default_factory=PoisonConfig, description="Trigger and rate.")
    preview: int = Field(16, ge=0, description="Poisoned images shown in the preview grid.")

"""Class-conditional DDPM with classifier-free guidance (Ho & Salimans, 2022) on ``diffusers``.

The generator BiBadDiff (Pan et al., NeurIPS 2024) poisons: a small ``UNet2DModel`` with a
class-embedding table whose last row is the "no label" token (labels are dropped with
probability 0.1 in training), a DDPM training schedule and DDIM sampling (Song et al.,
2021). Guidance follows Ho & Salimans: ``eps = (1 + w) * eps(x|c) - w * eps(x)``, so
``w = 0`` samples the plain conditional model. Images live in [-1, 1] inside the model and
in [0, 1] outside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import SlimguardError
from .config import UNetConfig


_NOISY = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")


def _diffusers():
    """Import diffusers without the import-time warnings of its optional torchao backend
    (a torchao wheel whose CUDA kernels cannot load on CPU), so CLI errors stay one line."""
    import logging
    import sys

    if "diffusers" not in sys.modules:
        saved = {n: logging.getLogger(n).level for n in _NOISY}
        for n in _NOISY:
            logging.getLogger(n).setLevel(logging.ERROR)
        try:
            import diffusers  # noqa: F401
            from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel  # noqa: F401  (resolve lazy attributes now)
        finally:
            for n, lvl in saved.items():
                logging.getLogger(n).setLevel(lvl)
    import diffusers

    return diffusers


@dataclass
class DiffusionModel:
    """A trained (or fresh) generator: UNet, its DDPM schedule and what it was trained on."""

    unet: object  # diffusers.UNet2DModel
    scheduler: object  # diffusers.DDPMScheduler (training schedule; DDIM is derived from it)
    num_classes: int
    image_size: int
    meta: dict

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def device(self):
        return next(self.unet.parameters()).device


def build_unet(cfg: UNetConfig, image_size: int, num_classes: int):
    UNet2DModel = _diffusers().UNet2DModel

    n = len(cfg.channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if cfg.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(sample_size=image_size, in_channels=1, out_channels=1, block_out_channels=tuple(cfg.channels),
                       layers_per_block=cfg.layers_per_block, down_block_types=tuple(down), up_block_types=tuple(up),
                       norm_num_groups=cfg.norm_groups, num_class_embeds=num_classes + 1)


def build_scheduler(train_timesteps: int, beta_schedule: str):
    return _diffusers().DDPMScheduler(num_train_timesteps=train_timesteps, beta_schedule=beta_schedule, prediction_type="epsilon",
                         clip_sample=True)


def save_model(model: DiffusionModel, out_dir: str | Path) -> Path:
    from ...core.runs import atomic_write_json

    out = Path(out_dir)
    model.unet.save_pretrained(out / "unet", safe_serialization=True)
    model.scheduler.save_pretrained(out / "scheduler")
    atomic_write_json(out / "diffusion.json", {"num_classes": model.num_classes, "image_size": model.image_size,
                                               **model.meta})
    return out


def load_model(path: str | Path, device: str | None = None) -> DiffusionModel:
    """Load ``<run>/model`` (or a run directory holding ``model/``) onto ``device`` (default:
    :func:`slimguard.core.models.resolve_device`)."""
    from ...core.models import check_model_files, reading_model, resolve_device

    p = Path(path)
    if (p / "model" / "diffusion.json").is_file():
        p = p / "model"
    if not (p / "diffusion.json").is_file():
        raise SlimguardError(f"{path} is not a diffusion model folder (no diffusion.json); pass a `slimguard diffusion train` run")
    fix = "re-run the `slimguard diffusion train` that wrote it"
    check_model_files(p / "diffusion.json", fix=fix)
    meta = json.loads((p / "diffusion.json").read_text())
    with reading_model(p, "diffusion model", fix=fix):  # checks the weights' headers before diffusers imports
        diffusers = _diffusers()
        unet = diffusers.UNet2DModel.from_pretrained(p / "unet").eval().to(resolve_device(device))
        sched = diffusers.DDPMScheduler.from_pretrained(p / "scheduler")
    try:
        nc, size = meta.pop("num_classes"), meta.pop("image_size")
    except (KeyError, AttributeError):
        raise SlimguardError(f"{p / 'diffusion.json'} lacks num_classes or image_size; {fix}") from None
    return DiffusionModel(unet, sched, nc, size, meta)


def to_model_space(x: np.ndarray):
    import torch

    return torch.from_numpy(np.asarray(x, np.float32)).unsqueeze(1) * 2.0 - 1.0


def guided_eps(model: DiffusionModel, x, t, labels, guidance: float):
    """Classifier-free guided noise prediction; one batched pass for both branches."""
    import torch

    if guidance == 0:
        return model.unet(x, t, class_labels=labels).sample
    null = torch.full_like(labels, model.null_label)
    out = model.unet(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([labels, null])).sample
    cond, uncond = out.chunk(2)
    return (1.0 + guidance) * cond - guidance * uncond


def sample(model: DiffusionModel, labels, *, guidance: float = 0.0, steps: int = 25, generator=None,
           batch_size: int = 128) -> np.ndarray:
    """DDIM (eta=0) samples for integer ``labels``; returns ``[N, S, S]`` in [0, 1]."""
    import torch

    DDIMScheduler = _diffusers().DDIMScheduler
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= model.num_classes):
        raise SlimguardError(f"class labels must be in 0..{model.num_classes - 1}")
    dev = model.device
    labels = labels.to(dev)
    outs = []
    model.unet.eval()
    with torch.no_grad():
        for i in range(0, len(labels), batch_size):
            lab = labels[i:i + batch_size]
            ddim = DDIMScheduler.from_config(model.scheduler.config)
            ddim.set_timesteps(steps)
            # noise from the caller's CPU generator: the same images on every device
            x = torch.randn(len(lab), 1, model.image_size, model.image_size, generator=generator).to(dev)
            for t in ddim.timesteps:
                tt = torch.full((len(lab),), int(t), dtype=torch.long, device=dev)
                eps = guided_eps(model, x, tt, lab, guidance)
                x = ddim.step(eps, t, x, eta=0.0).prev_sample
            outs.append(((x.clamp(-1, 1) + 1) / 2).squeeze(1).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, model.image_size, model.image_size), np.float32)


def image_grid(rows: list[np.ndarray], path: str | Path, *, row_labels: list[str] | None = None,
               title: str | None = None) -> Path:
    """Save rows of ``[K, S, S]`` images as one PNG grid (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(len(r) for r in rows)
    s = rows[0].shape[-1]
    canvas = np.ones((len(rows) * (s + 1), k * (s + 1)), np.float32)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            canvas[i * (s + 1): i * (s + 1) + s, j * (s + 1): j * (s + 1) + s] = im
    fig, ax = plt.subplots(figsize=(max(3, k * 0.45 + 1.5), max(2, len(rows) * 0.45 + 0.6)))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([i * (s + 1) + s / 2 for i in range(len(rows))])
    ax.set_yticklabels(row_labels or [str(i) for i in range(len(rows))], fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path

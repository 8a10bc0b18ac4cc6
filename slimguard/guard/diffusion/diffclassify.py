"""A conditional diffusion model as a classifier, with pixel-error filtering (BiBadDiff, Pan et al., NeurIPS 2024).

Diffusion classifier (Li et al., 2023; Clark & Jaini, 2023): noise the image at a random
timestep, predict the noise conditioned on each class, and pick the class with the
smallest denoising error averaged over draws. The same noise and timestep are shared by
all classes of one draw, so their difference is not drowned in sampling noise. The robust
variant of BiBadDiff keeps only the smallest ``keep_frac`` of per-pixel errors: a trigger
is a small area the model cannot explain under the true class, so its large errors are
exactly what the filter drops. Compared against a CNN trained on the same poisoned data
by CACC (clean accuracy) and ASR (triggered non-target images classified as the target).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.metrics import asr, cacc
from .model import DiffusionModel, to_model_space
from .poison import validate_images


@dataclass
class ClassifyResult:
    method: str  # cnn | diffusion | diffusion-filtered
    keep_frac: float | None
    cacc: float
    asr: float
    n_clean: int
    n_triggered: int


def diffusion_errors(model: DiffusionModel, x: np.ndarray, *, keep_fracs: tuple[float, ...] = (1.0,), draws: int = 8,
                     t_range: tuple[float, float] = (0.1, 0.7), seed: int = 0, batch_size: int = 256,
                     progress=None) -> dict[float, np.ndarray]:
    """Mean (filtered) denoising error per image and class: ``{keep_frac: [N, C]}``."""
    import torch

    validate_images(x, model.image_size)
    g = torch.Generator().manual_seed(seed)
    C, T = model.num_classes, model.scheduler.config.num_train_timesteps
    lo, hi = int(t_range[0] * (T - 1)), max(int(t_range[0] * (T - 1)) + 1, int(t_range[1] * (T - 1)))
    dev = model.device
    ac = model.scheduler.alphas_cumprod.to(dev)
    per_batch = max(1, batch_size // C)
    errs = {k: np.zeros((len(x), C), np.float64) for k in keep_fracs}
    x0_all = to_model_space(x).to(dev)
    npix = model.image_size ** 2
    labels = torch.arange(C, device=dev)
    model.unet.eval()
    with torch.no_grad():
        for i in range(0, len(x), per_batch):
            x0 = x0_all[i:i + per_batch]
            b = len(x0)
            for _ in range(draws):
                t = torch.randint(lo, hi, (b,), generator=g).to(dev)
                noise = torch.randn(x0.shape, generator=g).to(dev)
                a = ac[t].view(-1, 1, 1, 1)
                xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
                rep = lambda z: z.repeat_interleave(C, 0)  # noqa: E731  (image-major, class-minor)
                pred = model.unet(rep(xt), rep(t), class_labels=labels.repeat(b)).sample
                e = (pred - rep(noise)).pow(2).reshape(b, C, npix)
                srt = e.sort(-1).values
                for k in keep_fracs:
                    m = max(1, int(round(k * npix)))
                    errs[k][i:i + b] += srt[..., :m].mean(-1).cpu().numpy() / draws
            if progress:
                progress(min(i + per_batch, len(x)), len(x))
    return errs


def evaluate(pred_clean: np.ndarray, y_clean: np.ndarray, pred_trig: np.ndarray, target: int, method: str,
             keep_frac: float | None = None) -> ClassifyResult:
    return ClassifyResult(method, keep_frac, cacc(pred_clean, y_clean), asr(pred_trig, target), len(y_clean),
                          len(pred_trig))


def run_classification(model: DiffusionModel, data, ps, trigger, cfg, *, cnn=None, progress=None) -> list[ClassifyResult]:
    """CNN (trained on the poisoned data) vs diffusion classifier, unfiltered and filtered."""
    from .classifiers import train_cnn

    rng = np.random.default_rng(cfg.seed)
    n = min(cfg.n_test, len(data.y_test))
    clean = rng.permutation(len(data.y_test))[:n]
    others = np.flatnonzero(data.y_test != ps.target)
    trig_idx = rng.permutation(others)[:n]
    x_clean, y_clean = data.x_test[clean], data.y_test[clean]
    x_trig = trigger.apply(data.x_test[trig_idx])
    cnn = cnn or train_cnn(ps.x, ps.y, data.num_classes, cfg.cnn, seed=cfg.seed)
    out = [evaluate(cnn.predict(x_clean), y_clean, cnn.predict(x_trig), ps.target, "cnn")]
    keeps = tuple(sorted({1.0, cfg.keep_frac, *cfg.also_keep_fracs}, reverse=True))
    errs = diffusion_errors(model, np.concatenate([x_clean, x_trig]), keep_fracs=keeps, draws=cfg.draws,
                            t_range=tuple(cfg.t_range), seed=cfg.seed, batch_size=cfg.batch_size, progress=progress)
    for k in keeps:
        pred = errs[k].argmin(1)
        name = "diffusion" if k == 1.0 else "diffusion-filtered" if k == cfg.keep_frac else f"diffusion-filtered@{k:g}"
        out.append(evaluate(pred[:n], y_clean, pred[n:], ps.target, name, k))
    return out

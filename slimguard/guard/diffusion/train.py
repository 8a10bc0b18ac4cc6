"""Training loop for the poisoned class-conditional DDPM of BiBadDiff (Pan et al., NeurIPS 2024).

Standard epsilon-prediction DDPM training (Ho et al., 2020) with classifier-free label
dropout, an EMA of the weights for sampling, a tqdm bar, periodic atomic checkpoints and
``resume=True`` that continues bit-for-bit from the latest one (optimiser, schedule, EMA and
the torch generator are all restored).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.checkpoint import Fingerprint, clean_stale_temps, data_digest, load_checkpoint, save_checkpoint
from ...core.errors import SlimguardError
from ...core.runs import atomic_write_json
from .config import TrainConfig
from .model import DiffusionModel, build_scheduler, build_unet, save_model, to_model_space
from .poison import ImageSet, PoisonedSet, load_data, poison_dataset

CKPT = "checkpoint.pt"
CKPT_KIND = "diffusion-train"


@dataclass
class TrainResult:
    model: DiffusionModel
    model_dir: Path
    steps: int
    seconds: float  # training wall time, summed over resumed calls
    cpu_seconds: float | None  # process CPU time of the steps (None if an older checkpoint did not record it)
    final_loss: float
    losses: list[float]
    data: ImageSet
    poisoned: PoisonedSet


def prepare_data(cfg: TrainConfig) -> tuple[ImageSet, PoisonedSet]:
    """The clean subset and its poisoned version, rebuilt deterministically from the config."""
    data = load_data(cfg.data)
    return data, poison_dataset(data.x_train, data.y_train, cfg.poison, data.num_classes)


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / max(1, cfg.warmup)
        prog = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))
    return f


def config_fingerprint(cfg: TrainConfig, ps: PoisonedSet) -> Fingerprint:
    """What a checkpoint must agree on to be resumed: the config but its checkpoint cadence, and the
    (poisoned) training images, which a caller may pass instead of the configured dataset."""
    return Fingerprint.of(cfg, exclude=("checkpoint_every",), train_data=data_digest(ps.x, ps.y))


def train_diffusion(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                    log=None, data: tuple[ImageSet, PoisonedSet] | None = None,
                    stop_after: int | None = None, device: str | None = None) -> TrainResult:
    """Train (or resume) and save ``run_dir/model``. ``data`` overrides the configured dataset
    (tests, user arrays); ``stop_after`` ends this call after that many steps, checkpointed,
    so a long run can be split across sessions with ``resume=True``. ``device``: see
    :func:`slimguard.core.models.resolve_device`; random draws stay on a CPU generator, so a
    run's batches, timesteps and noise are the same on every device."""
    import torch
    from tqdm.auto import tqdm

    from ...core.models import resolve_device

    dev = torch.device(resolve_device(device))

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data, ps = data if data is not None else prepare_data(cfg)
    np.savez_compressed(run_dir / "poison.npz", poisoned_indices=ps.poisoned_indices, poisoned=ps.poisoned,
                        source_index=ps.source_index, duplicated=ps.duplicated, labels=ps.y)
    torch.manual_seed(cfg.seed)  # UNet init draws from the global generator inside diffusers
    unet = build_unet(cfg.model, cfg.data.image_size, data.num_classes)
    sched = build_scheduler(cfg.train_timesteps, cfg.beta_schedule)
    ema = build_unet(cfg.model, cfg.data.image_size, data.num_classes)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    unet.to(dev)
    ema.to(dev)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt = run_dir / CKPT
    clean_stale_temps(run_dir)
    fingerprint = config_fingerprint(cfg, ps)
    start, losses, prior_secs, prior_cpu = 0, [], 0.0, 0.0
    if resume:
        ck = load_checkpoint(ckpt, kind=CKPT_KIND, fingerprint=fingerprint)
        ck.restore(model=unet, optimizer=opt, scheduler=lr_sched, generators={"data": gen})
        ema.load_state_dict(ck.extra["ema"])  # same architecture: the fingerprint covers the model config
        start, losses, prior_secs = ck.step, list(ck.extra["losses"]), float(ck.extra["seconds"])
        prior_cpu = ck.extra["cpu_seconds"]
    x_all = to_model_space(ps.x).to(dev)
    y_all = torch.from_numpy(ps.y).to(dev)
    ac = sched.alphas_cumprod.to(dev)
    n_cls = data.num_classes
    unet.train()
    t0, c0 = time.perf_counter(), time.process_time()
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc="diffusion train", disable=not progress,
               dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(0, len(y_all), (cfg.batch_size,), generator=gen)
        drop = torch.rand(len(idx), generator=gen) < cfg.label_drop
        t = torch.randint(0, cfg.train_timesteps, (len(idx),), generator=gen)
        noise = torch.randn((len(idx), *x_all.shape[1:]), generator=gen)
        idx, drop, t, noise = idx.to(dev), drop.to(dev), t.to(dev), noise.to(dev)
        x0, y = x_all[idx], y_all[idx].clone()
        y[drop] = n_cls
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(xt, t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        # bias-corrected warm-up of the EMA decay, so short runs do not sample from the init
        d = min(cfg.ema_decay, (1 + step) / (10 + step)) if cfg.ema_decay > 0 else 0.0
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - d)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == end:
            save_checkpoint(ckpt, kind=CKPT_KIND, step=done, fingerprint=fingerprint, model=unet, optimizer=opt,
                            scheduler=lr_sched, generators={"data": gen},
                            extra={"ema": ema.state_dict(), "losses": losses,
                                   "seconds": prior_secs + time.perf_counter() - t0,
                                   "cpu_seconds": None if prior_cpu is None else prior_cpu + time.process_time() - c0})
            if log:
                log.info("step %d loss %.4f", done, float(np.mean(losses[-50:])))
    bar.close()
    secs = prior_secs + time.perf_counter() - t0
    cpu = None if prior_cpu is None else prior_cpu + time.process_time() - c0
    ema.eval()
    meta = {"class_names": data.class_names, "data_name": data.name, "train_config": cfg.to_dict(),
            "poison_stats": ps.stats}
    model = DiffusionModel(ema if cfg.ema_decay > 0 else unet.eval(), sched, n_cls, cfg.data.image_size, meta)
    save_model(model, run_dir / "model")
    atomic_write_json(run_dir / "losses.json", losses)
    return TrainResult(model, run_dir / "model", end, secs, cpu, float(np.mean(losses[-50:])) if losses else float("nan"),
                       losses, data, ps)


def training_data_of(model: DiffusionModel) -> tuple[TrainConfig, ImageSet, PoisonedSet]:
    """Rebuild the exact (poisoned) training data a saved model was trained on, from its config."""
    from ...core.config import build

    if "train_config" not in model.meta:
        raise SlimguardError("this diffusion model carries no train_config; it was not trained by slimguard")
    cfg = build(TrainConfig, model.meta["train_config"])
    data, ps = prepare_data(cfg)
    return cfg, data, ps

"""EdgeQAT trainer (Shen et al., 2024): QAT of a Llama-family LM with CE, distillation,
entropy and distribution guidance, checkpoints and exact ``--resume``, DDP under torchrun.

Runs unchanged under ``torchrun --nproc_per_node=N`` (gloo on CPU, nccl on GPU): each rank
takes a disjoint slice of the step's global batch; quantizer calibration all-reduces its
min/max so every rank starts from identical steps.

CPU example::

    SLIMGUARD_THREADS=1 slimguard quant train --steps 4 --set batch_size=2 --run qat-smoke
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...core.checkpoint import Fingerprint, clean_stale_temps, load_checkpoint, save_checkpoint
from ...core.errors import SlimguardError
from ...core.runs import Run
from .config import QuantTrainConfig
from .data import TokenBlocks, load_blocks
from .evaluate import EvalResult, evaluate
from .losses import edgeqat_loss
from .prepare import attach_recorder, prepare_qat, quantizer_parameters, state_of
from .quantizers import LSQPlus, WeightQuantizer, signed_range

CKPT = "checkpoint.pt"
CKPT_KIND = "quant-train"
MODEL_FILE = "qat_model.safetensors"


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    losses: list[float]
    seconds: float
    eval: EvalResult | None = None
    eval_fp: EvalResult | None = None
    history: list[dict] = field(default_factory=list)

    @property
    def skipped_steps(self) -> int:
        """Updates skipped for a non-finite gradient norm (see :func:`train`)."""
        return sum(1 for h in self.history if h.get("skipped"))

    def to_dict(self) -> dict:
        return {"steps": self.steps, "final_loss": self.final_loss, "seconds": self.seconds,
                "skipped_steps": self.skipped_steps,
                "eval": self.eval.to_dict() if self.eval else None,
                "eval_fp": self.eval_fp.to_dict() if self.eval_fp else None}


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_dist(device: str) -> Dist:
    """Join the process group torchrun set up (if any) and pick the device."""
    from ...core.models import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    use_cuda = dev.startswith("cuda")
    if world == 1:
        return Dist(0, 1, torch.device(dev))
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return Dist(rank, world, torch.device("cuda", local))
    return Dist(rank, world, torch.device("cpu"))


def config_fingerprint(cfg: QuantTrainConfig) -> Fingerprint:
    """What a checkpoint must agree on to be resumed (everything but checkpoint cadence / eval size)."""
    return Fingerprint.of(cfg, exclude=("checkpoint_every", "eval_batches"))


def _lr_lambda(cfg: QuantTrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / (cfg.warmup + 1)
        prog = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))
    return f


def step_lr_scale(module) -> float:
    """Learning-rate multiplier for a quantizer's step, relative to the same quantizer at 4 bits.

    A step is about ``range / levels``, so an 8-bit step is ~18x smaller than a 4-bit one for the same
    tensor. LSQ's gradient scale ``1/sqrt(N * Qp)`` evens that out for SGD, but Adam normalises the
    gradient away and moves every parameter by ~lr per update, so one absolute rate that trains 4-bit
    steps (1e-3 against steps of ~1e-2) moved 8-bit steps (~5e-4) by twice their size each update and
    wrecked W8A8 (perplexity 48 -> 95 in 5 steps). Scaling the rate by the level count keeps the
    per-update change a similar fraction of the step at every bit width and leaves 4-bit exactly as it was.
    """
    if isinstance(module, WeightQuantizer):
        return signed_range(4)[1] / module.qp
    if isinstance(module, LSQPlus):
        return (2 ** 4 - 1) / (2 ** module.bits - 1)
    return 1.0


def _quantizer_groups(model, qparams, base_lr: float) -> list[dict]:
    """The trainable ones of ``qparams`` (``quantizer_parameters(model)``) grouped by learning rate: steps
    scaled by ``step_lr_scale``; LSQ+ offsets (in activation units) and clip ratios (in [0.05, 1]) do not
    depend on the bit width and keep ``base_lr``, as does any quantizer type ``step_lr_scale`` does not know."""
    todo = {id(p) for p in qparams if p.requires_grad}
    by_lr: dict[float, list] = {}
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if id(p) in todo:
                todo.discard(id(p))
                by_lr.setdefault(base_lr * (step_lr_scale(m) if name == "step" else 1.0), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": 0.0} for lr, ps in sorted(by_lr.items())]


def build_optimizer(model, cfg: QuantTrainConfig):
    qparams = quantizer_parameters(model)
    qids = {id(p) for p in qparams}
    # embeddings / tied LM head stay frozen: they are not quantized and dominate optimizer cost
    emb = model.get_input_embeddings().weight
    emb.requires_grad_(False)
    weights = [p for n, p in model.named_parameters() if p.requires_grad and id(p) not in qids and p.dim() == 2]
    others = [p for n, p in model.named_parameters() if p.requires_grad and id(p) not in qids and p.dim() != 2]
    groups = [{"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
              {"params": others, "lr": cfg.lr, "weight_decay": 0.0}] + _quantizer_groups(model, qparams, cfg.quantizer_lr)
    opt = torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    return opt, sched


def _trainable_state(model) -> dict:
    emb = model.get_input_embeddings().weight
    return {k: v for k, v in model.state_dict().items() if v.data_ptr() != emb.data_ptr()}


def train(cfg: QuantTrainConfig, *, run: Run | None = None, resume: bool = False, model=None, tokenizer=None,
          teacher=None, blocks: TokenBlocks | None = None, progress: bool = True, do_eval: bool = True,
          eval_fp: bool = True, stop_at: int | None = None, on_step=None) -> tuple[TrainResult, object]:
    """Train ``cfg``; returns the result and the (prepared, unconverted) student model.

    ``stop_at`` ends the call early at that step (as a kill would), for time-boxed runs and tests;
    ``resume=True`` then continues from the last checkpoint as if never interrupted. ``on_step(step, model)``
    is called on the main rank before the first update (step 0) and after each one (the demo evaluates
    held-out KL there for its curve)."""
    dist = setup_dist(cfg.device)
    torch.manual_seed(cfg.seed)
    if model is None:
        from ...core.models import load_causal_lm

        lm = load_causal_lm(cfg.model)
        model, tokenizer = lm.model, lm.tokenizer
    if blocks is None:
        blocks = load_blocks(tokenizer, cfg.datasets, cfg.eval_dataset, seq_len=cfg.seq_len, eval_frac=cfg.eval_frac)
    model.to(dist.device)
    need_teacher = cfg.loss.needs_teacher or (do_eval and eval_fp)
    if need_teacher and teacher is None:
        teacher = copy.deepcopy(model)
    if teacher is not None:
        teacher.to(dist.device).eval().requires_grad_(False)
        attach_recorder(teacher)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + dist.rank)
    prepare_qat(model, cfg.qat, generator=gen)
    st = state_of(model)
    with torch.no_grad():  # LSQ+ init from the same global batch on every rank
        model.eval()
        model(input_ids=blocks.batch(0, cfg.batch_size, cfg.seed).to(dist.device))
        st.reset()
    model.train()
    opt, sched = build_optimizer(model, cfg)
    start, losses, history = 0, [], []
    ckpt_path = run.path / CKPT if run is not None else None
    if ckpt_path is not None and dist.main:
        clean_stale_temps(run.path)  # a write killed mid-way leaves up to ~1.3 GB behind
    if resume:
        start, losses, history = _load_checkpoint(ckpt_path, cfg, model, opt, sched, gen)
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                  find_unused_parameters=True)
    tst = state_of(teacher) if teacher is not None else None
    record = cfg.loss.entropy or cfg.loss.distribution
    t0 = time.perf_counter()
    bar = None
    if progress and dist.main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"qat {cfg.qat.tag()}", unit="step")
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    n_skipped = sum(1 for h in history if h.get("skipped"))  # a resumed run counts its earlier skips too
    if on_step is not None and dist.main and start == 0:
        on_step(0, model)  # the prepared model before any update: where the curve starts
    for step in range(start, end):
        x = blocks.batch(step, cfg.batch_size, cfg.seed, dist.rank, dist.world).to(dist.device)
        st.reset()
        st.record = record
        t_logits = None
        if teacher is not None and cfg.loss.needs_teacher:
            tst.reset()
            tst.record = cfg.loss.distribution or cfg.loss.capped_entropy
            with torch.no_grad():
                t_logits = teacher(input_ids=x).logits
        logits = net(input_ids=x).logits
        parts = edgeqat_loss(cfg.loss, x, logits, st, t_logits, tst)
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        # an inf/NaN gradient (seen on CUDA after ~70 steps at batch 8 x 128) would turn every weight NaN
        # through AdamW; skip that update, as AMP's GradScaler does, and record it
        skipped = not bool(torch.isfinite(norm))
        if not skipped:
            opt.step()
        sched.step()
        st.reset()
        if tst is not None:
            tst.reset()
        loss = _mean_across(parts.total.detach(), dist)
        losses.append(loss)
        history.append({"step": step + 1, **parts.to_dict(), "loss": loss, **({"skipped": True} if skipped else {})})
        n_skipped += skipped
        if bar is not None:
            bar.update(1)
            # skipped updates show while the run goes, not only in the warning at the end
            bar.set_postfix(loss=f"{loss:.3f}", **({"skipped": n_skipped} if n_skipped else {}))
        if ckpt_path is not None and dist.main and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            _save_checkpoint(ckpt_path, cfg, step + 1, model, opt, sched, gen, losses, history)
            if run is not None:
                run.log.info("step %d loss %.4f, %d updates skipped so far (checkpoint)", step + 1, loss, n_skipped)
        if on_step is not None and dist.main:
            on_step(step + 1, model)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    st.record = False
    result = TrainResult(cfg.steps, losses[-1] if losses else float("nan"), losses, seconds, history=history)
    if result.skipped_steps and dist.main:
        import warnings

        warnings.warn(f"quant train: {result.skipped_steps} of {len(history)} updates skipped for a non-finite "
                      "gradient norm; lower quantizer_lr or check the quantizer steps", RuntimeWarning, stacklevel=2)
    if do_eval and dist.main:
        ev = blocks.eval_batches(cfg.eval_batches, cfg.batch_size)
        result.eval = evaluate(model, ev, teacher=teacher, device=dist.device)
        if eval_fp and teacher is not None:
            result.eval_fp = evaluate(teacher, ev, device=dist.device)
    if run is not None and dist.main:
        from safetensors.torch import save_model

        save_model(model, str(run.artefact(MODEL_FILE)))
        run.save_metrics({**result.to_dict(), "world_size": dist.world, "device": str(dist.device),
                          "losses": losses, "threads": torch.get_num_threads()})
    return result, model


def _mean_across(x: torch.Tensor, dist: Dist) -> float:
    if dist.world > 1:
        import torch.distributed as td

        x = x.clone()
        td.all_reduce(x)
        x /= dist.world
    return float(x)


def _save_checkpoint(path: Path, cfg, step, model, opt, sched, gen, losses, history) -> None:
    save_checkpoint(path, kind=CKPT_KIND, step=step, fingerprint=config_fingerprint(cfg), model=_trainable_state(model),
                    optimizer=opt, scheduler=sched, generators={"init": gen},
                    extra={"losses": losses, "history": history})


def _load_checkpoint(path: Path | None, cfg, model, opt, sched, gen):
    if path is None:
        raise SlimguardError("--resume needs a run (--run NAME) to find its checkpoint; start without --resume")
    ck = load_checkpoint(path, kind=CKPT_KIND, fingerprint=config_fingerprint(cfg))
    # the frozen input embeddings (and the LM head tied to them) are not saved: they never change
    ck.restore(model=model, optimizer=opt, scheduler=sched, generators={"init": gen},
               allow_missing=lambda k: k == "lm_head.weight" or "embed_tokens" in k)
    return ck.step, list(ck.extra["losses"]), list(ck.extra["history"])


def load_trained(run_dir: str | Path, *, converted: bool = True):
    """A trained run directory -> (model, tokenizer, config); converted by default."""
    from safetensors.torch import load_model

    from ...core.config import build
    from ...core.models import check_model_files, load_causal_lm, reading_model
    from .prepare import convert

    # before anything else reads the run (or the base model loads): a broken file fails at once, by name
    for name in ("config.json", MODEL_FILE):
        check_model_files(Path(run_dir) / name)
    run = Run.open(run_dir, need=("config.json", MODEL_FILE))
    cfg = build(QuantTrainConfig, run.config())
    lm = load_causal_lm(cfg.model)
    prepare_qat(lm.model, cfg.qat)
    with reading_model(run.path / MODEL_FILE, "trained QAT weights"):
        missing, unexpected = load_model(lm.model, str(run.path / MODEL_FILE), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise SlimguardError(f"{run.path / MODEL_FILE} does not match config.json's model and qat settings")
    if converted:
        convert(lm.model)
    return lm.model.eval(), lm.tokenizer, cfg

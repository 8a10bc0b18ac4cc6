"""Victim classifiers for textual backdoors: fine-tune a sequence classifier, predict probabilities.

The default victim is all-MiniLM-L6-v2 (a 6-layer BERT) with a fresh classification head,
as a stand-in for the BERT-base victims of BadNets/AddSent/PuncAttack papers. Any local
``transformers`` sequence-classification directory works, and so does a causal LM such as
SmolLM2-135M (``AutoModelForSequenceClassification`` adds a scoring head on the last token).
Training shows a tqdm bar, writes atomic checkpoints and resumes from them; the trained
model is saved with ``save_pretrained`` (safetensors).

``max_length`` (the victim's window) defaults to the data: see :mod:`.window` for the sizing
rule; the length used is written into the model folder, so defences read the same window.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pydantic import Field, model_validator

from ...core.checkpoint import Fingerprint, clean_stale_temps, data_digest, load_checkpoint, save_checkpoint
from ...core.config import Config
from ...core.data import TextSample
from ...core.errors import SlimguardError
from ...core.runs import atomic_write_json

META_FILE = "slimguard_victim.json"
CKPT_KIND = "backdoor-victim"


class VictimConfig(Config):
    """How the victim classifier is built and fine-tuned."""

    model: str = Field("minilm-l6", description="Asset name (minilm-l6, smollm2-135m) or a local transformers directory.")
    max_length: Optional[int] = Field(
        None, ge=8, description="Tokens per input (the victim's window, special tokens included); longer texts are "
                                "truncated. None = sized to the data: the length_percentile of the training texts' "
                                "token lengths, rounded up to a multiple of 32, capped at the encoder's limit. "
                                "Above the encoder's limit is an error.")
    length_percentile: float = Field(95.0, gt=0, le=100, description="Percentile of training token lengths that "
                                                                    "max_length=None covers.")
    epochs: float = Field(2.0, gt=0, le=50, description="Training epochs (fractions allowed).")
    batch_size: int = Field(32, ge=1, le=1024, description="Training batch size.")
    lr: float = Field(2e-4, gt=0, lt=1, description="AdamW peak learning rate (linear warm-up, linear decay).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_frac: float = Field(0.06, ge=0, lt=1, description="Fraction of steps spent warming up.")
    freeze_layers: int = Field(4, ge=0, description="Freeze the embeddings and this many lower transformer layers "
                                                    "(default 4 of MiniLM's 6: about half the CPU time per step).")
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clip (0 = off).")
    checkpoint_every: int = Field(50, ge=1, description="Save a resumable checkpoint every N optimiser steps.")
    eval_batch_size: int = Field(128, ge=1, description="Batch size for prediction.")

    @model_validator(mode="after")
    def _check(self):
        if not self.model.strip():
            raise ValueError("victim.model must name an asset or a directory")
        return self


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    seconds: float
    dev_acc: float | None
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0


def _silence():
    import transformers

    v = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    return v


def load_for_training(model: str, label_names: list[str]):
    """A sequence classifier with ``len(label_names)`` outputs and its tokenizer."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ...core.models import reading_model, resolve_model_dir

    src = resolve_model_dir(model)
    n = len(label_names)
    v = _silence()
    try:
        with reading_model(src, f"'{model}' as a sequence classifier"):
            tok = AutoTokenizer.from_pretrained(src)
            m = AutoModelForSequenceClassification.from_pretrained(
                src, num_labels=n, id2label=dict(enumerate(label_names)),
                label2id={k: i for i, k in enumerate(label_names)}, ignore_mismatched_sizes=True)
    finally:
        transformers.logging.set_verbosity(v)
    if tok.pad_token is None:  # causal LMs: pad with EOS so the head can find the last real token
        tok.pad_token = tok.eos_token
    m.config.pad_token_id = tok.pad_token_id
    return m, tok


def _freeze(model, n_layers: int) -> int:
    """Freeze embeddings + the first ``n_layers`` blocks of the first layer list found in the backbone."""
    import torch

    if n_layers <= 0:
        return 0
    base = getattr(model, model.base_model_prefix, model)
    blocks = next((m for m in base.modules() if isinstance(m, torch.nn.ModuleList)), None)
    if blocks is None:
        raise SlimguardError("victim.freeze_layers > 0 but the model has no layer list to freeze")
    if n_layers >= len(blocks):
        raise SlimguardError(f"victim.freeze_layers={n_layers} but the model has only {len(blocks)} layers")
    emb = model.get_input_embeddings()
    for p in emb.parameters():
        p.requires_grad_(False)
    if hasattr(base, "embeddings"):
        for p in base.embeddings.parameters():
            p.requires_grad_(False)
    for blk in blocks[:n_layers]:
        for p in blk.parameters():
            p.requires_grad_(False)
    return n_layers


def _batches(lengths: np.ndarray, bs: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled batches of similar length (less padding on CPU), a pure function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = 16 * bs
    chunks = [order[i:i + pool] for i in range(0, len(order), pool)]
    batches = []
    for c in chunks:
        c = c[np.argsort(lengths[c], kind="stable")]
        batches += [c[i:i + bs] for i in range(0, len(c), bs)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _validate_samples(samples: list[TextSample], n_labels: int, what: str) -> None:
    if not samples:
        raise SlimguardError(f"{what} set is empty; use a larger dataset or max_samples")
    bad = next((s for s in samples if not 0 <= s.label < n_labels), None)
    if bad is not None:
        raise SlimguardError(f"{what} sample uid={bad.uid} has label {bad.label}, outside 0..{n_labels - 1}")


def train_victim(train_samples: list[TextSample], dev_samples: list[TextSample], cfg: VictimConfig | dict,
                 out_dir: str | Path, *, label_names: list[str] | None = None, resume: bool = False,
                 seed: int = 0, checkpoint_dir: str | Path | None = None, keep_checkpoint: bool = False, progress: bool = True,
                 log: logging.Logger | None = None) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``train_samples``; save a safetensors model folder to ``out_dir``.

    With ``resume=True`` training continues from the last checkpoint in ``checkpoint_dir``
    (default ``<out_dir>/../checkpoints``) if there is one, and refuses one written for other data
    or settings; batch order is a function of (seed, epoch) and the torch RNG (dropout) is
    restored, so a resumed run sees exactly the batches the interrupted one would have.
    """
    import torch
    from tqdm.auto import tqdm

    from .window import size_window

    cfg = cfg if isinstance(cfg, VictimConfig) else VictimConfig(**cfg)
    # the window: the config's (checked against the encoder's limit) or sized to these texts
    _, sizing = size_window(cfg.model, cfg.max_length, {"train": [s.text for s in train_samples]},
                            percentile=cfg.length_percentile)
    if cfg.max_length is None:
        cfg = cfg.model_copy(update={"max_length": sizing.max_length})
        if log:
            log.info("victim max_length %d (the %g%% of training token lengths, %d texts still truncated)",
                     cfg.max_length, cfg.length_percentile, sizing.truncated["train"])
    if label_names is None:
        label_names = [str(i) for i in range(max(s.label for s in train_samples) + 1)]
    if len(label_names) < 2:
        raise SlimguardError("a classifier needs at least two labels")
    _validate_samples(train_samples, len(label_names), "training")
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir.parent / "checkpoints"
    ckpt = ckpt_dir / "last.pt"
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # the only global seed: the new head's initialisation inside from_pretrained
    model, tok = load_for_training(cfg.model, label_names)
    _freeze(model, cfg.freeze_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train_samples) / cfg.batch_size)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    warm = int(cfg.warmup_frac * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    step, history = 0, []
    clean_stale_temps(ckpt_dir)
    # the data is the caller's, not the config's: its digest (texts, labels, label names) is what makes a
    # checkpoint this run's; prediction batch size and checkpoint cadence do not change the weights
    fingerprint = Fingerprint.of(cfg, exclude=("checkpoint_every", "eval_batch_size"), seed=seed,
                                 label_names=label_names,
                                 train_data=data_digest([s.text for s in train_samples],
                                                        [s.label for s in train_samples]))
    ck = load_checkpoint(ckpt, kind=CKPT_KIND, fingerprint=fingerprint, missing_ok=True) if resume else None
    if ck is not None:
        ck.restore(model=model, optimizer=opt, scheduler=sched)
        step, history = ck.step, list(ck.extra["history"])
    resumed_from = step
    texts = [s.text for s in train_samples]
    labels = torch.tensor([s.label for s in train_samples])
    lengths = np.array([len(t) for t in texts])
    model.train()
    bar = tqdm(total=total, initial=step, desc=f"train {Path(str(cfg.model)).name}", disable=not progress,
               unit="step", leave=False)
    epoch = step // steps_per_epoch
    running = []
    while step < total:
        batches = _batches(lengths, cfg.batch_size, seed, epoch)
        for idx in batches[step - epoch * steps_per_epoch:]:
            if step >= total:
                break
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=cfg.max_length,
                      return_tensors="pt")
            out = model(**enc, labels=labels[idx])
            out.loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            running.append(float(out.loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}")
            if step % cfg.checkpoint_every == 0 and step < total:
                history.append({"step": step, "loss": float(np.mean(running[-cfg.checkpoint_every:]))})
                save_checkpoint(ckpt, kind=CKPT_KIND, step=step, fingerprint=fingerprint, model=model, optimizer=opt,
                                scheduler=sched, extra={"history": history})
                if log:
                    log.info("checkpoint step %d/%d loss %.4f", step, total, history[-1]["loss"])
        epoch += 1
    bar.close()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    atomic_write_json(out_dir / META_FILE, {"max_length": cfg.max_length, "label_names": label_names,
                                            "base_model": cfg.model, "steps": total})
    dev_acc = None
    if dev_samples:
        probs = predict_proba((model, tok), [s.text for s in dev_samples], cfg.eval_batch_size, max_length=cfg.max_length)
        dev_acc = float((probs.argmax(1) == np.array([s.label for s in dev_samples])).mean())
    if not keep_checkpoint:
        ckpt.unlink(missing_ok=True)
    res = TrainResult(out_dir, total, time.perf_counter() - t0, dev_acc, history, resumed_from)
    if log:
        log.info("trained %s: %d steps in %.1fs, dev acc %s", cfg.model, total, res.seconds, dev_acc)
    return res


def load_victim(model_dir: str | Path):
    """A trained victim folder -> (model, tokenizer), eval mode."""
    import transformers  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ...core.models import reading_model

    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise SlimguardError(f"{d} is not a transformers model folder (no config.json)")
    v = _silence()
    try:
        with reading_model(d, "victim classifier", fix="re-run the `backdoor attack` (or defence) that wrote it"):
            tok = AutoTokenizer.from_pretrained(d)
            model = AutoModelForSequenceClassification.from_pretrained(d)
    finally:
        transformers.logging.set_verbosity(v)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def _max_length_of(model_dir: Path | None, default: int = 128) -> int:
    if model_dir is not None and (model_dir / META_FILE).is_file():
        return int(json.loads((model_dir / META_FILE).read_text()).get("max_length", default))
    return default


def predict_proba(model_dir_or_loaded: Any, texts: list[str], batch_size: int = 64, *,
                  max_length: int | None = None) -> np.ndarray:
    """Class probabilities ``[n, n_labels]`` for ``texts``.

    ``model_dir_or_loaded`` is a model folder, a ``(model, tokenizer)`` pair or a
    :class:`slimguard.core.models.LoadedModel`. Texts are batched by length (results keep
    the input order); an empty string is a valid input.
    """
    import torch

    model_dir = None
    if isinstance(model_dir_or_loaded, (str, Path)):
        model_dir = Path(model_dir_or_loaded)
        model, tok = load_victim(model_dir)
    elif hasattr(model_dir_or_loaded, "model") and hasattr(model_dir_or_loaded, "tokenizer"):
        model, tok = model_dir_or_loaded.model, model_dir_or_loaded.tokenizer
    else:
        model, tok = model_dir_or_loaded
    ml = max_length or _max_length_of(model_dir)
    n_labels = model.config.num_labels
    out = np.zeros((len(texts), n_labels), dtype=np.float32)
    if not texts:
        return out
    order = np.argsort([len(t) for t in texts], kind="stable")
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            idx = order[i:i + batch_size]
            enc = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=ml, return_tensors="pt")
            out[idx] = torch.softmax(model(**enc).logits.float(), -1).numpy()
    model.train(was_training)
    return out

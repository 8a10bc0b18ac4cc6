"""Clean fine-tuning and fine-pruning (Liu et al., RAID 2018, "Fine-Pruning: Defending Against
Backdooring Attacks on Deep Neural Networks"; the "clean fine-tuning" baseline of the NLP
backdoor survey).

The defender owns a small clean set (the dev split). *Clean fine-tuning* continues training
the victim on it, hoping the backdoor is forgotten. *Fine-pruning* first removes the
last-layer feed-forward neurons that are least active on clean data (backdoor neurons tend
to be dormant on clean inputs), keeping them removed through ``torch.nn.utils.prune``'s
mask, then fine-tunes. The repaired model is saved as a safetensors folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ....core.data import TextSample
from ....core.errors import SlimguardError
from .base import DEFENCES, Calibration, Defence, DefenceConfig, DefenceInputs, HFClassifier


class FinetuneConfig(DefenceConfig):
    """Clean fine-tuning / fine-pruning on the clean dev set (post-training, repairs the model)."""

    mode: Literal["finetune", "fineprune"] = Field("finetune", description="finetune, or prune then fine-tune.")
    epochs: float = Field(3.0, gt=0, le=50, description="Passes over the clean set.")
    lr: float = Field(1e-4, gt=0, lt=1, description="AdamW learning rate (constant); higher forgets the backdoor faster.")
    train_batch_size: int = Field(32, ge=1, description="Training batch size.")
    prune_ratio: float = Field(0.3, ge=0, lt=1, description="fineprune: share of last-layer FFN neurons removed.")
    max_clean: int | None = Field(None, ge=8, description="Use at most this many clean samples (seeded subset).")


def last_ffn(model):
    """The last Linear that expands to the feed-forward width (BERT ``intermediate.dense``, Llama ``up_proj``)."""
    import torch

    width = getattr(model.config, "intermediate_size", None)
    cands = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == width]
    if not cands:
        raise SlimguardError("fineprune: found no feed-forward layer of width config.intermediate_size; use mode=finetune")
    return cands[-1]


def prune_dormant(clf: HFClassifier, texts: list[str], ratio: float) -> dict:
    """Mask the ``ratio`` least active neurons of the last FFN on clean ``texts``."""
    import torch
    from torch.nn.utils import prune

    lin = last_ffn(clf.model)
    acts: list[torch.Tensor] = []

    def hook(mod, inp, out):
        acts.append(torch.nn.functional.gelu(out.detach().float()).mean(dim=(0, 1)))

    h = lin.register_forward_hook(hook)
    try:
        clf.predict_proba(texts)
    finally:
        h.remove()
    act = torch.stack(acts).mean(0)
    k = int(round(ratio * act.numel()))
    mask = torch.ones_like(lin.weight)
    off = torch.argsort(act)[:k]
    mask[off] = 0
    prune.custom_from_mask(lin, "weight", mask)
    if lin.bias is not None:
        bmask = torch.ones_like(lin.bias)
        bmask[off] = 0
        prune.custom_from_mask(lin, "bias", bmask)
    return {"pruned": k, "of": int(act.numel()), "layer_width": int(act.numel())}


def fit_on(clf: HFClassifier, samples: list[TextSample], *, epochs: float, lr: float, batch_size: int,
           seed: int, progress: bool = True) -> list[float]:
    """A short AdamW loop over ``samples`` (minutes at most: no checkpoints)."""
    import torch
    from tqdm.auto import tqdm

    model, tok = clf.model, clf.tokenizer
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    n = len(samples)
    steps = max(1, int(round(epochs * np.ceil(n / batch_size))))
    rng = np.random.default_rng([seed, 51])
    order = np.concatenate([rng.permutation(n) for _ in range(int(np.ceil(epochs)) + 1)])
    labels = torch.tensor([s.label for s in samples])
    losses = []
    model.train()
    for step in tqdm(range(steps), desc="clean fine-tune", disable=not progress, leave=False):
        idx = order[step * batch_size:(step + 1) * batch_size]
        enc = tok([samples[i].text for i in idx], padding=True, truncation=True, max_length=clf.max_length,
                  return_tensors="pt")
        loss = model(**enc, labels=labels[idx]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@DEFENCES.register("finetune")
class Finetune(Defence):
    name, stage, kind, config_type = "finetune", "post", "repair", FinetuneConfig

    def __init__(self, cfg: FinetuneConfig, *, out_dir: str | Path | None = None):
        super().__init__(cfg)
        self.cfg: FinetuneConfig = cfg
        self.out_dir = Path(out_dir) if out_dir else None

    def repair(self, inputs: DefenceInputs) -> HFClassifier:
        import copy

        src = inputs.need_classifier(self.name)
        if not isinstance(src, HFClassifier):
            raise SlimguardError("finetune trains the victim, so it needs a transformers victim (a run's model/ folder)")
        clean = list(inputs.dev)
        if self.cfg.max_clean is not None and len(clean) > self.cfg.max_clean:
            pick = np.sort(np.random.default_rng([self.cfg.seed, 52]).permutation(len(clean))[:self.cfg.max_clean])
            clean = [clean[i] for i in pick]
        if len(clean) < self.cfg.min_dev:
            raise SlimguardError(f"finetune: the clean dev set has {len(clean)} samples; fine-tuning on fewer than "
                                 f"min_dev={self.cfg.min_dev} is not a defence; use a larger dev split")
        import torch

        torch.manual_seed(self.cfg.seed)  # dropout masks during fine-tuning
        clf = HFClassifier(copy.deepcopy(src.model), src.tokenizer, max_length=src.max_length, batch_size=src.batch_size)
        info = {}
        if self.cfg.mode == "fineprune" and self.cfg.prune_ratio > 0:
            info = prune_dormant(clf, [s.text for s in clean], self.cfg.prune_ratio)
        losses = fit_on(clf, clean, epochs=self.cfg.epochs, lr=self.cfg.lr, batch_size=self.cfg.train_batch_size,
                        seed=self.cfg.seed)
        if info:
            from torch.nn.utils import prune

            lin = last_ffn(clf.model)
            for name in ("weight", "bias"):
                if prune.is_pruned(lin) and hasattr(lin, f"{name}_orig"):
                    prune.remove(lin, name)  # bake the mask in, so save_pretrained writes plain weights
        if self.out_dir is not None:
            clf.model.save_pretrained(self.out_dir, safe_serialization=True)
            clf.tokenizer.save_pretrained(self.out_dir)
        self.calibration = Calibration(float("nan"), len(clean), f"{self.cfg.mode} on {len(clean)} clean dev samples",
                                       {"loss_first": losses[0], "loss_last": losses[-1], **info})
        return clf

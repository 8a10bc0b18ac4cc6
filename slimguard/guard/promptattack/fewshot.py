"""Prompt-based classifiers: zero-shot, few-shot (K per class) and fully trained heads.

The head scores class c as ``logsumexp_m(f . W[c, m] + b[c, m])`` over its label words m,
where f is the victim's answer-slot representation. Zero-shot uses the model's own output
rows of the label words (plain verbalizer scoring). Few-shot (K = 16, 32 per class) and
"full" fit the same head, initialised from the verbalizer and pulled back towards it by an
L2 term: a *calibrated verbalizer head* in the spirit of LM-BFF / contextual calibration
(Zhao et al., 2021). The backbone stays frozen in every setting, so the template still
decides the features the head sees -- which is what a template attack exploits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...core.data import TextSample
from ...core.errors import DataError
from .templates import Template, Verbalizer
from .victims import PreparedBatch, Victim

SETTINGS = ("zeroshot", "fewshot", "full")


class VerbalizerHead(torch.nn.Module):
    def __init__(self, W: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.W = torch.nn.Parameter(W.clone())
        self.b = torch.nn.Parameter(b.clone().masked_fill(torch.isinf(b), 0.0))
        self.register_buffer("valid", ~torch.isinf(b))
        self.register_buffer("W0", W.clone())
        self.register_buffer("b0", self.b.detach().clone())

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        s = torch.einsum("bd,cmd->bcm", f.float(), self.W) + self.b
        return torch.logsumexp(s.masked_fill(~self.valid, float("-inf")), dim=-1)


@dataclass
class PromptClassifier:
    """A victim + benign template + verbalizer + head: the model the attacker faces."""

    victim: Victim
    template: Template
    verbalizer: Verbalizer
    head: VerbalizerHead
    setting: str
    k: int | None = None
    seed: int = 0
    fit_info: dict = field(default_factory=dict)

    @property
    def infix_ids(self) -> list[int]:
        return self.victim.encode_infix(self.template)

    def logits(self, batch: PreparedBatch, infix_ids: list[int] | None = None,
               infix_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if infix_ids is None and infix_embeds is None:
            infix_ids = self.infix_ids
        return self.head(self.victim.features(batch, infix_ids=infix_ids, infix_embeds=infix_embeds))

    @torch.no_grad()
    def predict(self, batches: list[PreparedBatch], infix_ids: list[int] | None = None) -> dict[int, int]:
        """uid -> predicted label."""
        out: dict[int, int] = {}
        for b in batches:
            for uid, p in zip(b.uids, self.logits(b, infix_ids).argmax(-1).tolist()):
                out[uid] = p
        return out


def sample_k_shot(train: list[TextSample], k: int, num_classes: int, rng: np.random.Generator) -> list[TextSample]:
    out = []
    for c in range(num_classes):
        pool = [s for s in train if s.label == c]
        if len(pool) < k:
            raise DataError(f"only {len(pool)} training examples of class {c}; need k={k} per class (lower k)")
        out += [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
    return out


def shot_features(victim: Victim, template: Template, samples: list[TextSample], batch_size: int = 32):
    """(features [N, d], labels [N]) under the benign template, in the order of ``samples``."""
    return _features(victim, template, samples, batch_size)


def _features(victim: Victim, template: Template, samples: list[TextSample], batch_size: int):
    infix = victim.encode_infix(template)
    feats, labels, uids = [], [], []
    batches = victim.prepare([s.text for s in samples], [s.label for s in samples], [s.uid for s in samples],
                             template, batch_size)
    with torch.no_grad():
        for b in batches:
            feats.append(victim.features(b, infix_ids=infix).float())
            labels.append(b.labels)
            uids += b.uids
    pos = {u: i for i, u in enumerate(uids)}
    order = torch.tensor([pos[s.uid] for s in samples], dtype=torch.long)
    return torch.cat(feats)[order], torch.cat(labels)[order]


def fit_head(head: VerbalizerHead, feats: torch.Tensor, labels: torch.Tensor, *, steps: int = 200, lr: float = 0.001,
             l2: float = 0.1) -> dict:
    """Cross-entropy on the K-shot features plus ``l2 * ||theta - theta_0||^2`` (full-batch Adam)."""
    opt = torch.optim.Adam([head.W, head.b], lr=lr)
    scale = float(head.W0.norm(dim=-1)[head.valid].mean()) ** 2
    for _ in range(steps):
        ce = torch.nn.functional.cross_entropy(head(feats), labels)
        reg = ((head.W - head.W0) ** 2).sum() / scale + ((head.b - head.b0) ** 2).sum()
        loss = ce + l2 * reg
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((head(feats).argmax(-1) == labels).float().mean())
    return {"train_ce": float(ce.detach()), "train_acc": acc}


def build_classifier(victim: Victim, template: Template, verbalizer: Verbalizer, train: list[TextSample], *,
                     setting: str = "fewshot", k: int = 16, n_full: int = 1000, seed: int = 0,
                     head_steps: int = 200, head_lr: float = 0.001, head_l2: float = 0.1,
                     batch_size: int = 32, features: tuple[torch.Tensor, torch.Tensor] | None = None) -> PromptClassifier:
    """``features`` (feats, labels) skips extraction: the benchmark reuses one K=32 draw for K=16."""
    if setting not in SETTINGS:
        raise DataError(f"setting must be one of {', '.join(SETTINGS)}, got '{setting}'")
    W, b = victim.word_weights(verbalizer)
    if W.shape[0] > 0 and train and max(s.label for s in train) >= W.shape[0]:
        raise DataError(f"dataset has {max(s.label for s in train) + 1} classes but the verbalizer only {W.shape[0]}")
    head = VerbalizerHead(W, b)
    info: dict = {"setting": setting}
    if setting != "zeroshot" and features is not None:
        torch.manual_seed(seed)
        info.update(fit_head(head, *features, steps=head_steps, lr=head_lr, l2=head_l2), n_train=len(features[1]))
    elif setting != "zeroshot":
        rng = np.random.default_rng(seed)
        if setting == "fewshot":
            shots = sample_k_shot(train, k, W.shape[0], rng)
        else:
            if not train:
                raise DataError("the training split is empty; the 'full' setting needs labelled training examples")
            shots = [train[i] for i in rng.permutation(len(train))[:n_full]]
        torch.manual_seed(seed)
        feats, labels = _features(victim, template, shots, batch_size)
        info.update(fit_head(head, feats, labels, steps=head_steps, lr=head_lr, l2=head_l2), n_train=len(shots))
    head.requires_grad_(False)
    return PromptClassifier(victim, template, verbalizer, head, setting, k if setting == "fewshot" else None,
                            seed, info)

"""RAP (Yang et al., EMNLP 2021, "RAP: Robustness-Aware Perturbations for Defending against
Backdoor Attacks on NLP Models").

One rare word (the "RAP trigger") is inserted at the start of every input, and only its word
embedding is trained, on clean target-label dev samples, so that it lowers the victim's
target-label probability by between ``lower`` and ``upper``. Inputs carrying a backdoor
trigger are far more robust: their target probability barely moves. Suspicion is minus that
drop; the threshold rejects at most ``frr`` of clean dev inputs. Only inputs the victim
sends to the target label can be backdoored, so the others are never rejected.

The embedding is trained through a forward hook on the victim's input-embedding module
(the rest of the model stays frozen) and written back into the embedding matrix.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ....core.errors import SlimguardError
from .base import (DEFENCES, Calibration, Defence, DefenceConfig, DefenceInputs, Detection, HFClassifier, need_dev,
                   threshold_at_frr)


class RapConfig(DefenceConfig):
    """RAP: a trained perturbation word; robust (poisoned) inputs barely react (post-training, detects)."""

    word: str = Field("mb", description="RAP trigger word; must be ONE token of the victim's vocabulary "
                      "and differ from the attack's trigger words.")
    lower: float = Field(0.1, ge=0, lt=1, description="Smallest target-probability drop the RAP word should cause on clean inputs.")
    upper: float = Field(0.3, gt=0, le=1, description="Largest target-probability drop it should cause.")
    scale: float = Field(1.0, gt=0, description="Weight of the 'drop too small' term of the loss (lambda in the paper).")
    epochs: int = Field(5, ge=1, le=100, description="Passes over the RAP training samples.")
    lr: float = Field(0.05, gt=0, description="Adam learning rate for the RAP word embedding.")
    train_size: int = Field(256, ge=8, description="Clean target-label dev samples used to train the embedding (seeded subset).")
    frr: float = Field(0.01, gt=0, lt=1, description="False rejection rate on clean dev data that sets the threshold.")

    @model_validator(mode="after")
    def _range(self):
        if self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        if not self.word.strip() or " " in self.word.strip():
            raise ValueError("word must be a single word")
        return self


@DEFENCES.register("rap")
class Rap(Defence):
    name, stage, kind, config_type = "rap", "post", "detect", RapConfig

    def __init__(self, cfg: RapConfig):
        super().__init__(cfg)
        self.cfg: RapConfig = cfg
        self.clf: HFClassifier | None = None
        self.rap_clf: HFClassifier | None = None
        self.target = 1
        self.threshold: float | None = None
        self.history: list[float] = []

    def _with_word(self, texts: list[str]) -> list[str]:
        return [f"{self.cfg.word} {t}" for t in texts]

    def _train_embedding(self, model, tok, texts: list[str], p_orig: np.ndarray) -> None:
        import torch

        ids = tok(self.cfg.word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == tok.unk_token_id:
            raise SlimguardError(f"rap.word '{self.cfg.word}' is not a single token of the victim's vocabulary "
                                 f"({len(ids)} tokens); pick another rare word")
        rid = ids[0]
        emb = model.get_input_embeddings()
        for p in model.parameters():
            p.requires_grad_(False)
        e = torch.nn.Parameter(emb.weight[rid].detach().clone())

        def hook(mod, inp, out):  # put the trainable row wherever the RAP word occurs
            m = (inp[0] == rid).unsqueeze(-1)
            return torch.where(m, e.to(out.dtype), out)

        h = emb.register_forward_hook(hook)
        opt = torch.optim.Adam([e], lr=self.cfg.lr)
        g = torch.Generator().manual_seed(self.cfg.seed)
        model.eval()  # no dropout: the perturbation is fitted to the deployed model
        bs = min(self.cfg.batch_size, 32)
        try:
            for _ in range(self.cfg.epochs):
                order = torch.randperm(len(texts), generator=g).tolist()
                losses = []
                for i in range(0, len(order), bs):
                    idx = order[i:i + bs]
                    enc = tok(self._with_word([texts[j] for j in idx]), padding=True, truncation=True,
                              max_length=self.clf.max_length, return_tensors="pt")
                    p = torch.softmax(model(**enc).logits.float(), -1)[:, self.target]
                    drop = torch.as_tensor(p_orig[idx], dtype=torch.float32) - p
                    loss = (self.cfg.scale * torch.relu(self.cfg.lower - drop) + torch.relu(drop - self.cfg.upper)).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                self.history.append(float(np.mean(losses)))
        finally:
            h.remove()
        with torch.no_grad():
            emb.weight[rid] = e.detach()

    def drops(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(target-probability drop caused by the RAP word, predicted label without it)."""
        p0 = self.clf.predict_proba(texts)
        p1 = self.rap_clf.predict_proba(self._with_word(texts))
        return p0[:, self.target] - p1[:, self.target], p0.argmax(1)

    def fit(self, inputs: DefenceInputs) -> "Rap":
        clf = inputs.need_classifier("rap")
        if not isinstance(clf, HFClassifier):
            raise SlimguardError("rap trains a word embedding, so it needs a transformers victim (a run's model/ folder)")
        self.clf, self.target = clf, inputs.target_label
        import copy

        model = copy.deepcopy(clf.model)
        texts = [s.text for s in inputs.dev]
        p = clf.predict_proba(texts)
        on_target = [i for i, s in enumerate(inputs.dev) if s.label == self.target and p[i].argmax() == self.target]
        need_dev(on_target, self.cfg, "rap (clean dev samples of the target label the victim gets right)")
        rng = np.random.default_rng([self.cfg.seed, 31])
        pick = np.sort(rng.permutation(len(on_target))[:self.cfg.train_size])
        tr = [on_target[i] for i in pick]
        self._train_embedding(model, clf.tokenizer, [texts[i] for i in tr], p[tr, self.target])
        self.rap_clf = HFClassifier(model, clf.tokenizer, max_length=clf.max_length, batch_size=clf.batch_size)
        # calibrate on every clean dev input the victim sends to the target label
        pred_t = [i for i in range(len(texts)) if p[i].argmax() == self.target]
        need_dev(pred_t, self.cfg, "rap (clean dev samples predicted as the target label)")
        d, _ = self.drops([texts[i] for i in pred_t])
        self.threshold = threshold_at_frr(-d, self.cfg.frr)
        self.calibration = Calibration(self.threshold, len(pred_t),
                                       f"reject <= {self.cfg.frr:.0%} of clean dev inputs predicted as the target",
                                       {"train_size": len(tr), "loss_per_epoch": self.history,
                                        "dev_drop_mean": float(d.mean()),
                                        "dev_drop_in_range": float(((d >= self.cfg.lower) & (d <= self.cfg.upper)).mean())})
        return self

    def detect(self, texts: list[str]) -> Detection:
        d, pred = self.drops(list(texts))
        scores = np.where(pred == self.target, -d, -np.inf)
        return Detection.from_scores(scores, self.threshold)

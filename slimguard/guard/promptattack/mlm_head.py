"""A masked-LM head for all-MiniLM-L6-v2, trained here (the released model ships none).

BERT's MLM head (dense + GELU + LayerNorm, then the word-embedding matrix as decoder) is
built by ``transformers.BertForMaskedLM``; only the head's transform and output bias are
trained, with the encoder and the (tied) embeddings frozen, on 15%-masked sentences from
the text assets (Rotten Tomatoes, SMS spam, Paul Graham essays). The result is cached as
safetensors with its training record, so every run reports the same head.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...core.errors import SlimguardError


def trained_dir() -> Path:
    from ...core.assets import home

    return home() / "trained"


def _corpus(n: int, seed: int) -> list[str]:
    import numpy as np

    from ...core.data import load_long_texts, load_text_dataset

    texts: list[str] = []
    for ds in ("rotten-tomatoes", "sms-spam"):
        texts += [s.text for s in load_text_dataset(ds, seed=seed).train]
    for essay in load_long_texts("pg-essays"):
        texts += [s.strip() for s in essay.split(". ") if len(s.split()) > 5]
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.permutation(len(texts))[:n]]


def train_mlm_head(encoder: str = "minilm-l6", *, steps: int = 60, batch_size: int = 32, lr: float = 5e-3,
                   seed: int = 0, progress: bool = True):
    """Train the head; returns (model, tokenizer, record) with record = held-out masked-token accuracy etc."""
    import torch
    import transformers
    from tqdm import tqdm
    from transformers import AutoTokenizer, BertForMaskedLM

    from ...core.models import reading_model, resolve_model_dir

    if steps < 1 or batch_size < 1:
        raise SlimguardError(f"MLM head training needs steps >= 1 and batch_size >= 1 (got {steps}, {batch_size})")
    src = resolve_model_dir(encoder)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with reading_model(src, "encoder"):
            tok = AutoTokenizer.from_pretrained(src)
            model = BertForMaskedLM.from_pretrained(src)
    finally:
        transformers.logging.set_verbosity(verbosity)
    g = torch.Generator().manual_seed(seed)
    texts = _corpus(steps * batch_size + 512, seed)
    held, texts = texts[:512], texts[512:]
    model.requires_grad_(False)
    params = list(model.cls.predictions.transform.parameters()) + [model.cls.predictions.bias]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)

    def masked(batch: list[str]):
        enc = tok(batch, padding=True, truncation=True, max_length=48, return_tensors="pt")
        ids = enc.input_ids.clone()
        special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (ids == tok.pad_token_id)
        pick = (torch.rand(ids.shape, generator=g) < 0.15) & ~special
        labels = torch.where(pick, ids, torch.full_like(ids, -100))
        ids[pick] = tok.mask_token_id
        return ids, enc.attention_mask, labels

    model.train()
    bar = tqdm(range(steps), desc="MLM head for " + encoder, disable=not progress, leave=False)
    for step in bar:
        ids, mask, labels = masked(texts[step * batch_size:(step + 1) * batch_size])
        with torch.no_grad():
            h = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        sel = labels != -100  # score only masked positions: the 30k-way decoder dominates the cost
        logits = model.cls(h[sel])
        loss = torch.nn.functional.cross_entropy(logits, labels[sel])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.2f}")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for i in range(0, len(held), 64):
            ids, mask, labels = masked(held[i:i + 64])
            sel = labels != -100
            pred = model.cls(model.bert(input_ids=ids, attention_mask=mask).last_hidden_state[sel]).argmax(-1)
            correct += int((pred == labels[sel]).sum())
            total += int(sel.sum())
    record = {"encoder": encoder, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
              "heldout_masked_token_acc": correct / max(total, 1), "heldout_masked_tokens": total,
              "trained": "MLM head transform + output bias only; encoder and embeddings frozen"}
    return model, tok, record


def load_or_train_mlm(encoder: str = "minilm-l6", *, steps: int = 60, seed: int = 0, retrain: bool = False,
                      progress: bool = True):
    """Cached head under ``<slimguard home>/trained/<encoder>-mlm-head``; trains it on first use."""
    import transformers
    from transformers import AutoTokenizer, BertForMaskedLM

    from ...core.models import reading_model
    from ...core.runs import atomic_write_json

    out = trained_dir() / f"{Path(encoder).name}-mlm-head-s{steps}-seed{seed}"
    if not retrain and (out / "model.safetensors").is_file():
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        try:
            with reading_model(out, "trained MLM head", fix=f"delete {out} to train it again"):
                model = BertForMaskedLM.from_pretrained(out)
                tok = AutoTokenizer.from_pretrained(out)
        finally:
            transformers.logging.set_verbosity(verbosity)
        return model.eval(), tok
    model, tok, record = train_mlm_head(encoder, steps=steps, seed=seed, progress=progress)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    atomic_write_json(tmp / "training.json", record)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return model, tok


def mlm_record(encoder: str = "minilm-l6", *, steps: int = 60, seed: int = 0) -> dict:
    p = trained_dir() / f"{Path(encoder).name}-mlm-head-s{steps}-seed{seed}" / "training.json"
    return json.loads(p.read_text()) if p.is_file() else {}

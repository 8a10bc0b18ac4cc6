"""LLMLingua-2 training (Pan et al., 2024, Sec. 3.3): a 2-label token classifier on distilled word labels.

Word labels are copied to every sub-token; cross-entropy; AdamW with linear warm-up and
decay. The result is a plain ``transformers`` token-classification directory
(safetensors + tokenizer + config) that both :class:`PromptCompressor` and the
``llmlingua`` package load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...core.checkpoint import Fingerprint, clean_stale_temps, load_checkpoint, save_checkpoint
from ...core.errors import SlimguardError
from ...core.runs import atomic_write_json, git_commit, now_iso
from .config import TrainConfig

CKPT = "state.pt"
CKPT_KIND = "compress-train"


@dataclass
class TrainResult:
    out: Path
    steps: int
    train_loss: float
    eval_accuracy: float
    eval_f1_keep: float
    eval_keep_fraction: float
    n_train_windows: int
    n_eval_windows: int
    eval_curve: list = field(default_factory=list)  # {step, train_loss, accuracy, f1_keep, keep_fraction, tokens}


@dataclass
class Window:
    ids: list[int]
    labels: list[int]


def load_distilled(paths: list[str]):
    from datasets import concatenate_datasets, load_from_disk

    parts = []
    for p in paths:
        d = Path(p)
        if (d / "dataset").is_dir():
            d = d / "dataset"
        if not (d / "dataset_info.json").exists() and not (d / "state.json").exists():
            raise SlimguardError(f"{p} is not a distilled dataset; run `slimguard compress distill` and pass its "
                                 "run directory or its dataset/ folder")
        parts.append(load_from_disk(str(d)))
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def make_windows(records, tokenizer, max_len: int) -> list[Window]:
    """Tokenise each chunk, copy word labels to sub-tokens, split into windows of ``max_len - 2`` tokens."""
    body = max_len - 2
    out = []
    for r in records:
        enc = tokenizer(r["text"], add_special_tokens=False, return_offsets_mapping=True)
        offs = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        if not len(offs):
            continue
        starts = np.asarray(r["starts"], dtype=np.int64)
        lab = np.asarray(r["labels"], dtype=np.int64)
        w = np.clip(np.searchsorted(starts, offs[:, 0], side="right") - 1, 0, len(starts) - 1)
        tl = lab[w]
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        for s in range(0, len(ids), body):
            if len(ids) - s < 16 and s > 0:
                break
            out.append(Window([tokenizer.cls_token_id] + ids[s:s + body].tolist() + [tokenizer.sep_token_id],
                              [-100] + tl[s:s + body].tolist() + [-100]))
    return out


def _batch(ws: list[Window], pad: int):
    import torch

    L = max(len(w.ids) for w in ws)
    ids = torch.full((len(ws), L), pad, dtype=torch.long)
    lab = torch.full((len(ws), L), -100, dtype=torch.long)
    mask = torch.zeros((len(ws), L), dtype=torch.long)
    for i, w in enumerate(ws):
        n = len(w.ids)
        ids[i, :n], lab[i, :n], mask[i, :n] = torch.tensor(w.ids), torch.tensor(w.labels), 1
    return ids, mask, lab


def evaluate(model, windows: list[Window], pad: int, batch_size: int = 8) -> dict:
    import torch

    tp = fp = fn = correct = total = kept = 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            ids, mask, lab = _batch(windows[i:i + batch_size], pad)
            pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            on = lab != -100
            p, y = pred[on], lab[on]
            tp += int(((p == 1) & (y == 1)).sum())
            fp += int(((p == 1) & (y == 0)).sum())
            fn += int(((p == 0) & (y == 1)).sum())
            correct += int((p == y).sum())
            total += int(on.sum())
            kept += int((p == 1).sum())
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    return {"accuracy": correct / max(1, total), "f1_keep": f1, "keep_fraction": kept / max(1, total), "tokens": total}


def config_fingerprint(cfg: TrainConfig) -> Fingerprint:
    """What a checkpoint must agree on to be resumed: all but the checkpoint cadence and the output folder.
    ``steps`` stays in: the learning-rate decay is a function of it."""
    return Fingerprint.of(cfg, exclude=("save_every", "out", "eval_every"))


def distilled_from(paths: list[str]) -> list[dict]:
    """What each distilled dataset was made from (signal, teacher, sources, held-out documents), from its
    ``provenance.json``: the benchmark reads it to refuse an out-of-domain source that was distilled."""
    out = []
    for p in paths:
        d = Path(p)
        d = d / "dataset" if (d / "dataset").is_dir() else d
        f = d / "provenance.json"
        if f.exists():
            prov = json.loads(f.read_text())
            cfg = prov.get("config", {})
            out.append({"path": str(d), "signal": prov.get("signal"), "teacher": prov.get("teacher"),
                        "sources": cfg.get("sources"), "holdout_docs": cfg.get("holdout_docs"),
                        "chunks": len(prov.get("chunks", []))})
    return out


def train(cfg: TrainConfig, out: str | Path, *, ckpt_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True, log=None, stop_at: int | None = None) -> TrainResult:
    """Train and save the compressor to ``out``, checkpointing to ``ckpt_dir`` (default ``.<out>.ckpt``
    beside it). ``stop_at`` ends training at that step (as a kill would, for time-boxed runs and tests);
    ``resume=True`` continues from the last checkpoint exactly as an uninterrupted run would."""
    import torch
    from tqdm import tqdm

    from ...core.models import load_encoder

    out = Path(out)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else out.parent / f".{out.name}.ckpt"
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = load_distilled(cfg.data)
    enc = load_encoder(cfg.base, head="token", num_labels=2)
    model, tok = enc.model, enc.tokenizer
    model.config.id2label, model.config.label2id = {0: "drop", 1: "keep"}, {"drop": 0, "keep": 1}
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(data))
    n_eval = int(round(cfg.eval_frac * len(data)))
    eval_w = make_windows([data[int(i)] for i in order[:n_eval]], tok, cfg.max_len)
    train_w = make_windows([data[int(i)] for i in order[n_eval:]], tok, cfg.max_len)
    if not train_w:
        raise SlimguardError("the distilled dataset has no training text; distill more chunks")
    if cfg.freeze_layers:
        base = getattr(model, model.base_model_prefix)
        frozen = [base.embeddings] + list(base.encoder.layer[: cfg.freeze_layers])
        for m in frozen:
            m.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)) * max(0.0, 1 - s / cfg.steps))
    step, losses, curve = 0, [], []
    state = ckpt_dir / CKPT
    clean_stale_temps(ckpt_dir)
    fingerprint = config_fingerprint(cfg)
    perm = pos = None
    if resume:
        ck = load_checkpoint(state, kind=CKPT_KIND, fingerprint=fingerprint)
        ck.restore(model=model, optimizer=opt, scheduler=sched, generators={"data": gen})
        # the epoch's order and the place in it, so a resumed run sees the batches the interrupted one would have
        step, losses, perm, pos = ck.step, list(ck.extra["losses"]), ck.extra["perm"], int(ck.extra["pos"])
        curve = list(ck.extra.get("curve", []))
    model.train()
    pad = tok.pad_token_id or 0
    if perm is None:
        perm, pos = torch.randperm(len(train_w), generator=gen), 0
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    bar = tqdm(total=cfg.steps, initial=step, desc="train compressor", disable=not progress, unit="step")
    while step < end:
        if pos + cfg.batch_size > len(perm):
            perm, pos = torch.randperm(len(train_w), generator=gen), 0
        ws = [train_w[int(i)] for i in perm[pos:pos + cfg.batch_size]]
        pos += cfg.batch_size
        ids, mask, lab = _batch(ws, pad)
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if log:
            log.info("step %d loss %.4f", step, losses[-1])
        if eval_w and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            # evaluation draws no random numbers (no dropout in eval mode), so the curve leaves training unchanged
            ev = evaluate(model, eval_w, pad)
            model.train()
            curve.append({"step": step, "train_loss": float(np.mean(losses[-cfg.eval_every:])), **ev})
            if log:
                log.info("eval step %d accuracy %.4f f1_keep %.4f", step, ev["accuracy"], ev["f1_keep"])
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_checkpoint(state, kind=CKPT_KIND, step=step, fingerprint=fingerprint, model=model, optimizer=opt,
                            scheduler=sched, generators={"data": gen},
                            extra={"losses": losses, "perm": perm, "pos": pos, "curve": curve})
    bar.close()
    if curve and curve[-1]["step"] == step:
        ev = curve[-1]
    else:
        ev = evaluate(model, eval_w, pad) if eval_w else {"accuracy": float("nan"), "f1_keep": float("nan"),
                                                          "keep_fraction": float("nan"), "tokens": 0}
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    res = TrainResult(out, step, float(np.mean(losses[-20:])), ev["accuracy"], ev["f1_keep"], ev["keep_fraction"],
                      len(train_w), len(eval_w), curve)
    signals = sorted({str(s) for s in data["signal"]}) if "signal" in data.column_names else []
    atomic_write_json(out / "slimguard_compressor.json", {
        "method": "LLMLingua-2 token classification", "base": cfg.base, "signals": signals,
        "config": cfg.model_dump(mode="json"), "result": {k: (str(v) if isinstance(v, Path) else v)
                                                          for k, v in asdict(res).items()},
        "eval_curve": curve, "distilled_from": distilled_from(cfg.data),
        "created": now_iso(), "git_commit": git_commit()})
    return res


def describe(path: str | Path) -> dict:
    p = Path(path) / "slimguard_compressor.json"
    return json.loads(p.read_text()) if p.exists() else {}

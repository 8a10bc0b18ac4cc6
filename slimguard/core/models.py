"""Load causal LMs and encoders by asset name or local ``transformers`` directory.

Every capability goes through these two functions, so that ``--model smollm2-135m`` and
``--model /path/to/my/model`` behave the same everywhere. Hub ids are passed through to
``transformers`` unchanged for users who do have a hub.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import assets
from .errors import AssetError, SlimguardError


def resolve_model_dir(name_or_path: str, *, kind: str | None = None) -> str:
    """Asset name -> cached ``model/`` folder; existing path -> itself; else hub id as given."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        if p.is_dir() and not (p / "config.json").is_file():
            raise SlimguardError(f"model directory {p} has no config.json; is it a transformers model folder?")
        return str(p)
    if name_or_path in assets.REGISTRY:
        asset = assets.get(name_or_path)
        if kind is not None and asset.kind != kind:
            raise AssetError(f"asset '{name_or_path}' is a {asset.kind}, not a {kind}")
        return str(assets.require(name_or_path) / "model")
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        return name_or_path  # a hub id; transformers will say if it cannot reach it
    # neither a path nor an asset nor a hub id: the asset lookup gives the best error
    assets.get(name_or_path)
    raise AssertionError("unreachable")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: str


def _quiet_third_party() -> None:
    """transformers imports torchao's quantizer on every load when torchao is installed; its
    import prints CUDA-extension and pytree deprecation warnings that say nothing about the user's
    run. Silence those two loggers only."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _torch_dtype(dtype: str):
    import torch

    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise SlimguardError(f"dtype must be float32, bfloat16 or float16, got '{dtype}'") from None


def load_causal_lm(name_or_path: str = "smollm2-135m", *, dtype: str = "float32", device: str = "cpu",
                   attn_implementation: str | None = "sdpa") -> LoadedModel:
    """A causal LM and its tokenizer, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_model_dir(name_or_path, kind="causal-lm")
    _quiet_third_party()
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except OSError as e:
        raise SlimguardError(f"could not load causal LM from '{name_or_path}': {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device).eval()
    return LoadedModel(model, tok, src)


def load_encoder(name_or_path: str = "minilm-l6", *, head: str | None = None, num_labels: int = 2,
                 device: str = "cpu") -> LoadedModel:
    """An encoder: bare (``head=None``), ``"token"`` or ``"sequence"`` classification head.

    MiniLM ships no classification or MLM heads, so a requested head starts untrained;
    transformers' "newly initialized" warning is expected then and silenced.
    """
    import transformers
    from transformers import (AutoModel, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification, AutoTokenizer)

    src = resolve_model_dir(name_or_path, kind="encoder" if name_or_path in assets.REGISTRY else None)
    _quiet_third_party()
    cls = {None: AutoModel, "token": AutoModelForTokenClassification,
           "sequence": AutoModelForSequenceClassification}.get(head)
    if cls is None:
        raise SlimguardError(f"head must be None, 'token' or 'sequence', got '{head}'")
    kwargs = {} if head is None else {"num_labels": num_labels}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(src)
        model = cls.from_pretrained(src, **kwargs)
    except OSError as e:
        raise SlimguardError(f"could not load encoder from '{name_or_path}': {str(e).splitlines()[0]}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    model.to(device).eval()
    return LoadedModel(model, tok, src)


def sentence_embeddings(texts: list[str], enc: LoadedModel | None = None, *, batch_size: int = 64):
    """Mean-pooled, L2-normalised sentence embeddings (the all-MiniLM-L6-v2 recipe)."""
    import torch

    enc = enc or load_encoder("minilm-l6")
    outs = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            b = enc.tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=256,
                              return_tensors="pt")
            h = enc.model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            outs.append(torch.nn.functional.normalize(e, dim=-1))
    return torch.cat(outs) if outs else torch.empty(0, enc.model.config.hidden_size)


def default_threads() -> int:
    """Threads for torch: ``$SLIMGUARD_THREADS`` or all cores."""
    return int(os.environ.get("SLIMGUARD_THREADS", os.cpu_count() or 1))


def resolve_device(device: str | None = None) -> str:
    """``cpu`` / ``cuda`` / ``cuda:N``; ``None`` or ``auto`` means ``$SLIMGUARD_DEVICE``, else
    the GPU when torch sees one (like transformers' Trainer), else the CPU."""
    import torch

    dev = (device or os.environ.get("SLIMGUARD_DEVICE") or "auto").strip().lower()
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise SlimguardError(f"device '{dev}' asked for, but torch sees no CUDA GPU; use --device cpu")
    if dev != "cpu" and not dev.startswith("cuda"):
        raise SlimguardError(f"device must be auto, cpu or cuda[:N], got '{device or dev}'")
    return dev

"""Load causal LMs and encoders by asset name or local ``transformers`` directory.

Every capability goes through these two functions, so that ``--model smollm2-135m`` and
``--model /path/to/my/model`` behave the same everywhere. Hub ids are passed through to
``transformers`` unchanged for users who do have a hub.

Every other reader of model files (classifiers, the compressor, QAT weights, diffusion models)
wraps its loads in :func:`reading_model` too, so a truncated or corrupt file anywhere is one
:class:`SlimguardError` line that names the file and says how to get a good copy.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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


def remedy(path: str | Path) -> str:
    """What to do about a broken file at ``path``: re-fetch it when it is part of a cached asset."""
    p = Path(path).expanduser().resolve()
    try:
        name = p.relative_to(assets.assets_dir().resolve()).parts[0]
    except (ValueError, IndexError):
        return "re-run the command that wrote it"
    return f"re-fetch the asset (`slimguard assets fetch {name} --force`)"


def check_safetensors(path: str | Path, *, fix: str | None = None) -> None:
    """Raise :class:`SlimguardError` naming ``path`` unless it is a whole safetensors file.

    Reads the header only: safetensors' own message ("header too small", "file not fully covered")
    never names the file, and a folder can hold several. The data section must end exactly where the
    tensors the header lists end, which is what a truncated copy breaks."""
    p = Path(path)
    bad = f"{p} is truncated or not a safetensors file; {fix or remedy(p)}"
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if n < 2 or n > size - 8 or n > 100 << 20:
                raise SlimguardError(bad)
            header = json.loads(f.read(n))
    except OSError as e:
        raise SlimguardError(f"cannot read {p}: {e.strerror}") from None
    except ValueError:  # JSON or UTF-8
        raise SlimguardError(bad) from None
    if not isinstance(header, dict):
        raise SlimguardError(bad)
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise SlimguardError(bad) from None
    if end != size - 8 - n:
        raise SlimguardError(bad)


def _check_json(path: Path, fix: str | None) -> None:
    try:
        json.loads(path.read_bytes())
    except OSError as e:
        raise SlimguardError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise SlimguardError(f"{path} is truncated or not valid JSON; {fix or remedy(path)}") from None


def check_model_files(path: str | Path, *, json_files: bool = True, fix: str | None = None) -> None:
    """Raise :class:`SlimguardError` naming the first broken file of a model folder (or of one file):
    every ``*.safetensors`` by its header, every ``*.json`` by parsing it (``json_files``). ``fix`` replaces
    the default advice (re-fetch the asset, or re-run the command that wrote the file)."""
    p = Path(path)
    if p.is_file():  # one file is checked for what it is meant to be, whatever its name (`quant eval x.bin`)
        if p.suffix == ".json":
            _check_json(p, fix)
        else:
            check_safetensors(p, fix=fix)
        return
    if not p.is_dir():
        return
    for f in sorted(p.rglob("*.safetensors")):
        check_safetensors(f, fix=fix)
    for f in sorted(p.rglob("*.json")) if json_files else []:
        _check_json(f, fix)


# what a broken or foreign file raises while transformers, diffusers or safetensors read it
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, EOFError, pickle.UnpicklingError)


def _read_errors() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency; keep the guard usable without it
        return _READ_ERRORS
    return _READ_ERRORS + (SafetensorError,)


@contextmanager
def reading_model(path: str | Path, what: str = "model", *, fix: str | None = None) -> Iterator[None]:
    """Wrap any loading of the model files at ``path`` (a folder or one file): a truncated or corrupt file
    becomes one :class:`SlimguardError` naming it and saying how to get a good copy.

    The weights' headers are checked before loading (cheap: a few bytes per file), so the error names the
    file even where a loader would only say "header too small"; when loading still fails, the JSON files
    are checked too, and an error that none of them explains is reported with the folder's name. Anything
    else (a bug, not a bad file) propagates unchanged."""
    p = Path(path)
    local = p.exists()
    if local:
        check_model_files(p, json_files=False, fix=fix)
    try:
        yield
    except SlimguardError:
        raise
    except _read_errors() as e:
        if local:
            check_model_files(p, fix=fix)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SlimguardError(f"could not load {what} from {path}: {first}" + (f"; {fix}" if fix else "")) from None


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


def native_bf16(device: str = "cpu") -> bool:
    """Whether bfloat16 matmuls run natively on ``device``: CUDA with bf16 support, or a CPU with AVX512-BF16/AMX.

    Elsewhere torch emulates bf16, which is several times slower than float32 (SmolLM2-135M forward on a 2-core
    EPYC without AVX512: 7.5x), so "auto" dtypes pick float32 there."""
    import torch

    if str(device).startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """``"auto"`` -> ``"bfloat16"`` where it is native on ``device`` (see :func:`native_bf16`), else ``"float32"``."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16(device) else "float32"


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
    with reading_model(src, "causal LM"):
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
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
        with reading_model(src, "encoder"):
            tok = AutoTokenizer.from_pretrained(src)
            model = cls.from_pretrained(src, **kwargs)
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


def set_threads(threads: int | None = None) -> int:
    """Set torch's threads to ``threads`` (None: :func:`default_threads`) and return the number set."""
    import torch

    n = threads or default_threads()
    torch.set_num_threads(n)
    return n


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

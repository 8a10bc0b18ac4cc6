"""Export an EdgeQAT-trained model to real low-bit formats.

* GGUF for llama.cpp: every decoder linear is written as ``Q4_0`` (w_bits <= 4) or ``Q8_0``
  (w_bits 8) built from the LEARNED group-32 steps and codes, not re-quantized: Q4_0 stores
  an fp16 scale and 32 codes ``q in [0, 15]`` meaning ``(q - 8) * d``, which is exactly our
  signed int4 grid with the fp16-snapped step. Q and K rows are permuted to llama.cpp's
  interleaved RoPE layout. Tokenizer and metadata come from a template GGUF (the asset's).
* Packed int4 safetensors: two codes per byte + fp16 scales + every other tensor, with the
  QAT config in the metadata; :func:`load_packed` rebuilds the converted model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ...core.errors import SlimguardError
from .config import QATConfig
from .prepare import QLinear, convert, prepare_qat, qlinears

HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
PACKED_FORMAT = "slimguard-qat-packed-v1"


def _rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half layout -> llama.cpp's interleaved layout (row permutation only)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def pack_q4_0(codes: torch.Tensor, scales: torch.Tensor) -> np.ndarray:
    """int codes [rows, cols] in [-8, 7] + fp16 scales [rows, cols/32] -> Q4_0 bytes [rows, cols/32*18]."""
    c = codes.to(torch.int16).numpy()
    rows, cols = c.shape
    u = (c + 8).astype(np.uint8).reshape(rows, cols // 32, 32)
    qs = (u[..., :16] | (u[..., 16:] << 4)).astype(np.uint8)
    d = scales.to(torch.float16).numpy().reshape(rows, cols // 32, 1).view(np.uint8)
    return np.concatenate([d, qs], axis=-1).reshape(rows, -1)


def pack_q8_0(codes: torch.Tensor, scales: torch.Tensor) -> np.ndarray:
    c = codes.to(torch.int8).numpy()
    rows, cols = c.shape
    q = c.reshape(rows, cols // 32, 32).view(np.uint8)
    d = scales.to(torch.float16).numpy().reshape(rows, cols // 32, 1).view(np.uint8)
    return np.concatenate([d, q], axis=-1).reshape(rows, -1)


def _copy_metadata(writer, template: Path, file_type: int) -> None:
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(str(template))
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            writer.add_uint32(key, file_type)
            continue
        vtype = f.types[0]
        sub = f.types[1] if vtype == GGUFValueType.ARRAY and len(f.types) > 1 else None
        writer.add_key_value(key, f.contents(), vtype, sub)


def default_template(model_name: str) -> Path | None:
    from ...core import assets

    if model_name in assets.REGISTRY:
        found = sorted((assets.require(model_name) / "gguf").glob("*.gguf"))
        return found[0] if found else None
    return None


QKV = ("attn_q", "attn_k", "attn_v")


def write_gguf(model, path: str | Path, *, template: str | Path, weight_type: str = "learned",
               embed_type: str = "q8_0", fuse_qkv: bool = True) -> Path:
    """Write ``model`` as GGUF. ``weight_type='learned'`` needs a converted QAT model;
    'f16'/'f32' write the (FP) weights as floats, for the baseline files.

    ``fuse_qkv`` writes each layer's Q, K and V projections as one ``attn_qkv`` tensor (their rows stacked, every
    Q4_0 block unchanged), which llama.cpp's Llama graph runs as one matrix product instead of three: the same
    logits, and on 2 CPU cores ~10% faster decode of the Q4_0 file (F16 unchanged: it is bound by reading the
    weights, not by the number of operations). Readers without fused-QKV support for Llama (transformers'
    ``gguf_file=``, older llama.cpp) need ``fuse_qkv=False``."""
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFWriter
    from gguf.quants import quantize

    qtypes = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "mxfp4": T.MXFP4}
    template = Path(template)
    if not template.is_file():
        raise SlimguardError(f"export: template GGUF {template} not found; pass template_gguf=<a GGUF of the same "
                             "tokenizer>")
    c = model.config
    if c.model_type != "llama":
        raise SlimguardError(f"export: only Llama-family models export to GGUF here, got '{c.model_type}'")
    if weight_type == "learned" and not any(q.converted for _, q in qlinears(model)):
        raise SlimguardError("export: model is not converted; call convert(model) after training")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ftype = {"learned": 2, "f16": 1, "f32": 0}[weight_type]
    w = GGUFWriter(str(tmp), "llama")
    _copy_metadata(w, template, ftype)

    def floats(name: str, t: torch.Tensor, kind: str) -> None:
        a = t.detach().float().cpu().numpy()
        if kind == "f32" or a.ndim == 1:
            w.add_tensor(name, a.astype(np.float32))
        elif kind == "f16":
            w.add_tensor(name, a.astype(np.float16))
        else:
            qt = qtypes[kind]
            w.add_tensor(name, quantize(a.astype(np.float32), qt), raw_dtype=qt)

    emb_kind = embed_type if weight_type == "learned" else weight_type
    floats("token_embd.weight", model.get_input_embeddings().weight, emb_kind)
    n_head, n_kv = c.num_attention_heads, c.num_key_value_heads

    def linear(mod, gg: str) -> tuple[str, tuple]:
        """(how it is stored, row-stackable payload) of one projection, rows in llama.cpp's order."""
        perm = n_head if gg == "attn_q" else n_kv if gg == "attn_k" else None
        if weight_type != "learned" or not isinstance(mod, QLinear):
            a = mod.weight.detach().float().cpu().numpy()
            a = np.ascontiguousarray(_rope_permute(a, perm) if perm else a)
            return weight_type if weight_type != "learned" else "f16", (a,)
        codes, scales = mod.qcodes, mod.qscales
        if scales.shape[1] != mod.in_features // 32:
            raise SlimguardError("export: GGUF needs granularity='group' and group_size=32 (Q4_0/Q8_0 blocks)")
        if perm:
            codes = torch.from_numpy(np.ascontiguousarray(_rope_permute(codes.numpy(), perm)))
            scales = torch.from_numpy(np.ascontiguousarray(_rope_permute(scales.numpy(), perm)))
        return "q4_0" if mod.w_quant.bits <= 4 else "q8_0", (codes, scales)

    def put(name: str, kind: str, payload: tuple) -> None:
        if kind in ("q4_0", "q8_0"):
            pack, qt = (pack_q4_0, T.Q4_0) if kind == "q4_0" else (pack_q8_0, T.Q8_0)
            w.add_tensor(name, pack(*payload), raw_dtype=qt)
        else:
            floats(name, torch.from_numpy(payload[0]), kind)

    for i, layer in enumerate(model.model.layers):
        lin = {}
        for hf, gg in HF_TO_GGUF.items():
            mod = layer.get_submodule(hf)
            if not hasattr(mod, "in_features"):
                floats(f"blk.{i}.{gg}.weight", mod.weight, "f32")
            else:
                lin[gg] = linear(mod, gg)
        if fuse_qkv and len({lin[g][0] for g in QKV}) == 1:  # one storage type: the rows stack block for block
            kind = lin["attn_q"][0]
            parts = [lin.pop(g)[1] for g in QKV]
            stacked = tuple(torch.cat(x) if isinstance(x[0], torch.Tensor) else np.concatenate(x) for x in zip(*parts))
            put(f"blk.{i}.attn_qkv.weight", kind, stacked)
        for gg, (kind, payload) in lin.items():
            put(f"blk.{i}.{gg}.weight", kind, payload)
    floats("output_norm.weight", model.model.norm.weight, "f32")
    if not c.tie_word_embeddings:
        floats("output.weight", model.lm_head.weight, emb_kind if emb_kind not in ("q4_0", "mxfp4") else "q8_0")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- packed safetensors


def save_packed(model, cfg: QATConfig, path: str | Path) -> Path:
    """Converted QAT model -> packed int4 safetensors (nibbles + fp16 scales + everything else)."""
    from safetensors.torch import save_file

    if not any(q.converted for _, q in qlinears(model)):
        raise SlimguardError("export: model is not converted; call convert(model) after training")
    tensors: dict[str, torch.Tensor] = {}
    skip = set()
    for name, q in qlinears(model):
        codes = q.qcodes.to(torch.int16)
        if q.w_quant.bits <= 4:
            u = (codes + 8).to(torch.uint8).reshape(q.out_features, -1, 2)
            tensors[f"{name}.qweight"] = (u[..., 0] | (u[..., 1] << 4)).contiguous()
        else:
            tensors[f"{name}.qweight"] = q.qcodes.contiguous()
        tensors[f"{name}.qscales"] = q.qscales.contiguous()
        skip |= {f"{name}.weight", f"{name}.qcodes", f"{name}.qscales"}
    for k, v in model.state_dict().items():
        if k in skip or (k == "lm_head.weight" and model.config.tie_word_embeddings):
            continue
        tensors[k] = v.detach().contiguous().cpu()
    meta = {"format": PACKED_FORMAT, "qat": cfg.model_dump_json(), "model_config": model.config.to_json_string()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_packed(path: str | Path):
    """Packed safetensors -> a converted, fake-quant-activation model ready for evaluation."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    from ...core.models import reading_model

    path = Path(path)
    if not path.is_file():
        raise SlimguardError(f"packed model {path} does not exist")
    fix = "re-run `slimguard quant export --format safetensors` to write it, or pass a `quant train` run directory"
    with reading_model(path, "packed QAT model", fix=fix):
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != PACKED_FORMAT:
                raise SlimguardError(f"{path} is not a slimguard packed QAT file (format {meta.get('format')!r}); {fix}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        try:
            cfg = QATConfig.model_validate_json(meta["qat"])
            mconf = AutoConfig.for_model(**json.loads(meta["model_config"]))
        except KeyError as e:
            raise SlimguardError(f"{path} lacks its {e.args[0]!r} metadata; re-export it with `quant export`") from None
    model = AutoModelForCausalLM.from_config(mconf, dtype=torch.float32)
    prepare_qat(model, cfg)
    for name, q in qlinears(model):
        packed, scales = tensors.pop(f"{name}.qweight"), tensors.pop(f"{name}.qscales")
        if cfg.w_bits <= 4:
            lo = (packed & 0x0F).to(torch.int16) - 8
            hi = (packed >> 4).to(torch.int16) - 8
            codes = torch.stack([lo, hi], -1).reshape(q.out_features, q.in_features).to(torch.int8)
        else:
            codes = packed
        gs = q.in_features // scales.shape[1]
        deq = (codes.float().reshape(q.out_features, -1, gs) * scales.float()[..., None]).reshape_as(q.weight)
        with torch.no_grad():
            q.weight.copy_(deq)
        q.register_buffer("qcodes", codes)
        q.register_buffer("qscales", scales)
        q.converted = True
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    restored = {f"{n}.{s}" for n, _ in qlinears(model) for s in ("weight", "w_quant.step", "qcodes", "qscales")}
    bad = [k for k in missing if k not in restored and k != "lm_head.weight"] + list(unexpected)
    if bad:
        raise SlimguardError(f"{path} does not match the model it describes (e.g. {bad[0]})")
    convert(model)
    if mconf.tie_word_embeddings:
        model.tie_weights()
    return model.eval(), cfg

"""Real low-bit speed for EdgeQAT exports: the learned-Q4_0 GGUF (q4_0 / q8_0 KV cache) vs
F16 and F32 GGUFs of the same model in llama.cpp (``llama-cpp-python``, an optional extra).

Decode is memory-bound, so the ideal speedup is the bytes ratio (<= 4x vs F16); KV bytes per
token are ``2 * layers * kv_heads * head_dim * bytes_per_element``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ...core.errors import SlimguardError

KV_BYTES = {"f16": 2.0, "f32": 4.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def _ggml_type(name: str) -> int:
    import llama_cpp

    return {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0,
            "q4_0": llama_cpp.GGML_TYPE_Q4_0}[name]


def time_gguf(path: Path, *, kv: str, threads: int, prompt_tokens: int, decode_tokens: int, repeats: int = 5) -> dict:
    """Prefill and decode tokens/s of one GGUF (median of ``repeats`` after a warm-up)."""
    from llama_cpp import Llama

    from ...bench.harness import time_it

    llm = Llama(model_path=str(path), n_ctx=prompt_tokens + decode_tokens + 8, n_threads=threads,
                n_threads_batch=threads, n_batch=prompt_tokens, type_k=_ggml_type(kv), type_v=_ggml_type(kv),
                flash_attn=True, verbose=False, seed=0)
    prompt = [(7 * i + 11) % 1000 + 100 for i in range(prompt_tokens)]

    def prefill():
        llm.reset()
        llm.eval(prompt)

    def decode():
        llm.reset()
        llm.eval(prompt[:8])
        for i in range(decode_tokens):
            llm.eval([prompt[8 + i % 100]])

    tp = time_it(prefill, repeats=repeats)
    td = time_it(decode, repeats=repeats)
    # the decode timing includes an 8-token prefill: subtract its share to keep decode per-token
    pre8 = tp.median_s * 8 / prompt_tokens
    out = {"prefill_tok_s": prompt_tokens / tp.median_s,
           "decode_tok_s": decode_tokens / max(1e-9, td.median_s - pre8),
           "prefill_s": tp.to_dict(), "decode_s": td.to_dict()}
    del llm
    return out


def speed_cache() -> Path:
    from ...core.runs import runs_root

    return runs_root() / "bench-quant" / "speed.json"


def llama_cpp_speed(model_name: str, fp, trained, *, threads: int, prompt_tokens: int, decode_tokens: int,
                    log=print, out_dir: Path | None = None, source: str = "this benchmark run") -> dict:
    """Time F32 / F16 / learned-Q4_0 GGUFs side by side; the result is also cached in runs/bench-quant/speed.json
    so a benchmark process without llama-cpp-python can still report the last side-by-side measurement."""
    import json

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        cache = speed_cache()
        if cache.is_file():
            log(f"llama-cpp-python not importable here: using the side-by-side measurement cached in {cache}")
            return {**json.loads(cache.read_text()), "from_cache": str(cache)}
        raise SlimguardError("--speed needs llama-cpp-python: pip install llama-cpp-python==0.3.36 "
                             "(builds llama.cpp from source, ~7 min on 2 cores)") from None
    from .baselines import rtn
    from .config import QATConfig
    from .export import default_template, write_gguf
    from .prepare import convert

    tmpl = default_template(model_name)
    if tmpl is None:
        raise SlimguardError(f"--speed: no template GGUF for '{model_name}'")
    if trained is None:  # no trained EdgeQAT model in this run: export the RTN group-32 weights
        import torch

        trained = convert(rtn(fp, QATConfig(w_bits=4, a_bits=8, kv_bits=4), torch.zeros(1, 8, dtype=torch.long)))
    c = fp.config
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    per_elem = 2 * c.num_hidden_layers * c.num_key_value_heads * hd
    d = Path(out_dir or tempfile.mkdtemp(prefix="slimguard-gguf-"))
    files = {"f32": write_gguf(fp, d / "fp32.gguf", template=tmpl, weight_type="f32"),
             "f16": write_gguf(fp, d / "fp16.gguf", template=tmpl, weight_type="f16"),
             "edgeqat_q4_0": write_gguf(trained, d / "edgeqat-q4_0.gguf", template=tmpl, embed_type="q8_0"),
             "edgeqat_q4_0_embq4": write_gguf(trained, d / "edgeqat-q4_0-embq4.gguf", template=tmpl,
                                              embed_type="q4_0")}
    plan = [("f32", "f32", "f16"), ("f16", "f16", "f16"), ("edgeqat_q4_0", "edgeqat_q4_0", "q8_0"),
            ("edgeqat_q4_0", "edgeqat_q4_0", "q4_0"), ("edgeqat_q4_0_embq4", "edgeqat_q4_0_embq4", "q4_0")]
    rows, by = [], {}
    for label, key, kv in plan:
        r = time_gguf(files[key], kv=kv, threads=threads, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens)
        size = files[key].stat().st_size
        by[(label, kv)] = {**r, "bytes": size}
        log(f"llama.cpp {label:20s} kv {kv:5s} {size / 1e6:7.1f} MB  prefill {r['prefill_tok_s']:8.1f} tok/s  "
            f"decode {r['decode_tok_s']:7.1f} tok/s")
        for metric, v in (("prefill_tok_s", r["prefill_tok_s"]), ("decode_tok_s", r["decode_tok_s"]),
                          ("file_mb", size / 1e6), ("kv_bytes_per_token", per_elem * KV_BYTES[kv])):
            rows.append(dict(method=f"llama.cpp {label}", bits=f"kv {kv}", metric=metric, value=v, std=0.0, n=5))
    f16 = by[("f16", "f16")]
    best = by[("edgeqat_q4_0", "q4_0")]
    summary = {"decode_speedup_vs_f16": best["decode_tok_s"] / f16["decode_tok_s"],
               "prefill_speedup_vs_f16": best["prefill_tok_s"] / f16["prefill_tok_s"],
               "decode_speedup_vs_f32": best["decode_tok_s"] / by[("f32", "f16")]["decode_tok_s"],
               "size_ratio_vs_f16": f16["bytes"] / best["bytes"],
               "size_ratio_vs_f16_all_q4_0": f16["bytes"] / by[("edgeqat_q4_0_embq4", "q4_0")]["bytes"],
               "decode_speedup_vs_f16_all_q4_0": by[("edgeqat_q4_0_embq4", "q4_0")]["decode_tok_s"] / f16["decode_tok_s"],
               "threads": threads,
               # other jobs on the machine slow small-model decode far more than prefill: keep the load with the numbers
               "load_average": os.getloadavg()[0]}
    from ...core.runs import atomic_write_json, now_iso

    out = {"rows": rows, "summary": summary, "files": {k: str(v) for k, v in files.items()},
           "quantized_model_source": source, "measured": now_iso()}
    atomic_write_json(speed_cache(), out)
    for f in files.values():  # the F32 file alone is ~540 MB
        f.unlink(missing_ok=True)
    return out

"""Real low-bit speed for EdgeQAT exports: the learned-Q4_0 GGUF (q4_0 / q8_0 KV cache) vs
F16 and F32 GGUFs of the same model in llama.cpp (``llama-cpp-python``, an optional extra).

Decode of a large model is memory-bound, so the ideal speedup is the bytes ratio (<= 3.6x vs
F16 for Q4_0's 4.5 bits per weight); a 135M model is not, and its per-op overhead caps the ratio
well below that. KV bytes per token are ``2 * layers * kv_heads * head_dim * bytes_per_element``.
Decode is timed at several context lengths because the KV cache type dominates long contexts,
and every file's perplexity is measured in llama.cpp itself on the same held-out blocks as the
torch evaluation, so a faster configuration that reads worse shows it.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
from pathlib import Path

from ...core.errors import SlimguardError

KV_BYTES = {"f16": 2.0, "f32": 4.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
# (label, file key, KV cache type); the first quantized row is the headline W4A8KV4 export. The F16-KV rows run
# the same learned weights with an unquantized cache: llama.cpp's CPU flash attention reads a quantized K/V
# cache one row per call, which costs time even at short context, so they show what the cache type costs.
PLAN = [("f32", "f32", "f16"), ("f16", "f16", "f16"),
        ("edgeqat_q4_0", "edgeqat_q4_0", "q4_0"), ("edgeqat_q4_0", "edgeqat_q4_0", "q8_0"),
        ("edgeqat_q4_0", "edgeqat_q4_0", "f16"),
        ("edgeqat_q4_0_embq4", "edgeqat_q4_0_embq4", "q4_0"), ("edgeqat_q4_0_embq4", "edgeqat_q4_0_embq4", "q8_0"),
        ("edgeqat_q4_0_embq4", "edgeqat_q4_0_embq4", "f16"),
        ("edgeqat_q4_0_embmxfp4", "edgeqat_q4_0_embmxfp4", "q4_0")]


def _ggml_type(name: str) -> int:
    import llama_cpp

    return {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0,
            "q4_0": llama_cpp.GGML_TYPE_Q4_0}[name]


def _load(path: Path, *, kv: str, threads: int, n_ctx: int, n_batch: int, logits_all: bool = False):
    from llama_cpp import Llama

    # flash attention: llama.cpp only quantizes the V cache with it
    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=n_batch,
                 type_k=_ggml_type(kv), type_v=_ggml_type(kv), flash_attn=True, logits_all=logits_all,
                 verbose=False, seed=0)


def time_ggufs(runs: dict, *, threads: int, prompt_tokens: int, decode_tokens: int,
               contexts: tuple[int, ...] = (), repeats: int = 5) -> dict:
    """Prefill tokens/s at ``prompt_tokens`` and decode tokens/s after ``prompt_tokens`` and after each of
    ``contexts`` tokens, for every ``label -> (path, kv)`` in ``runs`` (medians of ``repeats``).

    All files stay loaded and are timed round-robin, one repeat of each per round: a small model's
    decode speed swings with whatever else the machine runs (F16 SmolLM2 read 90 and 126 tok/s in two
    runs on the same machine type), and timing the files one after another hands that drift to
    whichever file happened to run then; round-robin spreads it over all of them, so the ratios hold.
    """
    from ...core.timing import time_interleaved

    longest = max((prompt_tokens, *contexts))
    text = [(7 * i + 11) % 1000 + 100 for i in range(longest)]  # ids only: speed does not depend on meaning
    llms = {label: _load(path, kv=kv, threads=threads, n_ctx=longest + decode_tokens + 8, n_batch=min(512, longest))
            for label, (path, kv) in runs.items()}

    def prefill(llm):
        def run():
            llm.reset()
            llm.eval(text[:prompt_tokens])
        return run

    def decode_after(llm, n: int):
        def run():
            decode_tokens_at(llm, [text[i % 100] for i in range(decode_tokens)], n)
        return run

    tp = time_interleaved({lb: prefill(llm) for lb, llm in llms.items()}, repeats=repeats)
    out = {lb: {"prefill_tok_s": prompt_tokens / tp[lb].median_s, "prefill_s": tp[lb].to_dict(), "decode_tok_s_at": {},
                "model_bytes": model_bytes(llm)} for lb, llm in llms.items()}
    for n in dict.fromkeys((prompt_tokens, *contexts)):
        for llm in llms.values():
            llm.reset()
            llm.eval(text[:n])
        td = time_interleaved({lb: decode_after(llm, n) for lb, llm in llms.items()}, repeats=repeats)
        for lb in llms:
            out[lb]["decode_tok_s_at"][n] = decode_tokens / td[lb].median_s
            if n == prompt_tokens:
                out[lb]["decode_tok_s"], out[lb]["decode_s"] = decode_tokens / td[lb].median_s, td[lb].to_dict()
    llms.clear()
    return out


def speed_ratios(timed: dict) -> dict:
    """Ratios within one timing pass (the files ran round-robin in it): decode of every quantized file and KV
    type against F16 after the prompt, prefill against F16, the headline file against F32, and the headline
    file against F16 after each timed context."""
    f16, head = timed[("f16", "f16")], timed[("edgeqat_q4_0", "q4_0")]
    return {"decode_vs_f16": {k: v["decode_tok_s"] / f16["decode_tok_s"] for k, v in timed.items() if k[0] != "f32"
                              and k != ("f16", "f16")},
            "prefill_vs_f16": {k: v["prefill_tok_s"] / f16["prefill_tok_s"] for k, v in timed.items()},
            "decode_vs_f32": head["decode_tok_s"] / timed[("f32", "f16")]["decode_tok_s"],
            "headline_vs_f16_at": {n: head["decode_tok_s_at"][n] / f16["decode_tok_s_at"][n]
                                   for n in head["decode_tok_s_at"]}}


def merge_passes(passes: list[dict]) -> dict:
    """Per file and KV type: the median over timing passes of prefill and decode tok/s (each already the median of
    its pass's repeats), with the per-pass decode speeds kept as ``decode_tok_s_passes``."""
    out = {}
    for k in passes[0]:
        runs = [p[k] for p in passes]
        out[k] = {"prefill_tok_s": statistics.median(r["prefill_tok_s"] for r in runs),
                  "decode_tok_s": statistics.median(r["decode_tok_s"] for r in runs),
                  "decode_tok_s_passes": [r["decode_tok_s"] for r in runs],
                  "decode_tok_s_at": {n: statistics.median(r["decode_tok_s_at"][n] for r in runs)
                                      for n in runs[0]["decode_tok_s_at"]},
                  "model_bytes": runs[0]["model_bytes"]}
    return out


def model_bytes(llm) -> int:
    """The model's size as llama.cpp reports it (``llama_model_size``: the bytes of its weight tensors, what
    llama-bench prints as "size" and the loader as "file size"); the vocabulary and merges in the GGUF's
    metadata (1.79 MB for SmolLM2, the same in every file) are not part of it."""
    import llama_cpp as lc

    return int(lc.llama_model_size(llm.model))


def decode_tokens_at(llm, tokens: list[int], start: int) -> None:
    """Drop ``llm``'s KV entries from position ``start`` on, then decode ``tokens`` one ``llama_decode`` call
    each, at positions ``start, start + 1, ...``, asking for each token's logits: what llama-bench's
    ``tg`` test times. ``Llama.eval`` would also copy the 49,152 logits into a numpy array after every token,
    a fixed per-token cost in Python that is the same for every file and so shrinks the speed ratios
    (2 cores, round-robin, 32 tokens after 128: F16 vs all-Q4_0 1.86x through ``eval``, 1.97x this way).
    Leaves ``llm.n_tokens`` stale: reset or re-prefill before using ``eval`` again."""
    import llama_cpp as lc

    ctx = llm.ctx
    lc.llama_memory_seq_rm(lc.llama_get_memory(ctx), 0, start, -1)
    batch = lc.llama_batch_init(1, 0, 1)
    try:
        batch.n_tokens, batch.n_seq_id[0], batch.seq_id[0][0], batch.logits[0] = 1, 1, 0, 1
        for i, t in enumerate(tokens):
            batch.token[0], batch.pos[0] = t, start + i
            if lc.llama_decode(ctx, batch) != 0:
                raise SlimguardError(f"llama.cpp could not decode at position {start + i} (context full?)")
        lc.llama_synchronize(ctx)
    finally:
        lc.llama_batch_free(batch)


def next_token_nll(logits, tokens: list[int]) -> float:
    """Summed next-token NLL of ``tokens`` given ``logits`` ([len(tokens) - 1 or more, vocab], row i predicts
    token i + 1), in float64 with a stable log-softmax."""
    import numpy as np

    z = np.asarray(logits[: len(tokens) - 1], dtype=np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -float(logp[np.arange(len(tokens) - 1), tokens[1:]].sum())


def gguf_perplexity(path: Path, windows: list[list[int]], *, kv: str, threads: int) -> float:
    """Perplexity in llama.cpp over independent windows (each scored from its own start, next-token NLL),
    the same arithmetic as ``slimguard.slim.quant.evaluate`` so the two can be compared."""
    n = max(len(w) for w in windows)
    llm = _load(path, kv=kv, threads=threads, n_ctx=n + 8, n_batch=n, logits_all=True)
    nll, count = 0.0, 0
    for w in windows:
        llm.reset()
        llm.eval(w)
        nll += next_token_nll(llm.scores, w)
        count += len(w) - 1
    del llm
    return math.exp(nll / max(1, count))


def speed_cache(result: str = "quant") -> Path:
    from ...core.runs import runs_root

    return runs_root() / f"bench-{result}" / "speed.json"


def llama_cpp_speed(model_name: str, fp, trained, *, threads: int, prompt_tokens: int, decode_tokens: int,
                    contexts: tuple[int, ...] = (), eval_windows: list[list[int]] | None = None,
                    log=print, out_dir: Path | None = None, source: str = "this benchmark run",
                    result: str = "quant", passes: int = 3) -> dict:
    """Time F32 / F16 / learned-Q4_0 GGUFs side by side (and score them on ``eval_windows``); the result
    is also cached in runs/bench-<result>/speed.json so a benchmark process without llama-cpp-python can
    still report the last side-by-side measurement of that run."""
    import json

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        cache = speed_cache(result)
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
                                              embed_type="q4_0"),
             "edgeqat_q4_0_embmxfp4": write_gguf(trained, d / "edgeqat-q4_0-embmxfp4.gguf", template=tmpl,
                                                 embed_type="mxfp4")}
    # whole timing passes a few minutes apart: on a shared machine the Q4_0 / F16 ratio drifts between passes (other
    # load slows compute-bound Q4_0 decode and leaves bandwidth-bound F16 alone); each ratio is taken within a pass,
    # where the files ran round-robin, and the median over passes is reported
    plan = {(label, kv): (files[key], kv) for label, key, kv in PLAN}
    per_pass = []
    for i in range(passes):
        per_pass.append(time_ggufs(plan, threads=threads, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens,
                                   contexts=contexts))
        if passes > 1:
            log(f"llama.cpp timing pass {i + 1}/{passes}: decode vs F16 " + ", ".join(
                f"{k[0]} kv {k[1]} {v:.2f}x" for k, v in speed_ratios(per_pass[-1])["decode_vs_f16"].items()))
    timed = merge_passes(per_pass)
    rows, by = [], {}
    for label, key, kv in PLAN:
        r = timed[(label, kv)]
        if eval_windows and key != "f32":  # F32 and F16 read the same
            r["ppl"] = gguf_perplexity(files[key], eval_windows, kv=kv, threads=threads)
        size = files[key].stat().st_size
        by[(label, kv)] = {**r, "bytes": size}
        at = "  ".join(f"@{n} {v:6.1f}" for n, v in r["decode_tok_s_at"].items())
        log(f"llama.cpp {label:20s} kv {kv:5s} {size / 1e6:7.1f} MB  prefill {r['prefill_tok_s']:8.1f} tok/s  "
            f"decode {at} tok/s" + (f"  ppl {r['ppl']:.3f}" if "ppl" in r else ""))
        spread = r["decode_tok_s_passes"]
        metrics = [("prefill_tok_s", r["prefill_tok_s"], 0.0),
                   ("decode_tok_s", r["decode_tok_s"], statistics.stdev(spread) if len(spread) > 1 else 0.0),
                   ("file_mb", size / 1e6, 0.0), ("model_mb", r["model_bytes"] / 1e6, 0.0),
                   ("kv_bytes_per_token", per_elem * KV_BYTES[kv], 0.0)]
        metrics += [(f"decode_tok_s_at_{n}", v, 0.0) for n, v in r["decode_tok_s_at"].items() if n != prompt_tokens]
        metrics += [("llama_cpp_ppl", r["ppl"], 0.0)] if "ppl" in r else []
        for metric, v, sd in metrics:
            rows.append(dict(method=f"llama.cpp {label}", bits=f"kv {kv}", metric=metric, value=v, std=sd, n=passes))
    f16 = by[("f16", "f16")]
    best = by[("edgeqat_q4_0", "q4_0")]
    all4 = by[("edgeqat_q4_0_embq4", "q4_0")]
    mx = by[("edgeqat_q4_0_embmxfp4", "q4_0")]
    fastest = max((k for k in by if k[0] != "f32"), key=lambda k: by[k]["decode_tok_s"])
    ratios = [speed_ratios(t) for t in per_pass]

    def med(key: str, sub=None):
        vals = [r[key] if sub is None else r[key][sub] for r in ratios]
        return statistics.median(vals)

    dec = {k: med("decode_vs_f16", k) for k in ratios[0]["decode_vs_f16"]}
    summary = {"decode_speedup_vs_f16": dec[("edgeqat_q4_0", "q4_0")],
               "prefill_speedup_vs_f16": med("prefill_vs_f16", ("edgeqat_q4_0", "q4_0")),
               "decode_speedup_vs_f32": med("decode_vs_f32"),
               "size_ratio_vs_f16": f16["bytes"] / best["bytes"],
               "size_ratio_vs_f16_all_q4_0": f16["bytes"] / all4["bytes"],
               # weight bytes as llama.cpp counts them, without the metadata every file carries alike
               "model_size_ratio_vs_f16": f16["model_bytes"] / best["model_bytes"],
               "model_size_ratio_vs_f16_all_q4_0": f16["model_bytes"] / all4["model_bytes"],
               "decode_speedup_vs_f16_all_q4_0": dec[("edgeqat_q4_0_embq4", "q4_0")],
               "decode_speedup_vs_f16_all_q4_0_kv_f16": dec[("edgeqat_q4_0_embq4", "f16")],
               "size_ratio_vs_f16_emb_mxfp4": f16["bytes"] / mx["bytes"],
               "decode_speedup_vs_f16_emb_mxfp4": dec[("edgeqat_q4_0_embmxfp4", "q4_0")],
               "fastest_quantized": f"{fastest[0]} kv {fastest[1]}",
               "decode_speedup_vs_f16_fastest": dec[fastest],
               "decode_speedup_vs_f16_at": {n: med("headline_vs_f16_at", n) for n in ratios[0]["headline_vs_f16_at"]},
               "passes": passes,
               "decode_speedup_vs_f16_per_pass": [r["decode_vs_f16"][("edgeqat_q4_0", "q4_0")] for r in ratios],
               "decode_speedup_vs_f16_fastest_per_pass": [r["decode_vs_f16"][fastest] for r in ratios],
               "threads": threads,
               # other jobs on the machine slow small-model decode far more than prefill: keep the load with the numbers
               "load_average": os.getloadavg()[0]}
    if eval_windows:
        summary["ppl_f16"] = f16.get("ppl")
        summary["eval_tokens"] = sum(len(w) - 1 for w in eval_windows)
    from ...core.runs import atomic_write_json, now_iso

    out = {"rows": rows, "summary": summary, "files": {k: str(v) for k, v in files.items()},
           "prompt_tokens": prompt_tokens, "contexts": list(contexts), "timing": "round-robin", "passes": passes,
           "quantized_model_source": source, "measured": now_iso()}
    atomic_write_json(speed_cache(result), out)
    for f in files.values():  # the F32 file alone is ~540 MB
        f.unlink(missing_ok=True)
    return out

"""``slimguard bench compress``, speed and serving sections: LLMLingua-2 (Pan et al., 2024) on the CPU against the
``llmlingua`` package running the SAME weights, side by side in one run (issue 36, items 3-4).

Speed: prompts of 2K / 8K / 32K cl100k tokens cut from the benchmark's held-out documents (never
distilled); each contender is timed round-robin (warm-up, then the median of ``repeats``), with the
encoder forward and everything else (tokenisation, word probabilities, selection, assembly) reported
separately for both sides. Agreement: the default fast path's keep/drop label per word against our
float32 path (same chunks, same threshold) at several rates, and, in the reference's threshold mode,
against the ``llmlingua`` package's own word labels.

Serving: ``compress serve``'s service in-process on a free loopback port, a bounded load test
(``requests`` requests per concurrency level, no retries) reporting p50/p90/p99 request latency and
throughput.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from ..core.config import Config


class SpeedBenchConfig(Config):
    """Speed, agreement and serving sections of ``slimguard bench compress``."""

    lengths: list[int] = Field([2000, 8000, 32000], description="Prompt lengths (cl100k tokens) for the llmlingua "
                               "speed comparison and the agreement check.")
    sources: list[str] = Field(["pg-essays", "friends"], description="Long-text sources whose held-out documents "
                               "make the prompts (agreement: every source; timing: the first).")
    rate: float = Field(0.33, gt=0, le=1, description="Requested rate of the timed calls.")
    agreement_rates: list[float] = Field([0.5, 0.33, 0.2], description="Rates of the word-agreement check.")
    repeats: int = Field(5, ge=1, description="Timed calls per contender and length (median reported).")
    warmup: int = Field(1, ge=0, description="Untimed calls first (ONNX session creation, allocator warm-up).")
    fast_dtype: str = Field("auto", description="dtype of the 'slimguard' rows (auto = the default path: int8 "
                            "ONNX Runtime on a CPU).")
    load_concurrency: list[int] = Field([1, 4, 16], description="Concurrent clients per load-test level.")
    load_requests: int = Field(32, ge=1, le=2000, description="Requests per load-test level.")
    load_length: int = Field(2000, description="Prompt length (cl100k tokens) of the load-test requests.")
    load_prompts: int = Field(4, ge=1, description="Distinct load-test prompts (requests cycle through them).")


def speed_prompts(source: str, lengths: list[int], holdout_docs: int, enc) -> dict[int, str]:
    """Held-out documents of ``source`` joined in order and cut at a sentence end near each length."""
    from ..slim.compress.distill import split_documents

    docs = split_documents(source, holdout_docs)[1]
    text = "\n\n".join(docs)
    ids = enc.encode_ordinary(text)
    while len(ids) < max(lengths):  # a short source repeats itself; timing and agreement do not mind
        text = text + "\n\n" + text
        ids = enc.encode_ordinary(text)
    out = {}
    for L in lengths:
        body = enc.decode(ids[:L])
        cut = max(body.rfind(". "), body.rfind("\n"))
        out[L] = body[: cut + 1] if cut > len(body) * 0.9 else body
    return out


def _label_agreement(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, int]:
    x, y = np.concatenate(a), np.concatenate(b)
    if x.shape != y.shape:  # never a silent pass: different word lists count as no agreement
        return 0.0, int(max(len(x), len(y)))
    return float((x == y).mean()), int(len(x))


def speed_section(cfg: SpeedBenchConfig, ours, peer, ccfg, holdout_docs: int, enc, say) -> tuple[list, dict, dict]:
    """(rows, targets, extra) of the speed and agreement comparison; ``ours`` is a PromptCompressor, ``peer``
    the ``llmlingua`` package's PromptCompressor over the same weights, ``ccfg`` our CompressConfig."""
    import torch

    from ..bench import harness
    from .compress import ModelTimer, label_pairs

    threads = torch.get_num_threads()
    fast = ccfg.model_copy(update={"rate": cfg.rate, "dtype": cfg.fast_dtype})
    fp32 = fast.model_copy(update={"dtype": "float32", "runtime": "torch"})
    ort32 = fast.model_copy(update={"dtype": "float32", "runtime": "onnxruntime"})
    fast_precision = "/".join(ours.precision(fast))
    rows, agree_min, ll_agree_min, speedups = [], 1.0, 1.0, {}
    timer = ModelTimer(peer.model)
    prompts = {s: speed_prompts(s, cfg.lengths, holdout_docs, enc) for s in cfg.sources}
    timings: dict = {}
    for L in cfg.lengths:
        # ------------------------------------------------------------ agreement (every source)
        for src in cfg.sources:
            text = prompts[src][L]
            say(f"agreement at {L} tokens ({src})")
            ref = ours.compress_rates(text, fp32, cfg.agreement_rates)
            got = ours.compress_rates(text, fast, cfg.agreement_rates)
            for r, a, b in zip(cfg.agreement_rates, got, ref):
                v, n = _label_agreement(a.labels, b.labels)
                agree_min = min(agree_min, v)
                rows.append({"method": "slimguard", "precision": fast_precision, "length": L, "source": src,
                             "rate": r, "metric": "word_agreement_vs_fp32", "value": v, "n": n})
            # the reference's threshold rule on our fast path vs the llmlingua package's own labels
            compat = fast.model_copy(update={"threshold": "llmlingua", "chunk_end_tokens": ["."],
                                             "dtype": "int8" if fast_precision.endswith("int8") else fast.dtype})
            mine = label_pairs(ours.compress(text, compat).to_llmlingua(return_word_label=True))
            theirs = label_pairs(peer.compress_prompt(text, rate=cfg.rate, return_word_label=True))
            same = [w.lower() for w, _ in mine] == [w.lower() for w, _ in theirs]
            v = float(np.mean([x[1] == y[1] for x, y in zip(mine, theirs)])) if same else 0.0
            ll_agree_min = min(ll_agree_min, v)
            rows.append({"method": "slimguard", "precision": "/".join(ours.precision(compat)), "length": L,
                         "source": src, "rate": cfg.rate, "metric": "label_agreement_vs_llmlingua_compat",
                         "value": v, "n": len(theirs), "word_lists_identical": same})
        # ------------------------------------------------------------ timing (first source), round-robin
        text = prompts[cfg.sources[0]][L]
        n_tok = len(enc.encode_ordinary(text))
        say(f"timing at {L} tokens ({n_tok} cl100k tokens, {threads} threads)")
        splits: dict[str, list[tuple[float, float]]] = {"slimguard": [], "slimguard-ort-fp32": [], "slimguard-fp32": [],
                                                        "llmlingua-package": []}

        def ours_call(name, c):
            def f():
                res = ours.compress(text, c)
                splits[name].append((res.forward_s, res.model_s + res.post_s - res.forward_s))
            return f

        def peer_call():
            timer.total = 0.0
            t0 = time.perf_counter()
            peer.compress_prompt(text, rate=cfg.rate)
            total = time.perf_counter() - t0
            splits["llmlingua-package"].append((timer.total, total - timer.total))

        fns = {"slimguard": ours_call("slimguard", fast), "slimguard-ort-fp32": ours_call("slimguard-ort-fp32", ort32),
               "slimguard-fp32": ours_call("slimguard-fp32", fp32), "llmlingua-package": peer_call}
        t = harness.time_interleaved(fns, repeats=cfg.repeats, warmup=cfg.warmup)
        timings[L] = {k: v.to_dict() for k, v in t.items()}
        for name, tm in t.items():
            sp = splits[name][cfg.warmup:]  # the timed calls only
            rows.append({"method": name, "length": L, "metric": "compress_s", "value": tm.median_s,
                         "forward_s": statistics.median(x[0] for x in sp),
                         "other_s": statistics.median(x[1] for x in sp), "tokens_per_s": n_tok / tm.median_s,
                         "threads": tm.threads, "repeats": len(tm.times_s),
                         "precision": {"slimguard": fast_precision, "slimguard-ort-fp32": "onnxruntime/float32",
                                       "slimguard-fp32": "torch/float32",
                                       "llmlingua-package": "torch/float32"}[name]})
        speedups[L] = t["llmlingua-package"].median_s / t["slimguard"].median_s
        rows.append({"method": "slimguard", "length": L, "metric": "speedup_vs_llmlingua", "value": speedups[L],
                     "same_decisions_speedup_ort_fp32": t["llmlingua-package"].median_s / t["slimguard-ort-fp32"].median_s,
                     "fp32_speedup": t["llmlingua-package"].median_s / t["slimguard-fp32"].median_s})
    targets = {f"speedup_vs_llmlingua_{L // 1000}k": harness.target(v, ">= 3") for L, v in speedups.items()}
    targets["word_agreement_fast_vs_fp32_min"] = harness.target(agree_min, ">= 0.99")
    targets["label_agreement_fast_vs_llmlingua_min"] = harness.target(ll_agree_min, ">= 0.99")
    extra = {"speed": {"threads": threads, "fast_precision": fast_precision, "timings": timings}}
    return rows, targets, extra


def serve_section(cfg: SpeedBenchConfig, ours, ccfg, holdout_docs: int, enc, say) -> tuple[list, dict]:
    """(rows, extra) of the bounded local load test against the ``compress serve`` service."""
    from ..slim.compress.config import ServeConfig
    from ..slim.compress.service import CompressService, load_test

    src = cfg.sources[0]
    base = speed_prompts(src, [cfg.load_length * cfg.load_prompts], holdout_docs, enc)[cfg.load_length * cfg.load_prompts]
    ids = enc.encode_ordinary(base)
    prompts = [enc.decode(ids[i * cfg.load_length:(i + 1) * cfg.load_length]) for i in range(cfg.load_prompts)]
    scfg = ServeConfig(compress=ccfg.model_copy(update={"rate": cfg.rate, "dtype": cfg.fast_dtype,
                                                         "max_input_tokens": 0}),
                       port=0, max_queue=max(cfg.load_concurrency) + 1)
    rows, levels = [], []
    with CompressService(scfg, compressor=ours) as svc:
        url = svc.start()
        load_test(url, prompts[:1], concurrency=1, requests=2)  # warm-up: connection, session, allocator
        for c in cfg.load_concurrency:
            say(f"load test: {c} clients x {cfg.load_requests} requests of {cfg.load_length} tokens")
            r = load_test(url, prompts, concurrency=c, requests=cfg.load_requests, rate=cfg.rate)
            levels.append(r)
            rows.append({"method": "slimguard-serve", "precision": svc.precision, "length": cfg.load_length,
                         "metric": "request_latency_p50_s", "value": r["p50_s"], "concurrency": c, **r})
    return rows, {"serve": {"levels": levels, "url": "loopback", "workers": scfg.workers, "max_queue": scfg.max_queue}}


def write_speed_study(cfg: SpeedBenchConfig, model: str, holdout_docs: int, command: str) -> Path:
    """Only the speed and serving sections, as the study ``benchmarks/results/compress/speed.json``."""
    from ..bench import harness
    from ..slim.compress.compressor import PromptCompressor, resolve_compressor
    from ..slim.compress.config import CompressConfig
    from ..slim.compress.tokcount import cl100k
    from .compress import load_llmlingua

    enc = cl100k()
    model_dir = resolve_compressor(model)
    ours = PromptCompressor(str(model_dir))
    peer = load_llmlingua(model_dir)
    ccfg = CompressConfig(model=str(model_dir))
    say = _say
    rows, targets, extra = speed_section(cfg, ours, peer, ccfg, holdout_docs, enc, say)
    srows, sextra = serve_section(cfg, ours, ccfg, holdout_docs, enc, say)
    return harness.write_result("compress", command=command, config={"model": model, "holdout_docs": holdout_docs,
                                                                     "speed": cfg.to_dict()},
                                rows=rows + srows, targets=targets, extra={**extra, **sextra}, name="speed",
                                purpose="LLMLingua-2 fast CPU path vs the llmlingua package (same weights) at 2K/8K/32K "
                                        "tokens, word agreement with float32, and the serve load test")


def _say(msg: str) -> None:
    import sys

    print(f"[bench compress] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

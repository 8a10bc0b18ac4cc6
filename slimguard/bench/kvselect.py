"""``slimguard bench kvselect``: TokenSelect (Wu et al., 2024) against dense attention and
equal-budget peers (StreamingLLM, H2O, Quest, random, oracle per-head top-k), side by side.

Three parts, all in one run: (1) attention-only timing at 16K/32K on tensors shaped like a
SmolLM2 layer (decode per token at the measured Selection Cache hit rate, full prefill,
peak memory); (2) real-model decode with the Selection Cache at thresholds 0.8/0.9/0.95
(hit rate, agreement with no cache, speedup vs the bound ``2/(1 - h + 2S/N)``); (3) passkey /
multi-key / needle accuracy on Paul Graham essay haystacks. The default is sized for two
busy CPU cores; ``--full`` runs the issue's sizes (4K-32K accuracy, 64K-128K timing) on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import List, Literal, Optional

import typer
from pydantic import Field

from ..slim.kvselect.config import SELECTORS, Method, TokenSelectConfig
from .harness import BenchConfig

# TokenSelectConfig fields a benchmark cell always keys its cached cases by; the others only when they differ from
# the library default, so cached cases of earlier runs keep their keys
_SIZES = ("n_init", "k", "n_local", "chunk_size")


class KVSelectBenchConfig(BenchConfig):
    """Sizes of the kvselect benchmark (reduced CPU defaults) and the selection every cell runs (``selection``)."""

    # the reduced default reads Gemma-3-270M (trained 32K) at 4K with its own budget (1,088 of 4,096 tokens), where the
    # selection has something to drop; SmolLM2's default budget (1,600 tokens) covers a short context whole
    models: list[str] = Field(["gemma3-270m"], description="Causal LMs for the accuracy part (--full adds smollm2-135m).")
    tasks: list[str] = Field(["passkey", "multikey"], description="Long-context tasks (passkey, multikey, needle).")
    lengths: list[int] = Field([4096], description="Context lengths (tokens) for dense and TokenSelect accuracy.")
    depths: list[float] = Field([0.1, 0.3, 0.5, 0.7, 0.9], description="Needle depths; cases per length = len(depths) * n_per_depth.")
    n_per_depth: int = Field(2, ge=1, description="Samples per (length, depth).")
    methods: list[Method] = Field(["dense", "tokenselect"], description="Methods run at every length (see dense_max).")
    dense_max: int = Field(0, ge=0, description="Run dense only at lengths <= this (0: every length); dense attention at 32K is slow on a CPU and needs a 32K x 32K mask on sliding-window models.")
    peer_length: int = Field(4096, ge=256, description="Context length of the equal-budget peer comparison.")
    peers: list[Method] = Field(["streaming", "h2o", "quest"], description=(
        "Peers at equal budget (--full: every registered selector but tokenselect and the exact ones: adds random, "
        "oracle)."))
    selection: TokenSelectConfig = Field(default_factory=TokenSelectConfig, description=(
        "The selection of the accuracy and Selection Cache parts: the `longctx generate` config (bench: "
        "selection.n_init=16, selection.k=128, selection.n_local=128, selection.chunk_size=128, "
        "selection.score_dtype=int8, which is also the headline timing's scoring dtype). selection.positions "
        "applies to every selector, selection.quest_per_head to the Quest peer; the grid sets selection.method, "
        "selection.record and selection.cache_threshold."))
    model_defaults: bool = Field(True, description=(
        "Accuracy part: each model uses its own scaled budget (defaults_for: n_init, k, n_local, pool_kernel, "
        "score_dtype, score_layers) instead of selection's; selection.positions and quest_per_head still apply, and "
        "the chunk is model_chunk_size."))
    model_chunk_size: Optional[int] = Field(None, ge=1, description=(
        "Accuracy part with model_defaults: the prefill chunk, sized for the models' own local window (null: "
        "selection.chunk_size; --full: 512, while the Selection Cache part keeps selection's chunk)."))
    timing_lengths: list[int] = Field([16384, 32768], description="Context lengths of the attention timing.")
    prefill_repeats: int = Field(3, ge=1, description="Repeats of the full-prefill timing (median; after one untimed run).")
    decode_repeats: int = Field(25, ge=1, description="Timed decode steps per method (round-robin over methods; median).")
    cold_cache: bool = Field(True, description=(
        "Evict the CPU caches before each timed decode step, as a model with many layers does (one layer's 32K "
        "KV is tens of MB); false repeats one layer with its KV warm in the cache."))
    decode_tokens: int = Field(16, ge=1, description="Decode steps of the Selection Cache part on the real model.")
    e2e_decode_tokens: int = Field(64, ge=1, description=(
        "Decode tokens in the end-to-end estimate (prefill + this many tokens at the longest timing length; the "
        "issue's 64), from the measured per-token costs."))
    thresholds: list[float] = Field([0.8, 0.9, 0.95], description="Selection Cache thresholds.")
    seed: int = Field(0, description="Seed of the task generator and random tensors.")
    threads: int = Field(1, ge=1, description="torch threads (1: on an oversubscribed CPU, extra threads mostly add sync overhead).")
    device: str = Field("cpu", pattern="^(cpu|cuda|auto)$", description=(
        "Where every part runs: the timing part's attention tensors, the Selection Cache part's and the accuracy "
        "part's models (auto: the GPU when torch sees one, what --full sets; on cuda timings synchronize after "
        "every call)."))
    timing_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "dtype of the timing part's q/k/v (auto: float32 on the CPU, bfloat16 on a GPU, where dense SDPA in float32 "
        "has no fused kernel for grouped heads and materialises the 32K+ attention matrix)."))
    cuda_graph: bool = Field(True, description=(
        "On a GPU: TokenSelect's fused decode step and prefill chunks are captured as CUDA graphs and replayed "
        "(fused.DecodeStep); false replays the same static step eagerly (one launch per kernel)."))
    result: str = Field("kvselect", pattern="^[a-z0-9][a-z0-9_-]*$", description=(
        "Result name: 'kvselect' writes the canonical benchmarks/results/kvselect.json; any other name is a study, "
        "benchmarks/results/kvselect/NAME.json (a leading 'kvselect-' dropped), e.g. a partial run of one model."))
    purpose: Optional[str] = Field(None, description=(
        "One line saying what a study measures (stored as its `purpose`; default: 'study: ' + the command)."))

    DEFAULTS = {"selection": dict(n_init=16, k=128, n_local=128, chunk_size=128, score_dtype="int8")}
    # the flat keys of results written before `selection` was nested (--set k=2048)
    MOVED = {**{k: f"selection.{k}" for k in (*_SIZES, "pool_kernel", "score_layers", "score_dtype", "quest_per_head",
                                              "positions")},
             # the flat chunk_size was the chunk of both parts (with --full, of the accuracy part's model defaults)
             "chunk_size": ("selection.chunk_size", "model_chunk_size")}
    GRID = {"selection": {"method": "use methods=[...] and peers=[...]",
                          "record": "the accuracy part records the TokenSelect cases it plots",
                          "cache_threshold": "the Selection Cache part sweeps thresholds=[...]"}}


def _budget(bc: KVSelectBenchConfig) -> dict:
    """The TokenSelectConfig fields the bench sets: the sizes, and every other field that is not the library's
    default (only when set, so cached cases of earlier runs keep their keys)."""
    sel, default = bc.selection.to_dict(), TokenSelectConfig().to_dict()
    base = {k: sel[k] for k in _SIZES}
    base.update({k: v for k, v in sel.items() if k not in _SIZES and k not in bc.GRID["selection"] and v != default[k]})
    return base


DTYPE_TAG = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "int8": "int8"}
# bytes per scoring-key element at d=64 (int8 adds one float32 scale per key)
SCORING_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1 + 4 / 64}
# scoring precisions timed next to the headline one
TIMED_SCORING = ("float32", "bfloat16", "int8")

def _case_budget(base: dict, method: str) -> dict:
    """The budget part of a cached case's key: an exact method (dense) reads everything (no field matters),
    the others depend on the sizes and on the fields only they read (``Selector.fields``: TokenSelect's scoring
    fields count only for TokenSelect, ``quest_per_head`` only for Quest)."""
    sel = SELECTORS.get(method)
    if sel.exact:
        return {}
    others = {f for name, cls in SELECTORS.items() if name != method for f in cls.fields}
    return {k: v for k, v in base.items() if k not in others or k in sel.fields}


# A finished case is reused by its key, which names the config, not the code. Bump a method's revision whenever
# its selection changes, so cases it computed before are not reused (revision 1 adds nothing, which keeps the keys
# of every cached case written before revisions existed). quest 2: every query of a short chunk is bounded.
SELECTOR_REVISION = {"quest": 2}


def _case_key(model: str, task: str, length: int, method: str, budget: dict, device: str, digest: str) -> str:
    rev = SELECTOR_REVISION.get(method, 1)
    return json.dumps([model, task, length, method, budget, device, digest] + ([f"rev{rev}"] if rev > 1 else []))


def _peak_rss_mb(fn) -> tuple[float, object]:
    """Peak resident memory growth of ``fn`` (Linux: reset VmHWM through /proc/self/clear_refs)."""
    def status(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        return float("nan")
    try:
        # hand freed heap pages back first, so earlier runs' free memory does not hide this one's growth
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    base = status("VmRSS")
    out = fn()
    return status("VmHWM") - base, out



def _sync_for(device: str):
    """What closes a timed call on ``device``: CUDA kernels run asynchronously, so without a synchronize a timer
    would stop when the launch returns; the CPU needs nothing."""
    import torch

    return torch.cuda.synchronize if device == "cuda" else None


def _peak_mem_mb(fn, device: str) -> tuple[float, object]:
    """Peak memory growth of ``fn`` on ``device``: allocated CUDA memory on a GPU, resident memory on the CPU."""
    import torch

    if device != "cuda":
        return _peak_rss_mb(fn)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20, out


def timing_part(bc: KVSelectBenchConfig, hit_rate: float, rows: list, extra: dict) -> dict:
    """Attention-only timings for one SmolLM2-shaped layer (9 query / 3 KV heads, d=64), on ``bc.device``."""
    import torch

    from ..slim.kvselect import TokenSelectConfig
    from ..slim.kvselect.attention import standalone_layer, token_select_attention
    from .harness import time_interleaved, time_it

    hq, hkv, d = 9, 3, 64
    inv = 1.0 / (100000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    g = torch.Generator().manual_seed(bc.seed)
    out = {}
    ts_cfg = TokenSelectConfig(score_dtype=bc.selection.score_dtype)  # model defaults: 64 + 1024 + 512
    s_budget = ts_cfg.budget
    # a buffer well past any last-level cache: writing it evicts the previous step's keys and values
    # (the GPU has no such cache to speak of against a 32K+ context, so it is evicted only on the CPU)
    cold = bc.cold_cache and bc.device == "cpu"
    evict = torch.empty(16 << 20) if cold else None  # 64 MB of float32
    dev, sync = torch.device(bc.device), _sync_for(bc.device)
    tdt = getattr(torch, bc.timing_dtype) if bc.timing_dtype != "auto" else \
        torch.float32 if bc.device == "cpu" else torch.bfloat16
    extra["timing_dtype"] = str(tdt).removeprefix("torch.")
    variants = [("dense", TokenSelectConfig(method="dense")),
                ("tokenselect_miss", ts_cfg.model_copy(update={"cache_threshold": None})),
                ("tokenselect_hit", ts_cfg.model_copy(update={"cache_threshold": 1e-6}))]
    # the other scoring precisions next to the headline: what narrower scoring keys buy (or cost)
    alts = {f"_{DTYPE_TAG[o]}_scoring": o for o in TIMED_SCORING if o != (bc.selection.score_dtype or "float32")}
    for alt, other in alts.items():
        variants.append((f"tokenselect_miss{alt}",
                         ts_cfg.model_copy(update={"cache_threshold": None, "score_dtype": other})))
    for n in bc.timing_lengths:
        # drawn on the CPU from the seeded generator, so every device times the same tensors
        k = torch.randn(1, hkv, n, d, generator=g).to(dev, tdt)
        v = torch.randn(1, hkv, n, d, generator=g).to(dev, tdt)
        q1 = torch.randn(1, hq, 1, d, generator=g).to(dev, tdt)
        steps = {}
        for name, cfg in variants:
            m, st = standalone_layer(cfg, inv, hq // hkv)
            token_select_attention(m, q1, k[:, :, :n - 1], v[:, :, :n - 1], None, scaling=d ** -0.5)

            def step(m=m):
                # the same step again: the layer sees its cache rolled back by one key, so each call
                # syncs one new key into the scoring buffer, as in decoding
                token_select_attention(m, q1, k, v, None, scaling=d ** -0.5)

            steps[name] = step
        timed = time_interleaved(steps, repeats=bc.decode_repeats, warmup=2,
                                 before=(lambda: evict.fill_(1.0)) if cold else None, sync=sync)
        res = {name: t.median_s for name, t in timed.items()}
        for name, t in timed.items():
            rows.append({"part": "decode_attention", "method": name, "context": n, "metric": "ms_per_token",
                         "value": t.median_s * 1e3, "n": len(t.times_s), "cold_cache": cold, "device": bc.device})
        bound = 2 / (1 - hit_rate + 2 * s_budget / n)
        out[f"decode_bound_{n}"] = bound
        for miss, suffix, sdt in [("tokenselect_miss", "", bc.selection.score_dtype)] + \
                [(f"tokenselect_miss{alt}", alt, o) for alt, o in alts.items()]:
            ts_dec = hit_rate * res["tokenselect_hit"] + (1 - hit_rate) * res[miss]
            out[f"decode_speedup{suffix}_{n}"] = res["dense"] / ts_dec
            # the same bound when a miss reads narrower scoring keys than the float32 cache holds
            # (docs/kvselect.md, cost model): 2 / (r (1 - h) + 2S/N), r = scoring bytes / cache bytes per key
            r = SCORING_BYTES[sdt or "float32"] / 4
            rows.append({"part": "decode_attention", "method": f"tokenselect@h{suffix}", "context": n,
                         "metric": "ms_per_token", "value": ts_dec * 1e3, "hit_rate": hit_rate,
                         "speedup": res["dense"] / ts_dec, "bound_2/(1-h+2S/N)": bound,
                         "bound_narrow_scoring": 2 / (r * (1 - hit_rate) + 2 * s_budget / n)})
        qp = torch.randn(1, hq, n, d, generator=g).to(dev, tdt)
        pre = {}
        for name, cfg in [("dense", TokenSelectConfig(method="dense")), ("tokenselect", ts_cfg)]:
            def run():
                m, _ = standalone_layer(cfg, inv, hq // hkv)
                return token_select_attention(m, qp, k, v, None, scaling=d ** -0.5)
            t = time_it(run, repeats=bc.prefill_repeats, warmup=1, sync=sync)
            mem, _ = _peak_mem_mb(run, bc.device)  # after the warm-up, so one-time allocations do not count
            pre[name] = t.median_s
            rows.append({"part": "prefill_attention", "method": name, "context": n, "metric": "s_per_layer",
                         "value": t.median_s, "n": len(t.times_s), "peak_mem_mb": mem, "device": bc.device})
            out[f"prefill_mem_{name}_{n}"] = mem
        out[f"prefill_speedup_{n}"] = pre["dense"] / pre["tokenselect"]
        out[f"prefill_s_{n}"] = pre
        out[f"decode_s_{n}"] = res
        if bc.device == "cuda":
            # the fused path's captured steps against dense flash SDPA (eager and captured); the end-to-end estimate
            # then reads these, the eager per-call numbers above stay as rows and under *_eager
            from .kvselect_gpu import graph_timing

            gt = graph_timing(bc, n, k, v, qp, ts_cfg, rows, hit_rate)
            out[f"decode_speedup_gpu_{n}"] = gt["decode_speedup_gpu"]
            out[f"prefill_speedup_gpu_{n}"] = gt["prefill_speedup_gpu"]
            out[f"decode_s_eager_{n}"], out[f"prefill_s_eager_{n}"] = res, pre
            out[f"decode_s_{n}"], out[f"prefill_s_{n}"] = gt["decode_s"], gt["prefill_s"]
            out["sdpa_backend"] = gt["sdpa_backend"]
        del k, v, qp
    return out


def _decode(model, cache, last, steps):
    """Greedy decode ``steps`` tokens from a prefilled cache; returns tokens."""
    import torch

    toks = []
    nxt = last
    for _ in range(steps):
        o = model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        nxt = o.logits[:, -1:].argmax(-1)
        toks.append(int(nxt))
    return toks


def cache_part(bc: KVSelectBenchConfig, rows: list) -> dict:
    """Selection Cache on the real SmolLM2: hit rate and agreement with recomputation per threshold."""
    import copy
    import time

    import torch

    from ..core.models import load_causal_lm
    from ..slim.kvselect import TokenSelectConfig, disable_token_select, enable_token_select
    from ..slim.kvselect.tasks import Haystack

    lm = load_causal_lm("smollm2-135m", device=bc.device)
    sync = _sync_for(bc.device) or (lambda: None)
    hay = Haystack(lm.tokenizer)
    s = hay.sample("passkey", max(bc.lengths), 0.5, seed=bc.seed)
    ids = torch.tensor([s.input_ids], device=bc.device)
    base = _budget(bc)
    # this part reads the bench's own budget fields; --full's 512-query chunk is sized for the accuracy part's
    # model defaults (n_local 512), and a chunk may not outgrow the local window
    base["chunk_size"] = min(base["chunk_size"], base["n_local"])
    out = {}
    with torch.no_grad():
        rt = enable_token_select(lm.model, TokenSelectConfig(**base, cache_threshold=None))
        sync()
        t0 = time.perf_counter()
        pre = lm.model(ids[:, :-1], use_cache=True, logits_to_keep=1)
        sync()
        out["prefill_s_per_token"] = (time.perf_counter() - t0) / (ids.shape[1] - 1)
        out["layers"] = lm.model.config.num_hidden_layers
        ref = None
        for thr in [None] + list(bc.thresholds):
            rt.cfg = TokenSelectConfig(**base, cache_threshold=thr)
            rt.reset_stats()
            for st in rt.layers.values():
                st.cached_q = st.cached_mid = None
            cache = copy.deepcopy(pre.past_key_values)
            sync()
            t0 = time.perf_counter()
            toks = _decode(lm.model, cache, ids[:, -1:], bc.decode_tokens)
            sync()
            dt = time.perf_counter() - t0
            stats = rt.stats()
            ref = toks if thr is None else ref
            agree = sum(a == b for a, b in zip(toks, ref)) / len(ref)
            key = "none" if thr is None else str(thr)
            out[key] = {"hit_rate": stats.hit_rate, "agreement": agree, "decode_s": dt}
            rows.append({"part": "selection_cache", "method": "tokenselect", "threshold": key,
                         "context": int(ids.shape[1]), "metric": "hit_rate", "value": stats.hit_rate,
                         "token_agreement_vs_no_cache": agree, "decode_s_per_token": dt / bc.decode_tokens,
                         "n": bc.decode_tokens})
        disable_token_select(lm.model)
    return out


def accuracy_part(bc: KVSelectBenchConfig, rows: list, extra: dict, plot_dir: Path) -> dict:
    import time

    import torch

    from ..core.models import load_causal_lm
    from ..slim.kvselect import TokenSelectConfig, disable_token_select, enable_token_select
    from ..slim.kvselect.config import defaults_for
    from ..slim.kvselect.tasks import Haystack, is_correct, make_samples
    from .harness import mean_std

    from tqdm import tqdm

    from ..core.runs import atomic_write_json, runs_root

    base = _budget(bc)
    acc: dict = {}
    # every finished case is kept, so a killed run resumes where it stopped (long CPU cells take minutes each)
    cache_path = runs_root() / f"bench-{bc.result}" / "cases.json"
    done: dict = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for model_name in bc.models:
        lm = None
        # (task, length, method, mid): a mid cell puts every case's needle at depth 0.5, away from the sink and the
        # local window that every peer keeps; TokenSelect runs on the peers' very cases, so they compare case for case
        plan = [(t, L, m, m not in ("dense", "tokenselect")) for t in bc.tasks for L in bc.lengths for m in bc.methods
                if not (m == "dense" and bc.dense_max and L > bc.dense_max)]
        plan += [("passkey", bc.peer_length, p, True) for p in (["tokenselect", *bc.peers] if bc.peers else [])]
        for task, L, method, mid in plan:
            if lm is None:
                lm = load_causal_lm(model_name, device=bc.device)
                hay = Haystack(lm.tokenizer)
                if bc.model_defaults:
                    # the model's scaled budget; the chunk, the position mode and the Quest form still come from
                    # the bench
                    base = {**defaults_for(lm.model.config), **{f: v for f, v in _budget(bc).items()
                                                                if f in ("chunk_size", "positions", "quest_per_head")}}
                    base["chunk_size"] = bc.model_chunk_size or base["chunk_size"]
            depths = [0.5] if mid else bc.depths
            samples = make_samples(hay, task, [L], depths, len(bc.depths) if mid else bc.n_per_depth, seed=bc.seed + L)
            record = task == "passkey" and method == "tokenselect" and L == max(bc.lengths) and not mid
            # selectors record their index sets, so each case says whether a miss was the selection or the reader
            rt = enable_token_select(lm.model, TokenSelectConfig(method=method, **base, record=method != "dense"))
            hits, secs, recalls, layer_recalls = [], 0.0, [], []
            for i, s in enumerate(tqdm(samples, desc=f"{model_name} {task} {L} {method}", leave=False)):
                # keyed by the case's content, not its index: other depths or n_per_depth reorder the cases
                digest = hashlib.sha1(json.dumps(s.input_ids).encode()).hexdigest()
                key = _case_key(model_name, task, L, method, _case_budget(base, method), bc.device, digest)
                if key in done and not (record and i == len(samples) - 1):
                    hits.append(done[key]["hit"])
                    secs += done[key]["seconds"]
                    recalls.append(done[key].get("needle_recall"))
                    layer_recalls.append(done[key].get("needle_recall_layers"))
                    continue
                t0 = time.perf_counter()
                ids = torch.tensor([s.input_ids], device=bc.device)
                probe = _RecallProbe(rt, s.needle_span)
                with torch.no_grad():
                    g = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                                          pad_token_id=lm.tokenizer.pad_token_id, stopping_criteria=[probe])
                text = lm.tokenizer.decode(g[0, ids.shape[1]:])
                hits.append(float(is_correct(s, text)))
                recalls.append(probe.first)
                layer_recalls.append(probe.first_layers)
                done[key] = {"hit": hits[-1], "seconds": time.perf_counter() - t0, "generated": text,
                             "needle_recall": probe.first, "needle_recall_steps": probe.steps,
                             "needle_recall_layers": probe.first_layers}
                secs += done[key]["seconds"]
                atomic_write_json(cache_path, done)
            if record and rt.selected():
                _selection_plot(rt, samples[-1], model_name, plot_dir, _plot_stem(bc.result))
            disable_token_select(lm.model)
            ms = mean_std(hits)
            acc[(model_name, task + MID if mid else task, L, method)] = ms["value"]
            row = {"part": "accuracy", "model": model_name, "task": task, "context": L, "method": method,
                   "depths": ",".join(map(str, depths)), "metric": "accuracy", "value": ms["value"], "std": ms["std"],
                   "n": ms["n"], "budget": TokenSelectConfig(**base).budget, "seconds": secs}
            row.update(_recall_summary(hits, recalls, layer_recalls))
            rows.append(row)
            typer.echo(f"  {model_name} {task}{' (needles mid-context)' if mid else ''} {L} {method}: {ms['value']:.2f} (n={ms['n']})"
                       + (f", needle selected in {row['needle_selected']}/{row['recall_n']}, wrong with the needle "
                          f"selected {row['wrong_with_needle_selected']}" if "recall_n" in row else "")
                       + (f", whole in at least one layer in {row['needle_whole_in_a_layer']}/{row['layer_recall_n']}"
                          if "layer_recall_n" in row else ""), err=True)
        del lm
    return acc


MID = "@mid"  # accuracy key suffix of the mid-context cells (the peer comparison)


def peer_targets(bc: KVSelectBenchConfig, acc: dict, model: str) -> dict:
    """TokenSelect minus each peer at ``peer_length`` on the same mid-context passkey cases (the issue's "needles
    placed mid-context"), not against TokenSelect's all-depth cell, whose edge depths sit in every peer's window."""
    from .harness import target

    ts = acc.get((model, "passkey" + MID, bc.peer_length, "tokenselect"))
    out = {}
    for p in ("streaming", "h2o", "quest"):
        pv = acc.get((model, "passkey" + MID, bc.peer_length, p))
        out[f"tokenselect_minus_{p}_{bc.peer_length}_{model}"] = target(
            None if pv is None or ts is None else ts - pv, ">= 0.01")
    return out


NEEDLE_SELECTED = 0.8  # fraction of the needle's tokens a selection must hold to count as "selected"


class _RecallProbe:
    """A ``generate`` stopping criterion that never stops: after every forward it reads the selectors' recorded
    index sets and keeps the fraction of the needle's tokens they hold (mean over selecting layers and heads)."""

    def __init__(self, rt, span: tuple[int, int]):
        self.rt, self.span, self.steps, self.layer_steps = rt, span, [], []
        for st in rt.layers.values():
            st.last_idx = None  # a layer that ran dense this time must not report the previous case's set

    @property
    def first(self):
        """Recall at the forward that produces the first answer token (the prompt's question chunk)."""
        return self.steps[0] if self.steps else None

    @property
    def first_layers(self) -> dict | None:
        """Per selecting layer, the recall at that same forward: on a model whose every layer scores, the mean
        can sit well below 1 while a few layers hold the whole needle, and those are the ones that read it."""
        return self.layer_steps[0] if self.layer_steps else None

    def __call__(self, input_ids, scores, **kw):
        import torch

        sel = self.rt.selected()
        if sel:
            lo, hi = self.span
            inside = [((idx >= lo) & (idx < hi)).sum(-1).float().mean().item() / max(1, hi - lo) for idx in sel.values()]
            self.steps.append(round(sum(inside) / len(inside), 4))
            self.layer_steps.append({str(layer): round(r, 4) for layer, r in zip(sel, inside)})
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _recall_summary(hits: list[float], recalls: list, layer_recalls: list | None = None) -> dict:
    """How many cases had the needle selected, and how many of the wrong answers had it (a reader miss,
    not a selection miss); empty for dense or for cached cases from before recall was recorded.
    ``layer_recalls`` (per case, per layer; None where not recorded) adds ``needle_whole_in_a_layer``: cases in
    which at least one layer held >= NEEDLE_SELECTED of the needle, and the mean share of such layers."""
    pairs = [(h, r) for h, r in zip(hits, recalls) if r is not None]
    if not pairs:
        return {}
    sel = [(h, r >= NEEDLE_SELECTED) for h, r in pairs]
    out = {"recall_n": len(pairs), "needle_recall_mean": sum(r for _, r in pairs) / len(pairs),
           "needle_selected": sum(s for _, s in sel), "wrong_with_needle_selected": sum(s and not h for h, s in sel),
           "right_without_needle_selected": sum(h and not s for h, s in sel)}
    per_case = [list(lr.values()) for lr in (layer_recalls or []) if lr]
    if per_case:
        out["layer_recall_n"] = len(per_case)
        out["needle_whole_in_a_layer"] = sum(max(v) >= NEEDLE_SELECTED for v in per_case)
        out["layers_holding_needle_share"] = sum(sum(x >= NEEDLE_SELECTED for x in v) / len(v)
                                                 for v in per_case) / len(per_case)
    return out


def kvselect_note(bc: KVSelectBenchConfig, load: float, ran: list[str]) -> str:
    """What the run measured and how; only the parts that ran are described."""
    if bc.device == "cpu":
        parts = [f"Measured on {os.cpu_count()} CPU cores, load average {load:.1f} at the end of the run (a load above "
                 "the core count inflates absolute times; ratios are side by side in one run)."]
    else:
        import torch

        parts = [f"Measured on {torch.cuda.get_device_name(torch.device(bc.device))} ({bc.device}); on CUDA "
                 "TokenSelect takes the fused Triton path (fused.py): the parity part checks it against the PyTorch "
                 "reference first; the *_graph rows replay its decode step and prefill chunks as CUDA graphs "
                 f"(cuda_graph={bc.cuda_graph}) against dense flash SDPA, eager and captured, timed back to back "
                 "between CUDA events; speedups are against the faster dense. Ratios are side by side in one run."]
    if "timing" in ran:
        parts.append(f"Attention timings ({bc.device}) use random tensors shaped like one SmolLM2 layer (9 q / 3 kv heads, d=64); "
                     "decode time per token for TokenSelect = h*t_hit + (1-h)*t_miss with h the Selection Cache hit "
                     f"rate measured on the real model at threshold 0.9; decode methods are timed round-robin, "
                     f"median of {bc.decode_repeats} steps each; prefill median of {bc.prefill_repeats} after a warm-up"
                     + ("; the CPU caches are evicted before every timed decode step, as the other layers of a real "
                        "model would (warm single-layer repeats flatter both sides, TokenSelect more)."
                        if bc.cold_cache and bc.device == "cpu" else
                        "; decode steps repeat one layer with its KV warm in the CPU caches." if bc.device == "cpu" else
                        "; every timed call ends with torch.cuda.synchronize.")
                     + f" TokenSelect scores with {bc.selection.score_dtype or 'float32'} keys; the *_scoring rows with the "
                     "other precisions (float32, bfloat16, int8).")
    if "accuracy" in ran:
        budget = "each model's scaled defaults (defaults_for)" if bc.model_defaults else \
            f"n_init={bc.selection.n_init}, k={bc.selection.k}, n_local={bc.selection.n_local}, TokenSelect max-pool {bc.selection.pool_kernel}"
        parts.append(f"Accuracy: models {bc.models} on {bc.device}, budget {budget}, chunk "
                     f"{(bc.model_defaults and bc.model_chunk_size) or bc.selection.chunk_size}, "
                     f"at {bc.lengths} tokens"
                     + (f" (dense only up to {bc.dense_max})" if bc.dense_max else "")
                     + (f", selected keys at their {bc.selection.positions} positions" if bc.selection.positions != "compact" else "")
                     + "; n per cell in the rows; targets at lengths not run stay null (not measured).")
    parts.append("SmolLM2 weights passed through GGUF Q4_1, Gemma-3 through Q4_K_M.")
    return " ".join(parts)


def _plot_stem(result: str) -> str:
    """The stem a result's plots share with its JSON: ``kvselect`` or the study's name (``gemma3-16k``)."""
    from .harness import result_path

    return result_path("kvselect", result).stem


def selection_plot_name(result: str, model_name: str) -> str:
    """``<result>_selection_<model>.png``; a model given as a folder path is named by its path's parts, so the file
    lands in the results folder instead of failing on the path's slashes."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-.") or "model"
    return f"{result}_selection_{slug}.png"


def _selection_plot(rt, sample, model_name: str, plot_dir: Path, result: str = "kvselect") -> None:
    """Which tokens each layer selected at the last decode step; a study keeps its own file next to its JSON
    (``kvselect/<study>_selection_<model>.png``), so a partial run at another length leaves the default plot alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = rt.selected()
    fig, ax = plt.subplots(figsize=(10, 4))
    for layer, idx in sorted(sel.items()):
        x = idx[0, 0].cpu().numpy()
        ax.scatter(x, [layer] * len(x), s=1, c="tab:blue")
    lo, hi = sample.needle_span
    ax.axvspan(lo, hi, color="tab:red", alpha=0.3, label="needle")
    ax.set_xlabel("token position")
    ax.set_ylabel("layer")
    ax.set_title(f"TokenSelect selection per layer, {model_name}, {sample.n_tokens}-token passkey (last decode step)")
    ax.legend(loc="upper right")
    plot_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot_dir / selection_plot_name(result, model_name), dpi=110, bbox_inches="tight")
    plt.close(fig)


def register(app: typer.Typer) -> None:
    from ..options import ConfigOpt, SetOpt

    @app.command("kvselect")
    def kvselect(full: bool = typer.Option(False, "--full", help="Issue sizes: 4K-32K accuracy, 64K-128K timing (GPU)."),
                 config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                 skip: Optional[str] = typer.Option(None, help="Comma-separated parts to skip: parity,timing,cache,accuracy "
                                                    "(parity runs on a GPU only).")) -> None:
        """TokenSelect vs dense and equal-budget peers: speed, Selection Cache, long-context accuracy."""
        run_bench(full=full, config=config, sets=set_ or [], skip=(skip or "").split(","))


def end_to_end_rows(cache: dict, timing: dict, h: float, lengths, e2e_tokens: int, cache_tokens: int) -> list[dict]:
    """Prefill + ``e2e_tokens`` decode tokens, dense vs TokenSelect, at every timed length, from measured parts: the
    non-attention cost per token (the real model's prefill / decode in the cache part, attention included, so the
    estimate errs towards dense) plus layers x the attention times of the timing part."""
    nl = cache["layers"]
    lin_p, lin_d = cache["prefill_s_per_token"], cache["none"]["decode_s"] / cache_tokens
    rows = []
    for L in lengths:
        pd, pt = timing[f"prefill_s_{L}"]["dense"], timing[f"prefill_s_{L}"]["tokenselect"]
        dd = timing[f"decode_s_{L}"]["dense"]
        dt_ = h * timing[f"decode_s_{L}"]["tokenselect_hit"] + (1 - h) * timing[f"decode_s_{L}"]["tokenselect_miss"]
        e_dense = L * lin_p + nl * pd + e2e_tokens * (lin_d + nl * dd)
        e_ts = L * lin_p + nl * pt + e2e_tokens * (lin_d + nl * dt_)
        rows.append({"part": "end_to_end_estimated", "method": "dense", "context": L, "metric": "seconds",
                     "value": e_dense, "decode_tokens": e2e_tokens})
        rows.append({"part": "end_to_end_estimated", "method": "tokenselect", "context": L, "metric": "seconds",
                     "value": e_ts, "decode_tokens": e2e_tokens, "speedup": e_dense / e_ts})
    return rows


# the CPU path's passkey on Qwen2.5-Coder-0.5B at 32K (20 cases), which the GPU path must equal
QWEN_CPU_RESULT = "qwen-passkey"


def gpu_targets(bc: KVSelectBenchConfig, timing: dict, extra: dict, acc: dict, parity: dict) -> dict:
    """Issue 34's targets for the fused GPU path (H100/H200, bfloat16), named whether measured or not."""
    from .harness import result_path, target

    tg = {"decode_attention_speedup_gpu_128k": target(timing.get("decode_speedup_gpu_131072"), ">= 5"),
          "decode_attention_speedup_gpu_32k": target(timing.get("decode_speedup_gpu_32768"), ">= 3"),
          "prefill_attention_speedup_gpu_128k": target(timing.get("prefill_speedup_gpu_131072"), ">= 3"),
          "end_to_end_speedup_gpu_128k_estimated": target(extra.get("e2e_speedup_estimated", {}).get("131072"),
                                                          ">= 2")}
    for tag, goal in (("fp32", ">= 0.99"), ("bf16", ">= 0.97")):
        tg[f"gpu_parity_index_agreement_{tag}"] = target(parity.get(tag, {}).get("value"), goal)
    cpu = None
    path = result_path("kvselect", QWEN_CPU_RESULT)
    if path.exists():
        cpu = next((r["value"] for r in json.loads(path.read_text())["rows"] if r.get("part") == "accuracy"
                    and r.get("context") == 32768 and r.get("method") == "tokenselect"), None)
    gpu = acc.get(("qwen2.5-coder-0.5b", "passkey", 32768, "tokenselect"))
    tg["passkey_qwen_32k_gpu_minus_cpu"] = target(None if gpu is None or cpu is None else gpu - cpu, ">= 0")
    return tg


def run_bench(*, full: bool, config=None, sets: list[str] | None = None, skip: list[str] = ()) -> Path:
    import torch

    from ..core.config import resolve
    from ..core.models import resolve_device
    from .harness import result_path, target, write_result

    overrides = {}
    if full:
        peers = [n for n, cls in SELECTORS.items() if n != "tokenselect" and not cls.exact]
        overrides = dict(models=["smollm2-135m", "gemma3-270m"], peers=peers,
                         lengths=[1024, 2048, 4096, 8192, 16384, 32768], depths=[0.1, 0.3, 0.5, 0.7, 0.9], n_per_depth=4,
                         decode_tokens=64,
                         peer_length=32768, model_defaults=True, model_chunk_size=512,
                         timing_lengths=[32768, 65536, 131072], prefill_repeats=5, device="auto")
    # the --full sizes are a base that a config file and --set still override (e.g. one model, fewer cases)
    bc = resolve(KVSelectBenchConfig, config_file=config, sets=sets, base=overrides)
    bc = bc.model_copy(update={"device": resolve_device(bc.device)})  # cpu or cuda from here on (cache keys too)
    torch.set_num_threads(bc.threads)
    torch.manual_seed(bc.seed)
    rows: list[dict] = []
    extra: dict = {}
    parity = {}
    if bc.device == "cuda" and "parity" not in skip:  # first: no timing is reported for a path that disagrees
        from .kvselect_gpu import parity_part

        parity = parity_part(bc, rows)
    cache = cache_part(bc, rows) if "cache" not in skip else {}
    h = cache.get("0.9", {}).get("hit_rate", 0.0)
    timing = timing_part(bc, h, rows, extra) if "timing" not in skip else {}
    n_max = max(bc.timing_lengths)
    # the targets are stated at 32K; --full also times 64K and 128K, which stay in "timing" next to them
    n32 = 32768 if 32768 in bc.timing_lengths else n_max
    if cache and timing:
        e2e = end_to_end_rows(cache, timing, h, bc.timing_lengths, bc.e2e_decode_tokens, bc.decode_tokens)
        rows.extend(e2e)
        extra["e2e_speedup_32k_estimated"] = next(r["speedup"] for r in e2e if r["context"] == n32 and "speedup" in r)
        extra["e2e_speedup_estimated"] = {str(r["context"]): r["speedup"] for r in e2e if "speedup" in r}
    # plots go next to the result's JSON: the results folder for the canonical run, kvselect/ for a study
    acc = accuracy_part(bc, rows, extra, result_path("kvselect", bc.result).parent) if "accuracy" not in skip else {}
    tg = {}
    Lmax = max(bc.lengths)
    for m in bc.models:
        tg[f"passkey_tokenselect_16k_{m}"] = target(acc.get((m, "passkey", 16384, "tokenselect")), ">= 0.90")
        tg[f"passkey_tokenselect_32k_{m}"] = target(acc.get((m, "passkey", 32768, "tokenselect")), ">= 0.90")
        ts32 = acc.get((m, "passkey", 32768, "tokenselect"))
        d2 = acc.get((m, "passkey", 2048, "dense"))
        tg[f"tokenselect32k_minus_dense2k_{m}"] = target(None if ts32 is None or d2 is None else ts32 - d2, ">= 0")
        tg[f"passkey_tokenselect_{Lmax}_minus_dense_2k_{m}"] = target(
            None if d2 is None else acc.get((m, "passkey", Lmax, "tokenselect"), float("nan")) - d2, ">= 0")
        tg[f"multikey_16k_tokenselect_{m}"] = target(acc.get((m, "multikey", 16384, "tokenselect")), ">= 0")
        mk4 = [acc.get((m, "multikey", 4096, x)) for x in ("tokenselect", "dense")]
        tg[f"multikey_4k_tokenselect_minus_dense_{m}"] = target(None if None in mk4 else mk4[0] - mk4[1], ">= -0.02")
        mkL = [acc.get((m, "multikey", Lmax, x)) for x in ("tokenselect", "dense")]
        tg[f"multikey_{Lmax}_tokenselect_minus_dense_{m}"] = target(None if None in mkL else mkL[0] - mkL[1], ">= -0.02")
        tg.update(peer_targets(bc, acc, m))
    tg["decode_attention_speedup_32k"] = target(timing.get(f"decode_speedup_{n32}"), ">= 5")
    tg["prefill_attention_speedup_32k"] = target(timing.get(f"prefill_speedup_{n32}"), ">= 8")
    tg["end_to_end_speedup_32k"] = target(extra.get("e2e_speedup_32k_estimated"), ">= 2.3")
    if bc.device == "cuda":
        tg.update(gpu_targets(bc, timing, extra, acc, parity))
    for thr in bc.thresholds:
        c = cache.get(str(thr), {})
        tg[f"selection_cache_hit_rate_{thr}"] = target(c.get("hit_rate"), ">= 0")
        tg[f"selection_cache_agreement_{thr}"] = target(c.get("agreement"), ">= 0")
    load = os.getloadavg()[0]
    extra["load_average_at_end"] = load
    extra["note"] = kvselect_note(bc, load, ran=[p for p in ("timing", "cache", "accuracy") if p not in skip])
    extra["cache"] = cache
    extra["timing"] = {k: v for k, v in timing.items()}
    # the exact command, so the result can be reproduced from the JSON alone
    cmd = ("slimguard bench kvselect" + (" --full" if full else "") + (f" --config {config}" if config else "")
           + "".join(f" --set {shlex.quote(s)}" for s in sets or [])
           + (f" --skip {','.join(x for x in skip if x)}" if any(skip) else ""))
    path = write_result("kvselect", name=bc.result, purpose=bc.purpose, command=cmd, config=bc.to_dict(), rows=rows,
                        targets=tg, extra=extra)
    typer.echo(str(path))
    return path

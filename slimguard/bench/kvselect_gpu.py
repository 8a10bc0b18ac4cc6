"""GPU side of ``slimguard bench kvselect --full`` (TokenSelect, Wu et al., 2024, on a CUDA device).

Two parts, both only on ``device=cuda``: (1) a parity check run first, the fused Triton path against the
PyTorch reference on the same tensors (selected indices, outputs at float32 and bfloat16 tolerance), so a
timing is never reported for a path that computes something else; (2) side-by-side timings per context
length: dense SDPA on the flash backend (bfloat16; eager and captured as a CUDA graph) against TokenSelect's
fused path with its decode step and its prefill chunks captured as CUDA graphs (``fused.DecodeStep``).
Graph replays are timed back to back between CUDA events (a host timer around one replay of a ~20 us step
would mostly measure the synchronisation), median over repeats.
"""

from __future__ import annotations

HQ, HKV, D = 9, 3, 64  # one SmolLM2 layer
PER = 20  # replays per timed repeat


def _tables(inv, n: int, device):
    import torch

    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv.double()[None]
    return ang.cos().float().to(device), ang.sin().float().to(device)


def _flash(q, k, v, scaling: float, causal: bool):
    """Dense SDPA on the flash backend (GQA through enable_gqa, no repeated K/V); falls back to the fused
    backends torch allows for these shapes if flash refuses them, and says which ran."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    for name, backends in (("flash", [SDPBackend.FLASH_ATTENTION]),
                           ("flash|efficient|cudnn", [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                                      SDPBackend.CUDNN_ATTENTION])):
        def call(backends=backends):
            with sdpa_kernel(backends):
                return sdpa(q, k, v, scale=scaling, is_causal=causal, enable_gqa=True)
        try:
            call()
            torch.cuda.synchronize()
            return call, name
        except RuntimeError:
            continue
    raise RuntimeError("no fused SDPA backend accepts these shapes")


def _graph(fn):
    """``fn`` captured as a CUDA graph (warmed on a side stream first); returns the replay."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def _time_replays(fn, repeats: int, per: int = PER) -> float:
    """Median seconds per call of ``per`` back-to-back calls, between CUDA events."""
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(per):
            fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / per)
    return sorted(times)[len(times) // 2]


def parity_part(bc, rows: list, device: str = "cuda", n: int = 8192, steps: int = 8,
                budget: dict | None = None) -> dict:
    """The fused path against the reference on SmolLM2-shaped random tensors (8K keys, the default budget): decode
    steps (misses and Selection Cache hits) and a chunked prefill, float32 and bfloat16."""
    import torch

    from ..slim.kvselect import TokenSelectConfig
    from ..slim.kvselect.attention import standalone_layer, token_select_attention

    inv = 1.0 / (100000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    g = torch.Generator().manual_seed(bc.seed)
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        k, v = (torch.randn(1, HKV, n + steps, D, generator=g).to(device, dt) for _ in range(2))
        base = torch.randn(1, HQ, 1, D, generator=g)
        qs = [(base + 0.3 * torch.randn(1, HQ, 1, D, generator=g)).to(device, dt) for _ in range(steps)]
        qp = torch.randn(1, HQ, n, D, generator=g).to(device, dt)
        res = {}
        for kernel in ("torch", "triton"):
            # threshold 0.5: random queries one position apart are far less alike than a model's, and the parity
            # check must cover Selection Cache hits as well as misses
            cfg = TokenSelectConfig(kernel=kernel, score_dtype="float32", record=True, cache_threshold=0.5,
                                    **(budget or {}))
            m, st = standalone_layer(cfg, inv, HQ // HKV)
            pre = token_select_attention(m, qp, k[:, :, :n], v[:, :, :n], None, scaling=D ** -0.5)[0]
            pre_idx = st.last_idx
            dec, idx = [], []
            for i, q in enumerate(qs):
                dec.append(token_select_attention(m, q, k[:, :, :n + i + 1], v[:, :, :n + i + 1], None,
                                                  scaling=D ** -0.5)[0])
                idx.append(st.last_idx)
            res[kernel] = (pre.float(), pre_idx, torch.cat(dec).float(), idx, st.runtime.stats())
        a, b = res["torch"], res["triton"]
        agree = [(x == y).float().mean().item() for x, y in zip([a[1]] + a[3], [b[1]] + b[3])]
        tag = "fp32" if dt == torch.float32 else "bf16"
        row = {"part": "parity", "method": "triton_vs_torch", "dtype": tag, "context": n, "metric": "index_agreement",
               "value": sum(agree) / len(agree), "n": len(agree),
               "prefill_max_abs_diff": (a[0] - b[0]).abs().max().item(),
               "decode_max_abs_diff": (a[2] - b[2]).abs().max().item(),
               "cache_hits_torch": a[4].cache_hits, "cache_hits_triton": b[4].cache_hits}
        rows.append(row)
        out[tag] = row
    return out


def graph_timing(bc, n: int, k, v, qp, ts_cfg, rows: list, hit_rate: float) -> dict:
    """Dense flash SDPA (eager and captured) against TokenSelect's captured fused steps at ``n`` keys."""
    import torch

    from ..slim.kvselect.fused import DecodeStep, FusedSelector
    from .kvselect import _peak_mem_mb

    inv = 1.0 / (100000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    dev = k.device
    cos_t, sin_t = _tables(inv, n, dev)
    scaling = D ** -0.5
    out: dict = {}
    sdt = getattr(torch, ts_cfg.score_dtype) if ts_cfg.score_dtype else k.dtype
    # decode: the step sees n - reps .. n keys, so the static cache holds every step the timing replays
    reps = (bc.decode_repeats + 2) * PER
    q1 = qp[:, :, -1:].clone()
    dense_eager, backend = _flash(q1, k, v, scaling, causal=False)
    dense_out = torch.empty_like(q1)
    dense_graph = _graph(lambda: dense_out.copy_(dense_eager()))
    times = {"dense_flash": _time_replays(dense_eager, bc.decode_repeats),
             "dense_flash_graph": _time_replays(dense_graph, bc.decode_repeats)}
    for name, thr in (("tokenselect_graph_miss", None), ("tokenselect_graph_hit", 1e-6)):
        # a constant query: with the threshold near 0 every step after the first reuses the selection
        fs = FusedSelector(n_kv=HKV, hq=HQ, d=D, k=ts_cfg.k, n_init=ts_cfg.n_init, n_local=ts_cfg.n_local,
                           pool=ts_cfg.pool_kernel, threshold=thr, score_dtype=sdt, device=dev, capacity=n)
        step = DecodeStep(fs, k, v, q1.clone(), cos_t, sin_t, scaling, n_keys=n - reps, graph=bc.cuda_graph)
        times[name] = _time_replays(step, bc.decode_repeats)
        del step, fs
    ts = hit_rate * times["tokenselect_graph_hit"] + (1 - hit_rate) * times["tokenselect_graph_miss"]
    best_dense = min(times["dense_flash"], times["dense_flash_graph"])
    for name, t in times.items():
        rows.append({"part": "decode_attention", "method": name, "context": n, "metric": "ms_per_token",
                     "value": t * 1e3, "n": bc.decode_repeats * PER, "device": "cuda", "sdpa_backend": backend,
                     "cuda_graph": name.endswith("graph") or (name.startswith("tokenselect") and bc.cuda_graph)})
    rows.append({"part": "decode_attention", "method": "tokenselect_graph@h", "context": n, "metric": "ms_per_token",
                 "value": ts * 1e3, "hit_rate": hit_rate, "speedup": best_dense / ts, "vs": "best dense (flash, "
                 "eager or captured)"})
    out["decode_speedup_gpu"] = best_dense / ts
    out["decode_s"] = {"dense": best_dense, "tokenselect_hit": times["tokenselect_graph_hit"],
                       "tokenselect_miss": times["tokenselect_graph_miss"]}
    # prefill: dense causal flash over all n queries, against TokenSelect's chunks replayed as one graph each
    c = ts_cfg.chunk_size
    s0 = (ts_cfg.budget // c) * c  # the first chunk past the budget ends at s0 + c
    dense_pre, _ = _flash(qp, k, v, scaling, causal=True)
    fs = FusedSelector(n_kv=HKV, hq=HQ, d=D, k=ts_cfg.k, n_init=ts_cfg.n_init, n_local=ts_cfg.n_local,
                       pool=ts_cfg.pool_kernel, threshold=None, score_dtype=sdt, device=dev, capacity=n)
    q_buf = torch.empty(1, HQ, c, D, dtype=qp.dtype, device=dev)
    q_buf.copy_(qp[:, :, s0:s0 + c])
    step = DecodeStep(fs, k, v, q_buf, cos_t, sin_t, scaling, n_keys=s0, graph=bc.cuda_graph,
                      vote_queries=ts_cfg.vote_queries)
    res = torch.empty(1, n, HQ, D, dtype=qp.dtype, device=dev)
    head, _ = _flash(qp[:, :, :s0], k[:, :, :s0], v[:, :, :s0], scaling, causal=True)

    def ts_prefill():
        res[:, :s0] = head().transpose(1, 2)  # the chunks that fit the budget: dense
        fs.n_seen, step.n = 0, s0
        fs.nk.fill_(s0)
        fs.sync(k, s0, cos_t, sin_t)
        for s in range(s0, n - n % c, c):
            q_buf.copy_(qp[:, :, s:s + c])
            res[:, s:s + c] = step()
        return res

    pre = {}
    for name, fn in (("dense_flash", dense_pre), ("tokenselect_graph", ts_prefill)):
        t = _time_replays(fn, bc.prefill_repeats, per=1)
        mem, _ = _peak_mem_mb(fn, "cuda")
        pre[name] = t
        rows.append({"part": "prefill_attention", "method": name, "context": n, "metric": "s_per_layer", "value": t,
                     "n": bc.prefill_repeats, "peak_mem_mb": mem, "device": "cuda", "sdpa_backend": backend})
        out[f"prefill_mem_{name}"] = mem
    out["prefill_speedup_gpu"] = pre["dense_flash"] / pre["tokenselect_graph"]
    out["prefill_s"] = {"dense": pre["dense_flash"], "tokenselect": pre["tokenselect_graph"]}
    out["sdpa_backend"] = backend
    return out

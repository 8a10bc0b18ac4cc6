"""TokenSelect's fused GPU path (Triton kernels, fused.py) against the PyTorch reference path.

Without a GPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1, set here before the kernels are
first imported); on a CUDA machine the same tests run the compiled kernels. Skipped when triton is absent
(``pip install 'slimguard[gpu]'``). Sizes are tiny: the interpreter runs every program in numpy.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from slimguard.core.errors import SlimguardError
from slimguard.slim.kvselect import fused as FU
from slimguard.slim.kvselect import select as K
from slimguard.slim.kvselect.attention import standalone_layer, token_select_attention
from slimguard.slim.kvselect.config import TokenSelectConfig

HAS_TRITON = importlib.util.find_spec("triton") is not None
DEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (pip install 'slimguard[gpu]')")
D = 16
INV = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    if DEV == "cpu":  # conftest sets it for the session before anything imports triton; keep it set here
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def _tables(n: int):
    ang = torch.arange(n, dtype=torch.float64)[:, None] * INV.double()[None]
    return ang.cos().float().to(DEV), ang.sin().float().to(DEV)


def _reference_mid(key, q, n, n_init, k, n_local, pool, score_dtype):
    """TokenSelect's decode selection on the PyTorch path: un-rotated keys, soft vote, pool, top-k."""
    cos_t, sin_t = _tables(n)
    kun = K.rotate_into(torch.empty_like(key), key, cos_t[:n], -sin_t[:n])
    ks = None
    if score_dtype == torch.int8:
        kun, ks = K.quantize_rows(kun)
    q_un = K.rotate_into(torch.empty_like(q), q, cos_t[n - 1], -sin_t[n - 1])[:, :, 0]
    lo, hi = n_init, n - n_local
    score = K.soft_vote(K.head_logits(q_un, kun[:, :, lo:hi], D ** -0.5, None if ks is None else ks[:, :, lo:hi]), pool)
    return score[0], lo


def _ordered_topk(score: torch.Tensor, k: int, lo: int) -> list[int]:
    """Every score above the k-th value and the first ties at it, in position order (what the kernels return)."""
    kth = torch.topk(score, k).values[-1]
    above = torch.nonzero(score > kth)[:, 0]
    tied = torch.nonzero(score == kth)[:, 0][:k - above.numel()]
    return (torch.sort(torch.cat((above, tied))).values + lo).tolist()


@needs_triton
@pytest.mark.parametrize("hq,n_kv,score_dtype,pool,ties", [
    (4, 2, torch.float32, 1, False),  # GQA groups of two
    (6, 2, torch.int8, 1, False),  # int8 scoring keys, quantized query rows
    (3, 1, torch.float32, 5, False),  # max-pool plateaus: ties at the k-th value
    (2, 2, torch.float32, 1, True),  # duplicated keys: exact ties, taken in position order
])
def test_selection_matches_the_reference(hq, n_kv, score_dtype, pool, ties):
    g = torch.Generator().manual_seed(hq * 10 + pool)
    n, n_init, k, n_local = 420, 8, 40, 32
    key = torch.randn(1, n_kv, n, D, generator=g)
    if ties:  # rows 100..199 repeat rows 0..99 at another position: their un-rotated keys differ, so repeat those
        cos_t, sin_t = _tables(n)
        un = K.rotate_into(torch.empty_like(key), key.to(DEV), cos_t, -sin_t).cpu()
        un[:, :, 200:300] = un[:, :, 100:200]
        key = K.rotate_into(torch.empty_like(un), un, cos_t.cpu(), sin_t.cpu())
    key = key.to(DEV)
    q = torch.randn(1, hq, 1, D, generator=g).to(DEV)
    fs = FU.FusedSelector(n_kv=n_kv, hq=hq, d=D, k=k, n_init=n_init, n_local=n_local, pool=pool, threshold=None,
                          score_dtype=score_dtype, device=DEV, capacity=512, block=128)
    cos_t, sin_t = _tables(n)
    fs.nk.fill_(n)
    fs.sync(key, n, cos_t, sin_t)
    fs.fingerprint_decode(q, cos_t, sin_t, D ** -0.5)
    got = fs.select(n - n_local - n_init).cpu().tolist()
    score, lo = _reference_mid(key, q, n, n_init, k, n_local, pool, score_dtype)
    assert got == sorted(set(got)) and len(got) == k
    if pool == 1 and not ties:
        assert got == K.topk_sorted(score[None], k, lo)[0].tolist()
    else:
        assert got == _ordered_topk(score.cpu(), k, lo)


def _decode(kernel: str, score_dtype, dtype, steps: int, threshold=0.5):
    g = torch.Generator().manual_seed(4)
    n0 = 300
    k, v = (torch.randn(1, 2, n0 + steps, D, generator=g).to(DEV, dtype) for _ in range(2))
    cfg = TokenSelectConfig(n_init=4, k=40, n_local=16, chunk_size=16, cache_threshold=threshold, kernel=kernel,
                            score_dtype=score_dtype, record=True)
    m, st = standalone_layer(cfg, INV, 2)
    outs, idx = [], []
    base = torch.randn(1, 4, 1, D, generator=g)
    for t in range(n0, n0 + steps):
        # consecutive decode queries are alike (what the Selection Cache relies on): a shared direction plus noise
        q = (base + 0.4 * torch.randn(1, 4, 1, D, generator=torch.Generator().manual_seed(t))).to(DEV, dtype)
        outs.append(token_select_attention(m, q, k[:, :, :t + 1], v[:, :, :t + 1], None, scaling=D ** -0.5)[0])
        idx.append(st.last_idx)
    return torch.cat(outs).float().cpu(), idx, st.runtime.stats()


@needs_triton
@pytest.mark.parametrize("score_dtype", ["float32", "int8"])
def test_decode_steps_match_the_torch_path(score_dtype):
    # the same selections, Selection Cache hits and outputs, step by step (float32: ties aside, none here)
    ref = _decode("torch", score_dtype, torch.float32, 3)
    got = _decode("triton", score_dtype, torch.float32, 3)
    assert all(torch.equal(a, b) for a, b in zip(ref[1], got[1]))
    assert (ref[2].selections, ref[2].cache_hits) == (got[2].selections, got[2].cache_hits)
    assert ref[2].cache_hits > 0  # the hit path (device flag, kernels returning at once) ran
    assert torch.allclose(ref[0], got[0], atol=1e-5)


@needs_triton
def test_bfloat16_decode_is_within_bfloat16_tolerance():
    # a bfloat16 cache: float32 scoring keys on both paths, outputs within bfloat16's rounding
    ref = _decode("torch", "float32", torch.bfloat16, 2, threshold=None)
    got = _decode("triton", "float32", torch.bfloat16, 2, threshold=None)
    same = sum((a == b).float().mean().item() for a, b in zip(ref[1], got[1])) / len(ref[1])
    assert same >= 0.97
    assert torch.allclose(ref[0], got[0], atol=2e-2, rtol=2e-2)


@needs_triton
@pytest.mark.parametrize("positions", ["compact", "original"])
def test_chunked_prefill_matches_the_torch_path(positions):
    # chunks 64..128 and 128..184 select by their mean fingerprint, the 16-query tail votes with every query
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, h, 200, D, generator=g).to(DEV) for h in (4, 2, 2))
    outs = {}
    for kernel in ("torch", "triton"):
        cfg = TokenSelectConfig(n_init=4, k=32, n_local=64, chunk_size=64, kernel=kernel, positions=positions,
                                record=True)
        m, st = standalone_layer(cfg, INV, 2)
        outs[kernel] = (token_select_attention(m, q, k, v, None, scaling=D ** -0.5)[0].cpu(), st.last_idx)
    assert torch.equal(outs["torch"][1], outs["triton"][1])
    assert torch.allclose(outs["torch"][0], outs["triton"][0], atol=1e-5)


@needs_triton
@pytest.mark.parametrize("chunk,vote_queries", [(1, 64), (16, 64), (16, 8)])
def test_captured_step_keeps_static_buffers_and_matches_per_step(chunk, vote_queries):
    # DecodeStep (decode, a voting chunk, a mean-fingerprint chunk): the device key count advanced by the step
    # itself, no buffer reallocated, each step equal to the eager path at that length; CUDA captures the step
    # as a graph, the CPU runs the same step eagerly
    g = torch.Generator().manual_seed(7)
    cap, n0, steps = 384, 320, 2
    key, value = (torch.randn(1, 2, cap, D, generator=g).to(DEV) for _ in range(2))
    base = torch.randn(1, 4, chunk, D, generator=g)
    qs = [(base + 0.4 * torch.randn(1, 4, chunk, D, generator=g)).to(DEV) for _ in range(steps)]
    cos_t, sin_t = _tables(cap)
    fs = FU.FusedSelector(n_kv=2, hq=4, d=D, k=40, n_init=4, n_local=16, pool=1, threshold=0.5,
                          score_dtype=torch.float32, device=DEV, capacity=cap, block=128)
    q_buf = torch.empty(1, 4, chunk, D, device=DEV)
    step = FU.DecodeStep(fs, key, value, q_buf, cos_t, sin_t, D ** -0.5, n_keys=n0, graph=DEV == "cuda",
                         vote_queries=vote_queries)
    ptrs = [t.data_ptr() for t in (fs.kbuf, fs.logits, fs.mid, fs.score, step.out)]
    cfg = TokenSelectConfig(n_init=4, k=40, n_local=16, chunk_size=16, cache_threshold=0.5, kernel="triton",
                            vote_queries=vote_queries, tail_chunk=0)  # one selection per step, as the static one
    m, st = standalone_layer(cfg, INV, 2)
    token_select_attention(m, qs[0][:, :, :1], key[:, :, :n0], value[:, :, :n0], None, scaling=D ** -0.5)
    st.fused.flags.zero_()  # the same cache state as the static step: keys synced, no cached fingerprint
    st.fused.counts.zero_()
    for i, q in enumerate(qs):
        q_buf.copy_(q)
        out = step().clone()
        n = n0 + (i + 1) * chunk
        ref = token_select_attention(m, q, key[:, :, :n], value[:, :, :n], None, scaling=D ** -0.5)[0]
        assert torch.allclose(out, ref, atol=1e-5)
        assert int(fs.nk) == step.n == n
    assert ptrs == [t.data_ptr() for t in (fs.kbuf, fs.logits, fs.mid, fs.score, step.out)]
    assert fs.stats() == st.fused.stats()
    step.n = cap
    with pytest.raises(SlimguardError, match="capacity"):
        step()


@pytest.mark.parametrize("capacity,budget,groups,rows,ok", [
    (131072 + 64, 1600, 3, 1, True), (2048, 1600, 3, 16, True), (1600, 1600, 3, 1, False)])
def test_static_plan_sizes(capacity, budget, groups, rows, ok):
    if not ok:
        with pytest.raises(SlimguardError, match="capacity"):
            FU.plan(capacity, budget, groups)
        return
    p = FU.plan(capacity, budget, groups, rows=rows)
    assert p.blocks * p.block >= capacity and p.rows >= max(16, groups * rows) and p.rows & (p.rows - 1) == 0
    assert p.splits * p.split_len >= budget > (p.splits - 1) * p.split_len and p.split_len % p.attn_block == 0


def test_graph_capture_needs_cuda_tensors():
    if not HAS_TRITON:
        pytest.skip("triton not installed")
    fs = FU.FusedSelector(n_kv=1, hq=2, d=D, k=8, n_init=2, n_local=4, pool=1, threshold=None,
                          score_dtype=torch.float32, device="cpu", capacity=64, block=32)
    kv = torch.zeros(1, 1, 64, D)
    cos_t, sin_t = (torch.ones(64, D // 2), torch.zeros(64, D // 2))
    with pytest.raises(SlimguardError, match="CUDA"):
        FU.DecodeStep(fs, kv, kv.clone(), torch.zeros(1, 2, 1, D), cos_t, sin_t, 0.25, n_keys=40, graph=True)


@pytest.mark.parametrize("fields,match", [
    ({"method": "quest"}, "method=quest"), ({"score_layers": [0]}, "score_layers"), ({"score_distance": 8}, "score_distance")])
def test_triton_kernel_with_unsupported_settings_is_one_line_error(fields, match):
    with pytest.raises(SlimguardError, match=match):
        FU.check_config(TokenSelectConfig(kernel="triton", **fields))


@pytest.mark.parametrize("kernel,device,fields,takes", [
    ("auto", "cpu", {}, False), ("auto", "cuda", {}, HAS_TRITON), ("auto", "cuda", {"score_layers": [0]}, False),
    ("torch", "cuda", {}, False), ("triton", "cpu", {}, True), ("auto", "cuda", {"method": "h2o"}, False)])
def test_which_selections_take_the_fused_path(kernel, device, fields, takes):
    assert FU.wanted(TokenSelectConfig(kernel=kernel, **fields), device) is takes


def test_triton_on_cpu_without_the_interpreter_is_one_line_error(monkeypatch):
    if not HAS_TRITON or DEV == "cuda":
        pytest.skip("needs triton and a CPU-only machine")
    monkeypatch.delenv("TRITON_INTERPRET")
    cfg = TokenSelectConfig(n_init=2, k=8, n_local=8, chunk_size=8, kernel="triton")
    m, _ = standalone_layer(cfg, INV, 1)
    q, kv = torch.randn(1, 1, 1, D), torch.randn(1, 1, 40, D)
    with pytest.raises(SlimguardError, match="TRITON_INTERPRET"):
        token_select_attention(m, q, kv, kv, None, scaling=0.25)

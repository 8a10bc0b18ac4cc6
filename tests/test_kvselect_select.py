"""TokenSelect kernels and attention path on random tensors (fidelity against brute force)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from slimguard.core.config import build
from slimguard.core.errors import ConfigError
from slimguard.slim.kvselect import select as K
from slimguard.slim.kvselect.attention import standalone_layer, token_select_attention
from slimguard.slim.kvselect.config import TokenSelectConfig

D = 16
INV = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))


def _rope(x, pos):
    return K.rotate(x, pos, INV)


def _module(cfg: TokenSelectConfig, groups: int):
    return standalone_layer(cfg, INV, groups)


def _qkv(b, hq, hkv, L, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    q_un = torch.randn(b, hq, L, D, generator=g)
    k_un = torch.randn(b, hkv, n, D, generator=g)
    v = torch.randn(b, hkv, n, D, generator=g)
    q = _rope(q_un, torch.arange(n - L, n))
    k = _rope(k_un, torch.arange(n))
    return q, k, v, q_un, k_un


def _dense(q, k, v, scaling):
    rep = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    L, n = q.shape[2], k.shape[2]
    mask = torch.arange(n)[None] <= torch.arange(n - L, n)[:, None]
    return torch.nn.functional.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, scale=scaling).transpose(1, 2)


def test_rotation_composes():
    x = torch.randn(2, 3, 5, D)
    p = torch.arange(5) * 37
    back = _rope(_rope(x, p), -p)
    assert torch.allclose(back, x, atol=1e-5)
    a, b = _rope(x, p), _rope(x.flip(2), p)
    shifted = (_rope(a, torch.full((5,), 100)) * _rope(b, torch.full((5,), 100))).sum(-1)
    assert torch.allclose(shifted, (a * b).sum(-1), atol=1e-4)  # dot products depend on relative position only


@pytest.mark.parametrize("hq,hkv", [(4, 2), (6, 3), (4, 1), (4, 4)])
def test_gqa_mapping_matches_repeat_kv(hq, hkv):
    """Query head h reads KV head h // (hq // hkv), as transformers' repeat_kv does."""
    q = torch.randn(1, hq, D)
    k = torch.randn(1, hkv, 7, D)
    got = K.head_logits(q, k, 1.0)
    rep = k.repeat_interleave(hq // hkv, dim=1)
    want = torch.einsum("bhd,bhnd->bhn", q, rep)
    assert torch.allclose(got, want, atol=1e-5)
    wrong = torch.einsum("bhd,bhnd->bhn", q, k[:, [h % hkv for h in range(hq)]])
    if hkv not in (1, hq):
        assert not torch.allclose(got, wrong, atol=1e-3)


@pytest.mark.parametrize("method", ["tokenselect", "streaming", "h2o", "quest", "random", "oracle", "dense"])
@pytest.mark.parametrize("n,L", [(40, 40), (64, 1), (57, 9)])
def test_budget_covering_context_is_exactly_dense(method, n, L):
    cfg = TokenSelectConfig(method=method, n_init=4, k=32, n_local=32, chunk_size=16)
    m, _ = _module(cfg, 2)
    q, k, v, *_ = _qkv(1, 4, 2, L, n)
    out, _ = token_select_attention(m, q, k, v, None, scaling=D ** -0.5)
    mask = (torch.arange(n)[None] <= torch.arange(n - L, n)[:, None])[None, None] if 1 < L < n else None
    stock = SimpleNamespace(is_causal=True, num_key_value_groups=2, training=False)  # no state: the plain sdpa path
    assert torch.equal(out, token_select_attention(stock, q, k, v, mask, scaling=D ** -0.5)[0])
    assert torch.allclose(out, _dense(q, k, v, D ** -0.5), atol=1e-5)


def _brute_force(q_un, k_un, v, n_init, k, n_local, scaling):
    """Reference TokenSelect for one decode query, written from the method description with loops."""
    b, hq, _, d = q_un.shape
    hkv, n = k_un.shape[1], k_un.shape[2]
    g = hq // hkv
    cand = list(range(n_init, n - n_local))
    score = torch.zeros(len(cand))
    for h in range(hq):
        logits = torch.tensor([float(q_un[0, h, 0] @ k_un[0, h // g, j]) * scaling for j in cand])
        score += torch.softmax(logits, 0)
    top = sorted(cand[i] for i in torch.topk(score, k).indices.tolist())
    sel = list(range(n_init)) + top + list(range(n - n_local, n))
    return sel, _attend_selected(q_un, k_un, v, sel, scaling)


def _attend_selected(q_un, k_un, v, sel, scaling):
    """One decode query attending to ``sel`` (full precision), re-positioned at 0..S-1."""
    hq, d = q_un.shape[1], q_un.shape[-1]
    g = hq // k_un.shape[1]
    s = len(sel)
    out = torch.zeros(hq, d)
    qc = _rope(q_un[0, :, :1], torch.tensor([s - 1]))  # the query is the last entry of the compacted list
    for h in range(hq):
        ks = _rope(k_un[0, h // g, sel], torch.arange(s))
        w = torch.softmax((ks @ qc[h, 0]) * scaling, 0)
        out[h] = w @ v[0, h // g, sel]
    return out


@pytest.mark.parametrize("hq,hkv,n", [(4, 2, 200), (6, 3, 150), (4, 1, 97)])
def test_decode_selection_equals_brute_force(hq, hkv, n):
    cfg = TokenSelectConfig(n_init=3, k=20, n_local=10, chunk_size=8, cache_threshold=None, record=True)
    m, st = _module(cfg, hq // hkv)
    q, k, v, q_un, k_un = _qkv(1, hq, hkv, 1, n, seed=n)
    out, _ = token_select_attention(m, q, k, v, None, scaling=D ** -0.5)
    sel, want = _brute_force(q_un, k_un, v, 3, 20, 10, D ** -0.5)
    assert st.last_idx[0, 0].tolist() == sel
    assert torch.allclose(out[0, 0], want, atol=1e-4)


@pytest.mark.parametrize("score_dtype", ["bfloat16", "float16", "int8"])
def test_low_precision_scoring_only_changes_the_selection(score_dtype):
    n = 400
    cfg = TokenSelectConfig(n_init=3, k=40, n_local=10, chunk_size=8, cache_threshold=None, record=True,
                            score_dtype=score_dtype)
    m, st = _module(cfg, 2)
    q, k, v, q_un, k_un = _qkv(1, 4, 2, 1, n, seed=7)
    out, _ = token_select_attention(m, q, k, v, None, scaling=D ** -0.5)
    assert st.kbuf.dtype == getattr(torch, score_dtype)
    sel = st.last_idx[0, 0].tolist()
    # the attended keys come from the full-precision cache, whatever the scoring precision
    assert torch.allclose(out[0, 0], _attend_selected(q_un, k_un, v, sel, D ** -0.5), atol=1e-4)
    want, _ = _brute_force(q_un, k_un, v, 3, 40, 10, D ** -0.5)
    assert len(set(sel) & set(want)) >= 0.9 * len(want)  # rounding may only swap near-ties


def test_prefill_chunks_select_per_chunk_and_stay_causal():
    cfg = TokenSelectConfig(n_init=2, k=8, n_local=16, chunk_size=16)
    m, st = _module(cfg, 2)
    q, k, v, *_ = _qkv(1, 4, 2, 96, 96)
    out, _ = token_select_attention(m, q, k, v, None, scaling=D ** -0.5)
    assert out.shape == (1, 96, 4, D)
    dense = _dense(q, k, v, D ** -0.5)
    assert torch.allclose(out[:, :16], dense[:, :16], atol=1e-5)  # the first chunk fits the budget: dense
    assert st.selections == 96 // 16 - 1  # first chunk dense, later ones selected
    # changing a future token must not change earlier outputs (causality after compaction)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, -1] += 5
    v2[:, :, -1] += 5
    m2, _ = _module(cfg, 2)
    out2, _ = token_select_attention(m2, q, k2, v2, None, scaling=D ** -0.5)
    assert torch.allclose(out[:, :-1], out2[:, :-1], atol=1e-5)


def test_selection_cache_threshold_one_equals_recompute_and_low_threshold_hits():
    q, k, v, *_ = _qkv(1, 4, 2, 1, 300, seed=3)
    outs = {}
    for thr in (None, 1.0, 0.01):
        cfg = TokenSelectConfig(n_init=4, k=40, n_local=16, chunk_size=16, cache_threshold=thr)
        m, st = _module(cfg, 2)
        res = []
        for t in range(280, 300):  # decode steps over a growing cache
            qt = q + 0.01 * t
            res.append(token_select_attention(m, qt, k[:, :, :t + 1], v[:, :, :t + 1], None, scaling=D ** -0.5)[0])
        outs[thr] = (torch.cat(res), st.hits)
    assert torch.equal(outs[None][0], outs[1.0][0]) and outs[1.0][1] == 0
    assert outs[0.01][1] > 0


def test_quest_pages_and_oracle_heads():
    q = torch.randn(1, 4, D)
    keys = torch.randn(1, 2, 128, D)
    idx = K.quest_middle(q, keys, 16, 112, 32, 16)
    assert idx.shape == (1, 2, 32)
    assert all(int(i) % 16 == 0 for i in idx[0, 0, ::16])  # whole pages
    keys[0, 0, 48:64] *= 50  # one page dominates for the first kv head in both signs
    q2 = keys[0, 0, 48:64].mean(0).expand(1, 4, D)
    assert 48 in K.quest_middle(q2, keys, 16, 112, 16, 16)[0, 0].tolist()
    o = K.oracle_middle(torch.randn(1, 4, 3, D), keys, 16, 112, 10, 1.0)
    assert o.shape == (1, 4, 10) and int(o.min()) >= 16 and int(o.max()) < 112


@pytest.mark.parametrize("data,message", [
    ({"k": 0}, "k"), ({"n_local": -1}, "n_local"), ({"chunk_size": 0}, "chunk_size"),
    ({"n_local": 64, "chunk_size": 128}, "n_local"), ({"pool_kernel": 2}, "pool_kernel"),
    ({"method": "snapkv"}, "method"), ({"kk": 3}, "did you mean 'k'"), ({"cache_threshold": 1.5}, "cache_threshold"),
    ({"score_layers": []}, "score_layers"), ({"score_layers": [-1]}, "score_layers"),
])
def test_bad_config_is_one_line_error(data, message):
    with pytest.raises(ConfigError) as e:
        build(TokenSelectConfig, data)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_soft_vote_is_not_dominated_by_one_head():
    logits = torch.zeros(1, 3, 10)
    logits[0, 0, 0] = 100.0  # one loud head
    logits[0, 1:, 5] = 3.0  # two moderate heads agree
    s = K.soft_vote(logits)
    assert s[0, 5] > s[0, 0]
    assert math.isclose(float(s.sum()), 3.0, rel_tol=1e-5)


def _vote_reference(q_un, k_un, n_init, k, n_local, scaling, per_query):
    """Top-k middle positions by summed softmax over heads (and queries when ``per_query``), with loops."""
    hq, c = q_un.shape[1], q_un.shape[2]
    hkv, n = k_un.shape[1], k_un.shape[2]
    g = hq // hkv
    cand = list(range(n_init, n - n_local))
    rows = [q_un[0, h, t] for h in range(hq) for t in range(c)] if per_query else \
        [q_un[0, h].mean(0) for h in range(hq)]
    heads = [h for h in range(hq) for _ in range(c)] if per_query else list(range(hq))
    score = torch.zeros(len(cand))
    for qv, h in zip(rows, heads):
        score += torch.softmax(torch.stack([qv @ k_un[0, h // g, j] for j in cand]) * scaling, 0)
    return sorted(cand[i] for i in torch.topk(score, k).indices.tolist())


@pytest.mark.parametrize("vote_queries,per_query", [(64, True), (3, False), (0, False)])
def test_short_chunk_votes_per_query(vote_queries, per_query):
    """The question tail (4 queries here) votes query by query unless it is longer than ``vote_queries``."""
    n, L = 200, 5
    cfg = TokenSelectConfig(n_init=3, k=20, n_local=10, chunk_size=8, tail_chunk=4, vote_queries=vote_queries,
                            record=True)
    m, st = _module(cfg, 2)
    q, k, v, q_un, k_un = _qkv(1, 4, 2, L, n, seed=11)
    token_select_attention(m, q, k, v, None, scaling=D ** -0.5)
    got = st.last_idx[0, 0, 3:23].tolist()  # the middle of the tail chunk's selection
    assert got == _vote_reference(q_un[:, :, 1:], k_un[:, :, :n], 3, 20, 10, D ** -0.5, per_query)
    if per_query:
        assert got != _vote_reference(q_un[:, :, 1:], k_un, 3, 20, 10, D ** -0.5, False)


@pytest.mark.parametrize("b,hq,hkv,c,s,dtype", [
    (2, 4, 2, 16, 40, torch.float32), (2, 6, 3, 1 + 2, 9, torch.float32), (2, 4, 4, 33, 70, torch.float32),
    (2, 4, 1, 64, 200, torch.float32), (2, 4, 2, 16, 40, torch.bfloat16),
    # batch 1 (KV heads as the batch, broadcast keys); chunks longer than SQUARE go block by block
    (1, 6, 3, 16, 40, torch.float32), (1, 6, 2, K.SQUARE + 44, K.SQUARE + 300, torch.float32),
    (2, 4, 2, 2 * K.SQUARE, 2 * K.SQUARE + 10, torch.float32), (1, 4, 2, K.SQUARE + 3, K.SQUARE + 50, torch.bfloat16),
])
def test_split_chunk_attention_equals_masked_attention(b, hq, hkv, c, s, dtype):
    """The prefix + causal-square split (merged by log-sum-exp) is the bottom-right causal attention."""
    if K._FLASH_LSE is None:
        pytest.skip("this torch build has no CPU flash attention with log-sum-exp")
    g = torch.Generator().manual_seed(c + s)
    q, k, v = (torch.randn(b, h, n, D, generator=g).to(dtype) for h, n in [(hq, c), (hkv, s), (hkv, s)])
    got = K._attend_split(q, k, v, 0.3)
    ref = _dense(q.float(), k.float(), v.float(), 0.3)
    assert got.shape == ref.shape == (b, c, hq, D) and got.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert torch.allclose(got.float(), ref, atol=tol)
    # attend() takes this path for prefill chunks on the CPU; the masked SDPA path stays as the reference
    assert torch.equal(K.attend(q, k, v, 0.3)[0], got)
    hf = q.transpose(1, 2).contiguous().transpose(1, 2)  # transformers' [B, H, L, d] view of [B, L, H, d]
    assert torch.allclose(K._attend_split(hf, k, v, 0.3).float(), got.float(), atol=tol)


@pytest.mark.parametrize("hq,hkv,c", [(4, 2, 1), (6, 3, 5), (4, 1, 16)])
def test_int8_scoring_logits_track_float_logits(hq, hkv, c):
    """int8 keys (per-key scale) times int8 query rows (per-row scale) ~ the float product."""
    g = torch.Generator().manual_seed(hq + c)
    q = torch.randn(1, hq, c, D, generator=g)
    k = torch.randn(1, hkv, 300, D, generator=g)
    ki, ks = K.quantize_rows(k)
    got = K.head_logits(q, ki, 0.25, ks)
    want = K.head_logits(q, k, 0.25)
    assert got.shape == want.shape == (1, hq * c, 300)
    assert (got - want).abs().max() < 0.02 * want.abs().max()
    with pytest.raises(ValueError, match="scales"):
        K.head_logits(q, ki, 0.25)


@pytest.mark.parametrize("plateau", [False, True])
def test_topk_sorted_is_the_top_k_in_cache_order(plateau):
    g = torch.Generator().manual_seed(5)
    score = torch.rand(1, 500, generator=g)
    if plateau:  # max-pooled scores: runs of equal values straddle the k-th
        score = torch.nn.functional.max_pool1d(score[:, None], 31, stride=1, padding=15)[:, 0]
    got = K.topk_sorted(score, 37, 10)[0]
    assert got.tolist() == sorted(set(got.tolist())) and len(got) == 37
    want = torch.topk(score[0], 37).values
    assert torch.equal(torch.sort(score[0, got - 10]).values, torch.sort(want).values)


@pytest.mark.parametrize("hq,hk1,hk2", [(4, 2, 2), (6, 6, 3), (3, 1, 3)])
def test_attend_frames_is_attention_over_the_concatenation(hq, hk1, hk2):
    g = torch.Generator().manual_seed(hq + hk1)
    q = torch.randn(1, hq, 1, D, generator=g)
    k1, v1 = torch.randn(1, hk1, 30, D, generator=g), torch.randn(1, hk1, 30, D, generator=g)
    k2, v2 = torch.randn(1, hk2, 12, D, generator=g), torch.randn(1, hk2, 12, D, generator=g)
    out, p = K.attend_frames([(q, k1, v1), (q, k2, v2)], 0.3, need_weights=True)

    def per_head(x):  # both blocks as Hq heads, so they can be concatenated
        return x.repeat_interleave(hq // x.shape[1], 1)

    kk, vv = torch.cat((per_head(k1), per_head(k2)), 2), torch.cat((per_head(v1), per_head(v2)), 2)
    want, pw = K.attend(q, kk, vv, 0.3, need_weights=True)
    assert torch.allclose(out, want, atol=1e-5) and torch.allclose(p, pw, atol=1e-6)


def test_rolled_back_cache_truncates_the_scoring_buffer_and_hits_skip_it():
    q, k, v, *_ = _qkv(1, 4, 2, 1, 300, seed=11)
    cfg = TokenSelectConfig(n_init=4, k=40, n_local=16, chunk_size=16, cache_threshold=None)
    m, st = _module(cfg, 2)
    first = token_select_attention(m, q, k, v, None, scaling=D ** -0.5)[0]
    assert st.n_seen == 300
    # the same step again: the cache lost its last key and got it back (a re-decoded step)
    again = token_select_attention(m, q, k, v, None, scaling=D ** -0.5)[0]
    assert torch.equal(first, again) and st.n_seen == 300
    # a different last key must be re-synced, not read from the stale buffer
    k2 = k.clone()
    k2[:, :, -1] *= -1
    fresh_m, _ = _module(cfg, 2)
    assert torch.equal(token_select_attention(m, q, k2, v, None, scaling=D ** -0.5)[0],
                       token_select_attention(fresh_m, q, k2, v, None, scaling=D ** -0.5)[0])
    # a Selection Cache hit scores nothing, so it leaves the new keys for the next miss to sync
    hm, hst = _module(cfg.model_copy(update={"cache_threshold": 1e-6}), 2)
    token_select_attention(hm, q, k[:, :, :299], v[:, :, :299], None, scaling=D ** -0.5)
    token_select_attention(hm, q, k, v, None, scaling=D ** -0.5)
    assert hst.hits == 1 and hst.n_seen == 299


def _masked_dense(q, k, v, idx, scaling):
    """Dense attention of the last ``L`` queries restricted to the recorded index set (``[B, H, S]``,
    H in {1, Hkv, Hq}), causal, every key at its cached position."""
    b, hq, L, _ = q.shape
    hkv, n = k.shape[1], k.shape[2]
    g = hq // hkv
    allowed = torch.zeros(b, hq, 1, n, dtype=torch.bool)
    for h in range(hq):
        row = idx[:, 0 if idx.shape[1] == 1 else h // g if idx.shape[1] == hkv else h]
        allowed[:, h, 0].scatter_(1, row, True)
    causal = torch.arange(n)[None] <= torch.arange(n - L, n)[:, None]
    kk, vv = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    return torch.nn.functional.scaled_dot_product_attention(q, kk, vv, attn_mask=allowed & causal,
                                                            scale=scaling).transpose(1, 2)


@pytest.mark.parametrize("method,hq,hkv,L", [("tokenselect", 4, 2, 1), ("tokenselect", 4, 2, 24),
                                              ("oracle", 6, 3, 1), ("oracle", 4, 1, 24), ("quest", 4, 2, 1),
                                              ("h2o", 4, 2, 24), ("streaming", 4, 4, 1)])
def test_original_positions_equal_dense_attention_over_the_selected_keys(method, hq, hkv, L):
    cfg = TokenSelectConfig(method=method, n_init=3, k=32, n_local=24, chunk_size=24, tail_chunk=0,
                            cache_threshold=None, record=True, positions="original")
    m, st = _module(cfg, hq // hkv)
    q, k, v, *_ = _qkv(1, hq, hkv, L, 200, seed=L + hq)
    out, _ = token_select_attention(m, q, k, v, None, scaling=D ** -0.5)
    want = _masked_dense(q, k, v, st.last_idx, D ** -0.5)
    assert torch.allclose(out, want, atol=1e-5)
    compact = TokenSelectConfig(**{**cfg.model_dump(), "positions": "compact"})
    m2, _ = _module(compact, hq // hkv)
    out2, _ = token_select_attention(m2, q, k, v, None, scaling=D ** -0.5)
    assert not torch.allclose(out2, want, atol=1e-3)  # re-numbered positions read the same keys differently


@pytest.mark.parametrize("max_positions,original", [(4096, True), (150, False)])
def test_auto_positions_keep_cached_positions_only_inside_the_trained_window(max_positions, original):
    cfg = TokenSelectConfig(n_init=3, k=32, n_local=24, chunk_size=24, cache_threshold=None, record=True,
                            positions="auto")
    m, st = _module(cfg, 2)
    st.max_positions = max_positions
    q, k, v, *_ = _qkv(1, 4, 2, 1, 200, seed=5)
    out, _ = token_select_attention(m, q, k, v, None, scaling=D ** -0.5)
    assert st.sel_original is original
    assert torch.allclose(out, _masked_dense(q, k, v, st.last_idx, D ** -0.5), atol=1e-5) is original


def test_quest_bound_matches_the_per_channel_definition_and_short_chunks_bound_every_query():
    g = torch.Generator().manual_seed(3)
    keys = torch.randn(1, 2, 160, D, generator=g)
    q = torch.randn(1, 4, 5, D, generator=g)
    lo, hi, page = 16, 144, 16
    # brute force: per query, per kv head, sum_d max(q m, q M), heads of a group summed, max over the queries
    pages = keys[:, :, lo:hi].reshape(1, 2, -1, page, D)
    kmin, kmax = pages.amin(3), pages.amax(3)
    qg = q.reshape(1, 2, 2, 5, D)
    ref = torch.maximum(qg[..., None, :] * kmin[:, :, None, None], qg[..., None, :] * kmax[:, :, None, None]).sum(-1)
    ref = ref.sum(2).amax(2)  # [1, 2, P]
    want = ref.topk(3, dim=-1).indices
    got = K.quest_middle(q, keys, lo, hi, 3 * page, page)
    for h in range(2):
        assert sorted({(int(i) - lo) // page for i in got[0, h]}) == sorted(want[0, h].tolist())
    # one query of the chunk looking at one page is enough to keep that page, even when the mean would not
    keys2 = torch.randn(1, 2, 160, D, generator=g) * 0.1
    keys2[0, 0, 96:112] = 3.0
    q2 = torch.zeros(1, 4, 5, D)
    q2[:, :, 2] = 1.0        # the middle query points at the loud page
    q2[:, :, [0, 1, 3, 4]] = -1.0  # the others point away from it, so the chunk's mean points away too
    assert 96 in K.quest_middle(q2, keys2, lo, hi, page, page)[0, 0].tolist()
    assert 96 not in K.quest_middle(q2.mean(2), keys2, lo, hi, page, page)[0, 0].tolist()


def test_quest_per_query_head_gives_each_head_its_own_pages():
    """Two query heads share one KV head; each looks at a different loud page. Per query head each keeps its
    own page; the shared per-KV-head set of one page can hold only one of them."""
    keys = torch.randn(1, 1, 160, D, generator=torch.Generator().manual_seed(5)) * 0.1
    keys[0, 0, 48:64, :D // 2] = 3.0
    keys[0, 0, 96:112, D // 2:] = 3.0
    q = torch.zeros(1, 2, D)
    q[0, 0, :D // 2] = 1.0
    q[0, 1, D // 2:] = 1.05
    per_head = K.quest_middle(q, keys, 16, 144, 16, 16, per_query_head=True)
    assert per_head.shape == (1, 2, 16)
    assert per_head[0, 0, 0] == 48 and per_head[0, 1, 0] == 96
    shared = K.quest_middle(q, keys, 16, 144, 16, 16)
    assert shared.shape == (1, 1, 16) and int(shared[0, 0, 0]) in (48, 96)


@pytest.mark.parametrize("device_type, fused, warns", [("cpu", False, False), ("cuda", False, True), ("mps", False, True),
                                                      ("cuda", True, False)])
def test_enabling_on_a_gpu_says_the_path_is_not_fast_there(device_type, fused, warns):
    # without the fused Triton path a GPU runs the slow PyTorch path, and the user is told
    from slimguard.slim.kvselect.attention import gpu_speed_note

    note = gpu_speed_note(device_type, fused)
    assert (note is not None) is warns
    if warns:
        assert device_type in note and "0.1x" in note

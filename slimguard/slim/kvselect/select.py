"""Selection kernels for TokenSelect (Wu et al., 2024) and the peers it is compared with.

Everything here works on plain tensors so it can be tested against brute-force
references without a model. Shapes: queries ``[B, Hq, C, d]``, keys/values
``[B, Hkv, N, d]``; query head ``h`` reads KV head ``h // (Hq // Hkv)`` exactly as
transformers' ``repeat_kv`` does (the reference's ``h % Hkv`` mixes groups up).

Scoring never builds the ``C x N`` attention matrix: a chunk is reduced to one
fingerprint query per head first, so TokenSelect's cost is one read of the keys
(``[Hq, N]`` logits), and the keys are kept un-rotated in a contiguous per-layer buffer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG = float("-inf")


# --------------------------------------------------------------------------- RoPE helpers


def rotate(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate ``x[..., L, d]`` by RoPE angles ``positions[L] * inv_freq`` (positions may be negative).

    Rotations compose (R(a) R(b) = R(a+b)), so a key cached at position p can be moved to
    position c by rotating it by c - p; this is how compacted positions are assigned
    without touching the model's own RoPE code.
    """
    ang = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    ang = torch.cat((ang, ang), dim=-1)
    cos, sin = ang.cos(), ang.sin()
    xf = x.to(torch.float32)
    half = xf.shape[-1] // 2
    rot = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rot * sin).to(x.dtype)


# --------------------------------------------------------------------------- scoring


def group_view(q: torch.Tensor, n_kv: int) -> torch.Tensor:
    """``[B, Hq, ..., d]`` -> ``[B, Hkv, G, ..., d]`` with HF's GQA mapping (kv = h // G)."""
    b, hq = q.shape[:2]
    return q.reshape(b, n_kv, hq // n_kv, *q.shape[2:])


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row of the last dim: ``x ~ q * scale[..., None]``."""
    scale = x.abs().amax(-1).clamp_min(1e-12) / 127.0
    return torch.round(x / scale[..., None]).to(torch.int8), scale


def score_rows(q_fp: torch.Tensor, n_kv: int, scaling: float) -> torch.Tensor:
    """Fingerprint queries ``[B, Hq, (C,) d]`` as scaled float32 rows per KV head ``[B, Hkv, G (* C), d]``
    (the scale goes on the few query rows, not on the ``[Hq, M]`` logits: one pass over them fewer)."""
    b, d = q_fp.shape[0], q_fp.shape[-1]
    return (group_view(q_fp, n_kv) * scaling).to(torch.float32).reshape(b, n_kv, -1, d)


def head_logits(q_fp: torch.Tensor, keys: torch.Tensor, scaling: float,
                key_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of fingerprint queries against every key, one row per (query head, query).

    ``q_fp [B, Hq, d]`` (one fingerprint per head) or ``[B, Hq, C, d]`` (C voting queries per
    head), ``keys [B, Hkv, M, d]`` -> ``[B, Hq, M]`` or ``[B, Hq * C, M]``; one pass over the keys.
    int8 ``keys`` need ``key_scale [B, Hkv, M]``; the query rows are quantized per row and the
    product runs on integers.
    """
    b = q_fp.shape[0]
    n_kv = keys.shape[1]
    qg = score_rows(q_fp, n_kv, scaling)
    if keys.dtype == torch.int8:
        if key_scale is None:
            raise ValueError("int8 keys need their per-key scales")
        acc, qs = int8_logits(qg, keys)
        # two passes over the logits for all heads at once: a decode step is dominated by op count
        logits = (acc * qs[..., None]).mul_(key_scale[:, :, None])
        return logits.reshape(b, -1, keys.shape[2])
    qg = qg.to(keys.dtype)
    if keys.dtype == torch.float32 or keys.device.type != "cpu":
        logits = torch.matmul(qg, keys.transpose(-1, -2))  # [B, Hkv, G (* C), M]
    else:
        # CPU half-precision GEMMs copy a strided batch first (a window of the key buffer is one),
        # which costs more than the product; each head's window is contiguous, so go head by head
        logits = torch.empty(b, n_kv, qg.shape[2], keys.shape[2], dtype=keys.dtype)
        for i in range(b):
            for h in range(n_kv):
                torch.mm(qg[i, h], keys[i, h].T, out=logits[i, h])
    return logits.reshape(b, -1, keys.shape[2]).to(torch.float32)


def int8_logits(qg: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer logits of query rows ``qg [B, Hkv, R, d]`` (float, scaled) against int8 ``keys
    [B, Hkv, M, d]``: ``acc [B, Hkv, R, M]`` int32 and the rows' scales ``[B, Hkv, R]`` (the
    keys' own scales still to be applied)."""
    b, n_kv = qg.shape[:2]
    qi, qs = quantize_rows(qg)
    if keys.device.type != "cpu":
        # torch._int_mm on CUDA wants > 16 rows and multiples of 8 (a decode step has 1-3 rows per KV head); the
        # float32 product of int8 codes is exact here (|sum| <= 64 * 127 * 127 < 2^24), though it reads float keys
        return torch.matmul(qi.to(torch.float32), keys.to(torch.float32).transpose(-1, -2)), qs
    acc = torch.empty(b, n_kv, qg.shape[2], keys.shape[2], dtype=torch.int32, device=keys.device)
    for i in range(b):
        for h in range(n_kv):
            # [R, d] x [d, M] straight into the logits' row layout (the GEMM reads the keys' rows as
            # they lie; the [M, d] x [d, R] order was slower once its output had to be transposed)
            torch._int_mm(qi[i, h], keys[i, h].T, out=acc[i, h])
    return acc, qs


def soft_vote(logits: torch.Tensor, pool_kernel: int = 1) -> torch.Tensor:
    """``score[j] = sum_r softmax_j(logits_r)[j]`` over rows r (heads, or heads x queries), so no
    single head or query with large logits dominates."""
    score = torch.softmax(logits, dim=-1).sum(dim=1)  # [B, M]
    if pool_kernel > 1:
        score = F.max_pool1d(score[:, None], pool_kernel, stride=1, padding=pool_kernel // 2)[:, 0]
    return score


def frame(middle: torch.Tensor, n_init: int, n_local_start: int, n_keys: int) -> torch.Tensor:
    """``[0, n_init) U middle U [n_local_start, n_keys)``, sorted; ``middle [B, H, k]`` -> ``[B, H, S]``."""
    b, h = middle.shape[:2]
    dev = middle.device
    init = torch.arange(n_init, device=dev).expand(b, h, n_init)
    local = torch.arange(n_local_start, n_keys, device=dev).expand(b, h, n_keys - n_local_start)
    mid, _ = torch.sort(middle, dim=-1)
    return torch.cat((init, mid, local), dim=-1)


def topk_sorted(score: torch.Tensor, k: int, offset: int) -> torch.Tensor:
    """:func:`topk_middle` in ascending position order (the compact frame's order), ``[B, k]``.

    (A k-th-value selection plus ``nonzero`` would give cache order without the sort, but at
    32K on a cold cache ``kthvalue`` copies the row and measured slower than top-k + sort.)
    """
    return torch.sort(topk_middle(score, k, offset), dim=-1).values


def topk_middle(score: torch.Tensor, k: int, offset: int) -> torch.Tensor:
    """Top-k candidate positions (absolute) from ``score [B, M]`` (or ``[B, H, M]``)."""
    k = min(k, score.shape[-1])
    return torch.topk(score, k, dim=-1, sorted=False).indices + offset


# --------------------------------------------------------------------------- peers


def quest_middle(q_rot: torch.Tensor, keys_rot: torch.Tensor, lo: int, hi: int, k: int, page: int,
                 per_query_head: bool = False) -> torch.Tensor:
    """Quest: per KV head, the pages with the largest upper bound ``sum_d max(q_d min_d, q_d max_d)``.

    ``q_rot [B, Hq, d]`` (one query: a decode step, or a long chunk's mean) or ``[B, Hq, C, d]`` (a short chunk,
    such as the question tail: every query is bounded separately and a page ranks by its largest bound over the
    chunk, since a page is needed if any of the chunk's queries may attend to it; the mean of post-RoPE queries at
    different positions cancels much of what each one looks for). ``keys_rot [B, Hkv, N, d]`` as cached
    (post-RoPE, as Quest keeps them). Returns ``[B, Hkv, <=k]`` absolute indices in ``[lo, hi)``: the bounds of a
    group's query heads add up to one page set per KV head; ``per_query_head`` gives every query head its own page
    set, ``[B, Hq, <=k]``, as the paper (written for multi-head attention) selects per head.
    """
    q4 = q_rot[:, :, None] if q_rot.dim() == 3 else q_rot
    b, hq, c, d = q4.shape
    n_kv = keys_rot.shape[1]
    n_pages = (hi - lo) // page
    if n_pages == 0:
        return torch.empty(b, hq if per_query_head else n_kv, 0, dtype=torch.long, device=q_rot.device)
    pages = keys_rot[:, :, lo:lo + n_pages * page].reshape(b, n_kv, n_pages, page, d).to(torch.float32)
    kmin, kmax = pages.amin(dim=3), pages.amax(dim=3)  # [B, Hkv, P, d]
    # max(q m, q M) per channel is q M where q >= 0 and q m where q < 0: two matrix products, no [C, P, d] tensor
    qg = group_view(q4.to(torch.float32), n_kv)  # [B, Hkv, G, C, d]
    bound = qg.clamp_min(0) @ kmax[:, :, None].transpose(-1, -2) + qg.clamp_max(0) @ kmin[:, :, None].transpose(-1, -2)
    # per query of the chunk, the heads sharing a page set add up; over the chunk's queries, the largest counts
    bound = bound.amax(3).reshape(b, hq, n_pages) if per_query_head else bound.sum(2).amax(2)
    want = min(max(1, k // page), n_pages)
    top = torch.topk(bound, want, dim=-1, sorted=False).indices  # [B, H, want]
    idx = lo + top[..., None] * page + torch.arange(page, device=q_rot.device)
    return idx.reshape(b, bound.shape[1], -1)


def oracle_middle(q_rot: torch.Tensor, keys_rot: torch.Tensor, lo: int, hi: int, k: int, scaling: float) -> torch.Tensor:
    """Oracle: per query head, the top-k keys by the chunk's true attention mass (post-RoPE logits).

    ``q_rot [B, Hq, C, d]``; returns ``[B, Hq, k]``. Builds ``C x (hi-lo)`` logits one head
    group at a time: it is the accuracy ceiling, not a fast path.
    """
    b, hq, c, d = q_rot.shape
    n_kv = keys_rot.shape[1]
    g = hq // n_kv
    out = []
    for h in range(n_kv):
        qh = q_rot[:, h * g:(h + 1) * g].to(torch.float32)  # [B, G, C, d]
        kh = keys_rot[:, h:h + 1, lo:hi].to(torch.float32)  # [B, 1, M, d]
        p = torch.softmax(torch.matmul(qh, kh.transpose(-1, -2)) * scaling, dim=-1).sum(2)  # [B, G, M]
        out.append(topk_middle(p, k, lo))
    return torch.cat(out, dim=1)


def random_middle(b: int, lo: int, hi: int, k: int, gen: torch.Generator, device) -> torch.Tensor:
    """``k`` distinct uniform picks in ``[lo, hi)`` per batch row, from an explicit generator."""
    k = min(k, hi - lo)
    rows = [torch.randperm(hi - lo, generator=gen)[:k] for _ in range(b)]
    return (torch.stack(rows).to(device) + lo)[:, None, :]


# --------------------------------------------------------------------------- attention over a selection


def gather_heads(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [B, Hkv, N, d]`` at ``idx [B, H, S]`` (H in {1, Hkv, Hq}) -> ``[B, H', S, d]``.

    With H = 1 the same positions are read for every KV head (TokenSelect shares one
    index set per layer); with H = Hq each query head reads its own positions from its
    own KV head.
    """
    b, n_kv, _, d = x.shape
    h = idx.shape[1]
    if h == 1:  # index_select reads whole rows; torch.gather would walk an index per element
        if b == 1:
            return x[0].index_select(1, idx[0, 0])[None]
        return torch.stack([x[i].index_select(1, idx[i, 0]) for i in range(b)])
    if h == n_kv:
        return torch.gather(x, 2, idx[:, :, :, None].expand(b, n_kv, idx.shape[2], d))
    g = h // n_kv
    xe = x[:, :, None].expand(b, n_kv, g, x.shape[2], d).reshape(b, h, x.shape[2], d)
    return torch.gather(xe, 2, idx[:, :, :, None].expand(b, h, idx.shape[2], d))


def rotate_into(out: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``out = R x`` with half-width ``cos/sin`` broadcastable to ``x[..., :d/2]``; no concatenation."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    torch.sub(x1 * cos, x2 * sin, out=out[..., :h])
    torch.add(x2 * cos, x1 * sin, out=out[..., h:])
    return out


def attend(q: torch.Tensor, k_sel: torch.Tensor, v_sel: torch.Tensor, scaling: float,
           need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal attention of a chunk ``q [B, Hq, C, d]`` over a compacted selection ``[B, H, S, d]``.

    The chunk's own keys are the last ``C`` selected entries (the local window covers the
    chunk), so causality is the bottom-right-aligned triangle. Returns ``[B, C, Hq, d]``.
    """
    b, hq, c, d = q.shape
    s = k_sel.shape[2]
    if c > 1 and not need_weights and _split_ok(q, k_sel, s - c):
        return _attend_split(q, k_sel, v_sel, scaling), None
    mask = None
    if c > 1:
        mask = torch.arange(s, device=q.device)[None, :] <= torch.arange(s - c, s, device=q.device)[:, None]
    if not need_weights:
        gqa = k_sel.shape[1] != hq
        out = F.scaled_dot_product_attention(q, k_sel, v_sel, attn_mask=mask, scale=scaling, enable_gqa=gqa)
        return out.transpose(1, 2), None
    rep = hq // k_sel.shape[1]
    kk, vv = k_sel.repeat_interleave(rep, 1), v_sel.repeat_interleave(rep, 1)
    logits = torch.matmul(q.to(torch.float32), kk.to(torch.float32).transpose(-1, -2)) * scaling
    if mask is not None:
        logits = logits.masked_fill(~mask, NEG)
    p = torch.softmax(logits, dim=-1)
    out = torch.matmul(p.to(vv.dtype), vv)
    return out.transpose(1, 2), p


def attend_frames(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], scaling: float,
                  need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One decode query over key blocks that each sit in their own RoPE frame.

    ``parts``: ``(q [B, Hq, 1, d], k [B, H, S_i, d], v)`` with the query already rotated into
    that block's frame (H in {Hkv, Hq}; a group's query heads read their shared KV head).
    RoPE logits depend only on the distance between query and key, so a block whose keys
    keep their cached positions (the local window) can be read in place by the unrotated
    query, and only the gathered blocks need their own frame. One softmax runs over all
    blocks' logits, so this is exactly attention over their concatenation, in float32.
    Returns ``[B, 1, Hq, d]`` and, when asked, the weights ``[B, Hq, 1, sum S_i]``.
    """
    b, hq, _, d = parts[0][0].shape
    logits = []
    for q, k, _v in parts:
        h = k.shape[1]
        qg = q.reshape(b, h, hq // h, d).to(torch.float32) * scaling
        logits.append(torch.matmul(qg, k.to(torch.float32).transpose(-1, -2)).reshape(b, hq, -1))
    p = torch.softmax(torch.cat(logits, dim=-1), dim=-1)  # [B, Hq, sum S_i]
    out, lo = None, 0
    for q, k, v in parts:
        h, n = k.shape[1], k.shape[2]
        pg = p[:, :, lo:lo + n].reshape(b, h, hq // h, n)
        part = torch.matmul(pg, v.to(torch.float32)).reshape(b, hq, -1)  # [B, H, G, d] -> [B, Hq, d]
        out = part if out is None else out.add_(part)
        lo += n
    out = out[:, None].to(parts[0][0].dtype)
    return out, (p[:, :, None] if need_weights else None)


# CPU flash attention that also returns each query's log-sum-exp (part of torch, not of its public API;
# if a torch build lacks it, attend() keeps the masked SDPA path)
_FLASH_LSE = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _split_ok(q: torch.Tensor, k_sel: torch.Tensor, prefix: int) -> bool:
    return (_FLASH_LSE is not None and q.device.type == "cpu" and prefix > 0 and q.dtype == k_sel.dtype
            and q.dtype in (torch.float32, torch.bfloat16, torch.float16))


# Query rows per causal square in :func:`_attend_split`. CPU flash attention reads keys in blocks
# of up to 512, so a 512 x 512 causal square costs a full one; two 256-row halves (the second
# also reading the first half's keys unmasked) skip a quarter of the square's work.
SQUARE = 256


def _attend_split(q: torch.Tensor, k_sel: torch.Tensor, v_sel: torch.Tensor, scaling: float) -> torch.Tensor:
    """:func:`attend` for a chunk as two flash-attention calls merged by their log-sum-exp.

    A bottom-right causal mask over ``S`` keys is the ``S - C`` prefix every query sees plus
    a ``C x C`` causal square. Unmasked, the prefix needs no mask at all; the square is
    ordinary ``is_causal`` attention, whose kernel skips the blocks above the diagonal. With an
    explicit mask SDPA computes every block and reads the mask as well. A group's query heads
    read their shared KV head without copying it (batch 1: KV heads as the batch, stride-0
    keys; otherwise stacked queries for the prefix and repeated keys for the square).
    """
    b, hq, c, d = q.shape
    hk, s = k_sel.shape[1], k_sel.shape[2]
    g, p = hq // hk, s - c
    if c > SQUARE:  # the same split per block of queries: less of each causal square is computed
        return torch.cat([_attend_split(q[:, :, a:a + SQUARE], k_sel[:, :, :p + min(c, a + SQUARE)],
                                        v_sel[:, :, :p + min(c, a + SQUARE)], scaling)
                          for a in range(0, c, SQUARE)], dim=1)
    kk, vv = k_sel[:, :, p:], v_sel[:, :, p:]
    if b == 1:
        qb = q.reshape(hk, g, c, d)  # a view for the layouts attention passes (contiguous, HF's, sliced)
        oa, la = _FLASH_LSE(qb, k_sel[0, :, :p, None].expand(hk, p, g, d).transpose(1, 2),
                            v_sel[0, :, :p, None].expand(hk, p, g, d).transpose(1, 2), 0.0, False, scale=scaling)
        ob, lb = _FLASH_LSE(qb, kk[0, :, :, None].expand(hk, c, g, d).transpose(1, 2),
                            vv[0, :, :, None].expand(hk, c, g, d).transpose(1, 2), 0.0, True, scale=scaling)
    else:
        oa, la = _FLASH_LSE(q.reshape(b, hk, g * c, d), k_sel[:, :, :p], v_sel[:, :, :p], 0.0, False, scale=scaling)
        if g > 1:
            kk, vv = kk.repeat_interleave(g, 1), vv.repeat_interleave(g, 1)
        ob, lb = _FLASH_LSE(q, kk, vv, 0.0, True, scale=scaling)
    # the prefix's share of each query's softmax mass: exp(la) / (exp(la) + exp(lb))
    w = torch.sigmoid(la.reshape(b, hq, c, 1) - lb.reshape(b, hq, c, 1))
    out = torch.lerp(ob.reshape(b, hq, c, d).float(), oa.reshape(b, hq, c, d).float(), w)  # float32 merge, one op
    return out.to(q.dtype).transpose(1, 2)  # [B, C, Hq, d] as attend() returns

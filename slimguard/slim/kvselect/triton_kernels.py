"""Triton kernels of TokenSelect's GPU path (Wu et al., 2024, "TokenSelect: Efficient Long-Context
Inference and Length Extrapolation for LLMs via Dynamic Token-Level KV Cache Selection").

One selection is a fixed chain of kernels over static, capacity-sized buffers, each reading the
key count from a device scalar (``nk``) so the chain can be captured once as a CUDA graph and
replayed at every length without a host synchronisation:

1. ``fingerprint`` (decode): un-rotate the query, Selection Cache check (cosine against the cached
   fingerprint) into a device flag; a hit makes every later selection kernel return at once.
2. ``score``: fingerprint rows x un-rotated (float or int8) keys, logits plus per-block softmax stats.
3. ``reduce``: the per-row max and normaliser over the blocks; clears the radix histograms.
4. ``vote`` (+ first radix pass when unpooled): ``sum_r softmax_r``; ``pool_hist`` max-pools first.
5. ``radix`` x2: exact k-th largest score by an 11/11/10-bit radix select on the float bits
   (scores are >= 0, so their bit patterns order like the values).
6. ``count`` + ``write``: the selected positions in ascending order (ties at the k-th value taken in
   position order), with no sort.

Attention: ``attend_decode`` gathers the selected rows from the cache by compact position, rotates
each key into the compact frame on load (two table rows per key) and runs a split flash-decode;
``combine`` merges the splits. Prefill chunks use ``gather_rotate`` to feed one attention call.

Everything here runs under ``TRITON_INTERPRET=1`` on the CPU, which is how the parity tests check it
against the PyTorch reference in ``select.py``. Imported lazily (``fused.py``); needs ``triton``.
"""

from __future__ import annotations

import triton
import triton.language as tl

NBINS = 2048  # 11-bit radix digits
SHIFTS = (21, 10, 0)


@triton.jit
def _frame_pos(c, mid_ptr, n_init, m, nk, n_local):
    """Cache position of compact position ``c``: ``[0, n_init) | mid | [nk - n_local, nk)``."""
    in_mid = (c >= n_init) & (c < n_init + m)
    p_mid = tl.load(mid_ptr + (c - n_init), mask=in_mid, other=0)
    p_loc = nk - n_local + (c - n_init - m)
    return tl.where(c < n_init, c, tl.where(in_mid, p_mid, p_loc))


@triton.jit
def unrotate_append_kernel(key_ptr, k_sh, k_sr, nk_ptr, lo, n_rows, cos_ptr, sin_ptr,
                           kbuf_ptr, b_sh, b_sr, ks_ptr, ks_sh,
                           FROM_END: tl.constexpr, INT8: tl.constexpr, HALF: tl.constexpr, RB: tl.constexpr):
    """Cached keys (rotated at their positions) rotated back to position 0 into the scoring buffer;
    int8: one scale per key and head. Rows ``[lo, lo + n_rows)``, or the last ``n_rows`` (FROM_END)."""
    h = tl.program_id(0)
    if FROM_END:
        lo = tl.load(nk_ptr) - n_rows
    r = lo + tl.program_id(1) * RB + tl.arange(0, RB)
    ok = r < lo + n_rows
    j = tl.arange(0, HALF)
    base = key_ptr + h * k_sh + r[:, None] * k_sr + j[None, :]
    x1 = tl.load(base, mask=ok[:, None], other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF, mask=ok[:, None], other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + r[:, None] * HALF + j[None, :], mask=ok[:, None], other=1.0)
    s = tl.load(sin_ptr + r[:, None] * HALF + j[None, :], mask=ok[:, None], other=0.0)
    y1 = x1 * c + x2 * s
    y2 = x2 * c - x1 * s
    out = kbuf_ptr + h * b_sh + r[:, None] * b_sr + j[None, :]
    if INT8:
        amax = tl.maximum(tl.max(tl.abs(y1), 1), tl.max(tl.abs(y2), 1))
        sc = tl.maximum(amax, 1e-12) / 127.0
        tl.store(out, tl.floor(y1 / sc[:, None] + 0.5).to(tl.int8), mask=ok[:, None])
        tl.store(out + HALF, tl.floor(y2 / sc[:, None] + 0.5).to(tl.int8), mask=ok[:, None])
        tl.store(ks_ptr + h * ks_sh + r, sc, mask=ok)
    else:
        tl.store(out, y1.to(kbuf_ptr.dtype.element_ty), mask=ok[:, None])
        tl.store(out + HALF, y2.to(kbuf_ptr.dtype.element_ty), mask=ok[:, None])


@triton.jit
def fingerprint_kernel(q_ptr, nk_ptr, cos_ptr, sin_ptr, cached_ptr, flags_ptr, counts_ptr, fp_ptr, fps_ptr,
                       scaling, threshold, n_local,
                       HQ: tl.constexpr, G: tl.constexpr, RP: tl.constexpr, HALF: tl.constexpr,
                       HQP: tl.constexpr, INT8: tl.constexpr, USE_CACHE: tl.constexpr):
    """Decode fingerprint and Selection Cache check, one program. ``flags``: [hit, have cached, cached_hi];
    ``counts``: [selections, hits]. On a miss: the scaled (int8: quantized) rows into ``fp``, cache updated."""
    nk = tl.load(nk_ptr)
    pos = nk - 1
    hi = nk - n_local
    h = tl.arange(0, HQP)
    j = tl.arange(0, HALF)
    okh = h < HQ
    q1 = tl.load(q_ptr + h[:, None] * (2 * HALF) + j[None, :], mask=okh[:, None], other=0.0).to(tl.float32)
    q2 = tl.load(q_ptr + h[:, None] * (2 * HALF) + HALF + j[None, :], mask=okh[:, None], other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + pos * HALF + j)[None, :]
    s = tl.load(sin_ptr + pos * HALF + j)[None, :]
    u1 = q1 * c + q2 * s  # R(-pos) q
    u2 = q2 * c - q1 * s
    have = tl.load(flags_ptr + 1)
    cached_hi = tl.load(flags_ptr + 2)
    hit = 0
    if USE_CACHE:
        cq1 = tl.load(cached_ptr + h[:, None] * (2 * HALF) + j[None, :], mask=okh[:, None], other=0.0)
        cq2 = tl.load(cached_ptr + h[:, None] * (2 * HALF) + HALF + j[None, :], mask=okh[:, None], other=0.0)
        dot = tl.sum(tl.sum(u1 * cq1 + u2 * cq2, 1), 0)
        na = tl.sum(tl.sum(u1 * u1 + u2 * u2, 1), 0)
        nb = tl.sum(tl.sum(cq1 * cq1 + cq2 * cq2, 1), 0)
        cos = dot / tl.maximum(tl.sqrt(na) * tl.sqrt(nb), 1e-8)
        hit = ((have != 0) & (cos >= threshold) & (cached_hi <= hi)).to(tl.int32)
    tl.store(flags_ptr, hit)
    tl.store(counts_ptr, tl.load(counts_ptr) + 1)
    tl.store(counts_ptr + 1, tl.load(counts_ptr + 1) + hit)
    if hit == 0:
        tl.store(cached_ptr + h[:, None] * (2 * HALF) + j[None, :], u1, mask=okh[:, None])
        tl.store(cached_ptr + h[:, None] * (2 * HALF) + HALF + j[None, :], u2, mask=okh[:, None])
        tl.store(flags_ptr + 1, 1)
        tl.store(flags_ptr + 2, hi)
        # row r of KV head kv is query head kv * G + r (HF's GQA grouping), padded to RP rows per KV head
        s1 = u1 * scaling
        s2 = u2 * scaling
        scale = tl.full([HQP], 1.0, tl.float32)
        if INT8:
            amax = tl.maximum(tl.max(tl.abs(s1), 1), tl.max(tl.abs(s2), 1))
            scale = tl.maximum(amax, 1e-12) / 127.0
            s1 = tl.floor(s1 / scale[:, None] + 0.5)
            s2 = tl.floor(s2 / scale[:, None] + 0.5)
        row = (h // G) * RP + h % G
        tl.store(fp_ptr + row[:, None] * (2 * HALF) + j[None, :], s1, mask=okh[:, None])
        tl.store(fp_ptr + row[:, None] * (2 * HALF) + HALF + j[None, :], s2, mask=okh[:, None])
        tl.store(fps_ptr + row, scale, mask=okh)


@triton.jit
def score_kernel(fp_ptr, fps_ptr, kbuf_ptr, b_sh, b_sr, ks_ptr, ks_sh, nk_ptr, flags_ptr, logit_ptr, l_sr, part_ptr,
                 n_init, n_local, n_rows,
                 HKV: tl.constexpr, RP: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr, INT8: tl.constexpr,
                 IEEE: tl.constexpr):
    """Logits of every fingerprint row against one block of middle keys, and the block's per-row
    (max, sum exp) for the softmax normalisers. Rows ``>= n_rows`` of a KV head are padding."""
    if tl.load(flags_ptr) != 0:
        return
    b = tl.program_id(0)
    nk = tl.load(nk_ptr)
    m = nk - n_local - n_init
    j = b * BLOCK + tl.arange(0, BLOCK)
    if b * BLOCK >= m:
        return
    okj = j < m
    r = tl.arange(0, RP)
    e = tl.arange(0, D)
    for h in tl.static_range(HKV):
        q = tl.load(fp_ptr + (h * RP + r)[:, None] * D + e[None, :])
        kt = tl.load(kbuf_ptr + h * b_sh + (n_init + j)[None, :] * b_sr + e[:, None], mask=okj[None, :], other=0)
        if INT8:
            acc = tl.dot(q.to(tl.int8), kt).to(tl.float32)
            ks = tl.load(ks_ptr + h * ks_sh + n_init + j, mask=okj, other=0.0)
            lg = acc * tl.load(fps_ptr + h * RP + r)[:, None] * ks[None, :]
        elif IEEE:
            lg = tl.dot(q, kt.to(tl.float32), input_precision="ieee")
        else:
            lg = tl.dot(q.to(kt.dtype), kt)
        lg = tl.where(okj[None, :], lg, float("-inf"))
        tl.store(logit_ptr + (h * RP + r)[:, None] * l_sr + j[None, :], lg, mask=(r < n_rows)[:, None] & okj[None, :])
        mx = tl.max(lg, 1)
        se = tl.sum(tl.exp(lg - mx[:, None]), 1)
        tl.store(part_ptr + (b * HKV * RP + h * RP + r) * 2, mx)
        tl.store(part_ptr + (b * HKV * RP + h * RP + r) * 2 + 1, se)


@triton.jit
def reduce_kernel(part_ptr, stats_ptr, hist_ptr, nk_ptr, flags_ptr, n_init, n_local,
                  R: tl.constexpr, RPOW: tl.constexpr, BLOCK: tl.constexpr, NB: tl.constexpr, NBINS_: tl.constexpr):
    """One program: per row, the max and sum-exp over every block of this step; clears the histograms."""
    if tl.load(flags_ptr) != 0:
        return
    nk = tl.load(nk_ptr)
    nblk = tl.cdiv(nk - n_local - n_init, BLOCK)
    r = tl.arange(0, RPOW)
    okr = r < R
    mx = tl.full([RPOW], -1e30, tl.float32)  # finite: padding rows never produce nan
    se = tl.zeros([RPOW], tl.float32)
    for b0 in range(0, nblk, NB):
        bb = b0 + tl.arange(0, NB)
        ok = (bb < nblk)[:, None] & okr[None, :]
        pm = tl.load(part_ptr + (bb[:, None] * R + r[None, :]) * 2, mask=ok, other=-1e30)
        ps = tl.load(part_ptr + (bb[:, None] * R + r[None, :]) * 2 + 1, mask=ok, other=0.0)
        new = tl.maximum(mx, tl.max(pm, 0))
        se = se * tl.exp(mx - new) + tl.sum(ps * tl.exp(pm - new[None, :]), 0)
        mx = new
    tl.store(stats_ptr + r * 2, mx, mask=okr)
    tl.store(stats_ptr + r * 2 + 1, se, mask=okr)
    z = tl.zeros([NBINS_], tl.int32)
    for p in tl.static_range(3):
        tl.store(hist_ptr + p * NBINS_ + tl.arange(0, NBINS_), z)


@triton.jit
def _scan(hist_ptr, k_rem, NBINS_: tl.constexpr):
    """The digit holding the ``k_rem``-th largest among the counted elements, and the rank left inside it."""
    i = tl.arange(0, NBINS_)
    h = tl.load(hist_ptr + i)
    above_incl = tl.sum(h, 0) - tl.cumsum(h, 0) + h  # elements in this bin or any higher one
    d = tl.max(tl.where(above_incl >= k_rem, i, -1), 0)
    above = tl.sum(tl.where(i == d, above_incl - h, 0), 0)
    return d, k_rem - above


@triton.jit
def _prefix(hist_ptr, k, PASSES: tl.constexpr, NBINS_: tl.constexpr):
    """Bits fixed by the first PASSES radix passes (aligned at their shift) and the rank still to find."""
    prefix = 0
    k_rem = k
    for p in tl.static_range(PASSES):
        d, k_rem = _scan(hist_ptr + p * NBINS_, k_rem, NBINS_)
        if p == 0:
            prefix = d << 21
        elif p == 1:
            prefix = prefix | (d << 10)
        else:
            prefix = prefix | d
    return prefix, k_rem


@triton.jit
def _hist(bits, ok, hist_ptr, prefix, PASS: tl.constexpr, NBINS_: tl.constexpr):
    if PASS == 0:
        digit = bits >> 21
        match = ok
    elif PASS == 1:
        digit = (bits >> 10) & 2047
        match = ok & ((bits >> 21) == (prefix >> 21))
    else:
        digit = bits & 1023
        match = ok & ((bits >> 10) == (prefix >> 10))
    # a block-local histogram first, then one atomic per non-empty bin: the first pass's digits are the exponent
    # bits of scores of similar size, so per-element atomics would pile onto a few addresses; unmatched lanes
    # count in a spare upper half that is never added
    counts = tl.histogram(tl.where(match, digit, NBINS_), 2 * NBINS_)
    i = tl.arange(0, 2 * NBINS_)
    tl.atomic_add(hist_ptr + PASS * NBINS_ + i, counts, mask=(i < NBINS_) & (counts > 0))


@triton.jit
def vote_kernel(logit_ptr, l_sr, stats_ptr, vote_ptr, score_ptr, hist_ptr, nk_ptr, flags_ptr, n_init, n_local, n_rows,
                HKV: tl.constexpr, RP: tl.constexpr, BLOCK: tl.constexpr, HIST: tl.constexpr, NBINS_: tl.constexpr):
    """Soft vote ``sum_r exp(l_r - max_r) / Z_r``; unpooled (HIST), it is the score: first radix pass too."""
    if tl.load(flags_ptr) != 0:
        return
    b = tl.program_id(0)
    nk = tl.load(nk_ptr)
    m = nk - n_local - n_init
    if b * BLOCK >= m:
        return
    j = b * BLOCK + tl.arange(0, BLOCK)
    okj = j < m
    r = tl.arange(0, RP)
    v = tl.zeros([BLOCK], tl.float32)
    for h in tl.static_range(HKV):
        okr = r < n_rows
        lg = tl.load(logit_ptr + (h * RP + r)[:, None] * l_sr + j[None, :], mask=okr[:, None] & okj[None, :],
                     other=float("-inf"))
        mx = tl.load(stats_ptr + (h * RP + r) * 2, mask=okr, other=0.0)
        z = tl.load(stats_ptr + (h * RP + r) * 2 + 1, mask=okr, other=1.0)
        v += tl.sum(tl.exp(lg - mx[:, None]) / z[:, None], 0)
    tl.store(vote_ptr + j, v, mask=okj)
    if HIST:
        tl.store(score_ptr + j, v, mask=okj)
        _hist(v.to(tl.int32, bitcast=True), okj, hist_ptr, 0, 0, NBINS_)


@triton.jit
def pool_hist_kernel(vote_ptr, score_ptr, hist_ptr, nk_ptr, flags_ptr, n_init, n_local,
                     POOL: tl.constexpr, BLOCK: tl.constexpr, NBINS_: tl.constexpr):
    """Max-pool of the vote over ``POOL`` neighbours (windows clipped at the ends), then the first radix pass."""
    if tl.load(flags_ptr) != 0:
        return
    b = tl.program_id(0)
    nk = tl.load(nk_ptr)
    m = nk - n_local - n_init
    if b * BLOCK >= m:
        return
    j = b * BLOCK + tl.arange(0, BLOCK)
    okj = j < m
    s = tl.zeros([BLOCK], tl.float32)
    for t in tl.static_range(POOL):
        jj = j + (t - POOL // 2)
        s = tl.maximum(s, tl.load(vote_ptr + jj, mask=okj & (jj >= 0) & (jj < m), other=0.0))
    tl.store(score_ptr + j, s, mask=okj)
    _hist(s.to(tl.int32, bitcast=True), okj, hist_ptr, 0, 0, NBINS_)


@triton.jit
def radix_kernel(score_ptr, hist_ptr, nk_ptr, flags_ptr, n_init, n_local, k,
                 PASS: tl.constexpr, BLOCK: tl.constexpr, NBINS_: tl.constexpr):
    """Radix pass PASS (1 or 2) over the elements matching the digits fixed so far."""
    if tl.load(flags_ptr) != 0:
        return
    b = tl.program_id(0)
    nk = tl.load(nk_ptr)
    m = nk - n_local - n_init
    if b * BLOCK >= m:
        return
    j = b * BLOCK + tl.arange(0, BLOCK)
    okj = j < m
    prefix, _ = _prefix(hist_ptr, tl.minimum(k, m), PASS, NBINS_)
    bits = tl.load(score_ptr + j, mask=okj, other=0.0).to(tl.int32, bitcast=True)
    _hist(bits, okj, hist_ptr, prefix, PASS, NBINS_)


@triton.jit
def count_kernel(score_ptr, hist_ptr, cnt_ptr, nk_ptr, flags_ptr, n_init, n_local, k,
                 BLOCK: tl.constexpr, NBINS_: tl.constexpr):
    """Per block: how many scores lie above the k-th value T, and how many equal it."""
    if tl.load(flags_ptr) != 0:
        return
    b = tl.program_id(0)
    nk = tl.load(nk_ptr)
    m = nk - n_local - n_init
    if b * BLOCK >= m:
        return
    j = b * BLOCK + tl.arange(0, BLOCK)
    okj = j < m
    t, _ = _prefix(hist_ptr, tl.minimum(k, m), 3, NBINS_)
    bits = tl.load(score_ptr + j, mask=okj, other=0.0).to(tl.int32, bitcast=True)
    tl.store(cnt_ptr + b * 2, tl.sum((okj & (bits > t)).to(tl.int32), 0))
    tl.store(cnt_ptr + b * 2 + 1, tl.sum((okj & (bits == t)).to(tl.int32), 0))


@triton.jit
def write_kernel(score_ptr, hist_ptr, cnt_ptr, mid_ptr, nk_ptr, flags_ptr, n_init, n_local, k,
                 BLOCK: tl.constexpr, NBP: tl.constexpr, NBINS_: tl.constexpr):
    """The selected positions (absolute), ascending: every score above T and the first ties at T."""
    if tl.load(flags_ptr) != 0:
        return
    b = tl.program_id(0)
    nk = tl.load(nk_ptr)
    m = nk - n_local - n_init
    if b * BLOCK >= m:
        return
    t, ties_left = _prefix(hist_ptr, tl.minimum(k, m), 3, NBINS_)
    bb = tl.arange(0, NBP)
    before = bb < b
    gt = tl.load(cnt_ptr + bb * 2, mask=before, other=0)
    eq = tl.load(cnt_ptr + bb * 2 + 1, mask=before, other=0)
    eq_before = tl.cumsum(eq, 0) - eq
    taken = gt + tl.minimum(eq, tl.maximum(ties_left - eq_before, 0))
    start = tl.sum(taken, 0)
    my_ties_before = tl.sum(eq, 0)
    j = b * BLOCK + tl.arange(0, BLOCK)
    okj = j < m
    bits = tl.load(score_ptr + j, mask=okj, other=0.0).to(tl.int32, bitcast=True)
    tie = (okj & (bits == t)).to(tl.int32)
    keep = (okj & (bits > t)) | ((tie != 0) & (my_ties_before + tl.cumsum(tie, 0) - tie < ties_left))
    keep_i = keep.to(tl.int32)
    pos = start + tl.cumsum(keep_i, 0) - keep_i
    tl.store(mid_ptr + pos, (n_init + j).to(tl.int64), mask=keep)


@triton.jit
def _rotated_rows(key_ptr, k_sh, k_sr, h, p, c, okc, cos_ptr, sin_ptr, HALF: tl.constexpr, COMPACT: tl.constexpr):
    """Key halves at cache positions ``p`` moved to compact positions ``c`` (rotation by c - p)."""
    j = tl.arange(0, HALF)
    base = key_ptr + h * k_sh + p[:, None] * k_sr + j[None, :]
    k1 = tl.load(base, mask=okc[:, None], other=0.0).to(tl.float32)
    k2 = tl.load(base + HALF, mask=okc[:, None], other=0.0).to(tl.float32)
    r1 = k1
    r2 = k2
    if COMPACT:
        cc = tl.load(cos_ptr + c[:, None] * HALF + j[None, :], mask=okc[:, None], other=1.0)
        sc = tl.load(sin_ptr + c[:, None] * HALF + j[None, :], mask=okc[:, None], other=0.0)
        cp = tl.load(cos_ptr + p[:, None] * HALF + j[None, :], mask=okc[:, None], other=1.0)
        sp = tl.load(sin_ptr + p[:, None] * HALF + j[None, :], mask=okc[:, None], other=0.0)
        cd = cc * cp + sc * sp  # cos(c - p)
        sd = sc * cp - cc * sp  # sin(c - p)
        r1 = k1 * cd - k2 * sd
        r2 = k2 * cd + k1 * sd
    return r1, r2


@triton.jit
def attend_decode_kernel(q_ptr, key_ptr, value_ptr, k_sh, k_sr, v_sh, v_sr, mid_ptr, nk_ptr, cos_ptr, sin_ptr,
                         pm_ptr, pl_ptr, pacc_ptr, n_init, m, n_local, scaling,
                         G: tl.constexpr, GP: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr,
                         SPLIT_LEN: tl.constexpr, NSPLIT: tl.constexpr, COMPACT: tl.constexpr):
    """One decode query over its selection: program (KV head, split) reads compact positions
    ``[split * SPLIT_LEN, ...)``, gathers and rotates on load, and leaves a partial softmax."""
    h = tl.program_id(0)
    sp_i = tl.program_id(1)
    nk = tl.load(nk_ptr)
    s_len = n_init + m + n_local
    g = tl.arange(0, GP)
    j = tl.arange(0, HALF)
    okg = g < G
    qrow = (h * G + g)[:, None] * (2 * HALF) + j[None, :]
    q1 = tl.load(q_ptr + qrow, mask=okg[:, None], other=0.0).to(tl.float32)
    q2 = tl.load(q_ptr + qrow + HALF, mask=okg[:, None], other=0.0).to(tl.float32)
    if COMPACT:  # the query at nk - 1 moves to s_len - 1: rotation by -(nk - s_len)
        a = nk - s_len
        ca = tl.load(cos_ptr + a * HALF + j)[None, :]
        sa = tl.load(sin_ptr + a * HALF + j)[None, :]
        q1, q2 = q1 * ca + q2 * sa, q2 * ca - q1 * sa
    q1 = q1 * scaling
    q2 = q2 * scaling
    mx = tl.full([GP], float("-inf"), tl.float32)
    lsum = tl.zeros([GP], tl.float32)
    acc1 = tl.zeros([GP, HALF], tl.float32)
    acc2 = tl.zeros([GP, HALF], tl.float32)
    for off in tl.static_range(0, SPLIT_LEN, BLOCK):
        c = sp_i * SPLIT_LEN + off + tl.arange(0, BLOCK)
        okc = c < s_len
        p = _frame_pos(c, mid_ptr, n_init, m, nk, n_local)
        p = tl.where(okc, p, 0)
        k1, k2 = _rotated_rows(key_ptr, k_sh, k_sr, h, p, c, okc, cos_ptr, sin_ptr, HALF, COMPACT)
        lg = tl.sum(q1[:, None, :] * k1[None, :, :], 2) + tl.sum(q2[:, None, :] * k2[None, :, :], 2)
        lg = tl.where(okc[None, :], lg, float("-inf"))
        new = tl.maximum(mx, tl.max(lg, 1))
        new_safe = tl.where(new == float("-inf"), 0.0, new)
        pr = tl.exp(lg - new_safe[:, None])
        alpha = tl.exp(mx - new_safe)
        vb = value_ptr + h * v_sh + p[:, None] * v_sr + j[None, :]
        v1 = tl.load(vb, mask=okc[:, None], other=0.0).to(tl.float32)
        v2 = tl.load(vb + HALF, mask=okc[:, None], other=0.0).to(tl.float32)
        acc1 = acc1 * alpha[:, None] + tl.sum(pr[:, :, None] * v1[None, :, :], 1)
        acc2 = acc2 * alpha[:, None] + tl.sum(pr[:, :, None] * v2[None, :, :], 1)
        lsum = lsum * alpha + tl.sum(pr, 1)
        mx = new
    o = (h * NSPLIT + sp_i) * GP + g
    tl.store(pm_ptr + o, mx)
    tl.store(pl_ptr + o, lsum)
    tl.store(pacc_ptr + o[:, None] * (2 * HALF) + j[None, :], acc1)
    tl.store(pacc_ptr + o[:, None] * (2 * HALF) + HALF + j[None, :], acc2)


@triton.jit
def combine_kernel(pm_ptr, pl_ptr, pacc_ptr, out_ptr,
                   G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, NSPLIT: tl.constexpr):
    """Merge the splits' partial softmaxes of one KV head's query heads into ``out [Hq, d]``."""
    h = tl.program_id(0)
    g = tl.arange(0, GP)
    e = tl.arange(0, D)
    mx = tl.full([GP], float("-inf"), tl.float32)
    for s in tl.static_range(NSPLIT):
        mx = tl.maximum(mx, tl.load(pm_ptr + (h * NSPLIT + s) * GP + g))
    lsum = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, D], tl.float32)
    for s in tl.static_range(NSPLIT):
        o = (h * NSPLIT + s) * GP + g
        w = tl.exp(tl.load(pm_ptr + o) - mx)
        lsum += w * tl.load(pl_ptr + o)
        acc += w[:, None] * tl.load(pacc_ptr + o[:, None] * D + e[None, :])
    out = acc / lsum[:, None]
    tl.store(out_ptr + (h * G + g)[:, None] * D + e[None, :], out.to(out_ptr.dtype.element_ty), mask=(g < G)[:, None])


@triton.jit
def gather_rotate_kernel(key_ptr, value_ptr, k_sh, k_sr, v_sh, v_sr, mid_ptr, nk_ptr, cos_ptr, sin_ptr,
                         ok_ptr, ov_ptr, o_sh, n_init, m, n_local,
                         HALF: tl.constexpr, BLOCK: tl.constexpr, COMPACT: tl.constexpr):
    """The compacted K (rotated into the compact frame) and V ``[Hkv, S, d]`` of a prefill chunk's selection."""
    h = tl.program_id(0)
    nk = tl.load(nk_ptr)
    s_len = n_init + m + n_local
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    okc = c < s_len
    p = tl.where(okc, _frame_pos(c, mid_ptr, n_init, m, nk, n_local), 0)
    k1, k2 = _rotated_rows(key_ptr, k_sh, k_sr, h, p, c, okc, cos_ptr, sin_ptr, HALF, COMPACT)
    j = tl.arange(0, HALF)
    dst = h * o_sh + c[:, None] * (2 * HALF) + j[None, :]
    tl.store(ok_ptr + dst, k1.to(ok_ptr.dtype.element_ty), mask=okc[:, None])
    tl.store(ok_ptr + dst + HALF, k2.to(ok_ptr.dtype.element_ty), mask=okc[:, None])
    vb = value_ptr + h * v_sh + p[:, None] * v_sr + j[None, :]
    tl.store(ov_ptr + dst, tl.load(vb, mask=okc[:, None], other=0.0), mask=okc[:, None])
    tl.store(ov_ptr + dst + HALF, tl.load(vb + HALF, mask=okc[:, None], other=0.0), mask=okc[:, None])


@triton.jit
def chunk_fingerprint_kernel(q_ptr, q_sh, q_sr, nk_ptr, cos_ptr, sin_ptr, qc_ptr, fp_ptr, fps_ptr, counts_ptr,
                             flags_ptr, scaling, s_len, C: tl.constexpr, G: tl.constexpr, RP: tl.constexpr,
                             HALF: tl.constexpr, CB: tl.constexpr, VOTE: tl.constexpr, INT8: tl.constexpr,
                             COMPACT: tl.constexpr):
    """A prefill chunk ``q [Hq, C, d]`` at positions ``nk - C ..``, one program per query head: its queries rotated
    back by their own positions (every one a fingerprint row when VOTE, else their mean), and rotated into the
    compact frame (by ``s_len - nk``) for the attention call, into ``qc``."""
    h = tl.program_id(0)
    nk = tl.load(nk_ptr)
    j = tl.arange(0, HALF)
    kv = h // G
    gi = h % G
    a = nk - s_len
    ca = tl.load(cos_ptr + a * HALF + j)[None, :]
    sa = tl.load(sin_ptr + a * HALF + j)[None, :]
    m1 = tl.zeros([HALF], tl.float32)
    m2 = tl.zeros([HALF], tl.float32)
    for c0 in tl.static_range(0, C, CB):
        i = c0 + tl.arange(0, CB)
        ok = i < C
        pos = nk - C + i
        base = q_ptr + h * q_sh + i[:, None] * q_sr + j[None, :]
        x1 = tl.load(base, mask=ok[:, None], other=0.0).to(tl.float32)
        x2 = tl.load(base + HALF, mask=ok[:, None], other=0.0).to(tl.float32)
        c = tl.load(cos_ptr + pos[:, None] * HALF + j[None, :], mask=ok[:, None], other=1.0)
        s = tl.load(sin_ptr + pos[:, None] * HALF + j[None, :], mask=ok[:, None], other=0.0)
        u1 = x1 * c + x2 * s
        u2 = x2 * c - x1 * s
        if COMPACT:
            y1 = x1 * ca + x2 * sa
            y2 = x2 * ca - x1 * sa
        else:
            y1 = x1
            y2 = x2
        dst = qc_ptr + (h * C + i)[:, None] * (2 * HALF) + j[None, :]
        tl.store(dst, y1.to(qc_ptr.dtype.element_ty), mask=ok[:, None])
        tl.store(dst + HALF, y2.to(qc_ptr.dtype.element_ty), mask=ok[:, None])
        if VOTE:
            r1 = u1 * scaling
            r2 = u2 * scaling
            sc = tl.full([CB], 1.0, tl.float32)
            if INT8:
                sc = tl.maximum(tl.maximum(tl.max(tl.abs(r1), 1), tl.max(tl.abs(r2), 1)), 1e-12) / 127.0
                r1 = tl.floor(r1 / sc[:, None] + 0.5)
                r2 = tl.floor(r2 / sc[:, None] + 0.5)
            row = kv * RP + gi * C + i
            tl.store(fp_ptr + row[:, None] * (2 * HALF) + j[None, :], r1, mask=ok[:, None])
            tl.store(fp_ptr + row[:, None] * (2 * HALF) + HALF + j[None, :], r2, mask=ok[:, None])
            tl.store(fps_ptr + row, sc, mask=ok)
        else:
            m1 += tl.sum(tl.where(ok[:, None], u1, 0.0), 0)
            m2 += tl.sum(tl.where(ok[:, None], u2, 0.0), 0)
    if not VOTE:
        r1 = m1 / C * scaling
        r2 = m2 / C * scaling
        sc = 1.0
        if INT8:
            sc = tl.maximum(tl.maximum(tl.max(tl.abs(r1), 0), tl.max(tl.abs(r2), 0)), 1e-12) / 127.0
            r1 = tl.floor(r1 / sc + 0.5)
            r2 = tl.floor(r2 / sc + 0.5)
        row = kv * RP + gi
        tl.store(fp_ptr + row * (2 * HALF) + j, r1)
        tl.store(fp_ptr + row * (2 * HALF) + HALF + j, r2)
        tl.store(fps_ptr + row, sc)
    if h == 0:
        tl.store(flags_ptr, 0)  # a chunk never reuses a selection
        tl.store(counts_ptr, tl.load(counts_ptr) + 1)

"""``tokenselect``: TokenSelect (Wu et al., 2024, "TokenSelect: Efficient Long-Context Inference
and Length Extrapolation for LLMs via Dynamic Token-Level KV Cache Selection").

Per chunk, a position-free fingerprint query (the chunk's queries rotated back to position 0:
their mean, or each of them for a short chunk that soft-votes) scores the un-rotated keys of a
contiguous per-layer buffer; the per-head softmax scores are summed over heads (soft vote),
optionally max-pooled over neighbours, and the top ``k`` kept in position order. On decode
steps the Selection Cache reuses the last selection while the query barely moves, and with
``score_layers`` later layers reuse an earlier layer's selection.
"""

from __future__ import annotations

import torch

from .. import kernels as KN
from .. import select as K
from ..attention import LayerState, _kernels
from .base import SELECTORS, Selector, span

ROTATE_BLOCK = 4096  # keys un-rotated into the scoring buffer per step


@SELECTORS.register("tokenselect")
class TokenSelect(Selector):
    sorted_middle = True
    fields = ("pool_kernel", "score_layers", "score_dtype", "score_distance", "cache_threshold")

    @staticmethod
    def middle(st, q, key, nk, q0, scaling, decode):
        cfg = st.runtime.cfg
        b, c = q.shape[0], q.shape[2]
        lo, hi = span(st, nk)
        inv = st.inv_freq.to(q.device)
        # tokenselect: position-free fingerprint of the chunk, Selection Cache on decode steps
        if cfg.score_layers is not None and st.layer_idx not in cfg.score_layers:
            src = max((i for i in cfg.score_layers if i < st.layer_idx), default=None)
            got = st.runtime.shared.get(src, {}).get((nk, q0, c)) if src is not None else None
            if got is not None:
                if st.cached_mid is not None and torch.equal(st.cached_mid, got):
                    st.hits += 1  # same indices as this layer's last step: its compacted rows are reused
                st.cached_mid = got
                return got
        cos_t, sin_t = st.runtime.trig(st, q0 + c, q.device)
        vote = 1 < c <= cfg.vote_queries
        lib = _kernels(cfg) if not vote and q.dtype == torch.float32 and KN.usable(q) else None
        if lib is not None:  # one call instead of ~10 small ops (and, for a chunk, its [Hq, c, d] temporaries)
            q_un = KN.unrotate(lib, q, cos_t, sin_t, q0)[:, :, 0] if c == 1 else KN.unrotate_mean(lib, q, cos_t, sin_t, q0)
        else:
            q_un = K.rotate_into(torch.empty(q.shape, device=q.device), q.to(torch.float32), cos_t[q0:q0 + c],
                                 -sin_t[q0:q0 + c]).to(q.dtype)  # [B, Hq, c, d], rotated back by its positions
            # A short chunk (the question, a decode step) votes with every query: the mean of a
            # question's queries points at no needle in particular. Long prefill chunks keep the mean
            # fingerprint so scoring stays one read of the keys per chunk.
            q_un = q_un if vote else q_un[:, :, 0] if c == 1 else q_un.mean(2)
        if cfg.score_distance:
            q_un = K.rotate(q_un, torch.tensor([cfg.score_distance], device=q.device), inv)
        if decode and cfg.cache_threshold is not None and st.cached_q is not None:
            if lib is not None and q_un.is_contiguous() and q_un.numel() == st.cached_q.numel():
                same = KN.cosine(lib, q_un, st.cached_q) >= cfg.cache_threshold  # one call, not ~15 ops
            else:
                cos = torch.nn.functional.cosine_similarity(q_un.reshape(b, -1).float(), st.cached_q, dim=-1)
                same = bool((cos >= cfg.cache_threshold).all())
            if same and st.cached_hi <= hi:
                st.hits += 1
                _share(st, nk, q0, c, st.cached_mid)
                return st.cached_mid
        # keys reach the scoring buffer only here: a Selection Cache hit, or a layer reusing another
        # layer's selection, never reads it (nor pays to fill it)
        kbuf = _sync_buffer(st, key)
        ks = st.kscale[:, :, lo:hi] if st.kscale is not None else None
        lib = _kernels(cfg) if ks is not None and q_un.dim() == 3 and q_un.dtype == torch.float32 \
            and KN.usable(kbuf, q_un) else None
        if lib is not None:  # integer scoring, vote, pool and top-k in one call
            mid = KN.select_int8(lib, q_un, scaling, kbuf[:, :, lo:hi], ks[0], cfg.k, lo, cfg.pool_kernel)[:, None]
        else:
            score = K.soft_vote(K.head_logits(q_un, kbuf[:, :, lo:hi], scaling, ks), cfg.pool_kernel)
            mid = K.topk_sorted(score, cfg.k, lo)[:, None]
        if decode:
            st.cached_q, st.cached_mid, st.cached_hi = q_un.reshape(b, -1).float(), mid, hi
        _share(st, nk, q0, c, mid)
        return mid


def _share(st: LayerState, nk: int, q0: int, c: int, mid: torch.Tensor) -> None:
    """Publish a scoring layer's selection for the layers after it that reuse it (``score_layers``)."""
    if st.runtime.cfg.score_layers is not None and st.layer_idx in st.runtime.cfg.score_layers:
        st.runtime.shared.setdefault(st.layer_idx, {})[(nk, q0, c)] = mid


def _sync_buffer(st: LayerState, key: torch.Tensor) -> torch.Tensor:
    """Append newly cached keys, un-rotated, to the layer's contiguous scoring buffer; returns it."""
    b, n_kv, n, d = key.shape
    name = st.runtime.cfg.score_dtype
    dtype = getattr(torch, name) if name else key.dtype
    if st.kbuf is None or st.kbuf.shape[:2] != (b, n_kv) or st.kbuf.device != key.device or st.kbuf.dtype != dtype:
        st.kbuf, st.n_seen = None, 0
    cap = 0 if st.kbuf is None else st.kbuf.shape[2]
    if cap < n:
        new = torch.empty(b, n_kv, max(n, 2 * cap, 1024), d, dtype=dtype, device=key.device)
        scale = torch.empty(new.shape[:3], device=key.device) if dtype == torch.int8 else None
        if st.n_seen:
            new[:, :, :st.n_seen] = st.kbuf[:, :, :st.n_seen]
            if scale is not None:
                scale[:, :, :st.n_seen] = st.kscale[:, :, :st.n_seen]
        st.kbuf, st.kscale = new, scale
    if n > st.n_seen:
        cos_t, sin_t = st.runtime.trig(st, n, key.device)
        lib = _kernels(st.runtime.cfg) if st.kscale is not None and key.dtype == torch.float32 \
            and KN.usable(key) and key.stride(2) == d else None
        if lib is not None:  # one call instead of ~15 small ops per decoded key
            KN.sync_int8(lib, key, st.n_seen, n, cos_t, sin_t, st.kbuf, st.kscale)
            st.n_seen = n
    # blocks of keys, so a 32K prefill does not hold four full-size float32 temporaries of the rotation
    for lo in range(st.n_seen, n, ROTATE_BLOCK):
        hi = min(n, lo + ROTATE_BLOCK)
        # rotate by -p (cos(-a) = cos(a), sin(-a) = -sin(a)) in float32, whatever the cache holds
        x = key[:, :, lo:hi].to(torch.float32)
        if st.kscale is None:
            K.rotate_into(st.kbuf[:, :, lo:hi], x, cos_t[lo:hi], -sin_t[lo:hi])
        else:
            st.kbuf[:, :, lo:hi], st.kscale[:, :, lo:hi] = K.quantize_rows(
                K.rotate_into(torch.empty_like(x), x, cos_t[lo:hi], -sin_t[lo:hi]))
    st.n_seen = max(st.n_seen, n)
    return st.kbuf

"""TokenSelect (Wu et al., 2024) as a transformers attention backend.

``enable_token_select(model, cfg)`` registers one attention function under the name
``"token_select"`` through transformers' ``AttentionInterface`` (and a matching mask
function through ``AttentionMaskInterface``), switches the model to it with the public
``set_attn_implementation``, and hangs a small per-layer state object on each attention
module. The model's own code is untouched: ``model(...)`` and ``model.generate(...)``
run as usual with the ordinary ``DynamicCache``.

Per full-attention layer and per chunk of ``chunk_size`` queries (or per decode step):
exact dense SDPA while ``n_init + k + n_local`` covers the context; otherwise score the
un-rotated keys with the chunk's fingerprint query, keep ``[0, n_init) U top-k U local``,
and attend over that compacted list with RoPE positions ``0..S-1`` (keys and queries are
re-rotated: RoPE rotations compose), so positions never leave the trained range. Which middle
tokens are kept is the configured selector's choice (``cfg.method``, one file each under
:mod:`.selectors`); this module does the rest the same way for all of them.

Gemma-3 sliding-window layers already read at most ``sliding_window`` keys; they are not
selected but run an exact chunked sliding-window attention (relative positions < 512 are
always in-distribution), which also avoids the ``N x N`` mask SDPA would need at 32K.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from ...core.errors import SlimguardError
from . import kernels as KN
from . import select as K
from .config import SELECTORS, TokenSelectConfig

NAME = "token_select"
ATTR = "slimguard_kvselect"
SUPPORTED = ("llama", "gemma3_text", "gemma3", "qwen2", "mistral")


@dataclass
class LayerState:
    """Per-layer selection state: un-rotated key buffer, Selection Cache, H2O scores, counters."""

    layer_idx: int
    inv_freq: torch.Tensor
    runtime: "TokenSelectRuntime"
    kbuf: torch.Tensor | None = None  # [B, Hkv, cap, d] un-rotated keys (score_dtype), contiguous per head
    kscale: torch.Tensor | None = None  # [B, Hkv, cap] per-key scales when kbuf is int8
    freq_key: tuple | None = None  # inv_freq as a hashable key of the shared position table
    n_seen: int = 0  # keys already un-rotated into kbuf (synced lazily, only when this layer scores)
    n_keys: int = 0  # cache length at the last call (a shorter cache later means it was rolled back)
    cached_q: torch.Tensor | None = None
    cached_mid: torch.Tensor | None = None
    cached_hi: int = 0  # every cached_mid index is below this
    h2o_acc: torch.Tensor | None = None
    h2o_kept: torch.Tensor | None = None
    h2o_hi: int = 0
    last_idx: torch.Tensor | None = None
    sel_k: torch.Tensor | None = None  # compacted, rotated K of the last selection (reused on cache hits)
    sel_v: torch.Tensor | None = None
    sel_original: bool = False  # sel_k holds keys at their cached positions (not re-numbered)
    max_positions: int = 0  # the model's trained window (positions="auto")
    fused: object | None = None  # fused.FusedSelector of the GPU path (kernel="triton"; "auto" on CUDA)
    last_n_keys: int = 0
    selections: int = 0
    hits: int = 0
    dense: int = 0

    def reset(self) -> None:
        self.n_seen = self.n_keys = self.cached_hi = 0
        self.cached_q = self.cached_mid = self.h2o_acc = self.h2o_kept = None
        self.sel_k = self.sel_v = None
        self.h2o_hi = 0
        if self.fused is not None:
            self.fused.reset()

    def counts(self) -> tuple[int, int]:
        """(selections, Selection Cache hits), the fused path's device counters included."""
        sel, hits = self.fused.stats() if self.fused is not None else (0, 0)
        return self.selections + sel, self.hits + hits


@dataclass
class SelectionStats:
    """Counters over every layer since the last ``reset_stats``."""

    selections: int
    cache_hits: int
    dense_calls: int
    per_layer_hits: dict = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.selections if self.selections else 0.0


class TokenSelectRuntime:
    """Handle returned by :func:`enable_token_select`: config, per-layer states, stats."""

    def __init__(self, cfg: TokenSelectConfig, layers: dict[int, LayerState]):
        self.cfg = cfg
        self.layers = layers
        # score_layers: per scoring layer, this forward's selections keyed by (n_keys, first query, queries)
        self.shared: dict[int, dict[tuple[int, int, int], torch.Tensor]] = {}
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self._trig: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def trig(self, st: "LayerState", n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos/sin(p * inv_freq)`` for positions ``p < n``, ``[>= n, d/2]`` float32, shared by every layer
        with these frequencies. Selection rotates a thousand gathered keys per step by their own
        offsets; reading two table rows per key costs far less than ``sin``/``cos`` of each angle."""
        if st.freq_key is None:  # once per layer, not on every step
            st.freq_key = tuple(st.inv_freq.tolist())
        key = (st.freq_key, str(device))
        tab = self._trig.get(key)
        if tab is None or tab[0].shape[0] < n:
            cap = max(n, 2 * (0 if tab is None else tab[0].shape[0]), 4096)
            f = st.inv_freq.to("cpu", torch.float64)[None]  # angles on the CPU (float64), tables copied to `device`
            cos, sin = (torch.empty(cap, f.shape[1], device=device) for _ in range(2))
            # float64 angles (p * f at p ~ 1e5 loses ~1e-2 rad in float32), a block at a time so the
            # float64 temporaries stay small next to a long prefill's peak
            for lo in range(0, cap, 8192):
                ang = torch.arange(lo, min(cap, lo + 8192), dtype=torch.float64)[:, None] * f
                cos[lo:lo + ang.shape[0]], sin[lo:lo + ang.shape[0]] = ang.cos(), ang.sin()
            tab = self._trig[key] = (cos, sin)
        return tab

    def reset_stats(self) -> None:
        for s in self.layers.values():
            s.selections = s.hits = s.dense = 0
            if s.fused is not None:
                s.fused.counts.zero_()

    def reset(self) -> None:
        for s in self.layers.values():
            s.reset()

    def stats(self) -> SelectionStats:
        ls = list(self.layers.values())
        c = [s.counts() for s in ls]
        return SelectionStats(sum(x[0] for x in c), sum(x[1] for x in c), sum(s.dense for s in ls),
                              {s.layer_idx: (x[1] / x[0] if x[0] else 0.0) for s, x in zip(ls, c)})

    def selected(self) -> dict[int, torch.Tensor]:
        """Last recorded index set per selecting layer (needs ``record=True``): ``[B, H, S]`` on CPU."""
        return {i: s.last_idx for i, s in self.layers.items() if s.last_idx is not None}


# --------------------------------------------------------------------------- registration


def _mask_fn(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
             local_size=None, allow_is_causal_skip=True, **kw):
    """No mask unless real padding is present: causal and sliding windows are built inside the attention."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    if attention_mask is None or bool(attention_mask.all()):
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function or causal_mask_function,
                     attention_mask=attention_mask, local_size=local_size, allow_is_causal_skip=False, **kw)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, token_select_attention)
    AttentionMaskInterface.register(NAME, _mask_fn)


def _inv_freq(model, module) -> torch.Tensor:
    rot = getattr(getattr(model, "model", model), "rotary_emb", None)
    if rot is None:
        raise SlimguardError(f"{type(model).__name__} has no rotary_emb; TokenSelect needs a RoPE model")
    ltype = getattr(module, "layer_type", None)
    f = getattr(rot, f"{ltype}_inv_freq", None) if ltype else None
    f = f if f is not None else getattr(rot, "inv_freq", None)
    if f is None:
        raise SlimguardError(f"cannot find RoPE frequencies for layer {module.layer_idx}")
    return f.detach().to(torch.float32).clone()


def enable_token_select(model, cfg: TokenSelectConfig | None = None) -> TokenSelectRuntime:
    """Switch ``model`` to TokenSelect (or a peer selector); returns the runtime handle."""
    cfg = cfg or TokenSelectConfig()
    mtype = getattr(model.config, "model_type", "?")
    if mtype not in SUPPORTED:
        raise SlimguardError(f"unsupported architecture '{mtype}' for TokenSelect; supported: {', '.join(SUPPORTED)}")
    rope = getattr(model.config, "rope_parameters", None) or {}
    types = {v.get("rope_type", "default") for v in rope.values() if isinstance(v, dict)} if "rope_type" not in rope \
        else {rope.get("rope_type")}
    if types - {"default", "linear", "llama3", None}:
        raise SlimguardError(f"unsupported RoPE type {sorted(t for t in types if t)} for TokenSelect")
    _register()
    layers: dict[int, LayerState] = {}
    runtime = TokenSelectRuntime(cfg, layers)
    text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = int(getattr(text_cfg, "max_position_embeddings", 0) or 0)  # 0: unknown, positions="auto" compacts
    for m in model.modules():
        if hasattr(m, "layer_idx") and hasattr(m, "q_proj") and hasattr(m, "k_proj"):
            st = LayerState(m.layer_idx, _inv_freq(model, m), runtime, max_positions=window)
            setattr(m, ATTR, st)
            if getattr(m, "sliding_window", None) is None:
                layers[m.layer_idx] = st
    if not layers:
        raise SlimguardError(f"{type(model).__name__}: no full-attention layers found to select on")
    bad = sorted(set(cfg.score_layers or ()) - set(layers))
    if bad:
        raise SlimguardError(f"score_layers {bad} are not full-attention layers of this model; "
                             f"choose from {sorted(layers)}")
    from . import fused

    fused.check_config(cfg)
    model.set_attn_implementation(NAME)
    model.slimguard_kvselect = runtime
    dev = next(model.parameters()).device.type
    note = gpu_speed_note(dev, fused.wanted(cfg, dev))
    if note:
        warnings.warn(note, stacklevel=2)
    return runtime


def gpu_speed_note(device_type: str, fused: bool = False) -> str | None:
    """What a user enabling TokenSelect on a GPU should know (None on the CPU, where the C++ kernels run, and on a
    GPU that takes the fused Triton path)."""
    if device_type == "cpu" or fused:
        return None
    return (f"token_select on {device_type} without the fused Triton path (triton not installed, or a setting it does "
            "not implement: another method, score_layers, score_distance, kernel='torch'): each selection is a few "
            "dozen PyTorch kernel launches, measured at ~0.1x the speed of dense attention on an H100 at 32K-128K "
            "(docs/notes/kvselect-gpu.md). It still extends the context beyond the trained length; "
            "pip install 'slimguard[gpu]' for the fused path.")


def disable_token_select(model, attn_implementation: str = "sdpa") -> None:
    """Back to a stock attention implementation; drops the per-layer state."""
    for m in model.modules():
        if hasattr(m, ATTR):
            delattr(m, ATTR)
    if hasattr(model, "slimguard_kvselect"):
        del model.slimguard_kvselect
    model.set_attn_implementation(attn_implementation)


def standalone_layer(cfg: TokenSelectConfig, inv_freq: torch.Tensor, groups: int):
    """A stand-in attention module carrying one layer's state, for calling
    :func:`token_select_attention` on raw tensors (kernel timing, fidelity tests) without a model."""
    from types import SimpleNamespace

    rt = TokenSelectRuntime(cfg, {})
    st = LayerState(0, inv_freq, rt)
    rt.layers[0] = st
    m = SimpleNamespace(layer_idx=0, is_causal=True, num_key_value_groups=groups, training=False, sliding_window=None)
    setattr(m, ATTR, st)
    return m, st


# --------------------------------------------------------------------------- attention


def _causal_mask(c: int, n: int, device, window: int | None = None) -> torch.Tensor:
    qpos = torch.arange(n - c, n, device=device)[:, None]
    kpos = torch.arange(n, device=device)[None, :]
    m = kpos <= qpos
    if window:
        m &= kpos > qpos - window
    return m


def sliding_attention(query, key, value, scaling: float, window: int, chunk: int) -> torch.Tensor:
    """Exact sliding-window causal attention in query chunks: never builds an ``L x N`` mask."""
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    b, hq, L, d = query.shape
    n = key.shape[2]
    rep = hq // key.shape[1]
    off = n - L
    outs = []
    for s in range(0, L, chunk):
        e = min(L, s + chunk)
        lo = max(0, off + s - window + 1)
        kk, vv = key[:, :, lo:off + e], value[:, :, lo:off + e]
        if rep > 1:
            kk, vv = kk.repeat_interleave(rep, 1), vv.repeat_interleave(rep, 1)
        mask = _causal_mask(e - s, off + e - lo, query.device, window)
        outs.append(sdpa(query[:, :, s:e], kk, vv, attn_mask=mask, scale=scaling))
    return torch.cat(outs, dim=2).transpose(1, 2)


def token_select_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                           sliding_window=None, **kwargs):
    """The ``"token_select"`` attention function (transformers AttentionInterface signature)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    st: LayerState | None = getattr(module, ATTR, None)
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    if st is None or attention_mask is not None:
        if st is not None:
            warnings.warn("token_select: padded batch, running dense attention", stacklevel=2)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, **kwargs)
    window = sliding_window or getattr(module, "sliding_window", None)
    if window:
        return sliding_attention(query, key, value, scaling, window, st.runtime.cfg.chunk_size), None
    cfg = st.runtime.cfg
    b, hq, L, d = query.shape
    n = key.shape[2]
    if L == n:  # a fresh sequence: forget the old one
        st.reset()
    elif n - L < st.n_keys:
        # a rolled-back cache (a step decoded again, speculative decoding): its first n - L keys are the
        # same prefix, so the scoring buffer is truncated, not rebuilt; H2O's running scores are not
        st.n_seen = min(st.n_seen, n - L)
        if st.fused is not None:
            st.fused.n_seen = min(st.fused.n_seen, n - L)
        st.h2o_acc = st.h2o_kept = None
        st.h2o_hi = 0
    st.n_keys = n
    if SELECTORS.get(cfg.method).exact or n <= cfg.budget:
        st.dense += 1
        # HF only skips the mask when causality is top-left == bottom-right (L == n or L == 1)
        mask = _causal_mask(L, n, query.device)[None, None] if 1 < L < n else None
        return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs)
    past = n - L
    if cfg.score_layers is not None and st.layer_idx in cfg.score_layers:
        st.runtime.shared[st.layer_idx] = {}
    out = torch.empty(b, L, hq, value.shape[-1], dtype=query.dtype, device=query.device)  # chunks write in place
    # the prompt's last few queries (usually the question) get their own selection instead of
    # sharing a fingerprint with hundreds of filler tokens
    tail = min(cfg.tail_chunk, L - 1) if L > 1 else 0
    cuts = sorted(set(range(0, L - tail, cfg.chunk_size)) | {L - tail, L}) if tail else \
        sorted(set(range(0, L, cfg.chunk_size)) | {L})
    for s, e in zip(cuts[:-1], cuts[1:]):
        nk = past + e
        if nk <= cfg.budget:
            st.dense += 1
            kk, vv = key[:, :, :nk], value[:, :, :nk]
            rep = hq // key.shape[1]
            if rep > 1:
                kk, vv = kk.repeat_interleave(rep, 1), vv.repeat_interleave(rep, 1)
            o = torch.nn.functional.scaled_dot_product_attention(
                query[:, :, s:e], kk, vv, attn_mask=_causal_mask(e - s, nk, query.device), scale=scaling)
            out[:, s:e] = o.transpose(1, 2)
        else:
            out[:, s:e] = _select_and_attend(st, query[:, :, s:e], key, value, nk, past + s, scaling,
                                             decode=L == 1)
    return out, None


def _kernels(cfg: TokenSelectConfig):
    """The fused kernel library when the config allows it (None: the PyTorch path)."""
    return None if cfg.kernel == "torch" else KN.library(required=cfg.kernel == "cpp")


def _fused_rows(lib, key: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether a float32 batch-1 cache can go to the fused kernels (rows of d contiguous floats)."""
    return (lib is not None and key.dtype == torch.float32 and value.dtype == torch.float32
            and KN.usable(key, value) and key.stride() == value.stride() and key.stride(2) == key.shape[3])


def _select_and_attend(st: LayerState, q, key, value, nk: int, q0: int, scaling: float, decode: bool):
    """Build the compacted K/V (init | middle | local) and attend; positions are 0..S-1.

    Init keys already sit at their compact positions; the local block (and the chunk's
    queries) move by one constant offset ``S - nk``; only the middle is gathered from the
    cache and rotated by its own offset. On a Selection Cache hit the init + middle rows of the
    previous step are reused as they are; a decode step reads the local window in place, so a
    hit copies nothing.
    """
    cfg = st.runtime.cfg
    b, hq, c, d = q.shape
    n_kv = key.shape[1]
    from . import fused as FU

    if FU.wanted(cfg, q.device.type, b):  # the Triton kernel chain (GPU; the interpreter on a CPU)
        return FU.select_and_attend(st, q, key, value, nk, q0, scaling, decode)
    st.selections += 1
    hits = st.hits
    sel = SELECTORS.get(cfg.method)
    mid = sel.middle(st, q, key, nk, q0, scaling, decode)
    n_i, m, n_l = cfg.n_init, mid.shape[-1], cfg.n_local
    s = n_i + m + n_l
    heads = n_kv if mid.shape[1] in (1, n_kv) else hq
    dt = key.dtype if key.dtype == torch.float32 else torch.float32
    lib = _kernels(cfg)
    fused = _fused_rows(lib, key, value)
    cos_t, sin_t = st.runtime.trig(st, nk, q.device)
    # inside the trained window the selected keys may keep the positions they were cached at: no
    # rotation at all, and the question-to-needle distance the model reads is the true one
    orig = cfg.positions == "original" or (cfg.positions == "auto" and nk <= st.max_positions)
    if not (st.hits > hits and st.sel_k is not None and st.sel_k.shape == (b, heads, s, d)
            and st.sel_original == orig):
        if not sel.sorted_middle:  # compact positions follow cache order
            mid, _ = torch.sort(mid, dim=-1)
        if st.sel_k is None or st.sel_k.shape != (b, heads, s, d) or st.sel_k.dtype != key.dtype \
                or st.sel_k.device != key.device:
            # a miss rewrites the rows in place: a fresh megabyte per step costs page faults, and the
            # init rows (the first keys of this sequence; a new one resets the state) stay as they are
            st.sel_k = torch.empty(b, heads, s, d, dtype=key.dtype, device=key.device)
            st.sel_v = torch.empty_like(st.sel_k)
            init_k, init_v = key[:, :, :n_i], value[:, :, :n_i]
            if heads != n_kv:
                init_k, init_v = init_k.repeat_interleave(hq // n_kv, 1), init_v.repeat_interleave(hq // n_kv, 1)
            st.sel_k[:, :, :n_i], st.sel_v[:, :, :n_i] = init_k, init_v
        # the cached key at position p moves to compact position n_i + j by one rotation of n_i + j - p;
        # it is read from the cache itself, so a low-precision scoring buffer never reaches attention
        # angle of n_i + j - p from the position table: cos(a - b) = cos a cos b + sin a sin b, etc.
        st.sel_original = orig
        if orig:
            st.sel_k[:, :, n_i:n_i + m] = K.gather_heads(key, mid)
            st.sel_v[:, :, n_i:n_i + m] = K.gather_heads(value, mid)
        elif fused and mid.shape[1] == 1:  # one index set for every KV head (TokenSelect, StreamingLLM, random)
            KN.gather_rotate(lib, key, value, mid[0, 0], cos_t, sin_t, n_i, st.sel_k, st.sel_v)
        else:
            cp = cos_t.index_select(0, mid.reshape(-1)).reshape(*mid.shape, -1)  # [B, H, m, d/2]
            sp = sin_t.index_select(0, mid.reshape(-1)).reshape(*mid.shape, -1)
            cc, sc = cos_t[n_i:n_i + m], sin_t[n_i:n_i + m]
            cos_d, sin_d = torch.addcmul(cc * cp, sc, sp), torch.addcmul(sc * cp, cc, sp, value=-1.0)
            K.rotate_into(st.sel_k[:, :, n_i:n_i + m], K.gather_heads(key, mid).to(dt), cos_d.to(dt),
                          sin_d.to(dt))
            st.sel_v[:, :, n_i:n_i + m] = K.gather_heads(value, mid)
    weights = sel.needs_weights  # H2O accumulates the attention its selection received
    # one rotation by s - nk < 0 (s <= budget < nk here): cos(-a) = cos(a), sin(-a) = -sin(a)
    fast = fused and not weights and q.dtype == torch.float32
    if orig:
        q_c = q.contiguous()
    elif fast:  # one kernel call per rotation, not ~10 ops (and a contiguous query for the attention)
        q_c = KN.unrotate(lib, q, cos_t, sin_t, nk - s)
    else:
        cos, sin = cos_t[nk - s].to(dt), -sin_t[nk - s].to(dt)
        q_c = K.rotate_into(torch.empty_like(q), q, cos.to(q.dtype), sin.to(q.dtype))
    loc_k, loc_v = key[:, :, nk - n_l:nk], value[:, :, nk - n_l:nk]
    if c == 1:
        # decode: the local window is read where it lies in the cache, by the query at its own
        # position (same distances as in the compact frame), so neither a hit nor a miss copies
        # or rotates it; only init + middle are read in the compact frame, by the rotated query
        head = n_i + m
        if fast:
            out, p = KN.attend2(lib, q_c, st.sel_k[:, :, :head], st.sel_v[:, :, :head], q, loc_k, loc_v, scaling), None
        else:
            out, p = K.attend_frames([(q_c, st.sel_k[:, :, :head], st.sel_v[:, :, :head]), (q, loc_k, loc_v)],
                                     scaling, need_weights=weights)
    else:
        if heads != n_kv:
            loc_k, loc_v = loc_k.repeat_interleave(hq // n_kv, 1), loc_v.repeat_interleave(hq // n_kv, 1)
        if orig:
            st.sel_k[:, :, n_i + m:] = loc_k
        elif fast:
            KN.unrotate(lib, loc_k, cos_t, sin_t, nk - s, out=st.sel_k[:, :, n_i + m:])
        else:
            K.rotate_into(st.sel_k[:, :, n_i + m:], loc_k.to(dt), cos, sin)
        st.sel_v[:, :, n_i + m:] = loc_v
        out, p = K.attend(q_c, st.sel_k, st.sel_v, scaling, need_weights=weights)
    idx = None
    if p is not None or cfg.record:
        idx = K.frame(mid, n_i, nk - n_l, nk)
    if p is not None:
        sel.observe(st, p, idx, nk)
    if cfg.record:
        st.last_idx, st.last_n_keys = idx.detach().cpu(), nk
    return out

"""TokenSelect's GPU path (Wu et al., 2024, "TokenSelect: Efficient Long-Context Inference and Length
Extrapolation for LLMs via Dynamic Token-Level KV Cache Selection"): the Triton kernel chain of
:mod:`.triton_kernels` driven over static buffers, and a decode step that can be captured as a CUDA graph.

The PyTorch path in :mod:`.select` (and the C++ kernels on the CPU) stays the reference: the same
fingerprint, per-head soft vote, max-pool and top-k, the same compact frame. What changes is the shape
of the work: every buffer is sized once for a capacity (keys) and a budget (selected keys), the key
count lives on the device, and a Selection Cache hit is a device flag that makes the selection kernels
return at once, so a decode step has no host synchronisation and can be replayed as one graph.

On a CPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set before this module first
launches a kernel): slow, for parity checks only. Example (CPU, interpreter; a few seconds)::

    >>> import os; os.environ["TRITON_INTERPRET"] = "1"
    >>> import torch
    >>> from slimguard.slim.kvselect.fused import FusedSelector
    >>> n, d = 200, 16
    >>> ang = torch.arange(n, dtype=torch.float64)[:, None] * (1e4 ** -(torch.arange(0, d, 2) / d)).double()
    >>> cos_t, sin_t = ang.cos().float(), ang.sin().float()
    >>> key, value = torch.randn(1, 1, n, d), torch.randn(1, 1, n, d)
    >>> fs = FusedSelector(n_kv=1, hq=2, d=d, k=8, n_init=4, n_local=16, pool=1, threshold=None,
    ...                    score_dtype=torch.float32, device="cpu", capacity=256, block=64)
    >>> _ = fs.nk.fill_(n); fs.sync(key, n, cos_t, sin_t)
    >>> q = torch.randn(1, 2, 1, d)
    >>> fs.fingerprint_decode(q, cos_t, sin_t, d ** -0.5)
    >>> mid = fs.select(n - 16 - 4)  # the 8 best middle positions, ascending
    >>> mid.shape, bool((mid[1:] > mid[:-1]).all())
    (torch.Size([8]), True)
    >>> fs.attend_decode(q, key, value, cos_t, sin_t, d ** -0.5).shape
    torch.Size([1, 1, 2, 16])
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch

from ...core.errors import SlimguardError

NBINS = 2048


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def usable_on(device: torch.device | str) -> bool:
    """Whether the Triton kernels can run on tensors of ``device``: a GPU with triton, or the interpreter."""
    dev = torch.device(device)
    if not triton_installed():
        return False
    return dev.type == "cuda" or (dev.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def _tk():
    """The kernel module (imports triton; only when a fused path actually runs)."""
    if not triton_installed():
        raise SlimguardError("kernel='triton' needs the triton package: pip install 'slimguard[gpu]'")
    from . import triton_kernels

    return triton_kernels


def interpreted() -> bool:
    """Whether the kernels were built for Triton's interpreter: triton reads ``TRITON_INTERPRET`` once, when it is
    first imported, so setting it later in the process has no effect."""
    return type(_tk().score_kernel).__name__ == "InterpretedFunction"


def _pow2(n: int, lo: int = 1) -> int:
    return max(lo, 1 << max(0, (int(n) - 1).bit_length()))


@dataclass(frozen=True)
class StaticPlan:
    """The static shapes of one layer's fused selection: what a captured decode step allocates once."""

    capacity: int  # keys the buffers hold (grids cover this many; programs past nk return at once)
    block: int  # keys per program of the selection kernels
    rows: int  # fingerprint rows per KV head, padded (>= 16 for tl.dot)
    budget: int  # selected keys per step: n_init + k + n_local
    splits: int  # programs per KV head of the decode attention
    split_len: int  # compact positions per split (a multiple of attn_block)
    attn_block: int

    @property
    def blocks(self) -> int:
        return -(-self.capacity // self.block)


def plan(capacity: int, budget: int, groups: int, block: int = 256, attn_block: int = 64, rows: int = 1,
         max_splits: int = 32) -> StaticPlan:
    """Buffer and grid sizes for ``capacity`` keys and a ``budget``-sized selection (no tensors)."""
    if capacity <= budget:
        raise SlimguardError(f"capacity ({capacity}) must exceed the selection budget ({budget})")
    splits = max(1, min(max_splits, -(-budget // (2 * attn_block))))
    split_len = -(-(-(-budget // splits)) // attn_block) * attn_block
    splits = -(-budget // split_len)
    return StaticPlan(capacity=capacity, block=block, rows=_pow2(groups * rows, 16), budget=budget, splits=splits,
                      split_len=split_len, attn_block=attn_block)


class FusedSelector:
    """One layer's fused TokenSelect state: scoring buffer, Selection Cache, selection and attention scratch.

    All tensors are allocated for ``capacity`` keys up front and only replaced by :meth:`grow` (eager use);
    a captured decode step (:class:`DecodeStep`) never grows them.
    """

    def __init__(self, *, n_kv: int, hq: int, d: int, k: int, n_init: int, n_local: int, pool: int,
                 threshold: float | None, score_dtype: torch.dtype, device, capacity: int, block: int | None = None,
                 attn_block: int | None = None):
        if hq % n_kv or d % 2 or d & (d - 1) or d < 16:
            raise SlimguardError(f"fused TokenSelect needs Hq divisible by Hkv and a power-of-two head dim >= 16, "
                                 f"got Hq={hq}, Hkv={n_kv}, d={d}")
        self.n_kv, self.hq, self.d, self.g = n_kv, hq, d, hq // n_kv
        self.k, self.n_init, self.n_local, self.pool, self.threshold = k, n_init, n_local, pool, threshold
        self.score_dtype = score_dtype
        self.int8 = score_dtype == torch.int8
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self._block = block or (256 if cuda else 64)
        self._attn_block = attn_block or (64 if cuda else 32)
        dev = self.device
        self.nk = torch.zeros(1, dtype=torch.int32, device=dev)
        self.flags = torch.zeros(3, dtype=torch.int32, device=dev)  # hit, have a cached fingerprint, cached_hi
        self.counts = torch.zeros(2, dtype=torch.int64, device=dev)  # selections, hits
        self.cached_q = torch.zeros(hq, d, dtype=torch.float32, device=dev)
        self.mid = torch.zeros(k, dtype=torch.int64, device=dev)
        self.hist = torch.zeros(3, NBINS, dtype=torch.int32, device=dev)
        self.n_seen = 0
        self._n_rows = self.g
        self.plan = plan(capacity, n_init + k + n_local, self.g, self._block, self._attn_block)
        self._rows(1)
        self._alloc(capacity)
        p = self.plan
        self.pm = torch.empty(n_kv * p.splits * _pow2(self.g), device=dev)
        self.pl = torch.empty_like(self.pm)
        self.pacc = torch.empty(n_kv * p.splits * _pow2(self.g), d, device=dev)

    # ------------------------------------------------------------------ buffers

    def _rows(self, rows: int) -> None:
        """Fingerprint rows per KV head (1 for decode and mean fingerprints, the chunk size for voting chunks)."""
        rp = _pow2(self.g * rows, 16)
        if getattr(self, "fp", None) is not None and self.fp.shape[1] == rp:
            return
        self.fp = torch.zeros(self.n_kv, rp, self.d, device=self.device)
        self.fps = torch.ones(self.n_kv * rp, device=self.device)
        self.rowstats = torch.empty(self.n_kv * rp, 2, device=self.device)
        self.plan = StaticPlan(**{**self.plan.__dict__, "rows": rp})
        if getattr(self, "kbuf", None) is not None:
            self._scratch()

    def _alloc(self, capacity: int) -> None:
        """Scoring buffer for ``capacity`` keys (the synced prefix copied over) and the scratch that goes with it."""
        dev = self.device
        old = getattr(self, "kbuf", None), getattr(self, "kscale", None)
        self.kbuf = torch.zeros(self.n_kv, capacity, self.d, dtype=self.score_dtype, device=dev)
        self.kscale = torch.ones(self.n_kv, capacity if self.int8 else 1, device=dev)
        if old[0] is not None and self.n_seen:
            n = min(self.n_seen, old[0].shape[1], capacity)
            self.kbuf[:, :n] = old[0][:, :n]
            if self.int8:
                self.kscale[:, :n] = old[1][:, :n]
        self.plan = StaticPlan(**{**self.plan.__dict__, "capacity": capacity})
        self._scratch()

    def _scratch(self) -> None:
        dev, p = self.device, self.plan
        self.logits = torch.empty(self.n_kv * p.rows, p.capacity, device=dev)
        self.part = torch.empty(p.blocks, self.n_kv * p.rows, 2, device=dev)
        self.vote = torch.empty(p.capacity, device=dev)
        self.score = torch.empty(p.capacity, device=dev)
        self.cnt = torch.zeros(p.blocks, 2, dtype=torch.int32, device=dev)

    def grow(self, n_keys: int) -> None:
        """Room for ``n_keys`` keys (doubling); eager use only: a captured step holds the old buffers."""
        if n_keys > self.plan.capacity:
            self._alloc(max(n_keys, 2 * self.plan.capacity))

    def reset(self) -> None:
        """A new sequence: no cached fingerprint, nothing synced."""
        self.flags.zero_()
        self.n_seen = 0

    def stats(self) -> tuple[int, int]:
        """(selections, Selection Cache hits) so far; reads the device counters (a synchronisation)."""
        s, h = self.counts.tolist()
        return int(s), int(h)

    # ------------------------------------------------------------------ kernels

    def sync(self, key: torch.Tensor, hi: int, cos_t: torch.Tensor, sin_t: torch.Tensor) -> None:
        """Un-rotate cached keys ``[n_seen, hi)`` of ``key [1, Hkv, >=hi, d]`` into the scoring buffer."""
        self.n_seen = min(self.n_seen, hi)
        if hi > self.n_seen:
            self._sync(key, self.n_seen, hi - self.n_seen, cos_t, sin_t, from_end=False)
            self.n_seen = hi

    def _sync(self, key, lo: int, n_rows: int, cos_t, sin_t, from_end: bool) -> None:
        tk = _tk()
        rb = 64 if n_rows > 1 else 16
        tk.unrotate_append_kernel[(self.n_kv, -(-n_rows // rb))](
            key, key.stride(1), key.stride(2), self.nk, lo, n_rows, cos_t, sin_t,
            self.kbuf, self.kbuf.stride(0), self.kbuf.stride(1), self.kscale, self.kscale.stride(0),
            FROM_END=from_end, INT8=self.int8, HALF=self.d // 2, RB=rb)

    def _grid(self, m: int | None) -> tuple[int]:
        """Programs of a selection kernel: exactly the middle's blocks when the host knows them, else capacity's."""
        return (self.plan.blocks if m is None else max(1, -(-m // self.plan.block)),)

    def fingerprint_decode(self, q: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor, scaling: float) -> None:
        """Decode query ``[1, Hq, 1, d]`` (rotated at nk - 1) -> fingerprint rows and the Selection Cache flag."""
        tk = _tk()
        self._rows(1)
        self._n_rows = self.g
        thr = self.threshold
        tk.fingerprint_kernel[(1,)](
            q.reshape(self.hq, self.d).contiguous(), self.nk, cos_t, sin_t, self.cached_q, self.flags, self.counts,
            self.fp, self.fps, scaling, 2.0 if thr is None else thr, self.n_local,
            HQ=self.hq, G=self.g, RP=self.plan.rows, HALF=self.d // 2, HQP=_pow2(self.hq), INT8=self.int8,
            USE_CACHE=thr is not None)

    def fingerprint_chunk(self, q: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor, scaling: float,
                          vote: bool, compact: bool = True, qc: torch.Tensor | None = None) -> torch.Tensor:
        """A prefill chunk ``q [1, Hq, C, d]`` at positions ``nk - C ..``: fingerprint rows (every query when
        ``vote``, else their mean) and the chunk rotated into the compact frame, ``qc [1, Hq, C, d]``, returned."""
        tk = _tk()
        c = q.shape[2]
        self._rows(c if vote else 1)
        self._n_rows = self.g * (c if vote else 1)
        qc = torch.empty(1, self.hq, c, self.d, dtype=q.dtype, device=q.device) if qc is None else qc
        if q.stride(-1) != 1:
            q = q.contiguous()
        tk.chunk_fingerprint_kernel[(self.hq,)](
            q, q.stride(1), q.stride(2), self.nk, cos_t, sin_t, qc, self.fp, self.fps, self.counts, self.flags,
            scaling, self.plan.budget, C=c, G=self.g, RP=self.plan.rows, HALF=self.d // 2, CB=min(64, _pow2(c)),
            VOTE=vote, INT8=self.int8, COMPACT=compact)
        return qc

    def select(self, m: int | None = None, n_rows: int | None = None) -> torch.Tensor:
        """Score, vote, pool and top-k over the middle ``[n_init, nk - n_local)``; returns ``mid [k]`` (absolute,
        ascending). ``m``: the middle's length when the host knows it (eager), None for a capacity grid (graphs)."""
        tk = _tk()
        p, nb = self.plan, NBINS
        n_rows = self._n_rows if n_rows is None else n_rows
        grid = self._grid(m)
        ieee = self.score_dtype == torch.float32
        common = dict(BLOCK=p.block)
        tk.score_kernel[grid](self.fp, self.fps, self.kbuf, self.kbuf.stride(0), self.kbuf.stride(1), self.kscale,
                              self.kscale.stride(0), self.nk, self.flags, self.logits, self.logits.stride(0),
                              self.part, self.n_init, self.n_local, n_rows,
                              HKV=self.n_kv, RP=p.rows, D=self.d, INT8=self.int8, IEEE=ieee, **common)
        r = self.n_kv * p.rows
        tk.reduce_kernel[(1,)](self.part, self.rowstats, self.hist, self.nk, self.flags, self.n_init, self.n_local,
                               R=r, RPOW=_pow2(r), NB=32, NBINS_=nb, **common)
        pooled = self.pool > 1
        tk.vote_kernel[grid](self.logits, self.logits.stride(0), self.rowstats, self.vote, self.score, self.hist, self.nk,
                             self.flags, self.n_init, self.n_local, n_rows, HKV=self.n_kv, RP=p.rows,
                             HIST=not pooled, NBINS_=nb, **common)
        if pooled:
            tk.pool_hist_kernel[grid](self.vote, self.score, self.hist, self.nk, self.flags, self.n_init, self.n_local,
                                      POOL=self.pool, NBINS_=nb, **common)
        for ps in (1, 2):
            tk.radix_kernel[grid](self.score, self.hist, self.nk, self.flags, self.n_init, self.n_local, self.k,
                                  PASS=ps, NBINS_=nb, **common)
        tk.count_kernel[grid](self.score, self.hist, self.cnt, self.nk, self.flags, self.n_init, self.n_local, self.k,
                              NBINS_=nb, **common)
        tk.write_kernel[grid](self.score, self.hist, self.cnt, self.mid, self.nk, self.flags, self.n_init,
                              self.n_local, self.k, NBP=_pow2(p.blocks), NBINS_=nb, **common)
        return self.mid

    def attend_decode(self, q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cos_t: torch.Tensor,
                      sin_t: torch.Tensor, scaling: float, compact: bool = True,
                      out: torch.Tensor | None = None) -> torch.Tensor:
        """One decode query ``[1, Hq, 1, d]`` (rotated at nk - 1) over ``[0, n_init) | mid | local``, gathered from
        the cache ``[1, Hkv, N, d]`` and rotated into the compact frame on load: ``[1, 1, Hq, d]``."""
        tk = _tk()
        p = self.plan
        out = torch.empty(1, 1, self.hq, self.d, dtype=q.dtype, device=q.device) if out is None else out
        gp = _pow2(self.g)
        tk.attend_decode_kernel[(self.n_kv, p.splits)](
            q.reshape(self.hq, self.d).contiguous(), key, value, key.stride(1), key.stride(2), value.stride(1),
            value.stride(2), self.mid, self.nk, cos_t, sin_t, self.pm, self.pl, self.pacc, self.n_init, self.k,
            self.n_local, scaling, G=self.g, GP=gp, HALF=self.d // 2, BLOCK=p.attn_block, SPLIT_LEN=p.split_len,
            NSPLIT=p.splits, COMPACT=compact)
        tk.combine_kernel[(self.n_kv,)](self.pm, self.pl, self.pacc, out, G=self.g, GP=gp, D=self.d, NSPLIT=p.splits)
        return out

    def gather(self, key: torch.Tensor, value: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor,
               compact: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The selection's K (in the compact frame) and V, ``[1, Hkv, S, d]`` each, for one attention call."""
        tk = _tk()
        s = self.plan.budget
        k_sel = torch.empty(1, self.n_kv, s, self.d, dtype=key.dtype, device=key.device)
        v_sel = torch.empty_like(k_sel)
        blk = 64
        tk.gather_rotate_kernel[(self.n_kv, -(-s // blk))](
            key, value, key.stride(1), key.stride(2), value.stride(1), value.stride(2), self.mid, self.nk, cos_t, sin_t,
            k_sel, v_sel, k_sel.stride(1), self.n_init, self.k, self.n_local, HALF=self.d // 2, BLOCK=blk,
            COMPACT=compact)
        return k_sel, v_sel


# --------------------------------------------------------------------------- captured decode step


class DecodeStep:
    """One layer's decode step (``chunk=1``) or prefill chunk step (``chunk=C``) over static buffers: advance the
    device key count by ``chunk``, un-rotate the new keys into the scoring buffer, fingerprint (+ Selection Cache
    check on decode), select, attend. With ``graph=True`` (CUDA) the step is captured once and every call
    replays it: no host synchronisation, no allocation, no per-kernel launch cost.

    Static shapes: ``key``/``value`` are the capacity-sized cache ``[1, Hkv, cap, d]`` (a step reads rows
    ``< nk``; the caller writes the new rows before the call), ``q`` is a fixed ``[1, Hq, chunk, d]`` input buffer
    the caller fills, and :attr:`out` the fixed ``[1, chunk, Hq, d]`` output. ``n`` mirrors the device count on
    the host, so running past the capacity is refused before any replay.
    """

    def __init__(self, fs: FusedSelector, key: torch.Tensor, value: torch.Tensor, q: torch.Tensor,
                 cos_t: torch.Tensor, sin_t: torch.Tensor, scaling: float, n_keys: int, compact: bool = True,
                 graph: bool = False, vote_queries: int = 64):
        cap = key.shape[2]
        self.chunk = q.shape[2]
        if key.shape[0] != 1 or value.shape != key.shape:
            raise SlimguardError(f"DecodeStep needs batch-1 static key/value buffers of one shape, got "
                                 f"{tuple(key.shape)} and {tuple(value.shape)}")
        if cap > fs.plan.capacity or cos_t.shape[0] < cap:
            raise SlimguardError(f"static cache of {cap} keys exceeds the selector's capacity ({fs.plan.capacity}) "
                                 f"or its RoPE table ({cos_t.shape[0]} positions)")
        if not fs.plan.budget < n_keys + self.chunk <= cap:
            raise SlimguardError(f"n_keys + chunk ({n_keys} + {self.chunk}) must lie in (budget {fs.plan.budget}, "
                                 f"capacity {cap}]")
        if self.chunk > fs.n_local:
            raise SlimguardError(f"a chunk of {self.chunk} queries must fit the local window ({fs.n_local})")
        if graph and key.device.type != "cuda":
            raise SlimguardError("graph=True needs CUDA tensors; on the CPU the step runs eagerly")
        self.fs, self.key, self.value, self.q, self.cos_t, self.sin_t = fs, key, value, q, cos_t, sin_t
        self.scaling, self.compact, self.cap = scaling, compact, cap
        self.vote = 1 < self.chunk <= vote_queries
        self.out = torch.empty(1, self.chunk, fs.hq, fs.d, dtype=q.dtype, device=q.device)
        self.qc = torch.empty(1, fs.hq, self.chunk, fs.d, dtype=q.dtype, device=q.device)
        if self.chunk > 1:
            fs._rows(self.chunk if self.vote else 1)  # allocate before any capture
        fs.nk.fill_(n_keys)
        fs.sync(key, n_keys, cos_t, sin_t)  # the keys already cached, once
        self.n = n_keys  # keys visible to the last step (the next one sees n + chunk)
        self.graph = None
        if graph:
            self._capture()

    def _step(self) -> None:
        from . import select as K

        fs, c = self.fs, self.chunk
        fs.nk.add_(c)
        fs._sync(self.key, 0, c, self.cos_t, self.sin_t, from_end=True)
        if c == 1:
            fs.fingerprint_decode(self.q, self.cos_t, self.sin_t, self.scaling)
            fs.select(None, fs.g)
            fs.attend_decode(self.q, self.key, self.value, self.cos_t, self.sin_t, self.scaling, self.compact, self.out)
            return
        fs.fingerprint_chunk(self.q, self.cos_t, self.sin_t, self.scaling, self.vote, self.compact, self.qc)
        fs.select(None)
        k_sel, v_sel = fs.gather(self.key, self.value, self.cos_t, self.sin_t, self.compact)
        out, _ = K.attend(self.qc, k_sel, v_sel, self.scaling)
        self.out.copy_(out)

    def _capture(self) -> None:
        fs = self.fs
        saved = (fs.nk.clone(), fs.flags.clone(), fs.counts.clone(), fs.cached_q.clone())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compile and warm every kernel outside the capture
            for _ in range(2):
                fs.nk.copy_(saved[0])
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()
        for t, v in zip((fs.nk, fs.flags, fs.counts, fs.cached_q), saved):
            t.copy_(v)  # the warm-up steps must not count, nor leave a cached fingerprint behind

    def __call__(self) -> torch.Tensor:
        if self.n + self.chunk > self.cap:
            raise SlimguardError(f"step past the static capacity ({self.cap} keys); build a larger DecodeStep")
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()
        self.n += self.chunk
        self.fs.n_seen = self.n
        return self.out


# --------------------------------------------------------------------------- the attention backend's entry


def wanted(cfg, device_type: str, batch: int = 1) -> bool:
    """Whether a TokenSelect selection on a ``device_type`` tensor takes this path: ``kernel='triton'`` always
    (its settings checked by :func:`check_config`), ``'auto'`` on a CUDA device when triton is installed and the
    settings are ones the fused path implements (batch 1, no shared or distance-shifted scoring)."""
    if cfg.kernel == "triton":
        return True
    if cfg.method != "tokenselect" or cfg.kernel != "auto" or device_type != "cuda" or not triton_installed():
        return False
    return cfg.score_distance == 0 and cfg.score_layers is None and batch == 1


def check_config(cfg) -> None:
    """``kernel='triton'`` with a setting the fused path does not implement: a one-line error, at enable time."""
    if cfg.kernel != "triton":
        return
    bad = [f"method={cfg.method}"] if cfg.method != "tokenselect" else []
    bad += ["score_layers"] if cfg.score_layers is not None else []
    bad += ["score_distance"] if cfg.score_distance else []
    if bad:
        raise SlimguardError(f"kernel='triton' runs TokenSelect's own selection only; unsupported here: {', '.join(bad)}"
                             " (use kernel='auto' to fall back to the PyTorch path)")
    if not triton_installed():
        raise SlimguardError("kernel='triton' needs the triton package: pip install 'slimguard[gpu]'")


def select_and_attend(st, q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, nk: int, q0: int,
                      scaling: float, decode: bool) -> torch.Tensor:
    """``attention._select_and_attend`` on the fused kernels: ``[1, C, Hq, d]``. ``st`` is the layer's
    ``LayerState``; its :class:`FusedSelector` lives on ``st.fused``."""
    from . import select as K

    cfg = st.runtime.cfg
    b, hq, c, d = q.shape
    n_kv = key.shape[1]
    if b != 1:
        raise SlimguardError(f"kernel='triton' runs batch 1, got a batch of {b}")
    if not usable_on(q.device):
        raise SlimguardError(f"kernel='triton' on {q.device.type} tensors needs a CUDA device (or TRITON_INTERPRET=1 "
                             "for Triton's CPU interpreter, which is slow and meant for parity tests)")
    if q.device.type == "cpu" and not interpreted():
        raise SlimguardError("kernel='triton' on CPU tensors: triton was imported before TRITON_INTERPRET=1 was set; "
                             "set it at the start of the process")
    sdt = getattr(torch, cfg.score_dtype) if cfg.score_dtype else key.dtype
    fs = st.fused
    if fs is None or fs.device != key.device or fs.score_dtype != sdt or (fs.n_kv, fs.hq, fs.d) != (n_kv, hq, d):
        fs = st.fused = FusedSelector(n_kv=n_kv, hq=hq, d=d, k=cfg.k, n_init=cfg.n_init, n_local=cfg.n_local,
                                      pool=cfg.pool_kernel, threshold=cfg.cache_threshold, score_dtype=sdt,
                                      device=key.device, capacity=max(2 * key.shape[2], 4096))
    if key.stride(-1) != 1 or value.stride(-1) != 1:
        key, value = key.contiguous(), value.contiguous()
    fs.grow(key.shape[2])
    cos_t, sin_t = st.runtime.trig(st, key.shape[2], q.device)
    fs.nk.fill_(nk)  # the host knows the length here; a captured step (DecodeStep) advances it on the device
    fs.sync(key, nk, cos_t, sin_t)
    m = nk - cfg.n_local - cfg.n_init
    orig = cfg.positions == "original" or (cfg.positions == "auto" and nk <= st.max_positions)
    if decode:
        fs.fingerprint_decode(q, cos_t, sin_t, scaling)
        fs.select(m)
        out = fs.attend_decode(q, key, value, cos_t, sin_t, scaling, compact=not orig)
    else:
        # the chunk's queries rotated back by their own positions: the mean, or every query of a short
        # (question) chunk, as TokenSelect.middle does; and the chunk in the compact frame for the attention
        q_c = fs.fingerprint_chunk(q, cos_t, sin_t, scaling, vote=1 < c <= cfg.vote_queries, compact=not orig)
        fs.select(m)
        k_sel, v_sel = fs.gather(key, value, cos_t, sin_t, compact=not orig)
        out, _ = K.attend(q_c, k_sel, v_sel, scaling)
    mid = fs.mid
    if cfg.record:
        st.last_idx, st.last_n_keys = K.frame(mid[None, None], cfg.n_init, nk - cfg.n_local, nk).cpu(), nk
    return out

"""Fused CPU kernels for TokenSelect (``kernels.cpp``), built on first use.

A decode step at 32K does about a millisecond of real work (one read of the int8 scoring
keys, a top-k, a gather of ~1K rows, attention over ~1.6K keys). In PyTorch that is ~100
ATen calls, and on a cold cache (the other layers ran in between) their dispatch costs as
much as the work. Here a decode miss is six calls: sync the new key into the int8 scoring
buffer, un-rotate the query, select (VNNI integer scoring, vote, pool, top-k), gather and
rotate the middle rows, rotate the query into the compact frame, attend over the two
frames; a Selection Cache check is one more (the cosine). Prefill chunks use the gather,
the rotations and the fingerprint. Plain C++ with a C ABI, compiled once per machine with
``$CXX`` (default ``g++``) into ``$SLIMGUARD_HOME/kernels/`` and loaded with ctypes; no torch
headers, so the build takes seconds. A JSON record beside each library holds its sha256 and the
source it was built from; a library is loaded only when both still match (else it is rebuilt),
since ctypes runs whatever native code it is handed. Without a compiler, or for anything but float32
batch-1 CPU tensors, the PyTorch path in ``select.py`` runs; it is also the reference the
tests compare against.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from ...core.errors import SlimguardError

SOURCE = Path(__file__).with_name("kernels.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC"]
_I64, _F32, _P = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
_SIGS = {
    "sg_score_int8": [_P, _P, _I64, _I64, _I64, _I64, _I64, _P, _P],
    "sg_sync_int8": [_P, _I64, _I64, _I64, _I64, _I64, _P, _P, _P, _I64, _P, _I64],
    "sg_select_int8": [_P, _F32, _P, _I64, _I64, _I64, _I64, _I64, _P, _I64, _I64, _I64, _I64, _P, _P],
    "sg_unrotate_rows": [_P, _I64, _I64, _I64, _I64, _I64, _P, _P, _I64, _P, _I64, _I64],
    "sg_pool_topk": [_P, _I64, _I64, _I64, _I64, _P, _P],
    "sg_gather_rotate": [_P, _P, _I64, _P, _I64, _I64, _I64, _P, _P, _I64, _P, _P, _I64],
    "sg_attend2": [_P, _P, _P, _I64, _I64, _I64, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _F32, _P, _P],
    "sg_cosine": [_P, _P, _I64],
    "sg_unrotate_mean": [_P, _I64, _I64, _I64, _I64, _I64, _P, _P, _I64, _P],
}
_RESTYPES = {"sg_cosine": ctypes.c_double}
_state: dict[str, object] = {}
_local = threading.local()


RECORD_FORMAT = "slimguard-kernel/1"


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _sha256_fd(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _recipe(cxx: str) -> tuple[str, str, Path]:
    """(source sha256, build tag, record path) for building ``kernels.cpp`` with ``cxx`` on this machine."""
    from ...core.assets import home

    src = SOURCE.read_bytes()
    tag = hashlib.sha256(src + " ".join([cxx, *FLAGS, platform.machine(), platform.node()]).encode()).hexdigest()[:16]
    return hashlib.sha256(src).hexdigest(), tag, home() / "kernels" / f"kvselect-{tag}.json"


def _recorded(record: Path, src_sha: str, tag: str) -> tuple[Path, str] | None:
    """(library, its recorded sha256) when ``record`` says it was built from this source with this recipe and
    the library's bytes still hash to what was recorded; None for anything else (missing, foreign, stale,
    tampered), which the caller treats as "not built"."""
    try:
        rec = json.loads(record.read_text())
        lib = record.parent / rec["library"]
        ok = (rec.get("format") == RECORD_FORMAT and rec.get("tag") == tag and rec.get("source_sha256") == src_sha
              and Path(rec["library"]).name == rec["library"] and lib.is_file())
        return (lib, rec["sha256"]) if ok and _sha256(lib) == rec["sha256"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build() -> tuple[Path, str]:
    """A verified library for the current source: (path, sha256). Builds it (seconds) when the cache holds
    none, or only one whose bytes or build record do not match; the record is written after the library,
    both atomically, and names the library by its hash, so concurrent builds never mix one's record with
    another's bytes."""
    cxx = os.environ.get("CXX", "g++")
    src_sha, tag, record = _recipe(cxx)
    found = _recorded(record, src_sha, tag)
    if found is not None:
        return found
    # a record that no longer matches means the library, the record or the source changed since the build;
    # a library with no record at all (an older slimguard's cache) is simply never loaded
    if shutil.which(cxx) is None:
        if record.exists():
            raise SlimguardError(f"kernel cache {record.parent}: {record.name} does not match the library it names "
                                 f"or the current {SOURCE.name} (changed since it was built); refusing to load it. "
                                 f"Install a C++ compiler (set CXX) to rebuild it, or delete {record.parent}")
        raise SlimguardError(f"no C++ compiler '{cxx}' on PATH (set CXX)")
    if record.exists():
        warnings.warn(f"TokenSelect kernel cache {record.parent}: {record.name} does not match the library it names "
                      f"or the current {SOURCE.name}; rebuilding", stacklevel=3)
    record.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=record.parent)
    os.close(fd)
    try:
        res = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise SlimguardError(f"building {SOURCE.name} failed: {res.stderr.strip().splitlines()[-1:]}")
        digest = _sha256(Path(tmp))
        out = record.parent / f"kvselect-{tag}-{digest[:16]}.so"
        os.replace(tmp, out)  # atomic: a concurrent build or a killed one never leaves a half-written library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    doc = {"format": RECORD_FORMAT, "library": out.name, "sha256": digest, "tag": tag, "source_sha256": src_sha,
           "compiler": cxx, "flags": FLAGS, "machine": platform.machine(), "node": platform.node()}
    _atomic_write(record, (json.dumps(doc, indent=1) + "\n").encode())
    return out, digest


def _load(path: Path, sha256: str):
    """``ctypes.CDLL`` of ``path`` after checking that its bytes hash to ``sha256``. On Linux the library is
    opened once and loaded through that descriptor, so the bytes hashed are the bytes loaded even if the file
    is replaced in between."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _sha256_fd(fd) != sha256:
            raise SlimguardError(f"kernel library {path} changed after it was checked; refusing to load it")
        via_fd = Path(f"/proc/self/fd/{fd}")
        return ctypes.CDLL(str(via_fd if via_fd.exists() else path))
    finally:
        os.close(fd)


def library(required: bool = False):
    """The loaded kernel library, or None if it cannot be built (``required`` raises instead)."""
    if "lib" not in _state:
        try:
            lib = _load(*_build())
            for name, args in _SIGS.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = args, _RESTYPES.get(name)
            _state["lib"], _state["error"] = lib, None
        except (SlimguardError, OSError, subprocess.SubprocessError) as e:
            _state["lib"], _state["error"] = None, str(e)
            if not required:
                warnings.warn(f"TokenSelect C++ kernels unavailable, using the PyTorch path: {e}", stacklevel=2)
    if required and _state["lib"] is None:
        raise SlimguardError(f"TokenSelect kernel='cpp' but the kernels could not be built: {_state['error']}")
    return _state["lib"]


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels apply: float32 (or the int8 scoring buffer) CPU tensors, batch 1,
    rows of contiguous elements."""
    return all(t.device.type == "cpu" and t.shape[0] == 1 and t.stride(-1) == 1 for t in tensors)


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _work(n: int) -> torch.Tensor:
    """Scratch of ``n`` 4-byte words, reused across calls on this thread (a fresh megabyte per decode
    step costs page faults); only valid until the next kernel call."""
    buf = getattr(_local, "work", None)
    if buf is None or buf.numel() < n:
        buf = _local.work = torch.empty(max(n, 1 << 16), dtype=torch.int32)
    return buf


def sync_int8(lib, key: torch.Tensor, lo: int, hi: int, cos_t: torch.Tensor, sin_t: torch.Tensor,
              kbuf: torch.Tensor, kscale: torch.Tensor) -> None:
    """Keys ``[lo, hi)`` of a float32 batch-1 cache ``[1, Hkv, N, d]``, rotated back by their positions
    and quantized per row, into the int8 scoring buffer ``kbuf [1, Hkv, cap, d]`` and ``kscale [1, Hkv, cap]``."""
    _, n_kv, _, d = key.shape
    assert key.dtype == torch.float32 and key.stride(2) == d and kbuf.stride(2) == d and kscale.stride(2) == 1
    lib.sg_sync_int8(_ptr(key), key.stride(1), n_kv, lo, hi, d, _ptr(cos_t), _ptr(sin_t),
                     _ptr(kbuf), kbuf.stride(1), _ptr(kscale), kscale.stride(1))


def select_int8(lib, q: torch.Tensor, scaling: float, keys: torch.Tensor, ks: torch.Tensor, k: int, offset: int,
                pool: int) -> torch.Tensor:
    """A decode step's whole selection in one call: fingerprint rows ``q [1, Hq, d]`` (un-rotated,
    float32) scaled by ``scaling`` and scored against the int8 keys ``[1, Hkv, M, d]`` with scales
    ``ks [Hkv, M]``, soft vote, max-pool, top-k: ``[1, k]`` positions (+ offset), ascending."""
    _, hq, d = q.shape
    _, n_kv, m, _ = keys.shape
    assert keys.dtype == torch.int8 and keys.stride(2) == d and q.dtype == torch.float32
    q = q.contiguous()
    work = _work(hq * m + 3 * m + hq)
    k = min(k, m)
    out = torch.empty(1, k, dtype=torch.int64)
    lib.sg_select_int8(_ptr(q), scaling, _ptr(keys), keys.stride(1), n_kv, hq // n_kv, m, d, _ptr(ks), ks.stride(0),
                       k, offset, pool, _ptr(work), _ptr(out))
    return out


def cosine(lib, a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two contiguous float32 tensors of the same size (float64 accumulation)."""
    assert a.dtype == b.dtype == torch.float32 and a.is_contiguous() and b.is_contiguous() and a.numel() == b.numel()
    return lib.sg_cosine(_ptr(a), _ptr(b), a.numel())


def unrotate(lib, x: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor, pos: int,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """``x [1, H, L, d]`` (float32, rows of d contiguous floats, any head/row strides) rotated back by
    ``pos`` (``R(-pos) x``): :func:`select.rotate_into` with one table row; into ``out`` (same
    layout rules) or a new contiguous ``[1, H, L, d]``."""
    _, h, n, d = x.shape
    out = torch.empty(1, h, n, d) if out is None else out
    assert x.dtype == out.dtype == torch.float32 and x.stride(3) == 1 and out.stride(3) == 1
    lib.sg_unrotate_rows(_ptr(x), h, x.stride(1), n, x.stride(2), d, _ptr(cos_t), _ptr(sin_t), pos,
                         _ptr(out), out.stride(1), out.stride(2))
    return out


def unrotate_mean(lib, x: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor, pos0: int) -> torch.Tensor:
    """Fingerprint of a chunk ``x [1, H, L, d]`` (float32, rows of d contiguous floats) at positions
    ``pos0 ..``: the mean of its queries rotated back by their own positions, ``[1, H, d]``."""
    _, h, n, d = x.shape
    assert x.dtype == torch.float32 and x.stride(3) == 1
    out = torch.empty(1, h, d)
    lib.sg_unrotate_mean(_ptr(x), h, x.stride(1), n, x.stride(2), d, _ptr(cos_t), _ptr(sin_t), pos0, _ptr(out))
    return out


def gather_rotate(lib, key: torch.Tensor, value: torch.Tensor, idx: torch.Tensor, cos_t: torch.Tensor,
                  sin_t: torch.Tensor, n_init: int, out_k: torch.Tensor, out_v: torch.Tensor) -> None:
    """Rows ``idx [m]`` (ascending) of every KV head of ``key/value [1, Hkv, N, d]`` into
    ``out_k/out_v [1, Hkv, S, d]`` at rows ``n_init + j``, keys rotated by ``n_init + j - idx[j]``."""
    _, n_kv, _, d = key.shape
    idx = idx.contiguous()
    assert key.stride() == value.stride() and key.stride(2) == d and out_k.stride(2) == d
    lib.sg_gather_rotate(_ptr(key), _ptr(value), key.stride(1), _ptr(idx), idx.numel(), n_kv, d,
                         _ptr(cos_t), _ptr(sin_t), n_init, _ptr(out_k), _ptr(out_v), out_k.stride(1))


def attend2(lib, q1: torch.Tensor, k1: torch.Tensor, v1: torch.Tensor, q2: torch.Tensor, k2: torch.Tensor,
            v2: torch.Tensor, scaling: float) -> torch.Tensor:
    """:func:`select.attend_frames` for two blocks, float32, batch 1: ``[1, 1, Hq, d]``."""
    _, hq, _, d = q1.shape
    q1, q2 = q1.contiguous(), q2.contiguous()
    work = _work(2 * hq * (k1.shape[2] + k2.shape[2]))
    out = torch.empty(1, 1, hq, d)
    lib.sg_attend2(_ptr(q1), _ptr(k1), _ptr(v1), k1.shape[1], k1.shape[2], k1.stride(1),
                   _ptr(q2), _ptr(k2), _ptr(v2), k2.shape[1], k2.shape[2], k2.stride(1),
                   hq, d, scaling, _ptr(work), _ptr(out))
    return out

"""The fused C++ decode kernels against the PyTorch reference path (skipped without a compiler)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from slimguard.core.errors import SlimguardError
from slimguard.slim.kvselect import kernels as KN
from slimguard.slim.kvselect import select as K
from slimguard.slim.kvselect.attention import standalone_layer, token_select_attention
from slimguard.slim.kvselect.config import TokenSelectConfig

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
D = 16
INV = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))


@pytest.fixture(scope="module")
def lib():
    return KN.library(required=True)


@pytest.mark.parametrize("groups,pool", [(1, 1), (3, 1), (2, 5)])
def test_select_int8_matches_torch(lib, groups, pool):
    # scoring, vote, pool and top-k in one call against the PyTorch path's vote and top-k
    g = torch.Generator().manual_seed(groups + pool)
    keys = torch.randn(1, 2, 300, D, generator=g)
    kq, ks = K.quantize_rows(keys)
    q = torch.randn(1, 2 * groups, D, generator=g)
    got = KN.select_int8(lib, q, 0.25, kq, ks[0], 25, 7, pool)
    score = K.soft_vote(K.head_logits(q, kq, 0.25, ks), pool)
    if pool == 1:
        assert torch.equal(got, K.topk_sorted(score, 25, 7))
    else:  # plateaus: the same top values, whichever tied positions were taken
        assert got[0].tolist() == sorted(set(got[0].tolist()))
        assert torch.allclose(torch.sort(score[0, got[0] - 7]).values, torch.sort(torch.topk(score[0], 25).values).values)


@pytest.mark.parametrize("m,k,pool,ties", [(300, 25, 1, False), (300, 25, 31, False), (5000, 300, 1, False),
                                             (32000, 1024, 31, False), (32000, 1024, 1, True), (9000, 2000, 7, True)])
def test_pool_topk_matches_torch(lib, m, k, pool, ties):
    # large m takes the sampled-threshold path, small m (or k > m / 8) the radix selection; max-pool
    # plateaus and rounded scores make many ties at the k-th value, taken in index order
    g = torch.Generator().manual_seed(m + k)
    score = torch.rand(1, m, generator=g) ** 4
    if ties:
        score = torch.round(score * 50) / 50
    work, out = torch.empty(2 * m), torch.empty(1, k, dtype=torch.int64)
    lib.sg_pool_topk(score.data_ptr(), m, pool, k, 3, work.data_ptr(), out.data_ptr())
    pooled = torch.nn.functional.max_pool1d(score[:, None], pool, stride=1, padding=pool // 2)[:, 0] if pool > 1 else score
    assert torch.equal(work[m:], pooled[0]) or pool == 1
    kth = torch.topk(pooled[0], k).values[-1]
    above = torch.nonzero(pooled[0] > kth)[:, 0]
    tied = torch.nonzero(pooled[0] == kth)[:, 0][:k - above.numel()]
    assert out[0].tolist() == (torch.sort(torch.cat((above, tied))).values + 3).tolist()


@pytest.mark.parametrize("d,m,groups", [(16, 300, 3), (64, 7, 1), (64, 300, 3), (128, 1000, 2)])
def test_score_int8_matches_int_mm(lib, d, m, groups):
    # d % 64 == 0 takes the 16-keys-at-a-time VNNI path where the CPU has it; m % 16 != 0 its tail
    g = torch.Generator().manual_seed(d + m)
    kq, _ = K.quantize_rows(torch.randn(1, 3, m + 5, d, generator=g))
    rows = K.score_rows(torch.randn(1, 3 * groups, d, generator=g) * 4, 3, 0.125)
    window = kq[:, :, 5:]  # a window of the buffer: heads at the buffer's stride, as in decoding
    # the integer scoring that sg_select_int8 runs first, called on its own
    _, n_kv, g, dd = rows.shape
    r = rows.contiguous().to(torch.float32)
    acc, qs = torch.empty(n_kv, g, m, dtype=torch.int32), torch.empty(n_kv, g)
    lib.sg_score_int8(r.data_ptr(), window.data_ptr(), window.stride(1), n_kv, g, m, dd, qs.data_ptr(), acc.data_ptr())
    ref_acc, ref_qs = K.int8_logits(rows, window)
    assert torch.equal(acc, ref_acc[0]) and torch.equal(qs, ref_qs[0])


@pytest.mark.parametrize("d", [16, 64])
def test_sync_int8_matches_the_torch_buffer(lib, d):
    g = torch.Generator().manual_seed(d)
    key = torch.randn(1, 2, 90, d, generator=g) * 3
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    rt = standalone_layer(TokenSelectConfig(), inv, 2)[1].runtime
    cos_t, sin_t = rt.trig(rt.layers[0], 90, "cpu")
    kbuf, kscale = torch.zeros(1, 2, 128, d, dtype=torch.int8), torch.zeros(1, 2, 128)
    KN.sync_int8(lib, key, 30, 90, cos_t, sin_t, kbuf, kscale)
    x = key[:, :, 30:90]
    want, want_s = K.quantize_rows(K.rotate_into(torch.empty_like(x), x, cos_t[30:90], -sin_t[30:90]))
    assert torch.equal(kbuf[:, :, 30:90], want) and torch.equal(kscale[:, :, 30:90], want_s)
    assert not kbuf[:, :, :30].any() and not kbuf[:, :, 90:].any()  # nothing outside [lo, hi) written


def test_cosine_and_unrotate_match_torch(lib):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(9 * 64, generator=g), torch.randn(9 * 64, generator=g)
    assert KN.cosine(lib, a, a.clone()) == 1.0  # threshold 1.0 must mean "the same query"
    assert abs(KN.cosine(lib, a, b) - float(torch.nn.functional.cosine_similarity(a, b, dim=0))) < 1e-6
    q = torch.randn(1, 1, 4, D, generator=g).transpose(1, 2)  # HF's [B, H, L, d] view of [B, L, H, d]
    rt = standalone_layer(TokenSelectConfig(), INV, 2)[1].runtime
    cos_t, sin_t = rt.trig(rt.layers[0], 50, "cpu")
    want = K.rotate_into(torch.empty(q.shape), q, cos_t[37], -sin_t[37])
    assert torch.equal(KN.unrotate(lib, q, cos_t, sin_t, 37), want)
    chunk = torch.randn(1, 30, 7, 2, D, generator=g)[:, :, :, 1].transpose(1, 2)  # [1, 7, 30, D], strided
    ref = K.rotate_into(torch.empty(chunk.shape), chunk, cos_t[12:42], -sin_t[12:42]).mean(2)
    assert torch.allclose(KN.unrotate_mean(lib, chunk, cos_t, sin_t, 12), ref, atol=1e-6)


def test_gather_rotate_and_attend2_match_torch(lib):
    g = torch.Generator().manual_seed(0)
    key, value = torch.randn(1, 2, 200, D, generator=g), torch.randn(1, 2, 200, D, generator=g)
    idx = torch.sort(torch.randperm(150, generator=g)[:20] + 10).values
    rt = standalone_layer(TokenSelectConfig(), INV, 2)[1].runtime
    cos_t, sin_t = rt.trig(rt.layers[0], 200, "cpu")
    sk, sv = torch.zeros(1, 2, 30, D), torch.zeros(1, 2, 30, D)
    KN.gather_rotate(lib, key, value, idx, cos_t, sin_t, 4, sk, sv)
    want = K.rotate(key[:, :, idx], torch.arange(4, 24) - idx, INV)
    assert torch.allclose(sk[:, :, 4:24], want, atol=1e-5) and torch.equal(sv[:, :, 4:24], value[:, :, idx])
    q1, q2 = torch.randn(1, 4, 1, D, generator=g), torch.randn(1, 4, 1, D, generator=g)
    got = KN.attend2(lib, q1, sk[:, :, :24], sv[:, :, :24], q2, key[:, :, -12:], value[:, :, -12:], 0.3)
    ref, _ = K.attend_frames([(q1, sk[:, :, :24], sv[:, :, :24]), (q2, key[:, :, -12:], value[:, :, -12:])], 0.3)
    assert torch.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("score_dtype", [None, "int8"])
def test_decode_steps_match_the_torch_path(score_dtype):
    g = torch.Generator().manual_seed(4)
    k, v = torch.randn(1, 2, 400, D, generator=g), torch.randn(1, 2, 400, D, generator=g)
    outs = {}
    for kernel in ("torch", "cpp"):
        cfg = TokenSelectConfig(n_init=4, k=40, n_local=16, chunk_size=16, cache_threshold=0.5, kernel=kernel,
                                score_dtype=score_dtype, record=True)
        m, st = standalone_layer(cfg, INV, 2)
        res = []
        for t in range(380, 400):
            q = torch.randn(1, 4, 1, D, generator=torch.Generator().manual_seed(t))
            res.append(token_select_attention(m, q, k[:, :, :t + 1], v[:, :, :t + 1], None, scaling=D ** -0.5)[0])
        outs[kernel] = (torch.cat(res), st.last_idx, st.hits)
    assert torch.allclose(outs["torch"][0], outs["cpp"][0], atol=1e-5)
    assert torch.equal(outs["torch"][1], outs["cpp"][1]) and outs["torch"][2] == outs["cpp"][2]


@pytest.mark.parametrize("score_dtype", [None, "int8"])
def test_chunked_prefill_matches_the_torch_path(score_dtype):
    # prefill chunks use the kernels for the gather, the rotations and (int8) the chunk's selection
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, h, 300, D, generator=g) for h in (4, 2, 2))
    outs = {}
    for kernel in ("torch", "cpp"):
        cfg = TokenSelectConfig(n_init=4, k=40, n_local=32, chunk_size=32, kernel=kernel, score_dtype=score_dtype,
                                record=True)
        m, st = standalone_layer(cfg, INV, 2)
        outs[kernel] = (token_select_attention(m, q, k, v, None, scaling=D ** -0.5)[0], st.last_idx)
    assert torch.allclose(outs["torch"][0], outs["cpp"][0], atol=1e-5)
    assert torch.equal(outs["torch"][1], outs["cpp"][1])


def test_required_kernels_without_a_compiler_is_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path))
    monkeypatch.setattr(KN, "_state", {})
    with pytest.raises(SlimguardError, match="no C\\+\\+ compiler"):
        KN.library(required=True)
    monkeypatch.setattr(KN, "_state", {})
    with pytest.warns(UserWarning, match="PyTorch path"):
        assert KN.library() is None


# --------------------------------------------------------------------------- the kernel cache's build record


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """One real build into a private SLIMGUARD_HOME; each case below works on its own copy of it."""
    home = tmp_path_factory.mktemp("kernel-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("SLIMGUARD_HOME", str(home))
    try:
        lib, sha = KN._build()
    finally:
        mp.undo()
    return home / "kernels", lib.name, sha


def _flip_byte(kdir, lib, rec):
    b = bytearray((kdir / lib).read_bytes())
    b[len(b) // 2] ^= 0xFF  # one byte of code changed: same size, same name
    (kdir / lib).write_bytes(bytes(b))


def _edit_record(**change):
    def edit(kdir, lib, rec):
        doc = json.loads(rec.read_text())
        doc.update(change)
        rec.write_text(json.dumps(doc))
    return edit


def _foreign_library(kdir, lib, rec):
    # a library the record does not vouch for, dropped beside it and named in the record
    (kdir / "evil.so").write_bytes((kdir / lib).read_bytes() + b"\0")
    _edit_record(library="evil.so")(kdir, lib, rec)


def _record_gone(kdir, lib, rec):
    rec.unlink()  # what an older slimguard's cache looks like: a library without a record


@pytest.mark.parametrize("tamper", [
    _flip_byte,
    _edit_record(source_sha256="0" * 64),  # kernels.cpp changed since the build
    _edit_record(library="../kvselect-elsewhere.so"),  # a record pointing out of the cache
    _edit_record(format="slimguard-kernel/0"),
    _foreign_library,
    lambda kdir, lib, rec: rec.write_text("{not json"),
    _record_gone,
], ids=["library-byte-flipped", "source-changed", "path-escape", "old-format", "foreign-library", "record-not-json",
        "no-record"])
def test_record_check_rejects_tampering(built_cache, tmp_path, monkeypatch, tamper):
    src_dir, lib, sha = built_cache
    kdir = tmp_path / "kernels"
    shutil.copytree(src_dir, kdir)
    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path))
    src_sha, tag, rec = KN._recipe("g++")
    assert KN._recorded(rec, src_sha, tag) == (kdir / lib, sha)  # the untouched copy verifies
    tamper(kdir, lib, rec)
    assert KN._recorded(rec, src_sha, tag) is None


def test_tampered_library_is_rebuilt_not_loaded(built_cache, tmp_path, monkeypatch):
    import ctypes
    import hashlib

    src_dir, lib, sha = built_cache
    kdir = tmp_path / "kernels"
    shutil.copytree(src_dir, kdir)
    _flip_byte(kdir, lib, None)
    tampered = hashlib.sha256((kdir / lib).read_bytes()).hexdigest()
    loaded = []
    real_cdll = ctypes.CDLL

    def spy(path, *a, **kw):
        with open(path, "rb") as f:  # what ctypes is about to map, read through the same name it was given
            loaded.append(hashlib.sha256(f.read()).hexdigest())
        return real_cdll(path, *a, **kw)

    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "g++")
    monkeypatch.setattr(KN, "_state", {})
    monkeypatch.setattr(ctypes, "CDLL", spy)
    with pytest.warns(UserWarning, match="rebuilding"):
        assert KN.library(required=True) is not None
    assert tampered != sha and loaded == [sha]  # the rebuild, identical to the first build (g++ is deterministic)
    doc = json.loads(next(kdir.glob("*.json")).read_text())
    assert doc["sha256"] == sha and hashlib.sha256((kdir / doc["library"]).read_bytes()).hexdigest() == sha


def test_verified_kernel_cache_loads_without_rebuilding(built_cache, tmp_path, monkeypatch):
    src_dir, lib, sha = built_cache
    shutil.copytree(src_dir, tmp_path / "kernels")
    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "g++")
    monkeypatch.setattr(KN, "_state", {})
    monkeypatch.setattr(KN.subprocess, "run", lambda *a, **k: pytest.fail("rebuilt a library that verifies"))
    assert KN.library(required=True) is not None


def test_tampered_kernel_cache_without_a_compiler_is_refused(built_cache, tmp_path, monkeypatch):
    src_dir, lib, sha = built_cache
    kdir = tmp_path / "kernels"
    shutil.copytree(src_dir, kdir)
    _flip_byte(kdir, lib, None)
    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path))
    monkeypatch.setattr(KN, "_state", {})
    monkeypatch.setattr(KN.shutil, "which", lambda name: None)  # the record names g++, which must stay in the tag
    monkeypatch.setattr(KN.ctypes, "CDLL", lambda *a, **k: pytest.fail("loaded a library that does not verify"))
    with pytest.raises(SlimguardError, match="does not match .*refusing to load it") as e:
        KN.library(required=True)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(KN, "_state", {})
    with pytest.warns(UserWarning, match="PyTorch path"):
        assert KN.library() is None

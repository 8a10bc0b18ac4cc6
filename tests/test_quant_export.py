"""EdgeQAT export: learned Q4_0 GGUF round-trips to the fake-quant weights; packed int4 safetensors reloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimguard.core.errors import SlimguardError
from slimguard.slim.quant import QATConfig, convert, prepare_qat


def _template(path):
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny")
    w.add_uint32("llama.block_count", 2)
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(128)])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("fuse_qkv", [True, False])
@pytest.mark.parametrize("w_bits, qtype", [(4, "Q4_0"), (3, "Q4_0"), (8, "Q8_0")])
def test_gguf_dequantizes_to_fake_quant_weights(tiny_llama, tmp_path, w_bits, qtype, fuse_qkv):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from slimguard.slim.quant.export import _rope_permute, write_gguf

    x = torch.randint(0, 128, (1, 8))
    prepare_qat(tiny_llama, QATConfig(w_bits=w_bits, a_bits=8, kv_bits=4))
    tiny_llama(input_ids=x)
    fake = {n: m.w_quant(m.weight).detach().clone() for n, m in tiny_llama.named_modules() if hasattr(m, "w_quant")}
    convert(tiny_llama)
    path = write_gguf(tiny_llama, tmp_path / "m.gguf", template=_template(tmp_path / "t.gguf"), fuse_qkv=fuse_qkv)
    r = GGUFReader(str(path))
    t = {x.name: x for x in r.tensors}
    assert r.fields["general.name"].contents() == "tiny"

    def rows(gg: str, layer: int) -> np.ndarray:
        """Dequantized rows of one projection; fused files stack Q (64 rows), K (32) and V (32) in attn_qkv."""
        if not fuse_qkv or gg not in ("attn_q", "attn_k", "attn_v"):
            tensor = t[f"blk.{layer}.{gg}.weight"]
            assert tensor.tensor_type.name == qtype
            return dequantize(tensor.data, tensor.tensor_type)
        assert f"blk.{layer}.{gg}.weight" not in t
        tensor = t[f"blk.{layer}.attn_qkv.weight"]
        assert tensor.tensor_type.name == qtype
        qkv = dequantize(tensor.data, tensor.tensor_type).reshape(128, 64)
        return {"attn_q": qkv[:64], "attn_k": qkv[64:96], "attn_v": qkv[96:]}[gg]

    for name, gg, layer, perm in (("model.layers.0.self_attn.q_proj", "attn_q", 0, 4),
                                  ("model.layers.1.self_attn.k_proj", "attn_k", 1, 2),
                                  ("model.layers.1.self_attn.v_proj", "attn_v", 1, None),
                                  ("model.layers.1.mlp.down_proj", "ffn_down", 1, None)):
        want = fake[name].numpy()
        want = _rope_permute(want, perm) if perm else want
        np.testing.assert_array_equal(rows(gg, layer).reshape(want.shape), want)
    assert t["blk.0.attn_norm.weight"].tensor_type.name == "F32"


@pytest.mark.parametrize("embed_type, qtype, bytes_per_32, max_rel_err",
                         [("q8_0", "Q8_0", 34, 0.01), ("q4_0", "Q4_0", 18, 0.15), ("mxfp4", "MXFP4", 17, 0.25)])
def test_gguf_embedding_types(tiny_llama, tmp_path, embed_type, qtype, bytes_per_32, max_rel_err):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from slimguard.slim.quant.export import write_gguf

    prepare_qat(tiny_llama, QATConfig(w_bits=4, a_bits=8, kv_bits=4))
    tiny_llama(input_ids=torch.randint(0, 128, (1, 8)))
    convert(tiny_llama)
    path = write_gguf(tiny_llama, tmp_path / "m.gguf", template=_template(tmp_path / "t.gguf"), embed_type=embed_type)
    emb = {x.name: x for x in GGUFReader(str(path)).tensors}["token_embd.weight"]
    want = tiny_llama.get_input_embeddings().weight.detach().numpy()
    assert emb.tensor_type.name == qtype
    assert emb.data.nbytes == want.size // 32 * bytes_per_32
    deq = dequantize(emb.data, emb.tensor_type).reshape(want.shape)
    # relative error of the whole matrix: rounding, not a layout mix-up (which would be ~1.4)
    assert np.linalg.norm(deq - want) / np.linalg.norm(want) < max_rel_err


def test_gguf_needs_converted_group32(tiny_llama, tmp_path):
    from slimguard.slim.quant.export import write_gguf

    prepare_qat(tiny_llama, QATConfig(granularity="channel"))
    tiny_llama(input_ids=torch.randint(0, 128, (1, 8)))
    with pytest.raises(SlimguardError, match="not converted"):
        write_gguf(tiny_llama, tmp_path / "m.gguf", template=_template(tmp_path / "t.gguf"))
    convert(tiny_llama)
    with pytest.raises(SlimguardError, match="group_size=32"):
        write_gguf(tiny_llama, tmp_path / "m.gguf", template=_template(tmp_path / "t.gguf"))


@pytest.mark.parametrize("w_bits", [4, 8])
def test_packed_safetensors_reload_same_logits(tiny_llama, tmp_path, w_bits):
    from slimguard.slim.quant.export import load_packed, save_packed

    x = torch.randint(0, 128, (2, 12))
    cfg = QATConfig(w_bits=w_bits, a_bits=8, kv_bits=4)
    prepare_qat(tiny_llama, cfg)
    tiny_llama(input_ids=x)
    convert(tiny_llama)
    want = tiny_llama(input_ids=x).logits
    path = save_packed(tiny_llama, cfg, tmp_path / "m.safetensors")
    if w_bits == 4:  # two codes per byte: about a quarter of the fp16 linear bytes
        lin = sum(m.weight.numel() for n, m in tiny_llama.named_modules() if hasattr(m, "qcodes"))
        assert path.stat().st_size < lin * 2 * 0.5 + 128 * 64 * 4 * 2
    model, cfg2 = load_packed(path)
    assert cfg2 == cfg
    assert torch.allclose(model(input_ids=x).logits, want, atol=1e-5)


def test_load_packed_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    from slimguard.slim.quant.export import load_packed

    save_file({"a": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(SlimguardError, match="not a slimguard packed"):
        load_packed(tmp_path / "x.safetensors")


def _runnable_template(path):
    """A GGUF header llama.cpp can load for the tiny Llama: its hyperparameters and no tokenizer (token ids only)."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny")
    for key, v in (("block_count", 2), ("context_length", 512), ("embedding_length", 64), ("feed_forward_length", 128),
                   ("attention.head_count", 4), ("attention.head_count_kv", 2), ("rope.dimension_count", 16),
                   ("vocab_size", 128)):
        w.add_uint32(f"llama.{key}", v)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_string("tokenizer.ggml.model", "none")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _llama_cpp_logits(llama_cpp, path, ids):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, verbose=False)
    llm.eval(ids)
    out = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
    llm.close()
    return out


def test_llama_cpp_runs_the_export_fused_or_not(tiny_llama, tmp_path):
    """llama.cpp reads our GGUF as torch does (F32: same logits, so the RoPE row order and the Q/K/V stacking are
    right), and the fused-QKV Q4_0 file gives exactly the logits of the unfused one."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from slimguard.slim.quant.export import write_gguf

    tmpl = _runnable_template(tmp_path / "t.gguf")
    ids = [5, 17, 99, 3, 42, 7, 64, 1]
    with torch.no_grad():
        ref = tiny_llama(torch.tensor([ids])).logits[0, -1].numpy()
    for fuse in (True, False):
        got = _llama_cpp_logits(llama_cpp, write_gguf(tiny_llama, tmp_path / f"f{fuse}.gguf", template=tmpl,
                                                      weight_type="f32", fuse_qkv=fuse), ids)
        np.testing.assert_allclose(got, ref, atol=1e-3)
    prepare_qat(tiny_llama, QATConfig(w_bits=4, a_bits=8, kv_bits=4))
    tiny_llama(input_ids=torch.tensor([ids]))
    convert(tiny_llama)
    fused, plain = (_llama_cpp_logits(llama_cpp, write_gguf(tiny_llama, tmp_path / f"q{f}.gguf", template=tmpl,
                                                            fuse_qkv=f), ids) for f in (True, False))
    np.testing.assert_array_equal(fused, plain)
    assert np.abs(fused - ref).max() > 1e-3  # the Q4_0 weights are not the float ones

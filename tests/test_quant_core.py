"""EdgeQAT core on a tiny random Llama: quantizers, fake-quant insertion, losses, convert, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from slimguard.core.errors import ConfigError, SlimguardError
from slimguard.slim.quant import QATConfig, convert, prepare_qat
from slimguard.slim.quant.quantizers import ActQuant, LSQPlus, WeightQuantizer


@pytest.mark.parametrize("bits, gran, gs", [(4, "group", 32), (4, "channel", 32), (8, "tensor", 32),
                                            (3, "group", 16), (2, "group", 32)])
def test_weight_quantizer_grid_and_codes(bits, gran, gs):
    torch.manual_seed(0)
    w = torch.randn(16, 64) * 0.05
    q = WeightQuantizer(w, bits, gran, gs)
    wq = q(w)
    codes, scales = q.codes_and_scales(w)
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1
    assert scales.dtype == torch.float16
    g = 64 // scales.shape[1]
    deq = (codes.float().reshape(16, -1, g) * scales.float()[..., None]).reshape(16, 64)
    assert torch.equal(deq, wq.detach())  # fp16-snapped steps: codes * scales == fake-quant weight, bit for bit
    assert len(torch.unique(wq[0, :g])) <= 2 ** bits


def test_weight_step_gets_lsq_gradient():
    w = torch.randn(8, 32)
    q = WeightQuantizer(w, 4, "group", 32)
    q(w).pow(2).sum().backward()
    assert q.step.grad is not None and q.step.grad.abs().sum() > 0


@pytest.mark.parametrize("data, signed", [(torch.rand(4, 10, 8), False), (torch.randn(4, 10, 8), True)])
def test_act_quantizer_detects_sign_and_quantizes(data, signed):
    aq = LSQPlus(4, (1,), init="minmax")
    y = aq(data)
    assert bool(aq.signed) is signed
    assert len(torch.unique(y.detach())) <= 16
    assert (y - data).abs().max() <= aq.step.abs().item() * 0.5 + 1e-5


def test_act_quantizer_mse_init_clips_outliers():
    x = torch.randn(10000, generator=torch.Generator().manual_seed(0))
    x[0] = 20.0
    mse, mm = LSQPlus(4, init="mse"), LSQPlus(4, init="minmax")
    mse.calibrate(x)
    mm.calibrate(x)
    assert mse.step.item() < mm.step.item()
    assert ((mse(x) - x) ** 2).mean() < ((mm(x) - x) ** 2).mean()


def test_dynamic_quantizer_is_per_token_block():
    from slimguard.slim.quant.quantizers import DynQuant

    x = torch.randn(2, 3, 64)
    x[0, 0, 5] = 100.0  # one outlier only coarsens its own 32-wide block
    y = DynQuant(4, 32)(x)
    assert (y - x)[0, 0, 32:].abs().max() < 0.5
    assert (y - x)[1].abs().max() < 0.5
    assert len(torch.unique(y[0, 1, :32].detach())) <= 16


def test_low_bit_twin_only_for_masked_tokens():
    x = torch.randn(2, 6, 8)
    aq = ActQuant(8, (1,), low_bits=2)
    low = torch.zeros(2, 6, dtype=torch.bool)
    low[:, :3] = True
    y = aq(x, low[..., None])
    assert torch.equal(y[:, 3:], aq.hi(x)[:, 3:])
    assert len(torch.unique(y[:, :3].detach())) <= 4


def _count(model, cls_name):
    return sum(type(m).__name__ == cls_name for m in model.modules())


def test_prepare_swaps_every_linear_and_keeps_embeddings(tiny_llama):
    x = torch.randint(0, 128, (2, 12))
    prepare_qat(tiny_llama, QATConfig(w_bits=4, a_bits=8, kv_bits=4))
    assert _count(tiny_llama, "QLinear") == 7 * 2
    assert type(tiny_llama.lm_head).__name__ == "Linear"
    out = tiny_llama(input_ids=x)
    assert torch.isfinite(out.logits).all()
    ad = tiny_llama.model.layers[1].self_attn.sg_adapter
    assert all(getattr(ad, n) is not None for n in ("inp", "q", "k", "v", "p"))
    assert ad.k.hi.bits == 4 and ad.q.hi.bits == 8 and ad.p.hi.bits == 8


@pytest.mark.parametrize("cfg, tol", [(dict(w_bits=8, a_bits=None, prob_bits=None), 0.05),
                                      (dict(w_bits=8, a_bits=8), 0.3),
                                      (dict(w_bits=2, a_bits=None, prob_bits=None), None)])
def test_fake_quant_distance_orders_with_bits(tiny_llama, cfg, tol):
    x = torch.randint(0, 128, (2, 16))
    ref = tiny_llama(input_ids=x).logits
    prepare_qat(tiny_llama, QATConfig(**cfg))
    d = (tiny_llama(input_ids=x).logits - ref).abs().max().item()
    if tol is None:
        assert d > 0.05  # 2-bit weights really are coarse
    else:
        assert d < tol


def test_convert_keeps_outputs_and_freezes(tiny_llama):
    x = torch.randint(0, 128, (2, 16))
    prepare_qat(tiny_llama, QATConfig(w_bits=4, a_bits=8, kv_bits=4))
    before = tiny_llama(input_ids=x).logits
    convert(tiny_llama)
    after = tiny_llama(input_ids=x).logits
    assert torch.allclose(before, after, atol=1e-5)
    q = tiny_llama.model.layers[0].self_attn.q_proj
    assert q.converted and q.qcodes.dtype == torch.int8 and not q.w_quant.step.requires_grad


@pytest.mark.parametrize("control", ["sink", "random"])
def test_token_adaptive_marks_requested_fraction(tiny_llama, control):
    x = torch.randint(0, 128, (3, 20))
    prepare_qat(tiny_llama, QATConfig(a_bits=8, kv_bits=8, token_adaptive=True, adaptive_fraction=0.25,
                                      adaptive_control=control))
    st = tiny_llama.sg_state
    tiny_llama(input_ids=x)
    low = st.low[0]
    assert low.shape == (3, 20) and low.sum(1).tolist() == [5, 5, 5]


def test_sink_scoring_marks_lowest_sink_logits():
    from slimguard.slim.quant.prepare import QATState, _low_tokens

    logits = torch.zeros(1, 2, 4, 4)
    logits[0, :, :, 0] = torch.tensor([5.0, -3.0, 1.0, -1.0])
    st = QATState(QATConfig(token_adaptive=True, adaptive_fraction=0.5))
    assert _low_tokens(logits, st)[0].tolist() == [False, True, False, True]


def test_losses_direction_and_entropy(tiny_llama):
    import copy

    from slimguard.slim.quant.losses import distribution_guidance, entropy_guidance
    from slimguard.slim.quant.prepare import attach_recorder

    teacher = attach_recorder(copy.deepcopy(tiny_llama))
    prepare_qat(tiny_llama, QATConfig(w_bits=8, a_bits=8))
    x = torch.randint(0, 128, (2, 10))
    s, t = tiny_llama.sg_state, teacher.sg_state
    s.record = t.record = True
    tiny_llama(input_ids=x)
    teacher(input_ids=x)
    intended = distribution_guidance(s, t, "intended")
    assert 0 <= intended.item() < 0.05  # 8-bit student ~ teacher: 1 - cos is near 0
    t_self = distribution_guidance(t, t, "intended")
    assert abs(t_self.item()) < 1e-5
    # the reference's log(sum cos) grows with similarity, so minimising it pushes similarity down
    assert distribution_guidance(t, t, "reference").item() >= distribution_guidance(s, t, "reference").item() - 1e-6
    ent = entropy_guidance(s)
    ent.backward()
    q_clip = tiny_llama.model.layers[0].self_attn.sg_adapter.q.hi.clip  # dynamic per-token Q quantizer
    assert torch.isfinite(ent) and q_clip.grad is not None


@pytest.mark.parametrize("student, teacher, grads", [
    ([2.0, 5.0], [3.0, 4.0], [True, False]),    # layer 1 is above the teacher: the cap stops its gradient
    ([2.0, 3.0], [3.0, 4.0], [True, True]),     # both below: the capped loss equals the uncapped one
    ([5.0, 6.0], [3.0, 4.0], [False, False]),   # both above: nothing left to restore
])
def test_capped_entropy_counts_each_layer_up_to_the_teacher(student, teacher, grads):
    from slimguard.slim.quant.losses import entropy_guidance
    from slimguard.slim.quant.prepare import QATState

    s, t = QATState(None), QATState(None)
    terms = [torch.tensor(v, requires_grad=True) for v in student]
    s.qk_entropy = dict(enumerate(terms))
    t.qk_entropy = {i: torch.tensor(v) for i, v in enumerate(teacher)}
    capped = entropy_guidance(s, t)
    capped.backward()
    expected = -0.5 * math.log(sum(min(a, b) for a, b in zip(student, teacher)))
    assert capped.item() == pytest.approx(expected)
    assert [bool(x.grad.abs().item() > 0) for x in terms] == grads
    if all(grads):
        assert entropy_guidance(s).item() == pytest.approx(capped.item())


def test_capped_entropy_needs_the_teacher_and_records_it():
    from slimguard.core.config import build
    from slimguard.slim.quant.config import LossConfig

    cfg = build(LossConfig, {"entropy": True, "entropy_cap": "teacher"})
    assert cfg.needs_teacher and cfg.capped_entropy
    assert not build(LossConfig, {"entropy": True}).needs_teacher
    with pytest.raises(ConfigError, match="entropy_cap"):
        build(LossConfig, {"entropy": True, "entropy_cap": "fp"})


@pytest.mark.parametrize("kwargs, msg", [({"w_bits": 5}, "w_bits"), ({"a_bits": 16}, "a_bits"),
                                         ({"kv_bits": 1}, "kv_bits"), ({"group_size": 0}, "group_size"),
                                         ({"adaptive_fraction": 1.5}, "adaptive_fraction")])
def test_bad_bits_are_config_errors(kwargs, msg):
    from slimguard.core.config import build

    with pytest.raises(ConfigError, match=msg):
        build(QATConfig, kwargs)


def test_group_size_must_divide_hidden(tiny_llama):
    with pytest.raises(SlimguardError, match="group_size 48 does not divide"):
        prepare_qat(tiny_llama, QATConfig(group_size=48))


def test_unsupported_architecture():
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(SlimguardError, match="model type 'gpt2' is not supported"):
        prepare_qat(m, QATConfig())


@pytest.mark.parametrize("collapsed", [3e-9, 0.0, -1e-12])
def test_a_collapsed_weight_step_keeps_gradients_finite(collapsed):
    # a step below fp16's smallest subnormal used to snap to 0: w / 0 made every weight gradient NaN
    # (the loss stayed finite), which is how QAT on the H100 went NaN after ~70 steps
    from slimguard.slim.quant.quantizers import MIN_STEP, WeightQuantizer

    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0)) * 0.02
    q = WeightQuantizer(w, 4, "group", 32)
    with torch.no_grad():
        q.step[0, 0] = collapsed
    wp = w.clone().requires_grad_(True)
    out = q(wp)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(wp.grad).all() and torch.isfinite(q.step.grad).all()
    codes, scales = q.codes_and_scales(w)
    assert float(scales.float().min()) >= MIN_STEP


@pytest.mark.parametrize("kv_bits, lo, hi", [(8, 1e-6, 0.05), (4, 1e-3, None)])
def test_kv_only_quant_touches_nothing_else(tiny_llama, kv_bits, lo, hi):
    """attach_kv_quant (the KV4 added to torchao's QAT for a same-bits baseline) quantizes K and V per token,
    learns nothing and leaves the linears alone."""
    from slimguard.slim.quant.prepare import attach_kv_quant

    x = torch.randint(0, 128, (2, 16))
    ref = tiny_llama(input_ids=x).logits
    n_params = sum(p.numel() for p in tiny_llama.parameters() if p.requires_grad)
    attach_kv_quant(tiny_llama, kv_bits)
    assert _count(tiny_llama, "QLinear") == 0
    assert sum(p.numel() for p in tiny_llama.parameters() if p.requires_grad) == n_params
    ad = tiny_llama.model.layers[0].self_attn.sg_adapter
    assert ad.inp is None and ad.q is None and ad.p is None and ad.k.hi.bits == kv_bits == ad.v.hi.bits
    k = torch.randn(1, 2, 5, 16)
    assert all(len(row.unique()) <= 2 ** kv_bits for row in ad.k(k).reshape(-1, 16))
    d = (tiny_llama(input_ids=x).logits - ref).abs().max().item()
    assert d > lo and (hi is None or d < hi)
    with pytest.raises(SlimguardError, match="already prepared"):
        attach_kv_quant(tiny_llama, kv_bits)

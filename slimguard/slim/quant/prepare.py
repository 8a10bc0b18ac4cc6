"""EdgeQAT fake-quant insertion on a real ``transformers`` Llama model (Shen et al., 2024).

``prepare_qat`` swaps the 7 linears of every decoder block for :class:`QLinear` (LSQ
weights), hangs an :class:`AttnAdapter` on each attention module and routes attention
through a registered ``AttentionInterface`` function that fake-quantizes Q and K (after
RoPE), V and the softmax probabilities, records the pre-softmax logits for the guidance
losses and scores tokens for adaptive bits. Forward pre-hooks quantize the attention input
and the MLP input. Embeddings, norms and the LM head stay full precision. No model file is
copied or patched: only public module swaps, hooks and the attention registry are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import SlimguardError
from .config import QATConfig
from .quantizers import ActQuant, WeightQuantizer

ATTN_IMPL = "slimguard_qat"
SUPPORTED = ("llama",)
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass
class QATState:
    """Per-forward scratch shared by hooks and the attention function of one model."""

    cfg: QATConfig | None
    record: bool = False           # keep logits / Q,K stats for the losses
    record_probs: bool = False     # keep softmax maps (diagnostics)
    logits: dict = field(default_factory=dict)
    probs: dict = field(default_factory=dict)
    qk_entropy: dict = field(default_factory=dict)
    low: dict = field(default_factory=dict)  # layer -> bool [B, T] of low-bit tokens
    generator: torch.Generator | None = None

    def reset(self) -> None:
        self.logits, self.probs, self.qk_entropy, self.low = {}, {}, {}, {}


class QLinear(nn.Module):
    """A linear layer with an LSQ weight quantizer and an optional input quantizer."""

    def __init__(self, linear: nn.Linear, cfg: QATConfig, in_quant: ActQuant | None, layer: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.w_quant = WeightQuantizer(linear.weight, cfg.w_bits, cfg.granularity, cfg.group_size,
                                       cfg.weight_init, cfg.learn_steps)
        self.in_quant = in_quant
        self.layer = layer
        self.adaptive = False  # set for points that follow this layer's token scoring
        self.converted = False
        self.state: QATState | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_quant is not None:
            low = self.state.low.get(self.layer) if (self.adaptive and self.state is not None) else None
            x = self.in_quant(x, _mask_like(low, x))
        w = self.weight if self.converted else self.w_quant(self.weight)
        return F.linear(x, w.to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, w_bits={self.w_quant.bits}, converted={self.converted}"


class AttnAdapter(nn.Module):
    """Quantizers living beside one attention module (absent ones stay full precision)."""

    def __init__(self, cfg: QATConfig | None, layer: int, n_heads: int, n_kv: int, head_dim: int):
        super().__init__()
        self.layer = layer
        self.inp = self.q = self.k = self.v = self.p = None
        if cfg is None:
            return
        low = cfg.adaptive_low_bits if cfg.token_adaptive else None
        learn, init = cfg.learn_steps, cfg.act_init
        ch = cfg.qkv_granularity == "channel"
        dyn_h = 0 if cfg.act_granularity == "token" else None
        dyn_qkv = (32 if head_dim % 32 == 0 else 0) if cfg.qkv_granularity == "token" else None
        if cfg.a_bits:
            self.inp = ActQuant(cfg.a_bits, (1,), low if layer > 0 else None, learn, init, dyn_h)
            self.q = ActQuant(cfg.a_bits, (1, n_heads, 1, head_dim) if ch else (1,), low if layer > 0 else None, learn,
                              init, dyn_qkv)
        kv = cfg.effective_kv_bits
        if kv:
            self.k = ActQuant(kv, (1, n_kv, 1, head_dim) if ch else (1,), low if layer > 0 and kv > (low or 0) else None,
                              learn, init, dyn_qkv)
            self.v = ActQuant(kv, (1, n_kv, 1, head_dim) if ch else (1,), low if kv > (low or 0) else None, learn, init,
                              dyn_qkv)
        if cfg.prob_bits:
            self.p = ActQuant(cfg.prob_bits, (1,), None, learn, "minmax")  # probabilities live in [0, 1]


def _mask_like(low: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """Broadcast a [B, T] token mask to [B, T, C] or [B, H, T, D]; None if shapes do not line up (cached decode)."""
    if low is None:
        return None
    if x.dim() == 3 and x.shape[:2] == low.shape:
        return low[:, :, None]
    if x.dim() == 4 and x.shape[0] == low.shape[0] and x.shape[2] == low.shape[1]:
        return low[:, None, :, None]
    return None


def qat_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention with fake-quant points, logit recording and token scoring."""
    ad: AttnAdapter | None = getattr(module, "sg_adapter", None)
    st: QATState | None = getattr(ad, "state", None)
    prev_low = st.low.get(ad.layer - 1) if st is not None else None
    if ad is not None and ad.q is not None:
        query = ad.q(query, _mask_like(prev_low, query))
    if ad is not None and ad.k is not None:
        key = ad.k(key, _mask_like(prev_low, key))
    n_rep = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(n_rep, dim=1) if n_rep > 1 else key
    logits = torch.matmul(query, k.transpose(2, 3)) * scaling
    if st is not None:
        if st.record:
            st.logits[ad.layer] = logits
            # sum over heads, mean over (batch, token): the paper's sum up to a constant factor, which
            # log() turns into a constant offset -- same gradient, but independent of batch size / DDP split
            qv = torch.log1p(query.float().var(-1)).sum(1).mean()
            kv = torch.log1p(key.float().var(-1)).sum(1).mean()
            st.qk_entropy[ad.layer] = qv + kv
        if st.cfg is not None and st.cfg.token_adaptive:
            st.low[ad.layer] = _low_tokens(logits, st)
    if ad is not None and ad.v is not None:
        value = ad.v(value, _mask_like(st.low.get(ad.layer) if st is not None else None, value))
    v = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
    scores = logits if attention_mask is None else logits + attention_mask[:, :, :, : k.shape[-2]]
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if ad is not None and ad.p is not None:
        probs = ad.p(probs)
    if st is not None and st.record_probs:
        st.probs[ad.layer] = probs.detach()
    out = torch.matmul(probs, v).transpose(1, 2).contiguous()
    return out, probs


@torch.no_grad()
def _low_tokens(logits: torch.Tensor, st: QATState) -> torch.Tensor | None:
    """[B, T] mask of the lowest-importance tokens (sink-logit score) or a random control."""
    b, _, t, tk = logits.shape
    if t != tk or t < 2:
        return None
    n_low = int(round(st.cfg.adaptive_fraction * t))
    if st.cfg.adaptive_control == "random":
        score = torch.rand(b, t, generator=st.generator, device="cpu").to(logits.device)
    else:
        # per-sequence version of the paper's score: sum over heads of the logit to the sink token
        score = logits[..., 0].float().sum(1)
    idx = score.topk(n_low, dim=-1, largest=False).indices
    low = torch.zeros(b, t, dtype=torch.bool, device=logits.device)
    return low.scatter_(1, idx, True)


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_IMPL, qat_attention)
    AttentionMaskInterface.register(ATTN_IMPL, eager_mask)


def _check_model(model, cfg: QATConfig | None) -> None:
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt not in SUPPORTED:
        raise SlimguardError(f"quant: model type '{mt}' is not supported (supported: {', '.join(SUPPORTED)}); "
                             "use a Llama-family causal LM")
    if cfg is not None and cfg.granularity == "group":
        c = model.config
        for name, size in (("hidden_size", c.hidden_size), ("intermediate_size", c.intermediate_size),
                           ("num_attention_heads*head_dim", c.num_attention_heads * _head_dim(c))):
            if size % cfg.group_size:
                raise SlimguardError(f"quant: group_size {cfg.group_size} does not divide {name} ({size}); "
                                     "pick a divisor such as 32")


def _head_dim(c) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def _attn_input_hook(ad: AttnAdapter):
    def hook(module, args, kwargs):
        st = ad.state
        prev = st.low.get(ad.layer - 1) if st is not None else None
        if "hidden_states" in kwargs:
            kwargs["hidden_states"] = ad.inp(kwargs["hidden_states"], _mask_like(prev, kwargs["hidden_states"]))
        else:
            args = (ad.inp(args[0], _mask_like(prev, args[0])),) + tuple(args[1:])
        return args, kwargs
    return hook


def _mlp_input_hook(aq: ActQuant, layer: int, state: QATState):
    def hook(module, args):
        return (aq(args[0], _mask_like(state.low.get(layer), args[0])),) + tuple(args[1:])
    return hook


def _install(model, cfg: QATConfig | None, *, linears: bool = True) -> QATState:
    _check_model(model, cfg if linears else None)
    _register_attention()
    device = next(model.parameters()).device  # new quantizers are built on the CPU; follow the model
    state = QATState(cfg)
    c = model.config
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        ad = AttnAdapter(cfg, i, c.num_attention_heads, c.num_key_value_heads, _head_dim(c))
        object.__setattr__(ad, "state", state)
        attn.sg_adapter = ad
        if cfg is None or not linears:
            continue
        low = cfg.adaptive_low_bits if cfg.token_adaptive else None
        dyn = 0 if cfg.act_granularity == "token" else None
        for path in LINEARS:
            parent_name, child = path.split(".")
            parent = getattr(layer, parent_name)
            lin = getattr(parent, child)
            if not isinstance(lin, nn.Linear):
                raise SlimguardError(f"quant: {path} in layer {i} is a {type(lin).__name__}, not nn.Linear; "
                                     "prepare_qat expects a plain (unquantized) model")
            in_q = None
            if cfg.a_bits and child == "o_proj" and cfg.quantize_o_input:
                in_q = ActQuant(cfg.a_bits, (1,), None, cfg.learn_steps, cfg.act_init, dyn)
            if cfg.a_bits and child == "down_proj":  # act(gate) * up
                in_q = ActQuant(cfg.a_bits, (1,), low, cfg.learn_steps, cfg.act_init, dyn)
            q = QLinear(lin, cfg, in_q, i)
            q.adaptive = child == "down_proj"
            q.state = state
            setattr(parent, child, q)
        if ad.inp is not None:
            attn.register_forward_pre_hook(_attn_input_hook(ad), with_kwargs=True)
        if cfg.a_bits:
            layer.mlp.sg_in_quant = ActQuant(cfg.a_bits, (1,), low, cfg.learn_steps, cfg.act_init, dyn)
            layer.mlp.register_forward_pre_hook(_mlp_input_hook(layer.mlp.sg_in_quant, i, state))
    model.set_attn_implementation(ATTN_IMPL)
    model.sg_state = state
    model.to(device)
    return state


def prepare_qat(model, cfg: QATConfig, *, generator: torch.Generator | None = None):
    """Insert EdgeQAT fake quantization into ``model`` in place and return it."""
    if getattr(model, "sg_state", None) is not None:
        raise SlimguardError("quant: model is already prepared; prepare_qat a fresh model")
    st = _install(model, cfg)
    st.generator = generator or torch.Generator().manual_seed(0)
    return model


def attach_recorder(model):
    """Route a full-precision model (the teacher) through the same attention adapter, no quantizers."""
    if getattr(model, "sg_state", None) is None:
        _install(model, None)
    return model


def attach_kv_quant(model, kv_bits: int = 4):
    """Quantize only K (after RoPE) and V, with no learned parameters, in the layout of llama.cpp's
    q4_0/q8_0 KV cache: per token, 32-wide blocks of head_dim, one absmax scale per block. Used to put
    another toolkit's QAT (torchao's, which has no KV quantization) at the same W4A8KV4 bits as EdgeQAT."""
    if getattr(model, "sg_state", None) is not None:
        raise SlimguardError("quant: model is already prepared; attach_kv_quant a fresh model")
    cfg = QATConfig(a_bits=None, kv_bits=kv_bits, prob_bits=None, qkv_granularity="token", learn_steps=False)
    _install(model, cfg, linears=False)
    return model


def state_of(model) -> QATState:
    m = model.module if hasattr(model, "module") and not hasattr(model, "sg_state") else model
    st = getattr(m, "sg_state", None)
    if st is None:
        raise SlimguardError("quant: model is not prepared; call prepare_qat first")
    return st


def qlinears(model):
    for name, mod in model.named_modules():
        if isinstance(mod, QLinear):
            yield name, mod


@torch.no_grad()
def convert(model):
    """Freeze QAT: weights become their quantized values (codes * fp16 scales, kept as
    ``qcodes``/``qscales`` buffers for export); quantizer parameters stop learning.
    Activation quantizers stay, simulating the integer kernels' inputs."""
    for _, q in qlinears(model):
        if q.converted:
            continue
        codes, scales = q.w_quant.codes_and_scales(q.weight)
        gs = q.in_features // scales.shape[1]
        deq = (codes.float().reshape(q.out_features, -1, gs) * scales.float()[..., None]).reshape_as(q.weight)
        q.weight.data.copy_(deq.to(q.weight.dtype))
        q.register_buffer("qcodes", codes)
        q.register_buffer("qscales", scales)
        q.converted = True
    for p in _quant_params(model):
        p.requires_grad_(False)
    return model


def _quant_params(model):
    for m in model.modules():
        if isinstance(m, (ActQuant, WeightQuantizer)):
            yield from m.parameters()


def quantizer_parameters(model) -> list[nn.Parameter]:
    seen, out = set(), []
    for p in _quant_params(model):
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out

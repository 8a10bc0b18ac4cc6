"""Slimming a sequence classifier the way a user ships one: int8 dynamic PTQ, or W4A8 fake-quant.

Two post-training paths for any ``transformers`` *ForSequenceClassification model, used to ask
what quantization does to a backdoor (``slimguard bench scan``):

- :func:`int8_dynamic`: PyTorch's ``torch.ao.quantization.quantize_dynamic`` over every
  ``nn.Linear`` (int8 weights per tensor, activations quantized on the fly per batch): the
  one-line PTQ an engineer applies before shipping to a CPU. Its integer kernels have no
  autograd, so :func:`dequantized_twin` gives the float model with exactly the int8 weights,
  for methods that need gradients (a scan inverts through the twin and judges on the int8 model).
- :func:`w4a8`: the project's EdgeQAT quantizers (LSQ weights, :mod:`.quantizers`) at 4-bit
  weights (group 32, the llama.cpp Q4_0 layout) and 8-bit dynamic per-token activations at
  every linear input, frozen with :func:`.prepare.convert` (no training: PTQ with MSE-clipped
  steps). Llama-family models go through :func:`.prepare.prepare_qat`; BERT-family encoders
  through a small adapter here that swaps the linears of each encoder layer for
  :class:`~.prepare.QLinear` (public module swaps only, no model file forked). Embeddings, norms,
  the pooler and the classification head stay full precision, as in EdgeQAT.

    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> m = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
    ...                                   num_attention_heads=2, intermediate_size=64))
    >>> q = w4a8(m)
    >>> sum(type(x).__name__ == "QLinear" for x in q.modules())
    6
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ...core.errors import SlimguardError
from .config import QATConfig

W4A8 = QATConfig(w_bits=4, a_bits=8, kv_bits=None, prob_bits=None, granularity="group", group_size=32,
                 act_granularity="token", learn_steps=False)


def int8_dynamic(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` as a dynamic int8 linear (CPU kernels)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch 2.13 announces the quantized-tensor API's removal on every linear
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def dequantized_twin(model: nn.Module, quantized: nn.Module) -> nn.Module:
    """A float copy of ``model`` carrying ``quantized``'s int8 weights, dequantized (differentiable)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    twin = copy.deepcopy(model).eval()
    mods = dict(twin.named_modules())
    n = 0
    for name, q in quantized.named_modules():
        if isinstance(q, DynLinear):
            lin = mods[name]
            with torch.no_grad():
                lin.weight.copy_(q.weight().dequantize().to(lin.weight.dtype))
                if q.bias() is not None and lin.bias is not None:
                    lin.bias.copy_(q.bias().to(lin.bias.dtype))
            n += 1
    if n == 0:
        raise SlimguardError("dequantized_twin: the quantized model has no dynamic int8 linear layers")
    return twin


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    for path in ("encoder.layer", "transformer.layer", "layers", "layer"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise SlimguardError(f"quant: found no layer list in {type(model).__name__}; supported: Llama-family models "
                         "and BERT-family encoders (encoder.layer / transformer.layer)")


def prepare_classifier(model: nn.Module, cfg: QATConfig) -> nn.Module:
    """Insert fake quantization into a sequence classifier in place (Llama: EdgeQAT's prepare_qat)."""
    from .prepare import SUPPORTED, QLinear, prepare_qat
    from .quantizers import ActQuant

    if getattr(model.config, "model_type", None) in SUPPORTED:
        return prepare_qat(model, cfg)
    dyn = 0 if cfg.act_granularity == "token" else None
    for i, layer in enumerate(_encoder_layers(model)):
        for name, lin in list(layer.named_modules()):
            if not isinstance(lin, nn.Linear):
                continue
            if cfg.granularity == "group" and lin.in_features % cfg.group_size:
                raise SlimguardError(f"quant: group_size {cfg.group_size} does not divide {name}'s input size "
                                     f"({lin.in_features}); pick a divisor such as 32")
            in_q = ActQuant(cfg.a_bits, (1,), None, cfg.learn_steps, cfg.act_init, dyn) if cfg.a_bits else None
            parent_name, _, child = name.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            setattr(parent, child, QLinear(lin, cfg, in_q, i).to(lin.weight.device))
    return model


def w4a8(model: nn.Module, cfg: QATConfig = W4A8) -> nn.Module:
    """A copy of ``model`` at W4A8 (post-training, converted: weights hold their 4-bit values)."""
    from .prepare import convert

    q = prepare_classifier(copy.deepcopy(model).eval(), cfg)
    return convert(q).eval()

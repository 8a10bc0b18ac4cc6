"""Honest baselines for EdgeQAT: round-to-nearest PTQ and torchao's own QAT (prepare -> train).

RTN is EdgeQAT's fake-quant graph with frozen absmax steps (no training). torchao's QAT is
applied through its public ``quantize_(model, QATConfig(..., step="prepare"))`` to the seven
decoder linears (int4 group-32 symmetric weights, dynamic per-token int8 activations) and
trained with the same data, optimizer and step budget as our variants. torchao has no KV
cache quantization: on its own its numbers are W4A8 with full-precision K/V. With ``kv_bits``
our fixed (unlearned) per-token q4_0-style K/V fake-quant is added and stays on during its
training, which puts it at the same W4A8KV4 bits as EdgeQAT.
"""

from __future__ import annotations

import copy

import torch

from .config import QATConfig, QuantTrainConfig
from .data import TokenBlocks
from .losses import next_token_ce
from .prepare import attach_kv_quant, prepare_qat
from .train import _lr_lambda


def rtn(model, qat: QATConfig, calib: torch.Tensor):
    """Round-to-nearest PTQ: absmax weight steps, activations calibrated on one batch, nothing learned."""
    m = copy.deepcopy(model)
    prepare_qat(m, qat.model_copy(update={"weight_init": "absmax", "learn_steps": False, "act_init": "minmax"}))
    with torch.no_grad():
        m.eval()(input_ids=calib.to(next(m.parameters()).device))
    m.sg_state.reset()
    return m


def torchao_qat(model, cfg: QuantTrainConfig, blocks: TokenBlocks, *, w_bits: int = 4, a_bits: int | None = 8,
                kv_bits: int | None = None):
    """torchao QAT (prepare step) + CE training with our budget; returns the fake-quant model.
    ``kv_bits`` adds fixed K/V fake-quant (``attach_kv_quant``), trained through like the rest."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import IntxFakeQuantizeConfig
    from torchao.quantization.qat import QATConfig as AOQATConfig

    m = copy.deepcopy(model)
    wdt = {4: torch.int4, 8: torch.int8, 3: torch.int3, 2: torch.int2}[w_bits]
    wcfg = IntxFakeQuantizeConfig(wdt, group_size=cfg.qat.group_size, is_symmetric=True)
    acfg = IntxFakeQuantizeConfig(torch.int8 if a_bits == 8 else torch.int4, "per_token", is_symmetric=False) \
        if a_bits else None

    def in_decoder(mod, fqn: str) -> bool:
        return isinstance(mod, torch.nn.Linear) and fqn.startswith("model.layers.")

    quantize_(m, AOQATConfig(activation_config=acfg, weight_config=wcfg, step="prepare"), filter_fn=in_decoder)
    if kv_bits:
        attach_kv_quant(m, kv_bits)
    m.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    m.train()
    losses = []
    dev = next(m.parameters()).device
    for step in range(cfg.steps):
        x = blocks.batch(step, cfg.batch_size, cfg.seed).to(dev)
        loss = next_token_ce(m(input_ids=x).logits, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return m.eval(), losses

"""Tiny EdgeQAT training job for the DDP test: run plain or under ``torchrun --nproc_per_node=2``.

Usage: python tests/quant_ddp_worker.py OUT.json   (rank 0 writes the losses there)
"""

from __future__ import annotations

import json
import os
import sys

import torch


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      rope_theta=10000.0, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def tiny_blocks():
    from slimguard.slim.quant.data import TokenBlocks

    g = torch.Generator().manual_seed(1)
    # a learnable pattern (repeated short motifs) so the loss really falls in a few steps
    motif = torch.randint(0, 128, (8, 8), generator=g)
    train = motif[torch.randint(0, 8, (64, 4), generator=g)].reshape(64, 32)
    held = motif[torch.randint(0, 8, (8, 4), generator=g)].reshape(8, 32)
    return TokenBlocks(train, held, ["tiny"])


def tiny_config(**over):
    from slimguard.core.config import build
    from slimguard.slim.quant.config import QuantTrainConfig

    base = dict(model="tiny", seq_len=32, batch_size=4, steps=4, lr=3e-3, quantizer_lr=1e-3, warmup=1,
                eval_batches=2, device="cpu", qat=dict(w_bits=4, a_bits=8, kv_bits=4))
    base.update(over)
    return build(QuantTrainConfig, base)


def main(out: str) -> None:
    torch.set_num_threads(1)
    from slimguard.slim.quant.train import train

    cfg = tiny_config(steps=4, loss=dict(kd=True, entropy=True, distribution=True))
    res, _ = train(cfg, model=tiny_model(), blocks=tiny_blocks(), progress=False, do_eval=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if int(os.environ.get("RANK", "0")) == 0:
        with open(out, "w") as f:
            json.dump({"world": world, "final_loss": res.final_loss, "losses": res.losses}, f)
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

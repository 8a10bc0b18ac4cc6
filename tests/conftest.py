"""Shared fixtures: tiny random models (fast, no weights) and the real-asset guard."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SLIMGUARD_TEST_THREADS", "2")))
if not torch.cuda.is_available():
    # the fused TokenSelect kernels (tests/test_kvselect_fused.py) run under Triton's CPU interpreter; triton reads
    # the variable when it is first imported, and other libraries may import it before that test file runs
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def tiny_llama():
    """A 2-layer random Llama (GQA 4 heads / 2 KV heads) with a byte-ish vocab."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      rope_theta=10000.0, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _cached(name: str) -> bool:
    from slimguard.core import assets

    return assets.get(name).is_cached()


@pytest.fixture
def need_asset():
    """Skip (with the fetch command) when a real asset is not cached; `make test` fetches them first."""

    def need(*names: str) -> None:
        missing = [n for n in names if not _cached(n)]
        if missing:
            pytest.skip(f"assets not cached: {missing}; run `slimguard assets fetch {' '.join(missing)}`")

    return need

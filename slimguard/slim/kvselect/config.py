"""Typed config for TokenSelect (Wu et al., 2024, "TokenSelect: Efficient Long-Context
Inference and Length Extrapolation for LLMs via Dynamic Token-Level KV Cache Selection")
and for the peer selectors that run through the same attention path (``method``: any name
registered in :data:`SELECTORS`).

Reference defaults (n_init=128, k=2048, n_local=512) are for 7-8B models reading 128K+.
Our defaults are scaled to 135M-270M models with 8K-32K trained windows: a budget of
64 + 1024 + 512 = 1,600 tokens is a fifth of SmolLM2's trained window, so every selected
sequence stays well inside the positions the model saw in training.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from ...core.config import Config
from ...core.registry import Registry

# name -> Selector class (selectors/, one file each). Filled when the selectors package is first imported, so this
# config (and a benchmark config nesting its names) stays importable without torch.
SELECTORS = Registry("selector", load="slimguard.slim.kvselect.selectors")
Method = SELECTORS.name_type()


class TokenSelectConfig(Config):
    """How attention picks the KV entries each query chunk (or decode step) may read."""

    method: Method = Field("tokenselect", description=(
        "Selector: tokenselect (per-head Q.K soft voting), dense (exact SDPA), streaming (sink + window), "
        "h2o (accumulated-attention heavy hitters, evicting), quest (page min/max bounds), random, "
        "oracle (per-head top-k of the true attention)."))
    n_init: int = Field(64, ge=0, description="Leading 'attention sink' tokens always kept.")
    k: int = Field(1024, ge=1, description="Selected middle tokens per layer (the dynamic budget).")
    n_local: int = Field(512, ge=1, description="Most recent tokens always kept; must cover one prefill chunk.")
    chunk_size: int = Field(512, ge=1, description="Prefill query chunk: one selection per chunk of this many queries.")
    tail_chunk: int = Field(16, ge=0, description=(
        "The last this-many prompt tokens (the question) form their own prefill chunk with their own selection; "
        "0 keeps plain chunking."))
    cache_threshold: Optional[float] = Field(0.9, gt=0.0, le=1.0, description=(
        "Selection Cache: reuse the previous decode step's top-k while cos(q_t, q_cached) >= this; "
        "null disables the cache. 1.0 effectively never hits."))
    pool_kernel: int = Field(1, ge=1, description="Odd max-pool width over neighbouring token scores (1 = off).")
    vote_queries: int = Field(64, ge=0, description=(
        "Chunks of at most this many queries (the question tail) soft-vote with each query, summing the "
        "softmax over heads and queries; longer chunks score their mean query. 0 always uses the mean."))
    score_distance: int = Field(0, ge=0, description=(
        "Scoring is position-free: keys are scored un-rotated, the query rotated as if every candidate sat "
        "this many tokens away."))
    score_layers: Optional[list[int]] = Field(None, description=(
        "Layers that score and select; every other selecting layer reuses the selection of the nearest "
        "scoring layer before it (same chunk). null: every layer scores its own."))
    score_dtype: Optional[Literal["float32", "bfloat16", "float16", "int8"]] = Field(None, description=(
        "dtype of the un-rotated key copy that scoring reads; null: the KV cache's dtype. bfloat16 halves "
        "the bytes each selection reads; int8 (one scale per key and head, queries quantized per row, integer "
        "product) quarters them. The attended keys always stay in the cache's dtype."))
    kernel: Literal["auto", "torch", "cpp", "triton"] = Field("auto", description=(
        "Selection kernels: 'cpp' fuses the vote, top-k, gather-and-rotate and decode attention "
        "(kernels.cpp, built once with the machine's C++ compiler; float32 batch-1 CPU caches), 'triton' runs "
        "TokenSelect as a fixed chain of Triton kernels over static buffers (fused.py; batch 1, CUDA, or the CPU "
        "under TRITON_INTERPRET=1 for parity checks), 'torch' is the plain PyTorch reference, 'auto' uses triton "
        "on a CUDA device when it is installed and applies, cpp on the CPU where it can be built and applies."))
    positions: Literal["compact", "original", "auto"] = Field("compact", description=(
        "RoPE positions of the selected keys: 'compact' re-numbers them 0..S-1 (the paper: any context length "
        "stays inside the trained window), 'original' keeps the positions they have in the context, 'auto' keeps "
        "them while the context fits the model's trained window and compacts beyond it."))
    page_size: int = Field(16, ge=1, description="Quest page size (tokens per min/max page).")
    quest_per_head: bool = Field(False, description=(
        "Quest: every query head picks its own pages (the paper's multi-head form) instead of one page set per KV "
        "head from the group's summed bounds."))
    seed: int = Field(0, description="Seed of the random selector's torch.Generator.")
    record: bool = Field(False, description="Keep each layer's selected indices of the last selection (for plots).")

    @model_validator(mode="after")
    def _check(self) -> "TokenSelectConfig":
        if self.pool_kernel % 2 == 0:
            raise ValueError(f"pool_kernel must be odd (1 disables smoothing), got {self.pool_kernel}")
        if self.n_local < self.chunk_size:
            raise ValueError(
                f"n_local ({self.n_local}) must be >= chunk_size ({self.chunk_size}) so each prefill chunk "
                "sees itself; raise n_local or lower chunk_size")
        if self.score_layers is not None and (not self.score_layers or min(self.score_layers) < 0):
            raise ValueError(f"score_layers must list layer indices >= 0 (or be null), got {self.score_layers}")
        if self.method == "quest" and self.k < self.page_size:
            raise ValueError(f"quest needs k >= page_size ({self.page_size}), got k={self.k}")
        return self

    @property
    def budget(self) -> int:
        """Tokens one query attends to once the context exceeds the budget."""
        return self.n_init + self.k + self.n_local


def defaults_for(model_config) -> dict:
    """Defaults scaled to the model (``slimguard longctx generate`` applies them under any user setting).

    Models trained on >= 32K (measured on Gemma-3-270M) read best through a small,
    needle-shaped selection: k=512 with max-pool 31, so a high-scoring token brings its
    sentence along. On 20 seeded essay passkey cases at 16K this scored 0.75; the earlier
    k=2048, unpooled setting scored 0.30 (n=10, with the older question and mean fingerprint;
    docs/kvselect.md). Other models keep a budget of about a fifth of the trained window
    (SmolLM2: 64 + 1,024 + 512 of 8K). Models that interleave sliding-window and global layers
    score on the first global layer only and the later ones reuse its selection: on Gemma-3-270M
    layer 11 often missed the needle that layer 5 had selected (docs/kvselect.md, shared selection).
    Every model scores with int8 keys (one scale per key and head): 68 instead of 256 bytes per
    key and head at d=64, and on those 20 Gemma-3 cases at 16K the same answer as float32 and
    bfloat16 scoring in every case.
    """
    trained = int(getattr(model_config, "max_position_embeddings", 8192) or 8192)
    out = {"n_init": 64, "k": 512, "n_local": 512, "pool_kernel": 31} if trained >= 32768 else \
        {"n_init": 64, "k": 1024, "n_local": 512}
    out["score_dtype"] = "int8"
    types = list(getattr(model_config, "layer_types", None) or [])
    if "sliding_attention" in types and "full_attention" in types:
        # interleaved local/global models: the first global layer scores for all of them
        out["score_layers"] = [types.index("full_attention")]
    return out

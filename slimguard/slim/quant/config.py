"""Typed configs for EdgeQAT (Shen et al., 2024): what to quantize, how to train, how to export."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from ...core.config import Config

BITS = (2, 3, 4, 8)


def _check_bits(v: Optional[int], name: str) -> Optional[int]:
    if v is not None and v not in BITS:
        raise ValueError(f"{name} must be one of {BITS} (or null to keep full precision), got {v}")
    return v


class QATConfig(Config):
    """Where and how finely to fake-quantize a Llama-family model (W{w}A{a}KV{kv})."""

    w_bits: int = Field(4, description="Bits for all 7 linear layers of every decoder block (2, 3, 4 or 8).")
    a_bits: Optional[int] = Field(8, description="Bits for activations: attention input, Q, MLP input, act(gate)*up, "
                                                 "o_proj input. null = full precision.")
    kv_bits: Optional[int] = Field(None, description="Bits for K (after RoPE) and V as they enter the cache; "
                                                     "null = use a_bits.")
    prob_bits: Optional[int] = Field(8, description="Bits for the softmax probabilities; null = full precision.")
    granularity: Literal["tensor", "channel", "group"] = Field(
        "group", description="Weight step granularity; 'group' with group_size 32 and w_bits 4 maps onto llama.cpp Q4_0.")
    group_size: int = Field(32, description="Inputs per weight step when granularity='group'; must divide every "
                                            "linear's input size.")
    act_granularity: Literal["tensor", "token"] = Field(
        "token", description="Hidden-state activations: 'tensor' = static LSQ+ step/offset (the paper); 'token' = "
                             "dynamic per-token absmax with a learned clip ratio (what integer runtimes do).")
    qkv_granularity: Literal["tensor", "channel", "token"] = Field(
        "token", description="Q, K, V quantizers: static LSQ+ per tensor or per (head, channel), or 'token' = dynamic "
                             "per token and 32-wide block of head_dim (the block layout of llama.cpp's q4_0/q8_0 "
                             "KV cache; its scale rule differs slightly).")
    weight_init: Literal["mse", "lsq", "absmax"] = Field(
        "mse", description="Weight step init: per-granule MSE-optimal clipping of max|W|/Qp (default; LSQ's "
                           "2*mean|W|/sqrt(Qp) is far too coarse for 32-wide groups), LSQ's, or round-to-nearest.")
    act_init: Literal["mse", "minmax"] = Field(
        "mse", description="Activation step/offset init on the calibration batch: LSQ+'s MSE-optimal clipping, or "
                           "plain min/max.")
    learn_steps: bool = Field(True, description="Learn quantizer steps/offsets (False freezes them: plain PTQ).")
    quantize_o_input: bool = Field(True, description="Also quantize o_proj's input, so every linear has an integer input.")
    token_adaptive: bool = Field(False, description="Token-importance-aware adaptive activation bits.")
    adaptive_low_bits: int = Field(4, description="Bits for the low-importance tokens.")
    adaptive_fraction: float = Field(0.5, description="Fraction of tokens (lowest sink-logit score) at adaptive_low_bits.")
    adaptive_control: Literal["sink", "random"] = Field(
        "sink", description="'sink' scores tokens by their attention logit to the first token; 'random' is the control "
                            "that picks the same fraction at random.")

    @field_validator("w_bits")
    @classmethod
    def _w(cls, v):
        if v not in BITS:
            raise ValueError(f"w_bits must be one of {BITS}, got {v}")
        return v

    @field_validator("a_bits", "kv_bits", "prob_bits")
    @classmethod
    def _a(cls, v, info):
        return _check_bits(v, info.field_name)

    @field_validator("adaptive_low_bits")
    @classmethod
    def _low(cls, v):
        if v not in BITS:
            raise ValueError(f"adaptive_low_bits must be one of {BITS}, got {v}")
        return v

    @field_validator("group_size")
    @classmethod
    def _gs(cls, v):
        if v < 1:
            raise ValueError("group_size must be >= 1")
        return v

    @field_validator("adaptive_fraction")
    @classmethod
    def _frac(cls, v):
        if not 0.0 < v < 1.0:
            raise ValueError("adaptive_fraction must be in (0, 1)")
        return v

    @model_validator(mode="after")
    def _adaptive_needs_acts(self):
        if self.token_adaptive and self.a_bits is None:
            raise ValueError("token_adaptive needs a_bits (there are no activation quantizers to adapt)")
        return self

    @property
    def effective_kv_bits(self) -> Optional[int]:
        return self.kv_bits if self.kv_bits is not None else self.a_bits

    def tag(self) -> str:
        a = f"A{self.a_bits}" if self.a_bits else "A16"
        kv = f"KV{self.kv_bits}" if self.kv_bits else ""
        return f"W{self.w_bits}{a}{kv}"


class LossConfig(Config):
    """EdgeQAT loss: a*CE + (1-a)*T^2*KL + L_attn + L_ent, each switchable."""

    ce: bool = Field(True, description="Cross-entropy on the next token.")
    kd: bool = Field(False, description="Distillation from the full-precision teacher (KL at temperature T).")
    kd_alpha: float = Field(0.5, description="a: weight of CE; KD gets (1-a). Ignored unless both ce and kd are on.")
    kd_temperature: float = Field(2.0, description="T for distillation.")
    entropy: bool = Field(False, description="Entropy guidance: maximise the Gaussian entropy of quantized Q and K.")
    entropy_weight: float = Field(1.0, description="Multiplier on L_ent.")
    entropy_cap: Literal["none", "teacher"] = Field(
        "none", description="'none' maximises the entropy term without bound, as the paper does; 'teacher' counts "
                            "each layer's term only up to the full-precision teacher's value, so L_ent restores "
                            "entropy lost to quantization and stops there (at 300 steps the uncapped term overshoots "
                            "FP's and costs perplexity and KL).")
    distribution: bool = Field(False, description="Distribution guidance: match the teacher's pre-softmax attention logits.")
    distribution_weight: float = Field(1.0, description="Multiplier on L_attn.")
    distribution_sign: Literal["intended", "reference"] = Field(
        "intended", description="'intended' minimises 1 - mean cos (pulls logits toward the teacher); 'reference' "
                                "reproduces the released code's log(sum cos), which pushes them apart (ablation).")

    @model_validator(mode="after")
    def _some_loss(self):
        if not (self.ce or self.kd):
            raise ValueError("at least one of ce or kd must be on (the guidance losses alone do not train the LM)")
        if self.kd_temperature <= 0 or not 0 <= self.kd_alpha <= 1:
            raise ValueError("kd_temperature must be > 0 and kd_alpha in [0, 1]")
        return self

    @property
    def needs_teacher(self) -> bool:
        return self.kd or self.distribution or self.capped_entropy

    @property
    def capped_entropy(self) -> bool:
        return self.entropy and self.entropy_cap == "teacher"


class QuantTrainConfig(Config):
    """``slimguard quant train``: QAT of a causal LM on long text, with held-out perplexity."""

    model: str = Field("smollm2-135m", description="Asset name or local transformers directory (Llama family).")
    qat: QATConfig = Field(default_factory=QATConfig, description="Quantization settings.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Loss terms.")
    datasets: list[str] = Field(default_factory=lambda: ["pg-essays"],
                                description="Long-text assets or .txt files/folders to train on.")
    eval_dataset: str = Field("pg-essays", description="Long-text asset whose held-out documents give the perplexity.")
    eval_frac: float = Field(0.15, description="Fraction of documents of each dataset held out for evaluation.")
    seq_len: int = Field(128, description="Tokens per training sequence.")
    batch_size: int = Field(4, description="Sequences per step (global: split across DDP ranks).")
    steps: int = Field(100, description="Optimizer steps.")
    lr: float = Field(2.5e-5, description="Peak learning rate for the weights (cosine schedule).")
    quantizer_lr: float = Field(1e-3, description="Peak learning rate for quantizer offsets and clip ratios, and for "
                                                  "4-bit steps; a b-bit step uses it times the ratio of level counts "
                                                  "(7/127 for an 8-bit weight step), because Adam moves every "
                                                  "parameter by ~lr whatever its gradient scale.")
    warmup: int = Field(10, description="Linear warm-up steps.")
    weight_decay: float = Field(0.0, description="AdamW weight decay on linear weights (reference recipe: 0.1).")
    eval_batches: int = Field(8, description="Held-out sequences (x batch_size) for perplexity and KL.")
    checkpoint_every: int = Field(25, description="Write a resumable checkpoint every N steps (and at the end).")
    seed: int = Field(0, description="Seed for data order, random-token control and init.")
    device: str = Field("auto", description="'cpu', 'cuda' or 'auto'.")

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("seq_len", "batch_size", "steps", "eval_batches", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.warmup < 0 or self.lr <= 0 or self.quantizer_lr < 0:
            raise ValueError("warmup must be >= 0, lr > 0 and quantizer_lr >= 0")
        if not 0 < self.eval_frac < 1:
            raise ValueError("eval_frac must be in (0, 1)")
        if not self.datasets:
            raise ValueError("datasets must name at least one long-text source")
        return self


class ExportConfig(Config):
    """``slimguard quant export``: a trained run -> GGUF (llama.cpp) or packed int4 safetensors."""

    format: Literal["gguf", "safetensors"] = Field("gguf", description="Output format.")
    embed_type: Literal["f32", "f16", "q8_0", "q4_0", "mxfp4"] = Field(
        "q8_0", description=("GGUF type of the (full-precision-trained) token embedding, which is also the tied LM head "
                             "(mxfp4: 4.25 bits per weight, power-of-two block scales; the smallest file)."))
    template_gguf: Optional[str] = Field(
        None, description="GGUF whose tokenizer/metadata to copy (default: the asset's own GGUF for asset models).")
    fuse_qkv: bool = Field(True, description=(
        "GGUF: write each layer's Q/K/V projections as one attn_qkv tensor (same logits in llama.cpp, one matrix "
        "product instead of three: ~10% faster Q4_0 decode on 2 CPU cores). false: separate tensors, for readers "
        "without fused-QKV Llama support (transformers' gguf_file=, older llama.cpp)."))

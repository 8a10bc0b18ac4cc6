"""Typed configs for LLMLingua-2 (Pan et al., 2024): data distillation, training, compression."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from ...core.config import Config

DEFAULT_INSTRUCTION = (
    "Shorten the text below by deleting unimportant words only. Rules: keep the remaining words exactly as "
    "written and in the same order; do not rephrase, reorder, abbreviate or add any word or symbol; keep names, "
    "numbers, dates and facts. Reply with the shortened text only."
)


# one source per genre the project ships (essays, dialogue, news-group posts, reviews, SMS, tweets); the news and
# fiction assets (bbc-news, grimm-tales, book-excerpts) are never distilled: `bench compress` holds them out
DISTILL_SOURCES = ["pg-essays", "friends", "20newsgroups", "rotten-tomatoes", "sms-spam", "election-tweets"]


class DistillConfig(Config):
    """``slimguard compress distill``: label 512-token chunks of long text with keep/drop word labels."""

    signal: Literal["teacher", "self-info"] = Field(
        "teacher", description="'teacher': an LLM compresses each chunk (words-only deletion) and its output is "
        "aligned back to the words; 'self-info': keep the words with the highest self-information under the causal LM.")
    teacher: str = Field("smollm2-135m", description="Local causal LM (asset name or transformers dir) used as the "
                         "teacher, and as the scorer for 'self-info'.")
    endpoint: Optional[str] = Field(None, description="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1); "
                                    "when set, the teacher is this chat endpoint instead of the local model.")
    endpoint_model: str = Field("default", description="Model name sent to the endpoint.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's API key "
                             "(optional; never stored in the run record).")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="Teacher instruction (words-only deletion).")
    sources: list[str] = Field(default_factory=lambda: list(DISTILL_SOURCES), min_length=1,
                               description="Long-text assets or .txt files/dirs to chunk (round-robin, one share each).")
    holdout_docs: int = Field(8, ge=0, description="Last N documents of each source are held out (never distilled); "
                              "the benchmark reads its documents from there.")
    chunk_tokens: int = Field(512, ge=32, le=2048, description="Chunk length in teacher-tokenizer tokens.")
    max_chunks: int = Field(60, ge=1, description="Chunks to label (spread over the sources round-robin).")
    batch_size: int = Field(4, ge=1, description="Chunks per teacher forward/generate call.")
    max_new_tokens: int = Field(256, ge=8, description="Teacher output budget per chunk.")
    self_info_keep: float = Field(0.4, gt=0, le=1, description="'self-info': fraction of words per chunk labelled keep.")
    window: int = Field(150, ge=1, description="Alignment search window (words) forward then backward.")
    filter_variation: float = Field(0.1, ge=0, lt=1, description="Drop this fraction of chunks with the highest "
                                    "variation rate (teacher words not found in the original).")
    filter_gap: float = Field(0.1, ge=0, lt=1, description="Then drop this fraction with the largest alignment gap "
                              "(hitting rate - matching rate).")
    seed: int = Field(0, description="Seed for chunk sampling.")
    out: Optional[str] = Field(None, description="Output dataset directory (default: the run directory's 'dataset/').")

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v):
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("endpoint must start with http:// or https://")
        return v.rstrip("/") if v else v


class TrainConfig(Config):
    """``slimguard compress train``: MiniLM token classifier (keep/drop) on a distilled dataset."""

    data: list[str] = Field(..., min_length=1, description="Distilled dataset directories (from `compress distill`).")
    base: str = Field("minilm-l6", description="Encoder to fine-tune (asset name or transformers dir).")
    out: Optional[str] = Field(None, description="Output model directory (default ~/.cache/slimguard/compressors/<run>).")
    max_len: int = Field(512, ge=16, le=512, description="Encoder sequence length (tokens incl. [CLS]/[SEP]).")
    batch_size: int = Field(8, ge=1, description="Sequences per step.")
    steps: int = Field(300, ge=1, description="Optimiser steps.")
    lr: float = Field(5e-5, gt=0, description="AdamW learning rate (the paper uses 1e-5 for 10 epochs; short runs "
                      "here need a larger one).")
    weight_decay: float = Field(0.01, ge=0)
    warmup: int = Field(20, ge=0, description="Linear warm-up steps.")
    freeze_layers: int = Field(0, ge=0, description="Freeze the embeddings and the first N encoder layers (cheaper "
                               "steps on CPU; 0 = train everything).")
    eval_frac: float = Field(0.1, ge=0, lt=1, description="Fraction of chunks held out for validation accuracy/F1.")
    eval_every: int = Field(0, ge=0, description="Evaluate on the held-out chunks every N steps (the eval curve in "
                            "slimguard_compressor.json; 0 = only at the end).")
    save_every: int = Field(100, ge=1, description="Checkpoint every N steps (resume with --resume).")
    seed: int = Field(0)


class CompressConfig(Config):
    """One compression call: the typed entry point behind ``PromptCompressor.compress_prompt``."""

    model: str = Field("default", description="Trained compressor directory, a name under "
                       "~/.cache/slimguard/compressors/, or 'default'.")
    rate: float = Field(0.5, description="Fraction of tokens to keep, in (0, 1].")
    target_token: int = Field(-1, description="Keep about this many tokens (overrides rate); -1 (the default, as in "
                              "llmlingua) means unset.")
    force_tokens: list[str] = Field(default_factory=list, description="Words always kept (e.g. '?', '\\n').")
    force_reserve_digit: bool = Field(False, description="Always keep words containing a digit.")
    drop_consecutive: bool = Field(False, description="Drop a force token repeating the previous kept word.")
    use_context_level_filter: bool = Field(False, description="With several contexts: drop whole low-score "
                                           "contexts first, then words.")
    rate_tokenizer: Literal["cl100k_base", "encoder"] = Field(
        "cl100k_base", description="Tokenizer that counts tokens for rate/target_token: OpenAI cl100k_base "
        "(what llmlingua counts in; loaded offline) or the encoder's own WordPiece.")
    threshold: Literal["exact", "llmlingua"] = Field(
        "exact", description="'exact': per chunk, keep the most probable words until rate x chunk tokens; "
        "'llmlingua': the reference rule (percentile int(100(1-rate)+1), strict >), for word-identical output.")
    chunk_end_tokens: list[str] = Field([".", "\n"], description="Chunks are cut back to the last of these.")
    batch_size: int = Field(16, ge=1, description="Encoder chunks per forward.")
    device: str = Field("cpu")
    dtype: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "auto", description="Encoder precision. 'float32': the reference. 'int8': ONNX Runtime with int8 weights and "
        "activations (the fast CPU path; >= 99% of words labelled as in float32, see docs/compress.md). 'bfloat16': "
        "autocast (GPUs, or CPUs with native bf16 matmuls). 'auto': int8 on a CPU with onnxruntime installed, else "
        "bfloat16 where native, else float32; always float32 with threshold='llmlingua', which promises the "
        "reference's words.")
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="Who runs the encoder: 'torch', or 'onnxruntime' (the compressor exported once to ONNX, "
        "cached next to its folder and checked against the weights' hash). 'auto': onnxruntime for int8, torch "
        "otherwise.")
    max_input_tokens: int = Field(0, ge=0, description="Refuse a prompt longer than this many encoder tokens "
                                  "(0 = no limit; `compress serve` sets one).")

    @field_validator("rate")
    @classmethod
    def _rate(cls, v):
        if not 0 < v <= 1:
            raise ValueError("rate is the kept fraction and must be in (0, 1], e.g. 0.33 for 3x compression")
        return v

    @field_validator("target_token")
    @classmethod
    def _target(cls, v):
        # llmlingua treats every value <= 0 as "unset", so a typo like -5 or 0 silently compressed at `rate`
        if v != -1 and v < 1:
            raise ValueError("target_token is the number of tokens to keep and must be >= 1 (or -1, the default, "
                             "to use rate)")
        return v

    @model_validator(mode="after")
    def _force(self):
        if len(self.force_tokens) > 100:
            raise ValueError("at most 100 force_tokens")
        if self.dtype == "int8" and self.runtime == "torch":
            raise ValueError("dtype=int8 runs on onnxruntime; set runtime=onnxruntime (or auto)")
        if self.dtype == "bfloat16" and self.runtime == "onnxruntime":
            raise ValueError("runtime=onnxruntime scores in float32 or int8; bfloat16 needs runtime=torch")
        return self


# the fields a `compress serve` request may set; the rest (model, precision, limits) are the server's
REQUEST_FIELDS = ("rate", "target_token", "force_tokens", "force_reserve_digit", "drop_consecutive",
                  "use_context_level_filter", "rate_tokenizer", "threshold", "chunk_end_tokens")


def _serve_compress() -> CompressConfig:
    return CompressConfig(max_input_tokens=131072)


class ServeConfig(Config):
    """``slimguard compress serve``: one loaded compressor answering concurrent JSON requests over HTTP."""

    compress: CompressConfig = Field(default_factory=_serve_compress, description="The compressor and the "
                                     "defaults of every request (a request may override the fields in "
                                     "REQUEST_FIELDS); max_input_tokens bounds one request's work.")
    host: str = Field("127.0.0.1", description="Address to bind (127.0.0.1: this machine only).")
    port: int = Field(8750, ge=0, le=65535, description="TCP port (0: any free port; the run's server.json says which).")
    max_queue: int = Field(32, ge=1, description="Requests waiting for the model; one more is refused with 503.")
    workers: int = Field(1, ge=1, le=64, description="Requests compressed at once (each uses the configured "
                         "threads; 1 is fastest per request on a small CPU).")
    max_body_bytes: int = Field(4 << 20, ge=1024, description="Largest request body accepted (413 above).")
    timeout_s: float = Field(300.0, gt=0, description="A request not answered within this is failed with 504.")
    max_requests: int = Field(0, ge=0, description="Stop after answering this many requests (0: until Ctrl-C).")
    load_concurrency: list[int] = Field([1, 4, 16], min_length=1, description="--load-test: concurrent clients "
                                        "per level.")
    load_requests: int = Field(48, ge=1, le=10000, description="--load-test: requests per concurrency level.")

    @field_validator("load_concurrency")
    @classmethod
    def _levels(cls, v):
        if any(c < 1 or c > 256 for c in v):
            raise ValueError("each concurrency level must be in [1, 256]")
        return v

"""LLMLingua-2 prompt compression (Pan et al., 2024, "LLMLingua-2: Data Distillation for
Efficient and Faithful Task-Agnostic Prompt Compression"): keep/drop token classification
with a small bidirectional encoder, trained on labels distilled from a causal LM.

Pipeline: :func:`distill` (teacher LLM or self-information labels, aligned to words and
quality-filtered) -> :func:`train` (MiniLM token classifier) -> :class:`PromptCompressor`
(``compress_prompt`` with llmlingua's keywords, or :func:`compress` with a typed config).
Importing this package is light; torch/transformers load inside the functions.
"""

from .config import CompressConfig, DistillConfig, TrainConfig

__all__ = ["CompressConfig", "DistillConfig", "TrainConfig", "PromptCompressor", "CompressResult", "compress",
           "distill", "train"]


def __getattr__(name):  # lazy: keep `import slimguard.slim.compress` free of torch
    if name in ("PromptCompressor", "CompressResult", "compress"):
        from . import compressor

        return getattr(compressor, name)
    if name == "distill":
        from .distill import distill

        return distill
    if name == "train":
        from .train import train

        return train
    raise AttributeError(name)

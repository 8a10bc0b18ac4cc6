"""Efficiency side: quantization-aware training, KV-cache selection, prompt compression."""

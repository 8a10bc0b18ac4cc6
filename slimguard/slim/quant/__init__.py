"""EdgeQAT: entropy- and distribution-guided quantization-aware training (Shen et al., "EdgeQAT", 2024).

torchao-shaped API::

    from slimguard.slim.quant import QATConfig, prepare_qat, convert
    model = prepare_qat(model, QATConfig(w_bits=4, a_bits=8, kv_bits=4, group_size=32))
    ...train...
    convert(model)

Heavy modules import torch; this package file stays light and re-exports lazily.
"""

from __future__ import annotations

from .config import ExportConfig, QATConfig, QuantTrainConfig

__all__ = ["QATConfig", "QuantTrainConfig", "ExportConfig", "prepare_qat", "convert"]


def __getattr__(name):
    if name in ("prepare_qat", "convert"):
        from . import prepare

        return getattr(prepare, name)
    raise AttributeError(name)

"""TokenSelect: dynamic token-level KV cache selection (Wu et al., 2024) for transformers models.

Public API: :class:`TokenSelectConfig`, :func:`enable_token_select`, :func:`disable_token_select`.
The attention code (and torch) loads on first use, so importing the config stays light.
"""

from .config import METHODS, TokenSelectConfig

__all__ = ["TokenSelectConfig", "enable_token_select", "disable_token_select", "TokenSelectRuntime", "METHODS"]


def __getattr__(name: str):
    if name in ("TokenSelectRuntime", "disable_token_select", "enable_token_select"):
        from . import attention

        return getattr(attention, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

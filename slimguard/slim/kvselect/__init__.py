"""TokenSelect: dynamic token-level KV cache selection (Wu et al., 2024) for transformers models.

Public API: :class:`TokenSelectConfig`, :func:`enable_token_select`, :func:`disable_token_select`.
"""

from .attention import TokenSelectRuntime, disable_token_select, enable_token_select
from .config import METHODS, TokenSelectConfig

__all__ = ["TokenSelectConfig", "enable_token_select", "disable_token_select", "TokenSelectRuntime", "METHODS"]

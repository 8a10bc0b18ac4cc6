"""TokenSelect: dynamic token-level KV cache selection (Wu et al., 2024) for transformers models.

Public API: :class:`TokenSelectConfig`, :func:`enable_token_select`, :func:`disable_token_select`,
and the input checks of long-context generation (:func:`read_context`, :func:`long_input`).
"""

from .attention import TokenSelectRuntime, disable_token_select, enable_token_select
from .config import METHODS, TokenSelectConfig
from .context import check_context, long_input, read_context

__all__ = ["TokenSelectConfig", "enable_token_select", "disable_token_select", "TokenSelectRuntime", "METHODS",
           "read_context", "check_context", "long_input"]

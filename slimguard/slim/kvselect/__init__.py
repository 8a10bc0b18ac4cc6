"""TokenSelect: dynamic token-level KV cache selection (Wu et al., 2024) for transformers models.

Public API: :class:`TokenSelectConfig`, :func:`enable_token_select`, :func:`disable_token_select`,
:data:`SELECTORS` (TokenSelect and its peers, one file each under :mod:`.selectors`), and the input
checks of long-context generation (:func:`read_context`, :func:`long_input`).
The attention code imports torch; this package file stays light and re-exports it lazily.
"""

from __future__ import annotations

from .config import SELECTORS, TokenSelectConfig
from .context import check_context, long_input, read_context

__all__ = ["TokenSelectConfig", "enable_token_select", "disable_token_select", "TokenSelectRuntime", "SELECTORS",
           "read_context", "check_context", "long_input"]


def __getattr__(name):
    if name in ("TokenSelectRuntime", "enable_token_select", "disable_token_select"):
        from . import attention

        return getattr(attention, name)
    raise AttributeError(name)

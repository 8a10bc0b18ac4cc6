"""The interface every KV selector implements, and the ``SELECTORS`` registry.

A selector decides which middle tokens (between the ``n_init`` sink tokens and the
``n_local`` recent ones) a query chunk may read, once the context exceeds the budget; the
attention path (:mod:`..attention`) does the rest (compaction, RoPE re-numbering, attention)
the same way for all of them. Each selector lives in its own file and registers itself::

    @SELECTORS.register("streaming")
    class Streaming(Selector): ...

``TokenSelectConfig.method`` accepts exactly the registered names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from ..config import SELECTORS, Method

if TYPE_CHECKING:
    from ..attention import LayerState

__all__ = ["SELECTORS", "Method", "Selector", "span"]


class Selector:
    """Stateless policy; per-layer state (caches, running scores) lives on the :class:`LayerState`."""

    exact: ClassVar[bool] = False  # never selects: exact attention at any length (the dense reference)
    sorted_middle: ClassVar[bool] = False  # middle() returns ascending indices (no sort before gathering)
    needs_weights: ClassVar[bool] = False  # observe() reads the attention weights of every selection
    fields: ClassVar[tuple[str, ...]] = ()  # TokenSelectConfig fields that only this selector reads

    @staticmethod
    def middle(st: "LayerState", q: torch.Tensor, key: torch.Tensor, nk: int, q0: int, scaling: float,
               decode: bool) -> torch.Tensor:
        """Indices of the selected middle tokens, ``[B, H, k]`` (H = 1 shared, Hkv or Hq per head).

        ``q [B, Hq, C, d]`` is the chunk's (rotated) queries at positions ``q0..q0+C``, ``key`` the
        whole cache ``[B, Hkv, N, d]`` of which the first ``nk`` keys are visible to the chunk.
        """
        raise NotImplementedError

    @staticmethod
    def observe(st: "LayerState", weights: torch.Tensor, idx: torch.Tensor, nk: int) -> None:
        """See the attention weights ``[B, H, C, S]`` over the selected keys ``idx [B, H, S]`` (needs_weights)."""


def span(st: "LayerState", nk: int) -> tuple[int, int]:
    """``[lo, hi)``: the middle a selector chooses from, between the sink tokens and the local window."""
    cfg = st.runtime.cfg
    return cfg.n_init, nk - cfg.n_local

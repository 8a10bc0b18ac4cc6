"""KV selectors, one file each, registered in :data:`SELECTORS`: TokenSelect and the peers it is
compared with at equal budget (dense reference, StreamingLLM, H2O, Quest, random, oracle).
"""

# the selector files register themselves on import: this order is SELECTORS' order (CLI help, bench grids)
from . import tokenselect, dense, streaming, h2o, quest, random_tokens, oracle  # noqa: F401, I001  isort: skip
from .base import SELECTORS, Selector

__all__ = ["SELECTORS", "Selector"]

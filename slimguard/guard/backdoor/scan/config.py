"""The scan's typed config: the shared policy plus one sub-config per registered method.

Built from the registry, like the poisoning recipe, so a method adds its settings (and its
threshold) by registering (``dbs.steps``, ``greedy.queries``, ``dbs.threshold``).
"""

from __future__ import annotations

from .base import SCANNERS, ScanPolicy

ScanConfig = SCANNERS.config_with_methods(
    ScanPolicy, "ScanConfig", __name__, "Model-level backdoor scan: which inversion method, on which clean samples, "
    "and the decision threshold.")

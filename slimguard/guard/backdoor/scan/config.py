"""The scan's typed config: the shared policy plus one sub-config per registered method.

Built from the registry, like the poisoning recipe, so a method adds its settings (and its
threshold) by registering (``dbs.steps``, ``greedy.queries``, ``dbs.threshold``).
"""

from __future__ import annotations

from pydantic import Field, create_model

from .base import SCANNERS, ScanPolicy


def _scan_config() -> type[ScanPolicy]:
    clash = [n for n in SCANNERS.names() if n in ScanPolicy.model_fields]
    if clash:
        raise ValueError(f"scan method names {clash} clash with ScanConfig's own fields")
    subs = {name: (cls.config_type, Field(default_factory=cls.config_type, description=f"{cls.title} settings."))
            for name, cls in SCANNERS.items()}
    return create_model("ScanConfig", __base__=ScanPolicy, __module__=__name__,
                        __doc__="Model-level backdoor scan: which inversion method, on which clean samples, "
                                "and the decision threshold.", **subs)


ScanConfig = _scan_config()

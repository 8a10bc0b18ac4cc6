"""The record a capability's demo step returns: headline numbers and an HTML fragment.

It lives in ``report`` (a leaf the library may use) rather than in ``slimguard.demo``, so that
each capability's ``demo`` module can build one without importing the demo runner above it;
``slimguard.demo`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepResult:
    """What one demo step shows: headline numbers (vs baselines) and an HTML fragment."""

    title: str
    summary: list[dict] = field(default_factory=list)  # rows: {"metric":..., "slimguard":..., "baseline":...}
    html: str = ""

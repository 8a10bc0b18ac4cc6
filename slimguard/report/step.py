"""The record a capability's demo step returns: what the method should do, what this run shows,
the summary numbers against their baselines, and an HTML fragment.

It lives in ``report`` (a leaf the library may use) rather than in ``slimguard.demo``, so that
each capability's ``demo`` module can build one without importing the demo runner above it;
``slimguard.demo`` re-exports it.

Every summary number names its baseline (the undefended model, dense attention, random drop at the
same rate, ...) or says why none applies; :class:`SummaryRow` refuses a row with neither, so a
page cannot show a bare number::

    >>> SummaryRow("answer retention at 3x", 0.9, n=12, baseline=0.33, baseline_name="random drop, same rate").n
    12
    >>> SummaryRow("load seconds", 0.4)
    Traceback (most recent call last):
    ...
    ValueError: summary row 'load seconds': give a baseline (with baseline_name) or say why none applies (no_baseline)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SummaryRow:
    """One number of a section's summary table and what it is measured against."""

    metric: str
    value: Any
    n: int | str | None = None  # the cases behind the value (a rate over n); None where it is not a rate
    baseline: Any = None  # the same metric for the baseline, measured in this run where possible
    baseline_name: str = ""  # what the baseline is ("dense attention, same cases")
    no_baseline: str = ""  # why no baseline applies, when there is none

    def __post_init__(self) -> None:
        if self.baseline is None and not self.no_baseline.strip():
            raise ValueError(f"summary row {self.metric!r}: give a baseline (with baseline_name) or say why none "
                             "applies (no_baseline)")
        if self.baseline is not None and not self.baseline_name.strip():
            raise ValueError(f"summary row {self.metric!r}: name the baseline (baseline_name)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepResult:
    """What one demo step shows.

    ``goal`` is one sentence on what the method should do; ``shows`` one sentence on what this run
    shows, with the key number against its baseline; ``caveat`` one line where the run is too small or
    the model too weak to show it. ``canonical`` names the ``slimguard bench`` capabilities whose
    canonical results (``benchmarks/results/<capability>.json``) the section links, and ``featured``
    the targets of those results it quotes (values are read from the JSON when the page is rendered).
    """

    title: str
    summary: list[SummaryRow] = field(default_factory=list)
    html: str = ""
    goal: str = ""
    shows: str = ""
    caveat: str = ""
    canonical: tuple[str, ...] = ()
    featured: tuple[str, ...] = ()

    def summary_dicts(self) -> list[dict]:
        return [r.to_dict() for r in self.summary]


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate ``hits/n``: small demo samples say how little they pin down.

    >>> [round(x, 2) for x in wilson(7, 12)]
    [0.32, 0.81]
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    p = hits / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / d
    return (max(0.0, c - h), min(1.0, c + h))


def rate_text(hits: int, n: int) -> str:
    """``"7/12 (0.58, 95% CI 0.32-0.81)"``: a rate with its n and interval, for sentences."""
    lo, hi = wilson(hits, n)
    return f"{hits}/{n} ({hits / n:.2f}, 95% CI {lo:.2f}-{hi:.2f})" if n else "0/0"

"""Template-attack strategies and composable recipes (``"distractor+gradient"``).

A recipe is a sequence of strategies sharing one budget and one search state, the way
TextAttack composes a recipe from parts: ``compose("distractor+gradient")``. Each strategy
registers itself in :data:`STRATEGIES` from its own file.
"""

from __future__ import annotations

# the strategy files register themselves on import: this order is STRATEGIES' order (CLI help, bench grid)
from . import gradient, char, word, distractor, random_template  # noqa: F401, I001  isort: skip
from ....core.errors import ConfigError
from ..templates import TemplateError
from .base import STRATEGIES, AttackContext, AttackState, Budget, Strategy


def compose(recipe: str) -> list[Strategy]:
    """The strategies of ``recipe`` (registered names joined by '+'), fresh instances in recipe order."""
    parts = [p.strip() for p in recipe.split("+")]
    try:
        return [STRATEGIES.get(p)() for p in parts]
    except ConfigError as e:
        # TemplateError keeps the promptattack error type; the registry's message names the part and a suggestion
        raise TemplateError(f"{e} (compose with '+', e.g. distractor+gradient)") from None


__all__ = ["AttackContext", "AttackState", "Budget", "Strategy", "STRATEGIES", "compose"]

"""Template-attack strategies and composable recipes (``"distractor+gradient"``).

A recipe is a sequence of strategies sharing one budget and one search state, the way
TextAttack composes a recipe from parts: ``compose("distractor+gradient")``.
"""

from __future__ import annotations

from ..templates import TemplateError
from .base import AttackContext, AttackState, Budget, Strategy
from .gradient import GradientSearch
from .perturb import CharPerturb, DistractorInject, RandomTemplate, WordSubstitute

STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (GradientSearch, CharPerturb, WordSubstitute,
                                                              DistractorInject, RandomTemplate)}


def compose(recipe: str) -> list[Strategy]:
    parts = [p.strip() for p in recipe.split("+")]
    bad = [p for p in parts if p not in STRATEGIES]
    if bad or not parts:
        raise TemplateError(f"unknown strategy '{bad[0] if bad else recipe}'; strategies: {', '.join(STRATEGIES)} "
                            "(compose with '+', e.g. distractor+gradient)")
    return [STRATEGIES[p]() for p in parts]


__all__ = ["AttackContext", "AttackState", "Budget", "Strategy", "STRATEGIES", "compose"]

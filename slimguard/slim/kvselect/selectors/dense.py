"""``dense``: exact scaled-dot-product attention over every cached key (the reference every
selector is measured against); it never selects, at any context length."""

from __future__ import annotations

from .base import SELECTORS, Selector


@SELECTORS.register("dense")
class Dense(Selector):
    exact = True

"""Subset selectors and their registry."""

from __future__ import annotations

from ..choices import SELECTOR_NAMES
from .base import Selection, SubsetSelector, budget_for
from .full import FullSelector
from .glister import GlisterSelector
from .random import AdaptiveRandomSelector, RandomSelector

SELECTORS: dict[str, type] = {s.name: s for s in (FullSelector, RandomSelector, AdaptiveRandomSelector, GlisterSelector)}
assert tuple(SELECTORS) == SELECTOR_NAMES, "a new selector: add its name to glister_train/choices.py (the config's choices)"


def make_selector(name: str, **options) -> SubsetSelector:
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; available: {', '.join(SELECTORS)}")
    return SELECTORS[name](**options)


__all__ = ["Selection", "SubsetSelector", "budget_for", "make_selector", "SELECTORS",
           "FullSelector", "RandomSelector", "AdaptiveRandomSelector", "GlisterSelector"]

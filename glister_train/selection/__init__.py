"""Subset selectors and their registry: one line per selector, each with its own options dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..choices import SELECTOR_NAMES
from ..errors import ConfigError
from .base import Environment, NoOptions, Selection, SubsetSelector, bind_options, budget_for
from .filtered_random import FilteredRandomSelector
from .full import FullSelector
from .glister import GlisterSelector
from .random import AdaptiveRandomSelector, RandomSelector
from .reducible_loss import ReducibleLossSelector

SELECTORS: dict[str, type] = {s.name: s for s in (
    FullSelector, RandomSelector, AdaptiveRandomSelector, FilteredRandomSelector, GlisterSelector,
    ReducibleLossSelector)}
assert tuple(SELECTORS) == SELECTOR_NAMES, "a new selector: add its name to glister_train/choices.py (the config's choices)"


def selector_options(name: str, raw: Mapping[str, Any]) -> Any:
    """The options of selector ``name`` from the config's selection keys beyond the schedule (defaults filled in)."""
    if name not in SELECTORS:
        raise ConfigError(f"selection.selector: {name!r} is not one of {', '.join(SELECTORS)}")
    return bind_options(name, SELECTORS[name].Options, raw)


def make_selector(name: str, options: Mapping[str, Any] | None = None, env: Environment | None = None,
                  train_size: int = 0) -> SubsetSelector:
    """Selector ``name`` with its options (a mapping, checked and completed here) for a run described by ``env``."""
    bound = selector_options(name, options or {})
    cls = SELECTORS[name]
    if cls.Options is NoOptions:
        return cls()
    return cls(bound, env, train_size)


__all__ = ["Environment", "Selection", "SubsetSelector", "budget_for", "make_selector", "selector_options",
           "SELECTORS", "FullSelector", "RandomSelector", "AdaptiveRandomSelector", "FilteredRandomSelector",
           "GlisterSelector", "ReducibleLossSelector"]

"""Random subsets: the baselines every selector must beat at the same cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..data import ImageData
from .base import Environment, Selection, require
from .quotas import class_quotas
from .sampling import draw

CLASS_MIXES = ("none", "size", "val_share")


@dataclass(frozen=True)
class RandomOptions:
    # the subset's class mix: none (a uniform draw from the pool) | size (per class, in proportion to its size) |
    # val_share (per class, in the validation set's mix: class-balanced random when the trusted set is balanced)
    class_budget: str = "none"

    def __post_init__(self) -> None:
        require(self.class_budget in CLASS_MIXES, "class_budget", self.class_budget, f"one of {', '.join(CLASS_MIXES)}")


def draw_in_mix(train: ImageData, val: ImageData, budget: int, mix: str, generator: torch.Generator) -> Selection:
    """A uniform subset of ``budget`` examples, per class in ``mix`` (one of CLASS_MIXES)."""
    if mix == "none":
        return Selection.uniform(torch.sort(torch.randperm(len(train), generator=generator)[:budget]).values)
    y = train.y.cpu()
    num_classes = int(max(int(y.max()), int(val.y.max())) + 1)
    quotas = class_quotas(y, budget, num_classes, mix, val.y.cpu())
    return Selection.uniform(torch.sort(draw(torch.zeros(len(y)), y, quotas, generator)).values)


class RandomSelector:
    """One uniformly random subset, drawn once and kept for the whole run."""

    name: ClassVar[str] = "random"
    reselects: ClassVar[bool] = False
    Options: ClassVar[type] = RandomOptions

    def __init__(self, options: RandomOptions = RandomOptions(), env: Environment | None = None, train_size: int = 0):
        self.options = options

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        return draw_in_mix(train, val, budget, self.options.class_budget, generator)


@dataclass(frozen=True)
class AdaptiveRandomOptions:
    # the subset's class mix: as random's, or deferred: the pool's (size) until a share balance_from of the run has
    # passed, then the validation set's (deferred re-balancing: the features learn from the pool as it is, the
    # classifier ends on the trusted set's mix)
    class_budget: str = "none"
    balance_from: float = 0.67  # with class_budget: deferred, the share of the epochs drawn in the pool's mix

    def __post_init__(self) -> None:
        mixes = (*CLASS_MIXES, "deferred")
        require(self.class_budget in mixes, "class_budget", self.class_budget, f"one of {', '.join(mixes)}")
        require(0 <= self.balance_from <= 1, "balance_from", self.balance_from, "a share of the run in [0, 1], e.g. 0.67")


class AdaptiveRandomSelector:
    """A new uniformly random subset at every selection: the baseline that is hardest to beat."""

    name: ClassVar[str] = "adaptive-random"
    reselects: ClassVar[bool] = True
    Options: ClassVar[type] = AdaptiveRandomOptions

    def __init__(self, options: AdaptiveRandomOptions = AdaptiveRandomOptions(), env: Environment | None = None,
                 train_size: int = 0):
        self.options = options
        self.progress = 0.0  # the share of the run's epochs done when the next subset is drawn

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.progress = epoch / max(epochs, 1)

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        mix = self.options.class_budget
        if mix == "deferred":
            mix = "size" if self.progress < self.options.balance_from else "val_share"
        return draw_in_mix(train, val, budget, mix, generator)

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


class RandomSelector:
    """One uniformly random subset, drawn once and kept for the whole run."""

    name: ClassVar[str] = "random"
    reselects: ClassVar[bool] = False
    Options: ClassVar[type] = RandomOptions

    def __init__(self, options: RandomOptions = RandomOptions(), env: Environment | None = None, train_size: int = 0):
        self.options = options

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        if self.options.class_budget == "none":
            return Selection.uniform(torch.sort(torch.randperm(len(train), generator=generator)[:budget]).values)
        y = train.y.cpu()
        num_classes = int(max(int(y.max()), int(val.y.max())) + 1)
        quotas = class_quotas(y, budget, num_classes, self.options.class_budget, val.y.cpu())
        return Selection.uniform(torch.sort(draw(torch.zeros(len(y)), y, quotas, generator)).values)


class AdaptiveRandomSelector(RandomSelector):
    """A new uniformly random subset at every selection: the baseline that is hardest to beat."""

    name: ClassVar[str] = "adaptive-random"
    reselects: ClassVar[bool] = True

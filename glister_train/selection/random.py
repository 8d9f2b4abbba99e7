from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..data import ImageData
from .base import NoOptions, Selection


class RandomSelector:
    """One uniformly random subset, drawn once and kept for the whole run."""

    name: ClassVar[str] = "random"
    reselects: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        return Selection.uniform(torch.sort(torch.randperm(len(train), generator=generator)[:budget]).values)


class AdaptiveRandomSelector(RandomSelector):
    """A new uniformly random subset at every selection: the baseline that is hardest to beat."""

    name: ClassVar[str] = "adaptive-random"
    reselects: ClassVar[bool] = True

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..data import ImageData
from .base import NoOptions, Selection


class FullSelector:
    """Every training example, every epoch: the baseline that fixes 100% cost and the accuracy to match."""

    name: ClassVar[str] = "full"
    reselects: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        return Selection.uniform(torch.arange(len(train)))

"""The selection contract: a selector maps (model, data, budget, generator) to a weighted subset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from ..data import ImageData


@dataclass(frozen=True)
class Selection:
    indices: torch.Tensor  # int64, unique, into the training split
    weights: torch.Tensor  # float32 > 0, same length (all ones for GLISTER)
    stats: dict[str, Any] = field(default_factory=dict)  # per-selection metrics (time, objective, ...)
    # what a selector that redraws needs to draw the next subset without another forward pass (its
    # scores); the loader keeps it, checkpoints it and hands it back to ``selector.redraw``
    cache: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.indices.dtype != torch.int64 or self.indices.ndim != 1:
            shape = tuple(self.indices.shape)
            raise ValueError(f"Selection.indices must be a 1-D int64 tensor, got {self.indices.dtype} {shape}")
        if self.weights.shape != self.indices.shape:
            raise ValueError(f"Selection.weights has shape {tuple(self.weights.shape)}, indices {tuple(self.indices.shape)}")

    def __len__(self) -> int:
        return len(self.indices)

    @staticmethod
    def uniform(indices: torch.Tensor, cache: dict[str, torch.Tensor] | None = None, **stats: Any) -> Selection:
        return Selection(indices, torch.ones(len(indices)), dict(stats), cache)


class SubsetSelector(Protocol):
    name: ClassVar[str]
    reselects: ClassVar[bool]  # False: the first subset is kept for the whole run

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        """Pure: must not change the model's parameters, mode or the global RNG state."""
        ...

# A selector may also offer ``redraw(cache, train, budget, *, generator) -> Selection``: a new subset
# from the ``cache`` of its last selection, with no model and no forward pass. The loader calls it at the
# epochs between selections when the selector's ``redraws`` attribute is true.


def budget_for(fraction: float, n: int) -> int:
    """Subset size for a fraction of ``n`` examples: rounded, at least 1, at most n."""
    return min(n, max(1, round(fraction * n)))

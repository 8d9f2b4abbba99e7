"""The selection contract: a selector maps (model, data, budget, generator) to a weighted subset."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from ..data import ImageData
from ..errors import ConfigError


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


@dataclass(frozen=True)
class Environment:
    """What a selector may need to know about the run it serves, beyond its own options."""

    mean: torch.Tensor  # the normalization of the training images
    std: torch.Tensor
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"  # of its forward passes: fp32 | bf16
    channels_last: bool = False
    batch_size: int = 64  # of its forward passes
    lr: float = 0.01  # the run's initial learning rate (GLISTER's lookahead step defaults to it)
    train_batch_size: int = 128  # the run's training batch (reducible-loss trains its trusted model with it)
    # the loop can show it every training example's logits as they are trained on: one process, eager (under
    # torchrun each rank sees its share; under torch.compile the hook on the last layer does not run)
    training_visible: bool = True


@dataclass(frozen=True)
class NoOptions:
    """A selector without options of its own."""


class SubsetSelector(Protocol):
    name: ClassVar[str]
    reselects: ClassVar[bool]  # False: the first subset is kept for the whole run
    Options: ClassVar[type]  # its frozen options dataclass: the one place for their defaults and rules

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        """Pure: must not change the model's parameters, mode or the global RNG state."""
        ...

# What else a selector may offer, each optional; the loader and the loop look for nothing else:
# - ``redraws`` (true) and ``redraw(cache, train, budget, *, generator) -> Selection``: a new subset at the epochs
#   between selections, from the ``cache`` of its last selection (which the loader keeps and checkpoints);
# - ``observes_training`` (true) and ``observe(indices, labels, logits)``: called after every training step with
#   the examples just trained on, their labels and their logits;
# - ``observe_validation(features)``: the validation set's penultimate features, computed by the evaluation with
#   the weights the next selection will see, handed over so that it need not run the validation set again;
# - ``state_dict()`` / ``load_state_dict(state)``: what it keeps between epochs, saved with each checkpoint.


def bind_options(selector: str, options_type: type, raw: Mapping[str, Any]) -> Any:
    """``raw`` (the config's selection keys beyond the schedule) as ``options_type``: each value converted to its
    field's type, a key the selector does not read a ConfigError naming the selector and the keys it does."""
    known = {f.name: f for f in dataclasses.fields(options_type)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        keys = ", ".join(known) or "none"
        raise ConfigError(f"selection.{unknown[0]}: not an option of the {selector} selector (its options: {keys}); "
                          f"drop it, or choose the selector that reads it with --selector")
    values = {}
    for key, value in raw.items():
        kind = type(known[key].default)
        name = f"selection.{key}"
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                raise ConfigError(f"{name}: expected true or false, got {value!r}")
        elif kind in (int, float):
            try:
                converted = kind(value) if not isinstance(value, bool) else None
            except (TypeError, ValueError):
                converted = None
            if converted is None or (kind is int and isinstance(value, float) and not value.is_integer()):
                raise ConfigError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
            value = converted
        elif not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        values[key] = value
    return options_type(**values)


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """An option's rule: a ConfigError naming the key, the value and what it must be."""
    if not ok:
        raise ConfigError(f"selection.{key}: {value!r} is invalid; it must be {rule}")


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def budget_for(fraction: float, n: int) -> int:
    """Subset size for a fraction of ``n`` examples: rounded, at least 1, at most n."""
    return min(n, max(1, round(fraction * n)))

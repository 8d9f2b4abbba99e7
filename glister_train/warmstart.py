"""Start from an earlier model instead of from scratch: load its weights, optionally freeze the lower stages.

``--init-from RUN_DIR_OR_MODEL`` takes the parent's architecture (its width, and its pruned widths if
it was pruned) and its weights. Weights load strictly where names and shapes match; a different
number of classes replaces the classifier (a new ``fc``, freshly initialized); any other mismatch is
an error that lists it. ``--freeze STAGE`` keeps every stage up to and including STAGE fixed
(parameters and BatchNorm statistics): ``--freeze layer3`` trains only ``layer4`` and the classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .models import read_model_file

CLASSIFIER = ("fc.weight", "fc.bias")


def parent_model_file(source: str) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ConfigError(f"model.init_from: {source!r} is neither a model file nor a run folder with model.pt")
    return path


def read_parent(source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    blob = read_model_file(parent_model_file(source), what="model.init_from:")
    return dict(blob["arch"]), blob["state_dict"]


def inherited_arch(parent: dict[str, Any], arch: dict[str, Any]) -> dict[str, Any]:
    """The parent's architecture, with this run's number of classes and input channels."""
    return {**parent, "num_classes": arch["num_classes"], "in_channels": arch.get("in_channels", 3)}


def load_parent_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy the parent's weights into ``model``; returns the names left at their initialization (a new classifier)."""
    own = model.state_dict()
    mismatched = [f"{k}: {tuple(state[k].shape)} in the parent, {tuple(v.shape)} here"
                  for k, v in own.items() if k in state and state[k].shape != v.shape and k not in CLASSIFIER]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        problems = mismatched + [f"{k}: not in the parent" for k in missing] + [f"{k}: not in this model" for k in unexpected]
        raise ConfigError(f"model.init_from: the parent's weights do not fit this model: {'; '.join(problems)}")
    fresh = [k for k in CLASSIFIER if k in own and state[k].shape != own[k].shape]
    model.load_state_dict({k: (own[k] if k in fresh else v) for k, v in state.items()})
    return fresh


def freeze(model: nn.Module, stage: str) -> list[nn.Module]:
    """Fix every stage up to and including ``stage``; returns the frozen modules (to keep in eval mode)."""
    names = [name for name, _ in model.stages()]
    if stage not in names:
        raise ConfigError(f"model.freeze: {stage!r} is not a stage of {type(model).__name__}; "
                          f"choose one of {', '.join(names)} (everything up to it is frozen)")
    frozen: list[nn.Module] = []
    for name, modules in model.stages():
        frozen.extend(modules)
        if name == stage:
            break
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def keep_frozen(frozen: list[nn.Module]) -> None:
    """After ``model.train()``: frozen BatchNorms must not update their running statistics."""
    for module in frozen:
        module.eval()


def prepare(model: nn.Module, state: dict[str, torch.Tensor] | None, source: str, stage: str,
            log) -> list[nn.Module]:
    """Load the parent's weights ``state`` (read from ``source``), if any, and freeze (if asked); returns the frozen modules."""
    if state is not None:
        fresh = load_parent_weights(model, state)
        log(f"init: weights from {parent_model_file(source)}" + (" (new classifier)" if fresh else ""))
    frozen = freeze(model, stage) if stage else []
    if frozen:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"init: frozen up to {stage}; {trainable:,} of {sum(p.numel() for p in model.parameters()):,} parameters train")
    return frozen


def describe_arch(arch: dict[str, Any]) -> str:
    pruned = " with pruned widths" if arch.get("channels") else ""
    return f"{arch['name']} width {arch['width']}{pruned}, {arch['num_classes']} classes"

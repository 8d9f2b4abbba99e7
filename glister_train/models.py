"""Models: the CIFAR ResNet-18 with a width multiplier, a tiny net for tests, and safe save/load.

Every model exposes ``embed(x)`` (the penultimate features) and ``fc`` (the final
``nn.Linear``), so a selector can take last-layer gradients without hooks:
``logits == model.fc(model.embed(x))``.

A saved model is ``{"arch": {...}, "state_dict": {...}}``: plain tensors and a
JSON-able description, loaded with ``weights_only=True`` and rebuilt here. No
pickled modules, so loading a model file never runs code from it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .io import atomic_torch_save


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 images: 3x3 stem, no max-pool, stages of width w, 2w, 4w, 8w."""

    def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


class TinyNet(nn.Module):
    """Two convolutions and a linear layer: fast enough for unit tests, same interface as ResNet18."""

    def __init__(self, num_classes: int = 10, width: int = 8, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 2, 1)
        self.fc = nn.Linear(2 * width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv2(F.relu(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


MODELS: dict[str, Callable[..., nn.Module]] = {"resnet18": ResNet18, "tiny": TinyNet}


def build(arch: dict[str, Any]) -> nn.Module:
    """``{"name": "resnet18", "num_classes": 10, "width": 64, "in_channels": 3}`` -> module."""
    name = arch["name"]
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name](num_classes=arch["num_classes"], width=arch["width"], in_channels=arch.get("in_channels", 3))


def save_model(path: str | Path, model: nn.Module, arch: dict[str, Any]) -> None:
    state = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
    atomic_torch_save({"arch": dict(arch), "state_dict": state}, path)


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model, arch)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or "arch" not in blob or "state_dict" not in blob:
        raise ValueError(f"{str(path)!r} is not a glister_train model file (expected keys 'arch' and 'state_dict')")
    model = build(blob["arch"])
    model.load_state_dict(blob["state_dict"])
    return model, blob["arch"]


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile and DDP wrap the module; the saved weights are the inner module's
    return getattr(model, "_orig_mod", getattr(model, "module", model))

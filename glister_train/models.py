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

from .errors import ModelFileError
from .io import UnreadableTorchFile, atomic_torch_save, load_tensors


class BasicBlock(nn.Module):
    """conv-bn-relu, conv-bn, plus the shortcut, relu. ``mid`` and ``cout`` differ only after pruning."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, projection: bool):
        super().__init__()
        if not projection and cin != cout:
            raise ValueError(f"an identity shortcut needs equal widths, got {cin} in and {cout} out")
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if projection:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()  # after the addition: its channels are the residual stream's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 images: 3x3 stem, no max-pool, stages of width w, 2w, 4w, 8w.

    ``channels`` maps conv names (``"conv1"``, ``"layer2.0.conv1"``, ...) to output widths other
    than the standard ones: that is how a pruned model is described and rebuilt.
    """

    def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 3,
                 channels: dict[str, int] | None = None):
        super().__init__()
        want = _widths(channels, resnet18_conv_names(), "resnet18")
        cin = want.get("conv1", width)
        self.conv1 = nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        stages = []
        for i, stride in enumerate((1, 2, 2, 2)):
            blocks = []
            for b in range(2):
                name, standard = f"layer{i + 1}.{b}", width * 2**i
                cout = want.get(f"{name}.conv2", standard)
                if f"{name}.shortcut.0" in want and want[f"{name}.shortcut.0"] != cout:
                    raise ValueError(f"{name}.shortcut.0 must be as wide as {name}.conv2 ({cout})")
                # the standard network's structure decides where projections are, whatever the widths
                projection = b == 0 and i > 0
                blocks.append(BasicBlock(cin, want.get(f"{name}.conv1", standard), cout, stride if b == 0 else 1,
                                         projection))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        """Named stages from input to output (what ``--freeze`` counts up to)."""
        return [("stem", [self.conv1, self.bn1]), ("layer1", [self.layer1]), ("layer2", [self.layer2]),
                ("layer3", [self.layer3]), ("layer4", [self.layer4]), ("fc", [self.fc])]

    def activation_sites(self) -> dict[str, list[str]]:
        """Each ReLU -> the convs whose output channels it carries (for per-filter activation statistics)."""
        sites = {"relu": ["conv1"]}
        for name in resnet18_conv_names():
            if name.endswith(".conv1") and name != "conv1":
                block = name[: -len(".conv1")]
                sites[f"{block}.relu1"] = [name]
                shortcut = [f"{block}.shortcut.0"] if block.endswith(".0") and not block.startswith("layer1") else []
                sites[f"{block}.relu2"] = [f"{block}.conv2", *shortcut]
        return sites


def resnet18_conv_names() -> list[str]:
    names = ["conv1"]
    for i in range(1, 5):
        for b in range(2):
            names += [f"layer{i}.{b}.conv1", f"layer{i}.{b}.conv2"] + ([f"layer{i}.{b}.shortcut.0"] if b == 0 and i > 1 else [])
    return names


class TinyNet(nn.Module):
    """Two convolutions and a linear layer: fast enough for unit tests, same interface as ResNet18."""

    def __init__(self, num_classes: int = 10, width: int = 8, in_channels: int = 3,
                 channels: dict[str, int] | None = None):
        super().__init__()
        want = _widths(channels, ["conv1", "conv2"], "tiny")
        c1, c2 = want.get("conv1", width), want.get("conv2", 2 * width)
        self.conv1 = nn.Conv2d(in_channels, c1, 3, 1, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c1, c2, 3, 2, 1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(c2, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        return [("conv1", [self.conv1]), ("conv2", [self.conv2]), ("fc", [self.fc])]

    def activation_sites(self) -> dict[str, list[str]]:
        return {"relu1": ["conv1"], "relu2": ["conv2"]}


def _widths(channels: dict[str, int] | None, known: list[str], model: str) -> dict[str, int]:
    channels = dict(channels or {})
    unknown = sorted(set(channels) - set(known))
    if unknown:
        raise ValueError(f"{model}: no conv layer named {', '.join(unknown)}; known: {', '.join(known)}")
    bad = {k: v for k, v in channels.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"{model}: conv widths must be positive integers, got {bad}")
    return channels


def conv_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv layer, by name: the ``channels`` entry of a pruned model's arch."""
    return {name: m.out_channels for name, m in unwrap(model).named_modules() if isinstance(m, nn.Conv2d)}


MODELS: dict[str, Callable[..., nn.Module]] = {"resnet18": ResNet18, "tiny": TinyNet}


def build(arch: dict[str, Any]) -> nn.Module:
    """``{"name": "resnet18", "num_classes": 10, "width": 64, "in_channels": 3}`` -> module.

    An optional ``"channels": {conv name: width}`` gives non-standard widths (pruned models).
    """
    name = arch["name"]
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name](num_classes=arch["num_classes"], width=arch["width"], in_channels=arch.get("in_channels", 3),
                        channels=arch.get("channels"))


def save_model(path: str | Path, model: nn.Module, arch: dict[str, Any]) -> None:
    state = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
    atomic_torch_save({"arch": dict(arch), "state_dict": state}, path)


def read_model_file(path: str | Path, map_location: str = "cpu", what: str = "model file") -> dict[str, Any]:
    """The ``{"arch", "state_dict"}`` of a file written by :func:`save_model`; anything else is a one-line
    :class:`ModelFileError` (never torch's advice to load untrusted pickles with ``weights_only=False``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{what} {str(path)!r} does not exist")
    try:
        blob = load_tensors(path, map_location)
    except UnreadableTorchFile as exc:
        fix = ". Use a model.pt written by glister_train" if exc.code else ""
        raise ModelFileError(f"{what} {str(path)!r}: {exc}{fix}") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("arch"), dict) or not isinstance(blob.get("state_dict"), dict):
        raise ModelFileError(f"{what} {str(path)!r} is not a glister_train model file (expected keys 'arch' and "
                             "'state_dict'; a checkpoint.pt is not a model: use the run's model.pt)")
    return blob


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model, arch)``."""
    blob = read_model_file(path, map_location)
    try:
        model = build(blob["arch"])
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # an unknown architecture, or weights of another shape
        raise ModelFileError(f"model file {str(path)!r} does not rebuild: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    return model, blob["arch"]


def unwrap(model: nn.Module) -> nn.Module:
    # torch.compile and DDP wrap the module; the saved weights are the inner module's
    return getattr(model, "_orig_mod", getattr(model, "module", model))


def last_layer_parts(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Linear]:
    """(features function, final linear layer) of a model with ``embed`` and ``fc`` (unwrapping DDP and
    torch.compile): what a selector reads the penultimate features and logits from."""
    model = unwrap(model)
    if not hasattr(model, "embed") or not isinstance(getattr(model, "fc", None), nn.Linear):
        raise TypeError(f"{type(model).__name__} has no embed()/fc: selection needs the penultimate features and the "
                        "final nn.Linear (wrap other models with glister_train.compat.cords)")
    return model.embed, model.fc

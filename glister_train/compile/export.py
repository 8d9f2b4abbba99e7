"""Exports: traced TorchScript in Neo's ``model.tar.gz`` layout, and ONNX with a dynamic batch dimension."""

from __future__ import annotations

import json
import tarfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError

INPUT_NAME = "input0"  # Neo's DataInputConfig and the ONNX graph use the same input name


def export_torchscript(model: nn.Module, shape: tuple[int, ...], out: Path) -> Path:
    """``out/model.pth`` (traced, float32) packed into ``out/model.tar.gz`` with ``neo_input.json``.

    Neo expects exactly one TorchScript file at the root of the tarball; the input shape it needs
    (``DataInputConfig``) is recorded beside it.
    """
    out.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, *shape))
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.14, but it is what Neo reads
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model.float().eval(), example)
        traced.save(str(out / "model.pth"))
    (out / "neo_input.json").write_text(json.dumps(data_input_config(shape)))
    with tarfile.open(out / "model.tar.gz", "w:gz") as tar:
        tar.add(out / "model.pth", arcname="model.pth")
    return out / "model.tar.gz"


def data_input_config(shape: tuple[int, ...]) -> dict[str, list[int]]:
    return {INPUT_NAME: [1, *shape]}


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """ONNX (torch.export-based exporter, one file), batch dimension dynamic, checked by onnx's checker."""
    onnx = require("onnx", "compile")
    require("onnxscript", "compile")
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((2, *shape))  # a batch of 1 would fix the dimension
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
        torch.onnx.export(model.float().eval(), (example,), str(path), dynamo=True, input_names=[INPUT_NAME],
                          output_names=["logits"], dynamic_shapes={"x": {0: batch}}, external_data=False,
                          verbose=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"this needs the {module} package: pip install 'glister-train[{extra}]'") from None

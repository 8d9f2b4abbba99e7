"""Compile backends. Each turns an eager model into files in its folder and a function that runs them.

A backend is ``build(model, ctx, out) -> Compiled``; ``Compiled.run`` maps a float32 NCHW numpy batch
(normalized like the training images) to logits. Each backend imports its package only when used,
so a missing one is a clear error naming the extra to install.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..runtime import cpu_has_fast_bf16
from .export import INPUT_NAME, export_onnx, export_torchscript, require

TVM_TARGETS = {
    "llvm": {"kind": "llvm"},
    # a cross-compile: the library is built for 64-bit ARM Linux and not run here
    "aarch64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
}


@dataclass
class BuildContext:
    shape: tuple[int, ...]  # one input, without the batch dimension
    threads: int
    precision: str  # auto | fp32 | bf16 (OpenVINO)
    calibration: np.ndarray  # normalized training images for int8 calibration
    out: Path
    tvm_target: str = "llvm"
    _onnx: Path | None = field(default=None, repr=False)

    def onnx(self, model: nn.Module) -> Path:
        """The ONNX export, made once and shared by the backends that start from it."""
        if self._onnx is None:
            self._onnx = export_onnx(model, self.shape, self.out / "onnx" / "model.onnx")
        return self._onnx


@dataclass
class Compiled:
    files: list[Path]
    run: Callable[[np.ndarray], np.ndarray] | None  # None: built for another machine (cross-compiled)
    detail: str = ""
    build_time: float = 0.0

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def build_torchscript(model: nn.Module, ctx: BuildContext, out: Path) -> Compiled:
    tarball = export_torchscript(model, ctx.shape, out)
    with warnings.catch_warnings():  # torch.jit is deprecated; loading the file back is the round trip Neo relies on
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(out / "model.pth"))

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        return scripted(torch.from_numpy(x)).numpy()

    return Compiled([tarball], run, "traced float32, Neo layout (model.tar.gz)")


def _ort_session(path: Path, threads: int):
    ort = require("onnxruntime", "compile")
    options = ort.SessionOptions()
    # all optimizations, applied when the session loads (a saved fully optimized graph only fits this CPU)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {INPUT_NAME: x})[0]


def build_onnxruntime(model: nn.Module, ctx: BuildContext, out: Path) -> Compiled:
    path = ctx.onnx(model)
    return Compiled([path], _ort_session(path, ctx.threads), "fp32 ONNX, all graph optimizations at load")


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a numpy array, in batches."""

    def __init__(self, images: np.ndarray, batch: int = 32):
        self.batches = iter([images[i : i + batch] for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.batches, None)
        return None if x is None else {INPUT_NAME: x}


def build_onnxruntime_int8(model: nn.Module, ctx: BuildContext, out: Path) -> Compiled:
    """Static QDQ int8, per-channel weights, activations calibrated on training images.

    Not dynamic quantization: it turns convolutions into ConvInteger, 5-20x slower than fp32 here.
    """
    require("onnxruntime", "compile")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    out.mkdir(parents=True, exist_ok=True)
    prepared, quantized = out / "model.prepared.onnx", out / "model.int8.onnx"
    quant_pre_process(str(ctx.onnx(model)), str(prepared))
    quantize_static(str(prepared), str(quantized), _Calibration(ctx.calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    prepared.unlink()
    run = _ort_session(quantized, ctx.threads)
    return Compiled([quantized], run, f"static QDQ int8, per-channel, {len(ctx.calibration)} calibration images")


def openvino_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if cpu_has_fast_bf16() else "f32"
    return {"fp32": "f32", "bf16": "bf16"}[precision]


def build_openvino(model: nn.Module, ctx: BuildContext, out: Path) -> Compiled:
    ov = require("openvino", "compile")
    out.mkdir(parents=True, exist_ok=True)
    converted = ov.convert_model(str(ctx.onnx(model)))
    ov.save_model(converted, str(out / "model.xml"), compress_to_fp16=False)
    precision = openvino_precision(ctx.precision)
    compiled = ov.Core().compile_model(converted, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": ctx.threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(x: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: x})[output])

    return Compiled([out / "model.xml", out / "model.bin"], run, f"CPU plugin, inference precision {precision}")


def build_aoti(model: nn.Module, ctx: BuildContext, out: Path) -> Compiled:
    """torch.export + AOTInductor: a self-contained .pt2 package of compiled C++ for this CPU."""
    out.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model.float().eval(), (torch.zeros((2, *ctx.shape)),), dynamic_shapes={"x": {0: batch}})
    torch.set_num_threads(ctx.threads)
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(out / "model.pt2"))
    runner = torch._inductor.aoti_load_package(package)

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        return runner(torch.from_numpy(x)).numpy()

    return Compiled([Path(package)], run, "fp32, dynamic batch")


def build_tvm(model: nn.Module, ctx: BuildContext, out: Path) -> Compiled:
    """Apache TVM (Relax) from the ONNX export, untuned.

    ``llvm``: a shared library for this CPU, with the dynamic batch, run and verified here.
    ``aarch64``: cross-compiled at batch 1 into a tar of object files (``lib0.o``, ...) for 64-bit
    ARM Linux, to be linked there (``tvm.runtime.load_module`` accepts the tar on the target); not run here.
    """
    tvm = require("tvm", "tvm")
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    onnx = require("onnx", "compile")
    out.mkdir(parents=True, exist_ok=True)
    cross = ctx.tvm_target == "aarch64"
    shapes = {INPUT_NAME: [1, *ctx.shape]} if cross else None  # None: keep the ONNX graph's symbolic batch
    module = from_onnx(onnx.load(str(ctx.onnx(model))), shape_dict=shapes, keep_params_in_input=False)
    module = relax.get_pipeline("zero")(module)
    executable = relax.build(module, target=tvm.target.Target(TVM_TARGETS[ctx.tvm_target]))
    if cross:
        library = out / "model.aarch64.tar"
        executable.export_library(str(library))
        return Compiled([library], None, "cross-compiled for aarch64-linux-gnu (+neon), batch 1; not run here")
    library = out / "model.so"
    executable.export_library(str(library))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())

    def run(x: np.ndarray) -> np.ndarray:
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    return Compiled([library], run, "llvm for this CPU, untuned")


BACKENDS: dict[str, Callable[[nn.Module, BuildContext, Path], Compiled]] = {
    "onnxruntime": build_onnxruntime,
    "onnxruntime-int8": build_onnxruntime_int8,
    "openvino": build_openvino,
    "aoti": build_aoti,
    "tvm": build_tvm,
    "torchscript": build_torchscript,
}
# the package each backend needs, to list what `--backend all` can run here
PACKAGES = {"onnxruntime": "onnxruntime", "onnxruntime-int8": "onnxruntime", "openvino": "openvino", "aoti": "torch",
            "tvm": "tvm", "torchscript": "torch"}


def build(name: str, model: nn.Module, ctx: BuildContext) -> Compiled:
    start = time.perf_counter()
    compiled = BACKENDS[name](model, ctx, ctx.out / name)
    compiled.build_time = time.perf_counter() - start
    return compiled

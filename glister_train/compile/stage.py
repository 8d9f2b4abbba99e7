"""``python -m glister_train compile``: compile a model with each requested backend, verify and time it.

Every artifact is checked against the eager float32 model on the real test set (top-1 agreement,
largest logit difference, accuracy) and timed at batch 1 and 64 (median after warm-up, like the
eager rows). ``compile_report.json`` is written last: an output folder without it is incomplete.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import config as C
from ..data import Splits, load_splits, normalize
from ..errors import UsageError
from ..io import atomic_write_json, new_output_folder
from ..latency import BATCHES, input_batch, median_ms, torch_latency
from ..models import load_model
from ..runtime import Runtime, available_cores
from . import neo
from .backends import BACKENDS, PACKAGES, TVM_TARGETS, BuildContext, Compiled, build
from .export import data_input_config

REPORT = "compile_report.json"


def compile_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glister-train compile", allow_abbrev=False,
        description="Export a trained or pruned model, compile it with one or more backends, check every artifact "
                    "against the eager model on the test set, time it at batch 1 and 64, and optionally submit a "
                    "SageMaker Neo compilation job.")
    p.add_argument("--model", required=True, metavar="MODEL",
                   help="a model.pt (from a run folder or a prune output) or a folder holding one")
    p.add_argument("--backend", nargs="+", default=["onnxruntime"], metavar="NAME",
                   help=f"one or more of {', '.join(BACKENDS)}, or all (those installed) [onnxruntime]")
    p.add_argument("--target", default="llvm", choices=list(TVM_TARGETS),
                   help="tvm: llvm compiles for this CPU; aarch64 cross-compiles for 64-bit ARM (not run) [llvm]")
    p.add_argument("--precision", default="auto", choices=C.PRECISIONS,
                   help="openvino inference precision; auto = bf16 on CPUs with AMX or AVX-512 BF16 [auto]")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (must be new or empty)")
    p.add_argument("--data-dir", help="dataset for verification and int8 calibration [the model's run config]")
    p.add_argument("--test-limit", type=int, default=0, help="verify on the first N test images (0 = all) [0]")
    p.add_argument("--calibration-images", type=int, default=512, help="training images for int8 calibration [512]")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for every backend (0 = all cores) [0]")
    neo_group = p.add_argument_group("SageMaker Neo")
    neo_group.add_argument("--neo", metavar="TARGET", help="submit a Neo compilation job for this target device")
    neo_group.add_argument("--neo-role", default=os.environ.get("SAGEMAKER_ROLE", ""),
                           help="IAM role ARN for the job [$SAGEMAKER_ROLE]")
    neo_group.add_argument("--neo-bucket", default="", help="S3 bucket for the model and the compiled output")
    neo_group.add_argument("--neo-prefix", default="glister-train/neo", help="S3 key prefix [glister-train/neo]")
    neo_group.add_argument("--neo-framework-version", default="",
                           help=f"PyTorch version Neo compiles for [{neo.CLOUD_FRAMEWORK_VERSION} for ml_* targets, "
                                f"{neo.EDGE_FRAMEWORK_VERSION} for edge devices]")
    neo_group.add_argument("--neo-wait", action="store_true", help="wait for the job to finish")
    return p


def model_path(value: str) -> Path:
    path = Path(value)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise UsageError(f"--model {value!r}: no such model file; pass a run folder's model.pt or a prune output")
    return path


def backends_to_run(requested: Sequence[str], neo_target: str | None) -> tuple[list[str], list[str]]:
    """The backends to build, and those `all` skipped because their package is missing."""
    unknown = [b for b in requested if b not in BACKENDS and b != "all"]
    if unknown:
        raise UsageError(f"unknown backend {', '.join(unknown)}; choose from {', '.join(BACKENDS)} or all")
    skipped: list[str] = []
    names = []
    for name in requested:
        if name == "all":
            for backend in BACKENDS:
                if importlib.util.find_spec(PACKAGES[backend]) is None:
                    skipped.append(backend)
                else:
                    names.append(backend)
        else:
            names.append(name)
    if neo_target:
        names.append("torchscript")  # Neo compiles the TorchScript tarball
    return list(dict.fromkeys(names)), skipped


def data_config(path: Path, data_dir: str | None) -> C.DataConfig:
    """The data the model was trained on: its run's config.yaml (a prune output points to its parent run)."""
    folder = path.parent
    config = folder / "config.yaml"
    report = folder / "prune_report.json"
    if not config.is_file() and report.is_file():
        config = Path(json.loads(report.read_text())["parent_run"]) / "config.yaml"
    if config.is_file():
        data = C.load_file(config).data
    elif data_dir:
        data = C.DataConfig(dataset="auto")
    else:
        raise UsageError(f"no config.yaml beside {str(path)!r} to find its dataset; pass --data-dir DIR")
    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir
    return C.validate(C.merge(C.Config(data=data), {"data": overrides}, "compile options")).data


def as_numpy(splits: Splits, which: str, limit: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    data = getattr(splits, which)
    idx = torch.arange(len(data))
    if limit and limit < len(data):
        idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit]
    x = normalize(data.x[idx], splits.mean, splits.std).float().contiguous().numpy()
    return x, data.y[idx].numpy()


def logits_of(run, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([run(np.ascontiguousarray(x[i : i + batch])) for i in range(0, len(x), batch)])


def compare(logits: np.ndarray, y: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    logits = logits.astype(np.float32)
    return {"test_acc": float((logits.argmax(1) == y).mean()),
            "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(logits - reference).max())}


def verify(run, x: np.ndarray, y: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return compare(logits_of(run, x), y, reference)


def time_backend(run, shape: tuple[int, ...]) -> dict[str, float]:
    out = {}
    for batch, warmup, repeats in BATCHES:
        x = input_batch(batch, shape).numpy()
        out[f"latency_b{batch}_ms"] = median_ms(lambda x=x: run(x), warmup, repeats)
    return out


def eager_rows(model: nn.Module, threads: int, x: np.ndarray, y: np.ndarray,
               shape: tuple[int, ...]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Eager PyTorch in fp32 (the reference logits every backend is compared with) and in bf16 autocast."""
    net = model.to(memory_format=torch.channels_last)
    rows, reference = [], None
    for precision in ("fp32", "bf16"):
        rt = Runtime(torch.device("cpu"), precision, True, threads)

        @torch.no_grad()
        def run(batch: np.ndarray, rt: Runtime = rt) -> np.ndarray:
            with rt.autocast():
                return net(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)).float().numpy()

        logits = logits_of(run, x).astype(np.float32)
        reference = logits if reference is None else reference
        rows.append({"backend": f"eager {precision}", "detail": "PyTorch eager, channels_last" +
                     (", bf16 autocast" if precision == "bf16" else ""), "files": [], "size_bytes": 0,
                     "build_time_s": 0.0, **compare(logits, y, reference), **torch_latency(net, rt, shape)})
    model.to(memory_format=torch.contiguous_format)
    return rows, reference


@dataclass(frozen=True)
class CompileOptions:
    """Which backends, and how to build, verify and time them; checked when made."""

    backends: tuple[str, ...] = ("onnxruntime",)  # names from BACKENDS, or "all" (those installed)
    target: str = "llvm"  # tvm: llvm (this CPU) | aarch64 (cross-compiled, not run)
    precision: str = "auto"  # openvino inference precision
    test_limit: int = 0  # verify on the first N test images (0 = all)
    calibration_images: int = 512  # training images for int8 calibration
    threads: int = 0  # CPU threads for every backend (0 = all cores)
    neo: str = ""  # submit a SageMaker Neo compilation job for this target device
    neo_role: str = ""
    neo_bucket: str = ""
    neo_prefix: str = "glister-train/neo"
    neo_framework_version: str = ""
    neo_wait: bool = False

    def __post_init__(self) -> None:
        if self.target not in TVM_TARGETS:
            raise UsageError(f"--target {self.target}: choose one of {', '.join(TVM_TARGETS)}")
        if self.precision not in C.PRECISIONS:
            raise UsageError(f"--precision {self.precision}: choose one of {', '.join(C.PRECISIONS)}")
        for flag, value in (("--test-limit", self.test_limit), ("--calibration-images", self.calibration_images),
                            ("--threads", self.threads)):
            if value < 0:
                raise UsageError(f"{flag} {value}: must be >= 0")
        if self.neo:
            neo.check_target(self.neo)
            if not self.neo_role or not self.neo_bucket:
                raise UsageError("--neo needs --neo-role ARN (or SAGEMAKER_ROLE) and --neo-bucket NAME")
        names, _ = backends_to_run(self.backends, self.neo)
        for name in names:  # a missing package fails before any work
            if importlib.util.find_spec(PACKAGES[name]) is None:
                extra = "tvm" if name == "tvm" else "compile"
                raise UsageError(f"backend {name} needs the {PACKAGES[name]} package: pip install 'glister-train[{extra}]'")


def compile_model(model: nn.Module, arch: dict[str, Any], splits: Splits, options: CompileOptions, out: Path, *,
                  source: str = "", log=print) -> dict[str, Any]:
    """Build ``model`` with every backend ``options`` name into ``out``, verify each against eager fp32 on the test
    set and time it; returns the report (also ``out/compile_report.json``, written last)."""
    names, skipped = backends_to_run(options.backends, options.neo)
    threads = options.threads or available_cores()
    torch.set_num_threads(threads)
    model.eval()
    shape = tuple(splits.test.x.shape[1:])
    x, y = as_numpy(splits, "test")
    if options.test_limit:
        x, y = x[: options.test_limit], y[: options.test_limit]
    calibration, _ = as_numpy(splits, "train", options.calibration_images, seed=0)
    log(f"model: {source or arch['name']} | test images: {len(x)} | threads: {threads} | backends: {', '.join(names)}"
        + (f" (skipped, not installed: {', '.join(skipped)})" if skipped else ""))

    out.mkdir(parents=True, exist_ok=True)
    rows, reference = eager_rows(model, threads, x, y, shape)
    ctx = BuildContext(shape, threads, options.precision, calibration, out, options.target)
    for name in names:
        log(f"{name}: compiling ...")
        compiled: Compiled = build(name, model, ctx)
        row = {"backend": name, "detail": compiled.detail, "files": [str(f) for f in compiled.files],
               "size_bytes": compiled.size, "build_time_s": compiled.build_time}
        if compiled.run is not None:
            row.update(verify(compiled.run, x, y, reference))
            row.update(time_backend(compiled.run, shape))
        rows.append(row)
        log(f"{name}: done in {compiled.build_time:.1f}s -> {', '.join(row['files'])}")
    report: dict[str, Any] = {
        "model": source, "arch": arch, "threads": threads, "test_images": len(x), "input_shape": list(shape),
        "preprocess": {"scale": "x / 255", "mean": splits.mean.flatten().tolist(), "std": splits.std.flatten().tolist(),
                       "layout": "NCHW float32"},
        "skipped": skipped, "options": dataclasses.asdict(options), "rows": rows,
    }
    if options.neo:
        report["neo"] = neo.submit(out / "torchscript" / "model.tar.gz", data_input_config(shape), options.neo,
                                   options.neo_role, options.neo_bucket, options.neo_prefix,
                                   options.neo_framework_version, options.neo_wait)
    atomic_write_json(out / REPORT, report)
    return report


def options_from(args: argparse.Namespace) -> CompileOptions:
    return CompileOptions(backends=tuple(args.backend), target=args.target, precision=args.precision,
                          test_limit=args.test_limit, calibration_images=args.calibration_images, threads=args.threads,
                          neo=args.neo or "", neo_role=args.neo_role, neo_bucket=args.neo_bucket,
                          neo_prefix=args.neo_prefix, neo_framework_version=args.neo_framework_version,
                          neo_wait=args.neo_wait)


def compile_main(argv: Sequence[str]) -> int:
    """The ``compile`` command: check everything, read the model and its data, then :func:`compile_model`."""
    args = compile_parser().parse_args(list(argv))
    path = model_path(args.model)
    out = new_output_folder(args.out)
    options = options_from(args)
    model, arch = load_model(path)
    splits = load_splits(data_config(path, args.data_dir))
    report = compile_model(model, arch, splits, options, out, source=str(path), log=lambda line: print(line, flush=True))
    print(table(report["rows"]))
    print(f"report: {out / REPORT}")
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    timed = [r for r in rows if "latency_b1_ms" in r]
    best_eager = {b: min(r[f"latency_b{b}_ms"] for r in rows if r["backend"].startswith("eager")) for b in (1, 64)}
    lines = [f"{'backend':<17} {'size':>8} {'build s':>7} {'b1 ms':>7} {'b64 ms':>7} {'vs eager b1/b64':>15} "
             f"{'test acc':>8} {'agree':>7} {'max |dlogit|':>12}"]
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.2f}MB" if r["size_bytes"] else "-"
        if r in timed:
            speed = f"{best_eager[1] / r['latency_b1_ms']:.2f}x/{best_eager[64] / r['latency_b64_ms']:.2f}x"
            lines.append(f"{r['backend']:<17} {size:>8} {r['build_time_s']:>7.1f} {r['latency_b1_ms']:>7.3f} "
                         f"{r['latency_b64_ms']:>7.2f} {speed:>15} {100 * r['test_acc']:>7.2f}% "
                         f"{100 * r['agreement']:>6.2f}% {r['max_abs_diff']:>12.2e}")
        else:
            lines.append(f"{r['backend']:<17} {size:>8} {r['build_time_s']:>7.1f} {'(' + r['detail'] + ')':>60}")
    lines.append("vs eager = the faster eager row at that batch size (fp32 or bf16 autocast)")
    return "\n".join(lines)

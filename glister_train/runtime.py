"""Device, precision and threads: resolved once from the config, used by training and evaluation."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RuntimeConfig
from .errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16
    channels_last: bool
    threads: int

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        return f"device={self.device} precision={self.precision} channels_last={self.channels_last} threads={self.threads}"


def cpu_has_amx() -> bool:
    """AMX tiles run bf16 matrix products several times faster than fp32 (Sapphire Rapids and later)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_runtime(cfg: RuntimeConfig) -> Runtime:
    """Apply the thread count and pick device and precision ('auto' = what measured fastest, see README)."""
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device: 'cuda' was asked for but no CUDA device is visible; use --set runtime.device=cpu")
    precision = cfg.precision
    if precision == "auto":
        fast_bf16 = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_has_amx()
        precision = "bf16" if fast_bf16 else "fp32"
    # torchrun starts LOCAL_WORLD_SIZE processes per machine: they share its cores
    threads = cfg.threads or max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    return Runtime(torch.device(device), precision, cfg.channels_last, threads)

"""Inference latency: the median of repeated timed calls after warm-up, shared by the prune and compile stages."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from .runtime import Runtime

# (batch, warm-up calls, timed calls): enough repeats for a stable median, few enough for batch 64
BATCHES = ((1, 10, 50), (64, 3, 15))


def median_ms(call: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def input_batch(batch: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def torch_latency(model: nn.Module, runtime: Runtime, shape: tuple[int, ...] = (3, 32, 32)) -> dict[str, float]:
    """``{"latency_b1_ms": ..., "latency_b64_ms": ...}`` of eager PyTorch as ``runtime`` runs it."""
    was_training = model.training
    model.eval()
    out = {}
    try:
        for batch, warmup, repeats in BATCHES:
            x = input_batch(batch, shape).to(runtime.device).contiguous(memory_format=runtime.memory_format)

            def call(x: torch.Tensor = x) -> object:
                with runtime.autocast():
                    y = model(x)
                if runtime.device.type == "cuda":
                    torch.cuda.synchronize()
                return y

            out[f"latency_b{batch}_ms"] = median_ms(call, warmup, repeats)
    finally:
        model.train(was_training)
    return out

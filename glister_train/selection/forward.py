"""The selection's forward pass: penultimate features of un-augmented images, as fast as this machine does it.

It is inference (eval mode, no autograd, fixed shapes), so it need not run through eager PyTorch:

- ``eager``: the model itself, under bf16 autocast where the precision says so;
- ``openvino``: the feature extractor converted to OpenVINO from the current weights at every selection
  (the conversion is counted in the selection's time), bf16 on CPUs with AMX or AVX-512 BF16. On an Intel Xeon
  (AMX) at width 16 its run was 1.85x faster than eager bf16 but the conversion took 9.2 s
  (experiments/results/bench_selection_backend.json).

Both return float32 features; the ranking built on them is checked against eager fp32 in the tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..data import normalize
from ..models import last_layer_parts
from .base import Environment

BACKENDS = ("eager", "openvino")


class _Features(nn.Module):
    """The model up to its penultimate layer, as a module a converter can trace (its weights registered)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def feature_function(backend: str, embed: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, *,
                     device: torch.device, precision: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """(a function from a normalized batch to float32 features, seconds spent building it).

    ``embed``: the model's bound ``embed`` method (its module is what OpenVINO converts, weights and all)."""
    if backend == "eager":
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                return embed(x).float()
        return run, 0.0
    if backend != "openvino":
        raise ValueError(f"selection backend {backend!r}: choose from {', '.join(BACKENDS)}")
    from ..compile.export import require

    ov = require("openvino", "compile")
    start = time.perf_counter()
    with torch.no_grad():
        converted = ov.convert_model(_Features(embed.__self__), example_input=example.cpu())  # the module of embed
    compiled = ov.Core().compile_model(converted, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"})
    request, output = compiled.create_infer_request(), compiled.output(0)

    def run_ov(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.array(request.infer({0: x.cpu().numpy()})[output], dtype=np.float32))

    return run_ov, time.perf_counter() - start


@torch.no_grad()
def eval_features(model: nn.Module, images: torch.Tensor, env: Environment,
                  backend: str = "eager") -> tuple[torch.Tensor, torch.Tensor, float]:
    """(penultimate features, logits, seconds spent building the backend) of un-augmented images in eval mode,
    float32 on the CPU. Under data parallelism each rank embeds its shard and every rank receives all of them."""
    embed, fc = last_layer_parts(model)
    was_training = model.training
    model.eval()
    mine = images[distributed.shard(len(images))]
    memory_format = torch.channels_last if env.channels_last else torch.contiguous_format
    parts, run, build_time = [], None, 0.0
    try:
        for start in range(0, len(mine), env.batch_size):
            x = normalize(mine[start : start + env.batch_size].to(env.device), env.mean, env.std)
            x = x.contiguous(memory_format=memory_format)
            if run is None:  # built on the first batch, from the weights as they are now
                run, build_time = feature_function(backend, embed, x, device=env.device, precision=env.precision)
            parts.append(run(x))
    finally:
        model.train(was_training)
    h = torch.cat(parts).cpu() if parts else torch.zeros(0, fc.in_features)
    h = distributed.gather_rows(h, len(images))
    return h, logits_of(h, fc), build_time


def logits_of(h: torch.Tensor, fc: nn.Linear) -> torch.Tensor:
    """float32 logits from float32 CPU features (the selector's own, whatever precision the features ran in)."""
    return h @ fc.weight.detach().float().cpu().T + fc.bias.detach().float().cpu()

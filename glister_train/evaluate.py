"""Loss and accuracy of a model on a dataset, shared by training and the stages."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .data import ImageData, normalize
from .runtime import Runtime


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, mean: torch.Tensor, std: torch.Tensor, runtime: Runtime,
             batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy on un-augmented images; restores the model's mode.

    The sums stay on the device until the end: one host synchronisation per call, not one per batch."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
    try:
        for start in range(0, len(data), batch_size):
            x = normalize(data.x[start : start + batch_size].to(runtime.device), mean, std)
            y = data.y[start : start + batch_size].to(runtime.device)
            with runtime.autocast():
                logits = model(x.contiguous(memory_format=runtime.memory_format))
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
    finally:
        model.train(was_training)
    return float(loss_sum) / len(data), int(correct) / len(data)

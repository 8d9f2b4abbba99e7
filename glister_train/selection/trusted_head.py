"""A last layer fitted to the trusted set: the model's features, the trusted labels' classes.

A model trained on noisy labels learns where they fall: under noise that lands on ambiguous images (people's), its
own confidence in a training label says little about whether the label is right. Its penultimate features say more
once a last layer is fitted to the trusted set's labels instead of the training set's. Fitting it is a small convex
problem (multinomial logistic regression on a few thousand feature vectors), solved from the model's own last layer
by L-BFGS with no randomness.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

WEIGHT_DECAY = 5e-4
STEPS = 100


def fit_head(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
             steps: int = STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) minimizing the cross-entropy on (``features``, ``labels``) plus an L2 penalty on the weight,
    from the given ones (float32, CPU)."""
    w = weight.detach().float().cpu().clone().requires_grad_(True)
    b = bias.detach().float().cpu().clone().requires_grad_(True)
    x, y = features.float().cpu(), labels.cpu()
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + WEIGHT_DECAY * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def held_out_accuracy(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """The accuracy a head fitted this way reaches on trusted examples it was not fitted to: two halves (alternate
    members of each class), each scored by the head fitted to the other."""
    labels = labels.cpu()
    order = torch.argsort(labels, stable=True)
    first = torch.zeros(len(labels), dtype=torch.bool)
    starts = torch.cumsum(torch.bincount(labels), 0) - torch.bincount(labels)
    first[order] = (torch.arange(len(labels)) - starts[labels[order]]) % 2 == 0
    halves = (first, ~first)
    correct = 0
    for fit_on, score in (halves, halves[::-1]):
        w, b = fit_head(features[fit_on], labels[fit_on], weight, bias)
        correct += int(((features[score].float() @ w.T + b).argmax(1) == labels[score]).sum())
    return correct / len(labels)

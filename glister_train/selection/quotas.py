"""Per-class budgets: each class's share of the budget, and the best candidates within those shares."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def budget_quotas(groups: torch.Tensor, budget: int, num_groups: int,
                  demand: torch.Tensor | None = None) -> torch.Tensor:
    """Each group's share of the budget (largest remainder, exact total), in proportion to its size, or to
    ``demand`` (one non-negative number per group) with no group given more than it holds: what a full group
    cannot take goes to the others in proportion to their demand."""
    counts = torch.bincount(groups, minlength=num_groups).double()
    if demand is None:
        share = counts * budget / counts.sum()
    else:
        share = torch.zeros(num_groups, dtype=torch.float64)
        open_ = counts > 0
        demand = demand.double().clamp_min(0) + 1e-12  # a group with no demand still takes what nobody else can
        while True:  # water-filling: fill in proportion to demand, freeze the groups that overflow, repeat
            left = budget - float(share[~open_].sum())
            share[open_] = demand[open_] * left / demand[open_].sum()
            full = open_ & (share > counts)
            if not full.any():
                break
            share[full] = counts[full]
            open_ &= ~full
    quota = share.floor().long()
    short = budget - int(quota.sum())
    if short:
        room = (quota < counts).double()  # a group never gets more than it holds
        quota[torch.argsort((share - quota) * room, descending=True, stable=True)[:short]] += 1
    return quota


def class_demand(val_logits: torch.Tensor, val_y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each class's mean cross-entropy on the validation set (a class with no validation examples: the mean of
    the others), the demand ``budget_quotas`` splits the budget by under ``class_budget: val_loss``."""
    losses = F.cross_entropy(val_logits, val_y, reduction="none").double()
    n = torch.bincount(val_y, minlength=num_classes)
    mean = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, val_y, losses) / n.clamp_min(1)
    mean[n == 0] = mean[n > 0].mean() if (n > 0).any() else 1.0
    return mean


def top_within_quotas(gains: torch.Tensor, groups: torch.Tensor, left: torch.Tensor, m: int) -> torch.Tensor:
    """The ``m`` highest-gain candidates such that no group takes more than it has left."""
    order = torch.argsort(gains, descending=True)
    order = order[torch.isfinite(gains[order])]
    g = groups[order]
    rank = F.one_hot(g, len(left)).cumsum(0).gather(1, g[:, None]).squeeze(1) - 1  # position within its group
    return order[rank < left[g]][:m]

"""Per-class budgets: each class's share of the budget, and the best candidates within those shares."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def budget_quotas(groups: torch.Tensor, budget: int, num_groups: int) -> torch.Tensor:
    """Each group's share of the budget, proportional to its size (largest remainder, exact total)."""
    counts = torch.bincount(groups, minlength=num_groups).double()
    share = counts * budget / counts.sum()
    quota = share.floor().long()
    short = budget - int(quota.sum())
    if short:
        room = (quota < counts).double()  # a group never gets more than it holds
        quota[torch.argsort((share - quota) * room, descending=True, stable=True)[:short]] += 1
    return quota


def top_within_quotas(gains: torch.Tensor, groups: torch.Tensor, left: torch.Tensor, m: int) -> torch.Tensor:
    """The ``m`` highest-gain candidates such that no group takes more than it has left."""
    order = torch.argsort(gains, descending=True)
    order = order[torch.isfinite(gains[order])]
    g = groups[order]
    rank = F.one_hot(g, len(left)).cumsum(0).gather(1, g[:, None]).squeeze(1) - 1  # position within its group
    return order[rank < left[g]][:m]

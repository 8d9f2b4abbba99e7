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


def class_quotas(groups: torch.Tensor, budget: int, num_groups: int, mix: str, val_y: torch.Tensor) -> torch.Tensor:
    """Each class's share of the budget: in proportion to its size in the pool (``mix: size``) or to its share of
    the validation set (``val_share``: with skewed training classes and a balanced trusted set, a balanced subset)."""
    if mix == "size" or num_groups == 1:
        return budget_quotas(groups, budget, num_groups)
    return budget_quotas(groups, budget, num_groups, torch.bincount(val_y, minlength=num_groups).double())


def top_within_quotas(gains: torch.Tensor, groups: torch.Tensor, left: torch.Tensor, m: int) -> torch.Tensor:
    """The ``m`` highest-gain candidates such that no group takes more than it has left."""
    order = torch.argsort(gains, descending=True)
    order = order[torch.isfinite(gains[order])]
    g = groups[order]
    rank = F.one_hot(g, len(left)).cumsum(0).gather(1, g[:, None]).squeeze(1) - 1  # position within its group
    return order[rank < left[g]][:m]

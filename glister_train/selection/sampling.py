"""Drawing a subset per class from per-example keys, and setting the lowest-ranked examples aside first.

``draw`` is the Gumbel-top-k trick: per class, the top of ``keys + Gumbel noise`` is a draw without replacement
with probabilities proportional to ``exp(key)``. All keys 0 is a uniform draw; ``-inf`` never drawn.
``sampling_keys`` turns scores into keys (standardized per class, divided by a temperature: ``T -> 0`` is the
top-k, ``T = inf`` uniform); ``exclude_lowest`` marks the lowest share of each class by a ranking, never so many
that a class cannot fill its quota.
"""

from __future__ import annotations

import math

import torch

from .quotas import top_within_quotas


def sampling_keys(scores: torch.Tensor, groups: torch.Tensor, num_groups: int, temperature: float) -> torch.Tensor:
    """Per-class standardized ``scores / temperature``."""
    counts = torch.bincount(groups, minlength=num_groups).double()
    mean = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, scores.double()) / counts.clamp_min(1)
    centred = scores.double() - mean[groups]
    var = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, centred.square()) / counts.clamp_min(1)
    z = centred / var.sqrt().clamp_min(1e-12)[groups]
    return (z / temperature).float()


def exclude_lowest(rank: torch.Tensor, groups: torch.Tensor, quotas: torch.Tensor, share: float) -> torch.Tensor:
    """A mask of the lowest ``share`` of each class by ``rank``; where that would leave a class fewer candidates
    than its quota, the best of its excluded come back, in that order."""
    num_groups = len(quotas)
    excluded = torch.zeros(len(rank), dtype=torch.bool)
    if share <= 0:
        return excluded
    counts = torch.bincount(groups, minlength=num_groups).double()
    order = torch.argsort(rank)
    g = groups[order]
    position = torch.zeros(len(rank), dtype=torch.long)  # within its class, from the lowest rank
    position[order] = torch.nn.functional.one_hot(g, num_groups).cumsum(0).gather(1, g[:, None]).squeeze(1) - 1
    excluded |= position < (share * counts[groups]).floor().long()
    if excluded.any():
        short = (quotas - torch.bincount(groups[~excluded], minlength=num_groups)).clamp_min(0)
        if short.any():
            back = top_within_quotas(torch.where(excluded, rank, torch.full_like(rank, -math.inf)), groups,
                                     short, int(short.sum()))
            excluded[back] = False
    return excluded


def draw(keys: torch.Tensor, groups: torch.Tensor, quotas: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Positions of a subset with exactly ``quotas`` per group: Gumbel-top-k on ``keys``."""
    gumbel = -torch.log(-torch.log(torch.rand(len(keys), generator=generator).clamp_(1e-20, 1 - 1e-7)))
    return top_within_quotas(keys + gumbel, groups, quotas, int(quotas.sum()))

"""Drawing a subset from per-example scores instead of taking the top-k (GLISTER ``sampling: soft``).

Per class (budget group), the scores are standardized, divided by a temperature and perturbed with Gumbel
noise; the top of the perturbed keys is then a draw without replacement with probabilities proportional
to ``exp(z / T)`` (the Gumbel-top-k trick). ``T = inf`` is a uniform random subset per class (of the kept
candidates), ``T -> 0`` the top-k. A ``uniform_share`` of each class's quota is drawn uniformly among the kept candidates, and the
lowest-scoring candidates can be excluded first (``drop_share`` of each class, or every negative score):
under label noise with a clean validation set those are the examples whose gradient opposes it.

The keys depend only on the scores, so a new subset can be drawn from them every epoch (``redraw``)
without another forward pass.

``draw_hard_boosted`` (``hard_ratio``) draws uniformly within two strata per class instead, the examples whose
latest training loss is above their class's mean drawn more often, and returns importance weights with the subset.

``draw_least_seen`` (``coverage``) takes, per class, the kept candidates trained on fewest times so far: sampling
without replacement across epochs, where independent uniform draws leave the counts spread binomially.
"""

from __future__ import annotations

import math

import torch

from .quotas import budget_quotas, top_within_quotas


def sampling_keys(scores: torch.Tensor, groups: torch.Tensor, quotas: torch.Tensor, *, temperature: float,
                  drop_share: float = 0.0, drop_negative: bool = False,
                  drop_rank: torch.Tensor | None = None) -> torch.Tensor:
    """Per-class standardized ``scores / temperature``; ``-inf`` for the excluded candidates.

    ``drop_share`` excludes the lowest share of each class by ``drop_rank`` (default: the scores themselves;
    e.g. the model's probability of each example's label). A class never loses so many candidates that it
    cannot fill its quota: the best of the excluded come back, in that order.
    """
    rank_by = scores if drop_rank is None else drop_rank
    num_groups = len(quotas)
    counts = torch.bincount(groups, minlength=num_groups).double()
    mean = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, scores.double()) / counts.clamp_min(1)
    centred = scores.double() - mean[groups]
    var = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, centred.square()) / counts.clamp_min(1)
    z = centred / var.sqrt().clamp_min(1e-12)[groups]
    keys = (z / temperature).float()
    excluded = torch.zeros(len(scores), dtype=torch.bool)
    if drop_negative:
        excluded |= scores <= 0
    if drop_share > 0:  # the lowest drop_share of each class by rank
        order = torch.argsort(rank_by)
        g = groups[order]
        rank = torch.zeros(len(scores), dtype=torch.long)
        rank[order] = torch.nn.functional.one_hot(g, num_groups).cumsum(0).gather(1, g[:, None]).squeeze(1) - 1
        excluded |= rank < (drop_share * counts[groups]).floor().long()
    if excluded.any():  # keep at least each class's quota: the best excluded come back first
        kept = torch.bincount(groups[~excluded], minlength=num_groups)
        short = (quotas - kept).clamp_min(0)
        if short.any():
            back = top_within_quotas(torch.where(excluded, rank_by, torch.full_like(rank_by, -math.inf)), groups,
                                     short, int(short.sum()))
            excluded[back] = False
        keys = keys.masked_fill(excluded, -math.inf)
    return keys


def draw(keys: torch.Tensor, groups: torch.Tensor, quotas: torch.Tensor, generator: torch.Generator,
         uniform_share: float = 0.0) -> torch.Tensor:
    """Positions of a subset with exactly ``quotas`` per group: Gumbel-top-k on ``keys``, and a
    ``uniform_share`` of each quota uniformly among the candidates whose key is finite."""
    usable = torch.isfinite(keys)
    uniform = (uniform_share * quotas.double()).round().long()
    gumbel = -torch.log(-torch.log(torch.rand(len(keys), generator=generator).clamp_(1e-20, 1 - 1e-7)))
    soft = top_within_quotas(keys + gumbel, groups, quotas - uniform, int((quotas - uniform).sum()))
    if not int(uniform.sum()):
        return soft
    rest = torch.rand(len(keys), generator=generator).masked_fill_(~usable, -math.inf)
    rest[soft] = -math.inf
    return torch.cat([soft, top_within_quotas(rest, groups, uniform, int(uniform.sum()))])


def draw_hard_boosted(losses: torch.Tensor, kept: torch.Tensor, groups: torch.Tensor, quotas: torch.Tensor,
                      ratio: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, weights): per class, the kept candidates whose loss is at least their class's mean ("hard") are
    drawn ``ratio`` times as often as the rest, uniformly within each of the two strata, with importance weights
    (the uniform inclusion rate over each one's own) so that the weighted subset's gradient is an unbiased estimate
    of the kept candidates' mean gradient, as InfoBatch keeps its pruned loss unbiased; the weights average 1."""
    positions, weights = [], []
    for c in range(len(quotas)):
        quota = int(quotas[c])
        if quota == 0:
            continue
        members = torch.nonzero((groups == c) & kept).squeeze(1)
        if len(members) < quota:  # fewer kept than the quota (sampling_keys never leaves it so): all candidates
            members = torch.nonzero(groups == c).squeeze(1)
        class_losses = losses[members]
        hard = members[class_losses >= class_losses.mean()]
        easy = members[class_losses < class_losses.mean()]
        # inclusion rates: hard = ratio x easy, with rate(hard) |H| + rate(easy) |E| = quota and rate(hard) <= 1
        easy_rate = quota / (ratio * len(hard) + len(easy))
        take_hard = min(len(hard), round(ratio * easy_rate * len(hard)))
        take_easy = quota - take_hard
        if take_easy > len(easy):
            take_easy, take_hard = len(easy), quota - len(easy)
        base = quota / len(members)  # each candidate's inclusion rate under a uniform draw
        for stratum, take in ((hard, take_hard), (easy, take_easy)):
            if take:
                positions.append(stratum[torch.randperm(len(stratum), generator=generator)[:take]])
                weights.append(torch.full((take,), base * len(stratum) / take))
    return torch.cat(positions), torch.cat(weights)


def draw_least_seen(keys: torch.Tensor, times_seen: torch.Tensor, groups: torch.Tensor, quotas: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """Positions of a subset with exactly ``quotas`` per group among the candidates whose key is finite: those
    trained on fewest times so far first, ties broken at random. Over the epochs every kept example is then
    trained on about equally often (at 30% for 45 epochs: 13 or 14 times, where uniform draws give 13.5 +- 3.1)."""
    tiebreak = torch.rand(len(keys), generator=generator, dtype=torch.float64)  # in [0, 1): never crosses a count
    priority = (tiebreak - times_seen.double()).masked_fill_(~torch.isfinite(keys), -math.inf)
    return top_within_quotas(priority, groups, quotas, int(quotas.sum()))


__all__ = ["budget_quotas", "draw", "draw_hard_boosted", "draw_least_seen", "sampling_keys"]

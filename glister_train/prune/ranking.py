"""Structural pruning: rank filters by captured statistics, remove them with torch-pruning.

torch-pruning's dependency graph finds the layers coupled to a filter (the next conv's input
channels, the BatchNorm, and along a residual stream every conv and shortcut that writes to it),
so removing a channel keeps the network consistent. Our per-filter scores
(:mod:`glister_train.prune.capture`) are its importance: a group's score per channel is the mean over the
group's convs of their scores, so a residual-stream channel is judged by every layer writing it.

Criteria (higher = keep): ``taylor`` and ``l1`` L2-normalized within each layer (Molchanov et al.),
so global ranking compares layers fairly; ``apoz`` as 1 - APoZ (already a share).

The pruned model is an ordinary :class:`~glister_train.models.ResNet18` (or TinyNet) whose arch
lists the new widths: ``save_model``/``load_model`` handle it without torch-pruning.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..data import ImageData, normalize
from ..errors import UsageError
from ..models import conv_widths
from ..runtime import Runtime
from .capture import CRITERIA

TARGETS = ("filters", "macs", "params")  # what --amount is a share of
SCOPES = ("global", "layer")
MAX_LAYER_RATIO = 0.9  # no layer loses more than this share of its channels, in any ranking


def torch_pruning():
    try:
        import torch_pruning as tp
    except ImportError:
        raise UsageError("pruning needs torch-pruning: pip install 'glister-train[prune]'") from None
    return tp


def filter_scores(capture: dict[str, Any], criterion: str) -> dict[str, torch.Tensor]:
    """conv name -> one score per output channel (higher = keep), comparable across layers."""
    if criterion not in CRITERIA:
        raise UsageError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    key = {"taylor": "taylor", "l1": "l1", "apoz": "apoz"}[criterion]
    scores = {}
    for conv, stats in capture["filters"].items():
        if key not in stats:
            raise UsageError(f"the captured statistics have no {key!r} for {conv} ({capture['source']}); "
                             "capture again with training batches (prune --recapture)")
        s = stats[key].float()
        scores[conv] = 1 - s if criterion == "apoz" else s / s.norm().clamp_min(1e-12)
    return scores


class CapturedImportance:
    """torch-pruning importance from per-conv scores: the mean over a group's convs of their scores."""

    def __init__(self, model: nn.Module, scores: dict[str, torch.Tensor]):
        self.names = {module: name for name, module in model.named_modules()}
        self.scores = scores

    def __call__(self, group: Any) -> torch.Tensor:
        tp = torch_pruning()
        total = torch.zeros(len(group[0].idxs))
        count = 0
        for i, (dep, idxs) in enumerate(group):
            name = self.names.get(dep.target.module)
            # compare handlers with ==: they are bound methods, re-created on every access
            if dep.handler == tp.prune_conv_out_channels and name in self.scores:
                total.scatter_add_(0, torch.tensor(group[i].root_idxs), self.scores[name][idxs])
                count += 1
        return total / max(count, 1)


def count_macs_params(model: nn.Module, shape: tuple[int, ...] = (3, 32, 32)) -> tuple[int, int]:
    """Multiply-accumulates of one image and the number of parameters."""
    tp = torch_pruning()
    was_training = model.training
    macs, params = tp.utils.count_ops_and_params(model.eval(), torch.zeros((1, *shape)))
    model.train(was_training)
    return int(macs), int(params)


def prune_once(model: nn.Module, importance: CapturedImportance, ratio: float, scope: str, round_to: int = 1,
               shape: tuple[int, ...] = (3, 32, 32)) -> None:
    """Remove ``ratio`` of the channels, in place: from every group (``layer``) or by one ranking (``global``).

    torch-pruning finds the groups (coupled layers) and removes the chosen channels; which ones
    is decided here, so that no group keeps fewer than ``1 - MAX_LAYER_RATIO`` of its channels
    (its own global mode skips a group that would be emptied, leaving it whole instead).
    """
    if scope not in SCOPES:
        raise UsageError(f"unknown --scope {scope!r}; choose one of {', '.join(SCOPES)}")
    tp = torch_pruning()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros((1, *shape)))
    groups = [(g[0].dep.target.module, g[0].dep.handler, importance(g))
              for g in graph.get_all_groups(ignored_layers=[model.fc], root_module_types=[nn.Conv2d])]
    removals = plan_removals([scores for _, _, scores in groups], ratio, scope, round_to)
    for (module, handler, _), idxs in zip(groups, removals):
        if idxs:
            group = graph.get_pruning_group(module, handler, idxs)
            if not graph.check_pruning_group(group):
                raise RuntimeError(f"torch-pruning refused to remove {len(idxs)} channels of {module}")
            group.prune()


def plan_removals(scores: list[torch.Tensor], ratio: float, scope: str, round_to: int = 1) -> list[list[int]]:
    """For each group's channel scores, the channels to remove (lowest scores first)."""
    floors = [max(1, math.ceil(len(s) * (1 - MAX_LAYER_RATIO))) for s in scores]
    if scope == "layer":
        counts = [min(round(len(s) * ratio), len(s) - floor) for s, floor in zip(scores, floors)]
    else:  # one ranking over all channels, skipping channels of groups already at their floor
        counts = [0] * len(scores)
        budget = round(ratio * sum(len(s) for s in scores))
        ranked = sorted((float(v), g) for g, s in enumerate(scores) for v in s)
        for _, g in ranked:
            if budget == 0:
                break
            if len(scores[g]) - counts[g] > floors[g]:
                counts[g] += 1
                budget -= 1
    plans = []
    for s, count in zip(scores, counts):
        keep = len(s) - count
        if round_to > 1 and keep % round_to:  # round the kept channels up to a multiple
            keep = min(len(s), keep + round_to - keep % round_to)
        plans.append(torch.argsort(s, stable=True)[: len(s) - keep].sort().values.tolist())
    return plans


def step_ratios(ratio: float, steps: int) -> list[float]:
    """Per-step shares of the *current* channels, so that ``steps`` steps remove ``ratio`` of the original ones."""
    kept = [1 - ratio * k / steps for k in range(steps + 1)]
    return [1 - kept[k] / kept[k - 1] for k in range(1, steps + 1)]


def ratio_for(model: nn.Module, importance: CapturedImportance, target: str, amount: float, scope: str,
              round_to: int = 1) -> float:
    """The channel ratio that removes ``amount`` of the filters, MACs or parameters (bisection on copies)."""
    if target == "filters":
        return amount
    if target not in TARGETS:
        raise UsageError(f"unknown --target {target!r}; choose one of {', '.join(TARGETS)}")
    index = 0 if target == "macs" else 1
    base = count_macs_params(model)[index]

    def removed(ratio: float) -> float:
        trial = copy.deepcopy(model)
        prune_once(trial, CapturedImportance(trial, importance.scores), ratio, scope, round_to)
        return 1 - count_macs_params(trial)[index] / base

    most = removed(MAX_LAYER_RATIO)
    if most < amount:
        raise UsageError(f"--amount {amount} of the {target} cannot be removed with --scope {scope}: at most "
                         f"{most:.3f} while every layer keeps {1 - MAX_LAYER_RATIO:.0%} of its channels")
    lo, hi = 0.0, MAX_LAYER_RATIO
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if removed(mid) < amount else (lo, mid)
    return hi


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, data: ImageData, mean: torch.Tensor, std: torch.Tensor, runtime: Runtime,
                         batches: int, batch_size: int = 128, seed: int = 0) -> bool:
    """Recompute every BatchNorm's running statistics from ``batches`` un-augmented training batches.

    Removing channels changes what each BatchNorm sees, so the trained statistics no longer fit;
    forward passes in train mode without gradients (cumulative averages) fix that in seconds.
    Returns False when the model has no BatchNorm.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches < 1:
        return False
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches
    was_training = model.training
    model.train()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    try:
        for b in range(min(batches, -(-len(data) // batch_size))):
            idx = order[b * batch_size : (b + 1) * batch_size]
            x = normalize(data.x[idx].to(runtime.device), mean, std).contiguous(memory_format=runtime.memory_format)
            with runtime.autocast():
                model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return True


def pruned_arch(model: nn.Module, arch: dict[str, Any]) -> dict[str, Any]:
    """The parent's arch plus the widths that pruning left: enough to rebuild the model from its weights."""
    return {**arch, "channels": conv_widths(model)}


def filter_count(model: nn.Module) -> int:
    return sum(conv_widths(model).values())

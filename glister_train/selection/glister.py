"""GLISTER-ONLINE (Killamsetty et al., AAAI 2021) with last-layer gradients.

Choose the subset S whose one gradient step on the last layer most raises the validation
log-likelihood. With h the penultimate features, p the softmax output and y the one-hot label,
example i's cross-entropy gradient w.r.t. the final linear layer is ``r_i h_i^T`` (weight) and ``r_i``
(bias), ``r_i = p_i - y_i``. The Taylor gain of adding i at the current lookahead point is
``<g_i, G_val>`` = ``r_i . (G_w h_i) + r_i . G_b``: one (n, D) x (D, C) product for every
candidate at once, never an (n, C, D) tensor. After each addition (or block of additions) the
lookahead logits of the validation set are recomputed exactly and so is ``G_val``.

Lookahead point after choosing S (``lookahead``):
- ``sum`` (the paper, CORDS): theta_S = theta - eta * sum_{i in S} g_i
- ``mean``: theta_S = theta - eta * mean_{i in S} g_i, i.e. one SGD step on the subset's mean loss.
  The point where the validation gradient is taken stays near the model, where the Taylor expansion
  holds, so the greedy becomes nearly a static top-k: it avoids wrong labels better but picks less
  diverse subsets, and trained worse on CIFAR-10 here (selection/README.md).

``center_features``: take the gradients in the last layer's centred parametrization, ``W (h - mu) + b'``
with ``mu`` the mean validation feature and ``b' = b + W mu``: the same model and logits, but a step that
moves ``b'`` no longer moves every logit through the large shared (ReLU, non-negative) component of the
features, so ``<g_i, G_val>`` compares what sets examples apart rather than what they all share.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from .. import distributed
from ..choices import CLASS_BUDGETS, DROP_BY, GREEDY, LAST_LAYER, LOOKAHEAD, SAMPLING, SCORE_SOURCES, VAL_GRADIENTS
from ..data import ImageData, normalize
from ..errors import NonFiniteSelection
from .base import Selection
from .forward import feature_function
from .quotas import budget_quotas, class_demand, top_within_quotas
from .sampling import draw, draw_hard_boosted, draw_least_seen, sampling_keys

# ---------------------------------------------------------------- the objective and its gradient


@dataclass
class LastLayerProblem:
    """Everything the greedy needs, computed once per selection from one forward pass."""

    h: torch.Tensor  # (n, D) candidate features
    r: torch.Tensor  # (n, C) candidate p - y at the current parameters
    groups: torch.Tensor  # (n,) budget group of each candidate (its class, or 0 for one pool)
    hv: torch.Tensor  # (V, D) validation features
    zv: torch.Tensor  # (V, C) validation logits at the current parameters
    yv: torch.Tensor  # (V,) validation labels
    eta: float
    full: bool  # weight and bias (True) or bias only (False)
    mean_step: bool  # lookahead with the mean (True) or the sum (False) of the chosen gradients

    def val_logits(self, sum_w: torch.Tensor, sum_b: torch.Tensor, size: int) -> torch.Tensor:
        """Validation logits after the lookahead step, given the summed gradients of the chosen set."""
        scale = self.eta / max(size, 1) if self.mean_step else self.eta
        shift = sum_b if not self.full else self.hv @ sum_w.T + sum_b
        return self.zv - scale * shift

    def val_gradient(self, zv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the summed validation cross-entropy w.r.t. the last layer: (C, D) and (C,)."""
        rv = val_residuals(zv, self.yv)
        return (rv.T @ self.hv if self.full else None), rv.sum(0)

    def gains(self, gw: torch.Tensor | None, gb: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """``eta <g_i, G_val>`` for the candidates ``idx`` (all when None): the first-order rise in val log-likelihood."""
        r = self.r if idx is None else self.r[idx]
        out = r @ gb
        if self.full:
            h = self.h if idx is None else self.h[idx]
            out += (r * (h @ gw.T)).sum(1)
        return out.mul_(self.eta)

    def sums(self, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.r[chosen]
        return (r.T @ self.h[chosen] if self.full else None), r.sum(0)

    def to(self, device: torch.device | str) -> LastLayerProblem:
        """The same problem with its tensors on ``device`` (the greedy then runs there)."""
        return dataclasses.replace(self, **{f: getattr(self, f).to(device) for f in ("h", "r", "groups", "hv", "zv", "yv")})

    def check_finite(self) -> None:
        """A diverged model gives NaN features or logits: say so, rather than rank NaNs."""
        for name, t in (("candidate features", self.h), ("candidate gradients", self.r),
                        ("validation features", self.hv), ("validation logits", self.zv)):
            if not torch.isfinite(t).all():
                raise NonFiniteSelection(f"{int((~torch.isfinite(t)).sum())} non-finite {name}")

    def objective(self, chosen: torch.Tensor) -> float:
        """Mean validation log-likelihood after the lookahead step on ``chosen``: the GLISTER objective."""
        sum_w, sum_b = self.sums(chosen)
        zv = self.val_logits(sum_w, sum_b, len(chosen))
        return float(-F.cross_entropy(zv, self.yv))


# ---------------------------------------------------------------- greedy maximization


def greedy(problem: LastLayerProblem, budget: int, quotas: torch.Tensor, *, mode: str = "batched", block: int = 1,
           epsilon: float = 0.01, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the chosen candidates (on the problem's device), in the order chosen; exactly ``budget`` of them.

    It runs wherever the problem's tensors are (``problem.to(device)``): on a GPU it works on the features where the
    forward pass left them; random draws still come from the (CPU) ``generator``, so every device draws the same."""
    problem.check_finite()
    device = problem.h.device
    n, c = problem.r.shape
    quotas = quotas.to(device)
    eligible = quotas[problem.groups] > 0
    left = quotas.clone()
    chosen: list[torch.Tensor] = []
    taken = 0
    sum_w = torch.zeros(c, problem.h.shape[1], device=device) if problem.full else None
    sum_b = torch.zeros(c, device=device)
    sample = max(1, math.ceil(n / budget * math.log(1 / epsilon)))  # Mirzasoleiman et al.'s stochastic greedy
    remaining = eligible.nonzero().squeeze(1)  # stochastic: a compacted `eligible`, refreshed when half stale
    live = len(remaining)

    while taken < budget:
        gw, gb = problem.val_gradient(problem.val_logits(sum_w, sum_b, taken))
        if mode == "stochastic":
            if live < len(remaining) // 2:
                remaining = eligible.nonzero().squeeze(1)
            cand = remaining[torch.randint(len(remaining), (sample,), generator=generator).to(device)]
            cand = cand[eligible[cand]]
            if len(cand) == 0:  # every draw hit a taken example: look at all that are left
                cand = remaining = eligible.nonzero().squeeze(1)
            cand_gains = problem.gains(gw, gb, cand)
            best = cand_gains.argmax().view(1)
            pick, picked_gains = cand[best], cand_gains[best]
        else:
            gains = problem.gains(gw, gb).masked_fill_(~eligible, -math.inf)
            m = 1 if mode == "naive" else min(block, budget - taken)
            pick = gains.argmax().view(1) if m == 1 else top_within_quotas(gains, problem.groups, left, m)
            picked_gains = gains[pick]
        if len(pick) == 0 or not torch.isfinite(picked_gains).all():  # the lookahead step overflowed
            raise NonFiniteSelection(f"no finite gain after choosing {taken} of {budget} examples")
        chosen.append(pick)
        taken += len(pick)
        live -= len(pick)
        eligible[pick] = False
        added = torch.bincount(problem.groups[pick], minlength=len(left))
        left -= added
        filled = ((left == 0) & (added > 0)).nonzero().squeeze(1).tolist()
        for group in filled:  # at most once per class per selection
            eligible &= problem.groups != group
        if filled:
            live = int(eligible.sum())
        dw, db = problem.sums(pick)
        sum_b += db
        if problem.full:
            sum_w += dw
    return torch.cat(chosen)


def first_order_gains(h: torch.Tensor, r: torch.Tensor, y: torch.Tensor, hv: torch.Tensor, rv: torch.Tensor,
                      yv: torch.Tensor, *, eta: float, full: bool, own_class: bool) -> torch.Tensor:
    """``eta <g_i, G_val>`` at the model itself for every candidate: against the whole validation set's
    gradient, or (``own_class``) against the gradient of the validation examples of the candidate's own label.

    The whole set's gradient rewards an example for suppressing whatever class the model over-predicts, which
    a mislabeled example does as well as any (its image pushes its true class down): under label noise the
    chosen share of wrong labels then swings from selection to selection. Against its own label's examples
    only, an example scores by how much it looks like them where the model still errs on them."""
    def gains(idx: torch.Tensor | None, gw: torch.Tensor, gb: torch.Tensor) -> torch.Tensor:
        ri = r if idx is None else r[idx]
        out = ri @ gb
        if full:
            out = out + (ri * ((h if idx is None else h[idx]) @ gw.T)).sum(1)
        return out

    if not own_class:
        return gains(None, rv.T @ hv, rv.sum(0)) * eta
    out = torch.zeros(len(y))
    for c in torch.unique(y).tolist():
        mine, theirs = (y == c).nonzero().squeeze(1), yv == c
        out[mine] = gains(mine, rv[theirs].T @ hv[theirs], rv[theirs].sum(0))
    return out * eta


def confidence_drop(probs: torch.Tensor, y: torch.Tensor, val_logits: torch.Tensor, yv: torch.Tensor,
                    share: float, estimate: bool, agree: float | None = None,
                    scale: float = 1.0) -> tuple[torch.Tensor, float]:
    """(each candidate's probability of its own label, the share of each class to drop by it).

    With ``estimate`` the share is the wrong-label rate the clean validation set implies: a model that gets a
    share A of the (clean) validation set right but agrees with only a share a of the training labels, which it
    has not memorized, sees about ``1 - a / A`` of them as wrong (0 on clean data, where a >= A). ``agree``: a
    measured in the validation set's conditions (eval mode, un-augmented) when given, else from ``probs``.
    ``scale`` multiplies the estimate (at most 0.9 is dropped): a model that has memorized some wrong labels
    agrees with them, so the estimate runs low under noise (29-36% at 40%), while on clean data it stays near 0."""
    confidence = probs[torch.arange(len(y)), y]
    if estimate:
        agree = float((probs.argmax(1) == y).float().mean()) if agree is None else agree
        val_acc = float((val_logits.argmax(1) == yv).float().mean())
        share = min(0.9, max(0.0, scale * (1 - agree / max(val_acc, 1e-6))))
    return confidence, share


def curriculum_drop(progress: float, span: float, fraction: float) -> float:
    """The share of each class to set aside as hardest (least confident) at ``progress`` (the share of the run's
    epochs done): easy first, the kept share growing linearly from twice the budget's fraction to everything over
    the first ``span`` of the epochs (0: no curriculum)."""
    if span <= 0 or progress >= span:
        return 0.0
    start = min(1.0, 2 * fraction)
    return 1.0 - (start + (1.0 - start) * progress / span)


def mean_margins(records: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each example's logit margin (its label's logit minus the largest other), averaged over every time the
    training pass trained on it: the area under the margin (Pleiss et al., 2020). A wrong label is learnt only
    by memorizing it, late and against what the example looks like, so its average stays low long after its
    latest margin has turned positive. 0 where there is no record yet."""
    return (records["margin_sum"] / records["times_seen"].clamp_min(1)).float()


def val_residuals(zv: torch.Tensor, yv: torch.Tensor) -> torch.Tensor:
    """``softmax(z) - onehot(y)`` of the validation set: its cross-entropy gradient w.r.t. the logits."""
    rv = torch.softmax(zv, 1)
    rv[torch.arange(len(rv)), yv] -= 1
    return rv


# ---------------------------------------------------------------- the selector


def fill_unseen_with_group_mean(values: torch.Tensor, seen: torch.Tensor, groups: torch.Tensor, num: int) -> None:
    """In place: examples the training pass has no record of yet take their class's (group's) mean."""
    total = torch.zeros(num).index_add_(0, groups[seen], values[seen])
    values[~seen] = (total / torch.bincount(groups[seen], minlength=num).clamp_min(1))[groups[~seen]]


def logits_of(h: torch.Tensor, fc: nn.Linear) -> torch.Tensor:
    """float32 logits from float32 CPU features (the selector's own, whatever precision the features ran in)."""
    return h @ fc.weight.detach().float().cpu().T + fc.bias.detach().float().cpu()


def last_layer_parts(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Linear]:
    """(features function, final linear layer) of a model with ``embed`` and ``fc`` (see models.py)."""
    model = getattr(model, "_orig_mod", getattr(model, "module", model))
    if not hasattr(model, "embed") or not isinstance(getattr(model, "fc", None), nn.Linear):
        raise TypeError(f"{type(model).__name__} has no embed()/fc: GLISTER needs the penultimate features and the "
                        "final nn.Linear (wrap other models with glister_train.compat.cords)")
    return model.embed, model.fc


class GlisterSelector:
    name: ClassVar[str] = "glister"
    reselects: ClassVar[bool] = True

    def __init__(self, *, mean: torch.Tensor, std: torch.Tensor, eta: float = 0.01, greedy: str = "batched",
                 block_size: int = 0, epsilon: float = 0.01, per_class: bool = True, last_layer: str = "full",
                 lookahead: str = "sum", pool_fraction: float = 1.0, sampling: str = "greedy",
                 temperature: float = 1.0, uniform_share: float = 0.0, drop_share: float = 0.0,
                 drop_negative: bool = False, redraw: bool = False, center_features: bool = False,
                 backend: str = "eager", score_source: str = "pass", val_gradient: str = "all",
                 drop_by: str = "gain", drop_share_auto: bool = False, drop_share_scale: float = 1.0,
                 agreement_sample: int = 0, class_budget: str = "size",
                 hard_ratio: float = 1.0, coverage: bool = False, curriculum: float = 0.0, device: str | torch.device = "cpu",
                 precision: str = "fp32", channels_last: bool = False, batch_size: int = 64):
        if greedy not in GREEDY or last_layer not in LAST_LAYER or lookahead not in LOOKAHEAD or sampling not in SAMPLING:
            raise ValueError(f"greedy={greedy!r}, last_layer={last_layer!r}, lookahead={lookahead!r}, "
                             f"sampling={sampling!r}: choose from {GREEDY}, {LAST_LAYER}, {LOOKAHEAD}, {SAMPLING}")
        self.sampling, self.temperature, self.uniform_share = sampling, temperature, uniform_share
        self.drop_share, self.drop_negative, self.center_features = drop_share, drop_negative, center_features
        self.backend, self.build_time = backend, 0.0
        if score_source not in SCORE_SOURCES or (score_source == "training" and sampling != "soft"):
            raise ValueError(f"score_source={score_source!r} with sampling={sampling!r}: choose from {SCORE_SOURCES}; "
                             "'training' needs sampling='soft'")
        self.score_source = score_source
        if val_gradient not in VAL_GRADIENTS:
            raise ValueError(f"val_gradient={val_gradient!r}: choose from {VAL_GRADIENTS}")
        self.val_gradient = val_gradient
        if drop_by not in DROP_BY or (drop_by == "margin" and score_source != "training"):
            raise ValueError(f"drop_by={drop_by!r} with score_source={score_source!r}: choose from {DROP_BY}; "
                             "'margin' reads the training pass's records (score_source='training')")
        self.drop_by, self.drop_share_auto, self.agreement_sample = drop_by, drop_share_auto, agreement_sample
        if not drop_share_scale > 0:
            raise ValueError(f"drop_share_scale={drop_share_scale!r}: must be > 0")
        self.drop_share_scale = drop_share_scale
        if class_budget not in CLASS_BUDGETS:
            raise ValueError(f"class_budget={class_budget!r}: choose from {CLASS_BUDGETS}")
        self.class_budget = class_budget
        if hard_ratio < 1 or (hard_ratio > 1 and (score_source != "training" or not math.isinf(temperature))):
            raise ValueError(f"hard_ratio={hard_ratio!r}: 1 (off), or > 1 with score_source='training' (it reads the "
                             f"training pass's losses) and temperature=inf (got {score_source!r}, {temperature!r})")
        self.hard_ratio = hard_ratio
        if coverage and (score_source != "training" or not math.isinf(temperature) or hard_ratio > 1):
            raise ValueError(f"coverage=True reads how often training saw each example: it needs score_source='training' "
                             f"and temperature=inf, without hard_ratio (got {score_source!r}, {temperature!r}, {hard_ratio!r})")
        self.coverage = coverage
        if not 0 <= curriculum <= 1 or (curriculum and (score_source != "training" or drop_by != "confidence")):
            raise ValueError(f"curriculum={curriculum!r}: a share of the epochs in [0, 1]; above 0 it ranks the training "
                             f"records by confidence (score_source='training', drop_by='confidence'; got "
                             f"{score_source!r}, {drop_by!r})")
        self.curriculum = curriculum
        # the greedy has no scores to draw from again; training records change every epoch: always redraw
        self.redraws = (redraw and sampling == "soft") or score_source == "training"
        self.mean, self.std, self.eta = mean, std, eta
        self.greedy, self.block_size, self.epsilon = greedy, block_size, epsilon
        self.per_class, self.last_layer, self.lookahead = per_class, last_layer, lookahead
        self.pool_fraction = pool_fraction
        self.device, self.precision = torch.device(device), precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.batch_size = batch_size

    @torch.no_grad()
    def features(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (float32) and float32 logits of un-augmented images, in eval mode.

        Under data parallelism each rank embeds its shard and every rank receives all the features.
        """
        embed, fc = last_layer_parts(model)
        was_training = model.training
        model.eval()
        mine = images[distributed.shard(len(images))]
        try:
            parts = []
            run = None
            for start in range(0, len(mine), self.batch_size):
                x = normalize(mine[start : start + self.batch_size].to(self.device), self.mean, self.std)
                x = x.contiguous(memory_format=self.memory_format)
                if run is None:  # built on the first batch, from the weights as they are now
                    run, built = feature_function(self.backend, embed, x, device=self.device, precision=self.precision)
                    self.build_time += built
                parts.append(run(x))
        finally:
            model.train(was_training)
        h = torch.cat(parts).cpu() if parts else torch.zeros(0, fc.in_features)
        h = distributed.gather_rows(h, len(images))
        return h, logits_of(h, fc)

    def val_features(self, model: nn.Module, val: ImageData,
                     known: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation set's features and logits: ``known`` (the features the evaluation just computed with
        the same weights, see ``AdaptiveSubsetLoader.offer_val_features``) or a pass of its own."""
        if known is None:
            return self.features(model, val.x)
        return known, logits_of(known, last_layer_parts(model)[1])

    def problem(self, model: nn.Module, train: ImageData, val: ImageData, pool: torch.Tensor,
                val_known: torch.Tensor | None = None) -> LastLayerProblem:
        """The forward passes over the candidate pool and the validation set, and what greedy needs from them."""
        h, z = self.features(model, train.x[pool.to(train.x.device)])
        hv, zv = self.val_features(model, val, val_known)
        y = train.y[pool.to(train.y.device)].cpu()
        if self.center_features:  # the same model with the last layer as W (h - mu) + (b + W mu): see the docstring
            mu = hv.mean(0)
            h, hv = h - mu, hv - mu
        r = torch.softmax(z, 1)
        r[torch.arange(len(r)), y] -= 1
        groups = y if self.per_class else torch.zeros_like(y)
        return LastLayerProblem(h, r, groups, hv, zv, val.y.cpu(), self.eta, self.last_layer == "full",
                                self.lookahead == "mean")

    def maximize(self, problem: LastLayerProblem, budget: int, generator: torch.Generator) -> torch.Tensor:
        """Greedy maximization with this selector's options, on the training device (a GPU's, not a CPU copy on
        every rank); positions into the pool, in the order chosen."""
        quotas = self.quotas(problem.groups, budget, self.num_groups(problem), problem.zv, problem.yv)
        block = self.block_size or max(1, math.ceil(budget / 100))
        return greedy(problem.to(self.device), budget, quotas, mode=self.greedy, block=block, epsilon=self.epsilon,
                      generator=generator).cpu()

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator, val_known: torch.Tensor | None = None) -> Selection:
        start = time.perf_counter()
        self.build_time = 0.0
        n = len(train)
        pool = torch.arange(n)
        if self.pool_fraction < 1:
            size = max(budget, round(self.pool_fraction * n))
            pool = torch.sort(torch.randperm(n, generator=generator)[:size]).values
        problem = self.problem(model, train, val, pool, val_known)
        forward_time = time.perf_counter() - start
        cache, extra = None, {}
        if self.sampling == "greedy":
            order = self.maximize(problem, budget, generator)
        else:
            problem.check_finite()
            scores = first_order_gains(problem.h, problem.r, train.y[pool.to(train.y.device)].cpu(), problem.hv,
                                       val_residuals(problem.zv, problem.yv), problem.yv, eta=self.eta,
                                       full=problem.full, own_class=self.val_gradient == "own_class")
            quotas = self.quotas(problem.groups, budget, self.num_groups(problem), problem.zv, problem.yv)
            y = train.y[pool.to(train.y.device)].cpu()
            rank, share = self._drop_plan(problem.r + F.one_hot(y, problem.r.shape[1]), y, problem.zv, problem.yv)
            keys = sampling_keys(scores, problem.groups, quotas, temperature=self.temperature, drop_share=share,
                                 drop_negative=self.drop_negative, drop_rank=rank)
            order = draw(keys, problem.groups, quotas, generator, self.uniform_share)
            cache = {"pool": pool, "keys": keys, "groups": problem.groups, "quotas": quotas}
            extra = {"select_positive_gain_share": float((scores > 0).float().mean()),
                     "select_kept_share": float(torch.isfinite(keys).float().mean()), "select_drop_share": share}
        greedy_time = time.perf_counter() - start - forward_time
        random_pick = torch.randperm(len(pool), generator=generator)[:budget]
        return Selection.uniform(
            torch.sort(pool[order]).values, cache,
            select_forward_time=forward_time,
            select_val_reused=float(val_known is not None),
            select_backend_build_time=self.build_time,
            select_greedy_time=greedy_time,
            select_objective=problem.objective(order),
            select_objective_random=problem.objective(random_pick),
            select_objective_none=float(-F.cross_entropy(problem.zv, problem.yv)),
            **extra,
        )

    def redraw(self, cache: dict[str, torch.Tensor], train: ImageData, budget: int, *,
               generator: torch.Generator, records: dict[str, torch.Tensor] | None = None,
               progress: float = 1.0) -> Selection:
        """A new draw without a forward pass: from the last selection's keys, or (``score_source: training``)
        from the latest training records against the last validation gradient. ``progress``: the share of the
        run's epochs done (for ``curriculum``)."""
        if self.score_source == "training":
            return self._draw_from_records(cache, train, budget, records, generator, progress,
                                           selector="glister-redraw")
        order = draw(cache["keys"], cache["groups"], cache["quotas"], generator, self.uniform_share)
        return Selection.uniform(torch.sort(cache["pool"][order]).values, cache, selector="glister-redraw")

    def select_from_records(self, model: nn.Module, train: ImageData, val: ImageData, budget: int,
                            records: dict[str, torch.Tensor] | None, *, generator: torch.Generator,
                            val_known: torch.Tensor | None = None, progress: float = 1.0) -> Selection:
        """``score_source: training``: the candidates' features and logits are what the training pass computed
        when it last trained on each of them (augmented, train-mode: the gradient it really contributed), so
        the only forward passes are the validation set's (none when the evaluation has just run it: ``val_known``)
        and the agreement sample's. Examples never trained on yet count as their class's mean."""
        start = time.perf_counter()
        self.build_time = 0.0
        hv, zv = self.val_features(model, val, val_known)
        if not (torch.isfinite(hv).all() and torch.isfinite(zv).all()):
            raise NonFiniteSelection("non-finite validation features or logits")
        mu = hv.mean(0) if self.center_features else torch.zeros(hv.shape[1])
        cache = {"hv": hv - mu, "rv": val_residuals(zv, val.y.cpu()), "yv": val.y.cpu(), "mu": mu, "zv": zv}
        if self.drop_share_auto and self.agreement_sample:
            # the training records are augmented, train-mode and up to many epochs old, which makes the model look
            # less sure of its training labels than of the validation set even on clean data (a biased estimate of
            # the wrong-label share): measure the agreement the way the validation accuracy is measured instead
            pick = torch.randperm(len(train), generator=generator)[: self.agreement_sample]
            _, z = self.features(model, train.x[pick.to(train.x.device)])
            cache["agree"] = torch.tensor(float((z.argmax(1) == train.y[pick.to(train.y.device)].cpu()).float().mean()))
        forward_time = time.perf_counter() - start
        selection = self._draw_from_records(cache, train, budget, records, generator, progress)
        selection.stats.update(select_forward_time=forward_time, select_val_reused=float(val_known is not None),
                               select_backend_build_time=self.build_time,
                               select_greedy_time=time.perf_counter() - start - forward_time,
                               select_objective_none=float(-F.cross_entropy(zv, val.y.cpu())))
        if records is not None and records["seen"].any():  # the objective of the pass-scored modes, from the records
            selection.stats.update(self._record_objectives(records, train.y.cpu(), cache, selection.indices))
        return selection

    def _record_objectives(self, records: dict[str, torch.Tensor], y: torch.Tensor, cache: dict[str, torch.Tensor],
                           chosen: torch.Tensor) -> dict[str, float]:
        """``select_objective`` and ``select_objective_random`` (the GLISTER objective of the subset and of a random one
        of the same size) over the examples the training pass has records of, as the pass-scored modes log them. A
        diagnostic: its random subset comes from a generator of its own, so the run's draws are as without it."""
        seen = records["seen"]
        r = val_residuals(records["logits"], y)  # p - onehot(y): the same residual, here of the training records
        problem = LastLayerProblem(records["h"] - cache["mu"], r, torch.zeros_like(y), cache["hv"], cache["zv"],
                                   cache["yv"], self.eta, self.last_layer == "full", self.lookahead == "mean")
        pick = chosen[seen[chosen]]
        candidates = seen.nonzero().squeeze(1)
        own = torch.Generator().manual_seed(len(candidates))
        random_pick = candidates[torch.randperm(len(candidates), generator=own)[: len(pick)]]
        return {"select_objective": problem.objective(pick), "select_objective_random": problem.objective(random_pick)}

    def _draw_from_records(self, cache: dict[str, torch.Tensor], train: ImageData, budget: int,
                           records: dict[str, torch.Tensor] | None, generator: torch.Generator,
                           progress: float = 1.0, **stats: object) -> Selection:
        y = train.y.cpu()
        n, c = len(y), cache["rv"].shape[1]
        groups = y if self.per_class else torch.zeros_like(y)
        quotas = self.quotas(groups, budget, c if self.per_class else 1, cache["zv"], cache["yv"])
        seen = records["seen"] if records is not None else torch.zeros(n, dtype=torch.bool)
        scores = torch.zeros(n)
        if seen.any():
            r = torch.softmax(records["logits"][seen], 1)
            r[torch.arange(len(r)), y[seen]] -= 1
            part = first_order_gains(records["h"][seen] - cache["mu"], r, y[seen], cache["hv"], cache["rv"], cache["yv"],
                                     eta=1.0, full=self.last_layer == "full", own_class=self.val_gradient == "own_class")
            if not torch.isfinite(part).all():
                raise NonFiniteSelection("non-finite gains from the training pass's records")
            scores[seen] = part * self.eta
            fill_unseen_with_group_mean(scores, seen, groups, len(quotas))
        rank, share = None, self.drop_share
        if seen.any() and (self.drop_by != "gain" or self.drop_share_auto):
            probs = torch.softmax(records["logits"][seen], 1)
            conf, share = self._drop_plan(probs, y[seen], cache["zv"], cache["yv"],
                                          float(cache["agree"]) if "agree" in cache else None)
            share = max(share, curriculum_drop(progress, self.curriculum, budget / n))
            if self.drop_by == "margin":
                conf = mean_margins(records)[seen]
            # never-seen examples rank as fully confident: not dropped for want of a record
            rank = torch.full((n,), math.inf if self.drop_by == "margin" else 1.0)
            rank[seen] = conf
        keys = sampling_keys(scores, groups, quotas, temperature=self.temperature, drop_share=share,
                             drop_negative=self.drop_negative, drop_rank=rank)
        keys[~seen] = 0.0  # unknown examples are drawn at the class's average rate, never excluded
        stats = {**stats, "select_drop_share": share,
                 "select_positive_gain_share": float((scores[seen] > 0).float().mean()) if seen.any() else 0.0,
                 "select_seen_share": float(seen.float().mean()), "select_kept_share": float(torch.isfinite(keys).float().mean())}
        if self.hard_ratio > 1 and seen.any():
            losses = torch.zeros(n)
            losses[seen] = F.cross_entropy(records["logits"][seen], y[seen], reduction="none")
            fill_unseen_with_group_mean(losses, seen, groups, len(quotas))
            order, weights = draw_hard_boosted(losses, torch.isfinite(keys), groups, quotas, self.hard_ratio, generator)
            sort = torch.argsort(order)
            stats["select_weight_max"] = float(weights.max())
            return Selection(order[sort], weights[sort].float(), stats, cache)
        if self.coverage and records is not None and "times_seen" in records:
            order = draw_least_seen(keys, records["times_seen"], groups, quotas, generator)
        else:
            order = draw(keys, groups, quotas, generator, self.uniform_share)
        return Selection.uniform(torch.sort(order).values, cache, **stats)

    def _drop_plan(self, probs: torch.Tensor, y: torch.Tensor, zv: torch.Tensor, yv: torch.Tensor,
                   agree: float | None = None) -> tuple[torch.Tensor | None, float]:
        """What ranks the candidates for ``drop_share`` (None: the gains) and the share to drop."""
        if self.drop_by == "gain" and not self.drop_share_auto:
            return None, self.drop_share
        confidence, share = confidence_drop(probs, y, zv, yv, self.drop_share, self.drop_share_auto, agree,
                                            self.drop_share_scale)
        return (None if self.drop_by == "gain" else confidence), share

    def quotas(self, groups: torch.Tensor, budget: int, num_groups: int, zv: torch.Tensor,
               yv: torch.Tensor) -> torch.Tensor:
        """Each class's share of the budget: in proportion to its size, to its share of the validation set
        (``class_budget: val_share``), or to its validation loss under the current model (``val_loss``); never
        more than the class holds."""
        if self.class_budget == "size" or num_groups == 1:
            return budget_quotas(groups, budget, num_groups)
        if self.class_budget == "val_share":
            return budget_quotas(groups, budget, num_groups, torch.bincount(yv, minlength=num_groups).double())
        return budget_quotas(groups, budget, num_groups, class_demand(zv, yv, num_groups))

    def num_groups(self, problem: LastLayerProblem) -> int:
        return int(problem.r.shape[1]) if self.per_class else 1

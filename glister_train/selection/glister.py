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
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageData
from ..errors import ConfigError, NonFiniteSelection
from ..models import last_layer_parts
from .base import Environment, Selection, require
from .forward import BACKENDS, eval_features, logits_of
from .quotas import class_quotas, top_within_quotas
from .sampling import draw, sampling_keys

GREEDY = ("naive", "stochastic", "batched")
LAST_LAYER = ("bias", "full")
LOOKAHEAD = ("sum", "mean")
SAMPLING = ("greedy", "soft")
VAL_GRADIENTS = ("all", "own_class")
CLASS_MIXES = ("size", "val_share")

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


def val_residuals(zv: torch.Tensor, yv: torch.Tensor) -> torch.Tensor:
    """``softmax(z) - onehot(y)`` of the validation set: its cross-entropy gradient w.r.t. the logits."""
    rv = torch.softmax(zv, 1)
    rv[torch.arange(len(rv)), yv] -= 1
    return rv


# ---------------------------------------------------------------- the selector


@dataclass(frozen=True)
class GlisterOptions:
    greedy: str = "batched"  # naive | stochastic (Mirzasoleiman et al.'s) | batched (block_size at a time)
    block_size: int = 0  # batched: examples added per validation update; 0 = 1% of the budget
    epsilon: float = 0.01  # stochastic: each step scores (n/k) ln(1/epsilon) random candidates
    eta: float = 0.0  # the lookahead step; 0 = the run's initial learning rate
    last_layer: str = "full"  # full (weight and bias gradients) | bias (CORDS' default)
    lookahead: str = "sum"  # sum (the paper, CORDS) | mean (one SGD step on the subset's mean loss)
    per_class: bool = True  # a budget per class
    class_budget: str = "size"  # per_class: in proportion to the class's size | val_share (its validation share)
    # greedy (maximize the lookahead objective) | soft (a variant: draw per class with probability ~
    # exp(standardized first-order gain / temperature), a fresh draw every epoch from the last scores)
    sampling: str = "greedy"
    temperature: float = 1.0  # soft only
    val_gradient: str = "all"  # soft only: gains against the whole validation gradient | own_class (its label's)
    backend: str = "eager"  # the forward pass over the pool: eager | openvino (CPU; the [compile] extra)

    def __post_init__(self) -> None:
        for key, options in (("greedy", GREEDY), ("last_layer", LAST_LAYER), ("lookahead", LOOKAHEAD),
                             ("class_budget", CLASS_MIXES), ("sampling", SAMPLING), ("val_gradient", VAL_GRADIENTS),
                             ("backend", BACKENDS)):
            require(getattr(self, key) in options, key, getattr(self, key), f"one of {', '.join(options)}")
        require(self.block_size >= 0, "block_size", self.block_size, ">= 0 (0 = 1% of the budget)")
        require(0 < self.epsilon < 1, "epsilon", self.epsilon, "in (0, 1), e.g. 0.01")
        require(0 <= self.eta < math.inf, "eta", self.eta, "a finite number >= 0 (0 = the initial learning rate)")
        require(0 < self.temperature < math.inf, "temperature", self.temperature, "a positive finite number")
        defaults = GlisterOptions.__dataclass_fields__
        only = {"soft": ("temperature", "val_gradient"), "greedy": ("greedy", "block_size", "epsilon", "lookahead")}
        for sampling, keys in only.items():
            for key in keys:
                if self.sampling != sampling and getattr(self, key) != defaults[key].default:
                    raise ConfigError(f"selection.{key}: {getattr(self, key)!r} applies to sampling: {sampling}, "
                                      f"not {self.sampling}; drop it or set selection.sampling={sampling}")


class GlisterSelector:
    """GLISTER-ONLINE: every ``select_every`` epochs, the subset whose lookahead step on the last layer most raises
    the validation log-likelihood, by greedy maximization (or, ``sampling: soft``, drawn by first-order gain)."""

    name: ClassVar[str] = "glister"
    reselects: ClassVar[bool] = True
    Options: ClassVar[type] = GlisterOptions

    def __init__(self, options: GlisterOptions, env: Environment, train_size: int = 0):
        if options.backend == "openvino":  # checked now, not at the first selection with the run folder written
            if env.device.type != "cpu":
                raise ConfigError(f"selection.backend: 'openvino' runs on the CPU, not on {env.device.type}; "
                                  "use --set selection.backend=eager")
            from ..compile.export import require as require_extra

            require_extra("openvino", "compile")
        self.options, self.env = options, env
        self.eta = options.eta or env.lr
        self.redraws = options.sampling == "soft"  # the greedy has no scores to draw from again
        self.val_features: torch.Tensor | None = None

    def observe_validation(self, features: torch.Tensor) -> None:
        self.val_features = features

    def state_dict(self) -> dict[str, Any]:
        return {"val_features": self.val_features}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.val_features = state["val_features"]

    def problem(self, model: nn.Module, train: ImageData, val: ImageData) -> tuple[LastLayerProblem, float]:
        """The forward passes over the pool and the validation set (the one the evaluation handed over, if any),
        and what the greedy needs from them; with the seconds spent building the backend."""
        h, z, built = eval_features(model, train.x, self.env, self.options.backend)
        if self.val_features is not None:
            hv, zv = self.val_features, logits_of(self.val_features, last_layer_parts(model)[1])
        else:
            hv, zv, _ = eval_features(model, val.x, self.env, self.options.backend)
        y = train.y.cpu()
        r = torch.softmax(z, 1)
        r[torch.arange(len(r)), y] -= 1
        groups = y if self.options.per_class else torch.zeros_like(y)
        problem = LastLayerProblem(h, r, groups, hv, zv, val.y.cpu(), self.eta, self.options.last_layer == "full",
                                   self.options.lookahead == "mean")
        return problem, built

    def quotas(self, problem: LastLayerProblem, budget: int) -> torch.Tensor:
        num_groups = int(problem.r.shape[1]) if self.options.per_class else 1
        return class_quotas(problem.groups, budget, num_groups, self.options.class_budget, problem.yv)

    def maximize(self, problem: LastLayerProblem, budget: int, generator: torch.Generator) -> torch.Tensor:
        """The greedy with this selector's options, on the run's device; positions into the pool, in the order
        chosen."""
        block = self.options.block_size or max(1, math.ceil(budget / 100))
        return greedy(problem.to(self.env.device), budget, self.quotas(problem, budget), mode=self.options.greedy,
                      block=block, epsilon=self.options.epsilon, generator=generator).cpu()

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        start = time.perf_counter()
        reused = self.val_features is not None
        problem, built = self.problem(model, train, val)
        self.val_features = None
        forward_time = time.perf_counter() - start
        quotas = self.quotas(problem, budget)
        cache = None
        if self.options.sampling == "greedy":
            order = self.maximize(problem, budget, generator)
        else:
            problem.check_finite()
            scores = first_order_gains(problem.h, problem.r, train.y.cpu(), problem.hv,
                                       val_residuals(problem.zv, problem.yv), problem.yv, eta=self.eta,
                                       full=problem.full, own_class=self.options.val_gradient == "own_class")
            keys = sampling_keys(scores, problem.groups, len(quotas), self.options.temperature)
            order = draw(keys, problem.groups, quotas, generator)
            cache = {"keys": keys, "groups": problem.groups, "quotas": quotas}
        greedy_time = time.perf_counter() - start - forward_time
        random_pick = torch.randperm(len(train), generator=generator)[:budget]
        return Selection.uniform(
            torch.sort(order).values, cache,
            select_forward_time=forward_time, select_val_reused=float(reused), select_backend_build_time=built,
            select_greedy_time=greedy_time,
            select_objective=problem.objective(order),
            select_objective_random=problem.objective(random_pick),
            select_objective_none=float(-F.cross_entropy(problem.zv, problem.yv)),
        )

    def redraw(self, cache: dict[str, torch.Tensor], train: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        """``sampling: soft``: a new draw from the last selection's scores, without a forward pass."""
        order = draw(cache["keys"], cache["groups"], cache["quotas"], generator)
        return Selection.uniform(torch.sort(order).values, cache)

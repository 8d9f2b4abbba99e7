"""reducible-loss: per class, the examples with the most left to learn that a model of the trusted set finds
learnable (RHO-LOSS, Mindermann et al., ICML 2022, with subsets drawn per epoch instead of per batch).

An example's reducible loss is its training loss, as the training pass last computed it, minus its irreducible
loss: the loss of its label under a model trained on the trusted validation set alone. A wrong label is hard for
both models (low), an easy example easy for both (low); a hard, correctly labelled example is hard for the model in
training but not for the trusted one (high). The trusted model is trained once, at the first selection, with the
run's architecture, learning rate and batch size; its time is counted in that selection's, so a report charges it.

Every epoch a subset is drawn per class in the validation set's mix: Gumbel-top-k on the reducible loss
standardized per class and divided by ``temperature`` (0: the top of each class, as RHO-LOSS takes). An example
without a training loss yet ranks above every other, so the first epochs see the whole pool.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageData, augment, normalize
from ..errors import NonFiniteSelection
from ..models import unwrap
from .base import Environment, Selection, require
from .forward import eval_features
from .quotas import class_quotas, top_within_quotas
from .sampling import draw, sampling_keys


@dataclass(frozen=True)
class ReducibleLossOptions:
    trusted_epochs: int = 10  # epochs of the irreducible-loss model on the validation set
    temperature: float = 1.0  # of the draw on the standardized reducible loss; 0: the top of each class

    def __post_init__(self) -> None:
        require(self.trusted_epochs >= 1, "trusted_epochs", self.trusted_epochs, "an integer >= 1, e.g. 10")
        require(0 <= self.temperature < math.inf, "temperature", self.temperature,
                "a finite number >= 0 (0: the top of each class)")


def train_on_trusted(model: nn.Module, val: ImageData, env: Environment, epochs: int,
                     generator: torch.Generator) -> nn.Module:
    """A fresh copy of ``model``'s architecture trained on ``val`` alone: SGD with Nesterov momentum, a cosine
    schedule, random crops and flips; seeded from ``generator``, the global RNG left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        trusted = copy.deepcopy(unwrap(model))
        for module in trusted.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    trusted.train()
    for p in trusted.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(trusted.parameters(), lr=env.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(val) / env.train_batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(val), generator=generator)
        for start in range(0, len(val), env.train_batch_size):
            idx = order[start : start + env.train_batch_size].to(val.x.device)
            x = normalize(augment(val.x[idx], generator).to(env.device), env.mean, env.std)
            with torch.autocast(env.device.type, torch.bfloat16, enabled=env.precision == "bf16"):
                logits = trusted(x)
            loss = F.cross_entropy(logits.float(), val.y[idx].to(env.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    return trusted.eval()


def label_losses(model: nn.Module, data: ImageData, env: Environment) -> torch.Tensor:
    """Cross-entropy of each example's label under ``model``, eval mode, un-augmented, float32 on the CPU."""
    _, logits, _ = eval_features(model, data.x, env)
    if not torch.isfinite(logits).all():
        raise NonFiniteSelection("non-finite logits of the training pool")
    return F.cross_entropy(logits, data.y.cpu(), reduction="none")


class ReducibleLossSelector:
    name: ClassVar[str] = "reducible-loss"
    reselects: ClassVar[bool] = True
    redraws: ClassVar[bool] = True
    Options: ClassVar[type] = ReducibleLossOptions

    def __init__(self, options: ReducibleLossOptions, env: Environment, train_size: int):
        self.options, self.env = options, env
        self.observes_training = env.training_visible
        self.train_size = train_size
        self.irreducible: torch.Tensor | None = None  # (n,) each label's loss under the trusted model
        # each example's training loss when last trained on, and whether it has one
        self.records: dict[str, torch.Tensor] = {}

    def observe(self, indices: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        device = logits.device
        if not self.records:
            self.records = {"loss": torch.zeros(self.train_size, device=device),
                            "seen": torch.zeros(self.train_size, dtype=torch.bool, device=device)}
        indices = indices.to(device, non_blocking=True)
        self.records["loss"][indices] = F.cross_entropy(logits.detach().float(), labels, reduction="none")
        self.records["seen"][indices] = True

    def state_dict(self) -> dict[str, Any]:
        return {"records": {k: v.cpu() for k, v in self.records.items()}, "irreducible": self.irreducible}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = {k: v.to(self.env.device) for k, v in state["records"].items()}
        self.irreducible = state["irreducible"]

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        """Train the trusted model the first time; then draw (from a pass over the pool where the loop cannot
        show the selector its training pass)."""
        start = time.perf_counter()
        stats: dict[str, float] = {}
        if self.irreducible is None:
            trusted = train_on_trusted(model, val, self.env, self.options.trusted_epochs, generator)
            self.irreducible = label_losses(trusted, train, self.env)
            stats["select_trusted_val_loss"] = float(label_losses(trusted, val, self.env).mean())
            stats["select_trusted_time"] = time.perf_counter() - start
        cache = {"yv": val.y.cpu(), "irreducible": self.irreducible}
        if not self.observes_training:
            cache["loss"] = label_losses(model, train, self.env)
        selection = self.redraw(cache, train, budget, generator=generator)
        selection.stats.update(stats)
        return selection

    def redraw(self, cache: dict[str, torch.Tensor], train: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        y, yv, temperature = train.y.cpu(), cache["yv"], self.options.temperature
        n, num_classes = len(y), max(int(y.max()), int(yv.max())) + 1
        quotas = class_quotas(y, budget, num_classes, "val_share", yv)
        loss, seen = self.training_losses(cache, n)
        irreducible = cache["irreducible"]
        reducible = loss - irreducible
        keys = torch.zeros(n)
        if seen.any():
            keys = sampling_keys(reducible, y, num_classes, temperature if temperature > 0 else 1.0)
            keys[~seen] = float(keys[seen].max()) + 50.0  # far above any draw's noise: taken first
        if temperature == 0:
            order = top_within_quotas(keys, y, quotas, int(quotas.sum()))
        else:
            order = draw(keys, y, quotas, generator)
        scored = order[seen[order]]  # an example without a training loss has no reducible loss yet
        return Selection.uniform(torch.sort(order).values, cache, select_seen_share=float(seen.float().mean()),
                                 select_reducible_mean=float(reducible[scored].mean()) if len(scored) else 0.0,
                                 select_irreducible_mean=float(irreducible[order].mean()))

    def training_losses(self, cache: dict[str, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(each example's training loss, which have one): from the selection's own pass, or the records."""
        if "loss" in cache:
            return cache["loss"], torch.ones(n, dtype=torch.bool)
        if not self.records:
            return torch.zeros(n), torch.zeros(n, dtype=torch.bool)
        loss, seen = self.records["loss"].cpu(), self.records["seen"].cpu()
        if not torch.isfinite(loss[seen]).all():
            raise NonFiniteSelection("non-finite losses in the training pass's records")
        return loss, seen

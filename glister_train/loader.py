"""AdaptiveSubsetLoader: batches from the current subset; re-selects only when the loop asks.

Schedule for ``E`` epochs, warm start ``kappa`` and period ``R`` (``select_every``):
- epochs ``[0, W)`` with ``W = round(kappa * E)`` train on the full training set; with ``kappa_matched`` that
  warm start counts against the budget (CORDS' -Warm): only ``ceil(kappa * E * fraction)`` epochs train on the
  full set and the rest of ``[0, W)`` are skipped, the learning rate stepping on as if they had run, so the
  run costs what ``E`` epochs on the subset cost;
- at epoch ``W`` the first subset is chosen, then a new one at ``W + R, W + 2R, ...``
  (only for selectors that re-select; ``full`` and ``random`` keep their first subset);
- a model that has not trained yet (epoch 0 of a fresh run, ``random_start``) has nothing to say
  about the data, so the first subset at epoch 0 is uniformly random, as in CORDS.

Iterating never advances the schedule and ``len(loader)`` is the number of batches one pass yields.

Under data parallelism every rank holds the same subset and the same generators, so all ranks walk
the same global batches; each takes its contiguous share (:func:`distributed.shard`) and scales its
loss so that DDP's gradient average equals the single-process gradient of the global batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import distributed
from .data import ImageData, augment, normalize
from .selection import RandomSelector, Selection, SubsetSelector, budget_for


@dataclass
class Batch:
    x: torch.Tensor  # float, normalized (and augmented), on the device
    y: torch.Tensor
    w: torch.Tensor  # per-example loss weights
    weight_total: torch.Tensor  # sum of the weights over the global batch (all ranks)
    ranks: int = 1  # loss = sum(w * loss) * ranks / weight_total: DDP's average then matches one process
    idx: torch.Tensor | None = None  # the examples' indices into the training split (CPU)
    global_size: int | None = None  # examples in the global batch (all ranks); None: this batch is all of it

    def loss(self, losses: torch.Tensor) -> torch.Tensor:
        """The step's loss from per-example losses: weighted, normalized by the global batch's weight, and scaled
        by the number of ranks so that DDP's gradient average equals the single-process gradient."""
        return (losses * self.w).sum() * self.ranks / self.weight_total


class AdaptiveSubsetLoader:
    def __init__(self, train: ImageData, val: ImageData, selector: SubsetSelector, *, fraction: float,
                 epochs: int, select_every: int, kappa: float, batch_size: int, mean: torch.Tensor,
                 kappa_matched: bool = False,
                 std: torch.Tensor, augment: bool = True, seed: int = 0, device: str | torch.device = "cpu",
                 channels_last: bool = False, random_start: bool = True, noisy: torch.Tensor | None = None):
        self.train, self.val, self.selector = train, val, selector
        self.budget = budget_for(fraction, len(train))
        self.epochs, self.warm_epochs = epochs, round(kappa * epochs)
        # the epochs that train on the full set; the rest of the warm start is skipped
        self.full_epochs = min(math.ceil(kappa * epochs * fraction - 1e-9), self.warm_epochs) if kappa_matched \
            else self.warm_epochs
        self.select_every, self.batch_size = select_every, batch_size
        self.mean, self.std, self.augment = mean, std, augment
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.random_start = random_start
        self.noisy = noisy  # which training labels are wrong (injected noise): measured, never shown to selectors
        # three streams, so that changing one (e.g. the selector's draws) leaves the others as they were
        self.select_gen = torch.Generator().manual_seed(seed)
        self.shuffle_gen = torch.Generator().manual_seed(seed + 1)
        self.augment_gen = torch.Generator().manual_seed(seed + 2)
        self.selection = Selection.uniform(torch.arange(len(train)))
        self.selected_at: int | None = None  # epoch of the last selection
        self.cache: dict[str, torch.Tensor] | None = None  # what the last selection left for redraws

    # ------------------------------------------------------------ schedule

    def skips(self, epoch: int) -> bool:
        """A warm-start epoch the compute-matched schedule skips: nothing is trained or selected."""
        return self.full_epochs <= epoch < self.warm_epochs

    def due(self, epoch: int) -> bool:
        if epoch < self.warm_epochs:
            return False
        if self.selected_at is None:
            return True
        return self.selector.reselects and (epoch - self.warm_epochs) % self.select_every == 0 and epoch != self.selected_at

    # ------------------------------------------------------------ what the selector watches (selection/base.py)

    @property
    def observes_training(self) -> bool:
        return getattr(self.selector, "observes_training", False)

    def observe(self, idx: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        """The examples ``idx`` were just trained on, with these labels and logits."""
        self.selector.observe(idx, labels, logits)

    def wants_validation(self, epoch: int) -> bool:
        """Whether the selector takes the validation set's features for a selection due at ``epoch``."""
        return hasattr(self.selector, "observe_validation") and self.due(epoch)

    def offer_validation(self, features: torch.Tensor) -> None:
        """Features of the whole validation set, in order, computed by the model as the next selection sees it."""
        self.selector.observe_validation(features)

    def redraw_due(self, epoch: int) -> bool:
        """Between selections, a selector that redraws draws a fresh subset from its cached scores."""
        return (getattr(self.selector, "redraws", False) and self.selected_at is not None
                and epoch >= self.warm_epochs and epoch != self.selected_at)

    def reselect_if_due(self, epoch: int, model: nn.Module) -> Selection | None:
        """Choose a new subset if the schedule says so; returns it (with ``select_time`` in its stats) or None."""
        start = time.perf_counter()
        scored = self.due(epoch)
        if scored:
            selector = self.selector
            if epoch == 0 and self.random_start and self.selector.reselects:
                selector = RandomSelector()
            selection = selector.select(model, self.train, self.val, self.budget, generator=self.select_gen)
            self.cache = selection.cache
        elif self.redraw_due(epoch):
            if self.cache is None:  # after a random first subset there are no scores yet: a fresh random one
                selector, selection = RandomSelector(), RandomSelector().select(
                    model, self.train, self.val, self.budget, generator=self.select_gen)
            else:
                selector = self.selector
                selection = selector.redraw(self.cache, self.train, self.budget, generator=self.select_gen)
        else:
            return None
        stats = selection.stats
        stats.setdefault("select_time", time.perf_counter() - start)
        stats.setdefault("selector", selector.name)
        if self.selected_at is not None:  # share of the new subset that was in the previous one
            stats["select_overlap"] = float(torch.isin(selection.indices, self.selection.indices).sum()) / len(selection)
        distributed.check_same(selection.indices, f"the subset selected at epoch {epoch + 1}")
        labels = self.train.y[selection.indices.to(self.train.y.device)]
        stats["select_class_hist"] = torch.bincount(labels, minlength=int(self.train.y.max()) + 1).tolist()
        if self.noisy is not None:
            stats["select_noisy_share"] = float(self.noisy[selection.indices.cpu()].float().mean())
            stats["select_pool_noisy_share"] = float(self.noisy.float().mean())
        self.selection = selection
        if scored:
            self.selected_at = epoch
        return selection

    # ------------------------------------------------------------ batches

    def __len__(self) -> int:
        full, rest = divmod(len(self.selection), self.batch_size)
        return full + (rest >= distributed.world())  # a last batch smaller than the rank count is dropped

    def __iter__(self) -> Iterator[Batch]:
        sel = self.selection
        order = torch.randperm(len(sel), generator=self.shuffle_gen)
        ranks = distributed.world()
        for start in range(0, len(order), self.batch_size):
            pick = order[start : start + self.batch_size]
            size = len(pick)
            if size < ranks:  # some rank would get nothing; DDP needs every rank in every step
                break
            mine = torch.arange(size)[distributed.shard(size)]
            total = sel.weights[pick].sum()
            pick = pick[mine]
            idx = sel.indices[pick].to(self.train.x.device)
            x = self.train.x[idx]
            if self.augment:
                x = augment(x, self.augment_gen, positions=mine, batch=size)
            x = normalize(x.to(self.device, non_blocking=True), self.mean, self.std)
            yield Batch(x.contiguous(memory_format=self.memory_format),
                        self.train.y[idx].to(self.device, non_blocking=True),
                        sel.weights[pick].to(self.device, non_blocking=True), total.to(self.device), ranks,
                        sel.indices[pick], size)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "indices": self.selection.indices, "weights": self.selection.weights,
            "selected_at": -1 if self.selected_at is None else self.selected_at,
            "select_gen": self.select_gen.get_state(), "shuffle_gen": self.shuffle_gen.get_state(),
            "augment_gen": self.augment_gen.get_state(), "cache": self.cache,
            # what the selector watched: a resumed run selects from the very same records and features
            "selector": self.selector.state_dict() if hasattr(self.selector, "state_dict") else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.selection = Selection(state["indices"], state["weights"])
        self.selected_at = None if state["selected_at"] < 0 else int(state["selected_at"])
        self.select_gen.set_state(state["select_gen"])
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self.augment_gen.set_state(state["augment_gen"])
        self.cache = state.get("cache")
        if state.get("selector") is not None:
            self.selector.load_state_dict(state["selector"])

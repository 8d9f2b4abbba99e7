"""filtered-random, the shipped default: uniform random draws per class, after setting aside the examples the model
is least sure of, in the share the trusted validation set says are mislabeled.

Every epoch a fresh uniform subset is drawn within per-class quotas. Every ``select_every`` epochs the share to set
aside is re-estimated: a model that gets a share ``A`` of the validation set right, but agrees with only a share
``a`` of the training labels measured the same way (eval mode, un-augmented, ``agreement_sample`` images), sees
about ``1 - a / A`` of them as wrong; 0 on clean data, where ``a >= A``, so there it is adaptive random with class
quotas. What is set aside is the lowest of each class by the model's latest probability of the label, taken from
the training pass itself.

Where the loop cannot show it the training pass (torchrun, torch.compile) it runs the pool through the model in
eval mode at each selection instead and draws from that until the next.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..data import ImageData
from ..errors import NonFiniteSelection
from ..models import last_layer_parts
from .base import Environment, Selection, require
from .forward import eval_features, logits_of
from .quotas import class_quotas
from .sampling import draw, exclude_lowest

CLASS_MIXES = ("val_share", "size")


@dataclass(frozen=True)
class FilteredRandomOptions:
    # the subset's class mix: val_share (the validation set's: balanced subsets from skewed classes when the trusted
    # set is balanced) | size (the pool's)
    class_budget: str = "val_share"
    agreement_sample: int = 1000  # training images scored the validation set's way for the estimate
    drop_share_scale: float = 1.0  # set aside this multiple of the estimated wrong-label share (at most 0.9)
    # an estimated share below this is read as 0 (nothing set aside): an estimate that low is within its own bias
    # (memorized training labels, a pool skewed against the trusted set), and the least confident are then mostly
    # hard correct examples
    ignore_below: float = 0.2

    def __post_init__(self) -> None:
        require(self.class_budget in CLASS_MIXES, "class_budget", self.class_budget, f"one of {', '.join(CLASS_MIXES)}")
        require(self.agreement_sample >= 1, "agreement_sample", self.agreement_sample, "an integer >= 1, e.g. 1000")
        require(0 < self.drop_share_scale < math.inf, "drop_share_scale", self.drop_share_scale,
                "a positive finite number (1: the estimate as it is)")
        require(0 <= self.ignore_below < 1, "ignore_below", self.ignore_below, "a share in [0, 1), e.g. 0.2 (0: act on any)")


def wrong_label_share(agree: float, val_acc: float, scale: float) -> float:
    """``scale * (1 - a / A)``, clipped to [0, 0.9]: the share of the training labels the model disagrees with
    beyond what it gets wrong on the trusted set."""
    return min(0.9, max(0.0, scale * (1 - agree / max(val_acc, 1e-6))))


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


class FilteredRandomSelector:
    name: ClassVar[str] = "filtered-random"
    reselects: ClassVar[bool] = True
    redraws: ClassVar[bool] = True
    Options: ClassVar[type] = FilteredRandomOptions

    def __init__(self, options: FilteredRandomOptions, env: Environment, train_size: int):
        self.options, self.env = options, env
        self.observes_training = env.training_visible
        # what the training pass showed of each example when it last trained on it
        self.records: dict[str, torch.Tensor] = {}
        self.val_features: torch.Tensor | None = None  # handed over by the evaluation for the next selection
        self.train_size = train_size

    # ------------------------------------------------------------ what the loop shows it

    def observe(self, indices: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        """Keep what the pass computed, where it computed it: on a GPU the records stay there, so a training step
        never waits for a copy to the host."""
        n, logits, device = self.train_size, logits.detach().float(), logits.device
        if not self.records:
            self.records = {"logits": torch.zeros(n, logits.shape[1], device=device),
                            "seen": torch.zeros(n, dtype=torch.bool, device=device)}
        indices = indices.to(device, non_blocking=True)
        self.records["logits"][indices] = logits
        self.records["seen"][indices] = True

    def observe_validation(self, features: torch.Tensor) -> None:
        self.val_features = features

    def state_dict(self) -> dict[str, Any]:
        return {"records": {k: v.cpu() for k, v in self.records.items()}, "val_features": self.val_features}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = {k: v.to(self.env.device) for k, v in state["records"].items()}
        self.val_features = state["val_features"]

    # ------------------------------------------------------------ selections

    def select(self, model: nn.Module, train: ImageData, val: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        """Re-estimate the wrong-label share with the model as it is now, then draw."""
        start = time.perf_counter()
        reused = self.val_features is not None
        if reused:
            zv = logits_of(self.val_features, last_layer_parts(model)[1])
        else:
            _, zv, _ = eval_features(model, val.x, self.env)
        self.val_features = None
        if not torch.isfinite(zv).all():
            raise NonFiniteSelection("non-finite validation logits")
        cache = {"zv": zv, "yv": val.y.cpu()}
        if self.observes_training:
            pick = torch.randperm(len(train), generator=generator)[: self.options.agreement_sample]
            _, z, _ = eval_features(model, train.x[pick.to(train.x.device)], self.env)
            cache["agree"] = torch.tensor(accuracy(z, train.y[pick.to(train.y.device)].cpu()))
        else:  # the whole pool, the validation set's way: its confidences rank it until the next selection
            _, z, _ = eval_features(model, train.x, self.env)
            if not torch.isfinite(z).all():
                raise NonFiniteSelection("non-finite logits of the training pool")
            y = train.y.cpu()
            cache["agree"] = torch.tensor(accuracy(z, y))
            cache["rank"] = torch.softmax(z, 1)[torch.arange(len(y)), y]
        forward_time = time.perf_counter() - start
        selection = self.redraw(cache, train, budget, generator=generator)
        selection.stats.update(select_forward_time=forward_time, select_val_reused=float(reused))
        return selection

    def redraw(self, cache: dict[str, torch.Tensor], train: ImageData, budget: int, *,
               generator: torch.Generator) -> Selection:
        """A uniform draw per class among the examples not set aside, with the last selection's estimate."""
        y = train.y.cpu()
        n, num_classes = len(y), cache["zv"].shape[1]
        quotas = class_quotas(y, budget, num_classes, self.options.class_budget, cache["yv"])
        seen, rank, share = self.ranking(cache, y)
        excluded = exclude_lowest(rank, y, quotas, share) if seen.any() else torch.zeros(n, dtype=torch.bool)
        keys = torch.zeros(n).masked_fill_(excluded, -math.inf)
        keys[~seen] = 0.0  # an example with no record yet is drawn at its class's rate, never set aside
        order = draw(keys, y, quotas, generator)
        return Selection.uniform(torch.sort(order).values, cache, select_drop_share=share,
                                 select_seen_share=float(seen.float().mean()),
                                 select_kept_share=float(torch.isfinite(keys).float().mean()))

    def share(self, cache: dict[str, torch.Tensor]) -> float:
        """The share to set aside, from the model's agreement with the training labels and its validation accuracy."""
        share = wrong_label_share(float(cache["agree"]), accuracy(cache["zv"], cache["yv"]), self.options.drop_share_scale)
        return share if share >= self.options.ignore_below else 0.0

    def ranking(self, cache: dict[str, torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(which examples have a rank, the rank of each, lowest set aside first, the share to set aside)."""
        n = len(y)
        if "rank" in cache:  # from the selection's own pass over the pool
            rank = cache["rank"]
            return torch.ones(n, dtype=torch.bool), rank, self.share(cache)
        records = {k: v.cpu() for k, v in self.records.items()}  # once a selection or redraw, not once a step
        seen = records["seen"] if records else torch.zeros(n, dtype=torch.bool)
        if not seen.any():
            return seen, torch.ones(n), 0.0
        logits = records["logits"][seen]
        if not torch.isfinite(logits).all():
            raise NonFiniteSelection("non-finite logits in the training pass's records")
        share = self.share(cache)
        rank = torch.ones(n)  # never-seen examples rank as fully confident: not set aside for want of a record
        rank[seen] = torch.softmax(logits, 1)[torch.arange(int(seen.sum())), y[seen]]
        return seen, rank, share


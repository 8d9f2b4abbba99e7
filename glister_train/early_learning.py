"""Early-learning regularization (Liu et al., NeurIPS 2020): keep each example's prediction near what the model
predicted for it before, so that a wrong label is not memorized.

Every example has a target, a running average of the model's predictions for it (updated each time it is
trained on). Its loss gains ``weight * log(1 - <p, target>)``: the term falls as the prediction ``p`` agrees with
the target. Early in training the model predicts the true class of an ambiguous image more often than its wrong
label, so the target carries that forward while the cross-entropy alone would, later, fit the label.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from . import distributed

# predictions are kept off 0 and 1, where log(1 - <p, t>) and its gradient blow up
CLAMP = 1e-4


class EarlyLearningTargets:
    """The per-example targets of one run and the penalty they give each step."""

    def __init__(self, num_examples: int, num_classes: int, weight: float, momentum: float,
                 device: str | torch.device = "cpu"):
        self.weight, self.momentum = weight, momentum
        self.targets = torch.zeros(num_examples, num_classes, device=device)

    def penalty(self, idx: torch.Tensor, logits: torch.Tensor, global_size: int | None = None) -> torch.Tensor:
        """Per-example ``weight * log(1 - <p, target>)`` for the examples ``idx``, after moving their targets
        towards this step's predictions (the update is not differentiated through).

        Under torchrun each rank holds its :func:`distributed.shard` of a global batch of ``global_size``
        examples, and every rank moves the targets of the whole batch: each keeps all of them, as one process
        would, since an example's next visit may fall to another rank."""
        p = F.softmax(logits.float(), dim=1).clamp(CLAMP, 1 - CLAMP)
        idx = idx.to(self.targets.device)
        with torch.no_grad():
            q = p / p.sum(1, keepdim=True)
            self.update(idx, q, global_size or len(idx))
        return self.weight * torch.log(1 - (self.targets[idx] * p).sum(1))

    def update(self, idx: torch.Tensor, q: torch.Tensor, global_size: int) -> None:
        if distributed.active():  # one gather of (index, prediction) rows, in float64, which holds any index exactly
            rows = distributed.gather_rows(torch.cat([idx[:, None].double(), q.double()], 1), global_size)
            idx, q = rows[:, 0].long(), rows[:, 1:].to(q.dtype)
        self.targets[idx] = self.momentum * self.targets[idx] + (1 - self.momentum) * q

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        targets = state["targets"]
        if targets.shape != self.targets.shape:
            raise ValueError(f"early-learning targets of shape {tuple(targets.shape)}, expected {tuple(self.targets.shape)}")
        self.targets = targets.to(self.targets.device)

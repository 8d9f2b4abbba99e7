from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from glister_train import config as C
from glister_train.early_learning import EarlyLearningTargets
from glister_train.errors import ConfigError
from glister_train.models import load_model
from glister_train.run import train_run
from glister_train.tracking import read_metrics

from .conftest import tiny_config
from .test_train import _interrupt_after, quiet


def test_targets_average_the_predictions_of_each_visit_and_the_penalty_reads_them():
    early = EarlyLearningTargets(5, 3, weight=2.0, momentum=0.6)
    idx = torch.tensor([1, 3])
    first, second = torch.randn(2, 3), torch.randn(2, 3)
    early.penalty(idx, first)
    logits = second.clone().requires_grad_()
    penalty = early.penalty(idx, logits)
    p1, p2 = F.softmax(first, 1), F.softmax(second, 1)
    target = 0.6 * (0.4 * p1) + 0.4 * p2
    assert torch.allclose(early.targets[idx], target, atol=1e-6)
    assert torch.equal(early.targets[[0, 2, 4]], torch.zeros(3, 3))  # examples not trained on keep no target
    assert torch.allclose(penalty, 2.0 * torch.log(1 - (target * p2).sum(1)), atol=1e-6)
    # a step down the penalty's gradient moves each prediction towards its target
    penalty.sum().backward()
    moved = F.softmax(second - 0.5 * logits.grad, 1)
    assert ((moved * target).sum(1) > (p2 * target).sum(1)).all()


def test_the_penalty_slows_a_prediction_that_follows_a_wrong_label():
    """Fitting one example's wrong label from a prediction of its true class: with the penalty the true class keeps
    more of the probability after the same steps (it slows memorization; alone, the target follows in the end)."""
    def fit(weight: float) -> float:
        logits = torch.tensor([[3.0, 0.0, 0.0]], requires_grad=True)
        early = EarlyLearningTargets(1, 3, weight=weight, momentum=0.7)
        opt = torch.optim.SGD([logits], lr=0.5)
        for _ in range(5):
            loss = F.cross_entropy(logits, torch.tensor([1])) + (early.penalty(torch.tensor([0]), logits) if weight else 0)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
        return float(F.softmax(logits, 1)[0, 0])

    assert fit(3.0) > fit(0.0) + 0.2


def test_resume_with_early_learning_matches_an_uninterrupted_run(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir, train={"epochs": 4, "early_learning": 3.0}, selection={"select_every": 2})
    full = train_run(cfg, tmp_path / "full", log=quiet)
    plain = train_run(tiny_config(npz_dir, train={"epochs": 4}, selection={"select_every": 2}), tmp_path / "plain",
                      log=quiet)
    part = tmp_path / "part"
    _interrupt_after(cfg, part, epochs=2)
    resumed = train_run(cfg, part, resume=True, log=quiet)
    assert [m["train_loss"] for m in read_metrics(part)] == [m["train_loss"] for m in read_metrics(tmp_path / "full")]
    assert resumed["final_test_acc"] == full["final_test_acc"]
    a, _ = load_model(tmp_path / "full" / "model.pt")
    b, _ = load_model(part / "model.pt")
    c, _ = load_model(tmp_path / "plain" / "model.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    assert plain["status"] == "completed"


@pytest.mark.parametrize("key, value", [("early_learning", -1.0), ("early_learning_momentum", 1.0)])
def test_bad_early_learning_settings_are_named(key, value):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        C.validate(C.merge(C.Config(), {"train": {key: value}}))

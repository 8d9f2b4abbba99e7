"""The CORDS-compatible loader runs a blog-style training loop unchanged."""

from __future__ import annotations

import logging

import pytest
import torch
from dotmap import DotMap
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

from glister_train.compat.cords import GLISTERDataLoader, check_dss_args
from glister_train.selection.quotas import budget_quotas


class CordsNet(nn.Module):
    """CORDS' model protocol: forward(x, last=True, freeze=False) -> (logits, embedding)."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU())
        self.linear = nn.Linear(8, classes)

    def forward(self, x, last=False, freeze=False):
        with torch.set_grad_enabled(not freeze and torch.is_grad_enabled()):
            e = self.body(x)
        out = self.linear(e)
        return (out, e) if last else out

    def get_embedding_dim(self):
        return 8


def datasets(n: int = 90, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, 2, 2, generator=g) + y.view(-1, 1, 1, 1).float()
    return random_split(TensorDataset(x, y), [60, 30], generator=g)


def dss(model, **over):
    args = dict(model=model, loss=nn.CrossEntropyLoss(reduction="none"), eta=0.05, num_classes=3, num_epochs=6,
                device="cpu", fraction=0.3, select_every=2, kappa=0, linear_layer=True, selection_type="PerClass",
                greedy="Stochastic")
    args.update(over)
    return DotMap(args)


@pytest.mark.parametrize("model_cls", [CordsNet, lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(),
                                                                       nn.Linear(8, 3))])
def test_blog_style_loop_trains_and_reselects_on_schedule(model_cls):
    torch.manual_seed(0)
    model = model_cls()
    train, val = datasets()
    train_loader, val_loader = DataLoader(train, batch_size=20), DataLoader(val, batch_size=20)
    criterion = nn.CrossEntropyLoss(reduction="none")
    dl = GLISTERDataLoader(train_loader, val_loader, dss(model), logging.getLogger("test"), batch_size=5,
                           shuffle=True, pin_memory=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sizes = []
    for _epoch in range(6):
        expected_batches, seen = len(dl), 0
        for inputs, targets, weights in dl:
            loss = torch.dot(criterion(model(inputs), targets), weights / weights.sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += 1
            sizes.append(len(targets))
        assert seen == expected_batches
    assert [s["epoch"] for s in dl.selections] == [2, 4]  # epoch 0 is a random subset, then every 2
    assert len(dl.indices) == 18 and len(torch.unique(dl.indices)) == 18
    labels = torch.stack([train[i][1] for i in range(len(train))])
    assert dl.selections[-1]["class_hist"] == budget_quotas(labels, 18, 3).tolist()  # PerClass: exact shares


def test_warm_start_trains_on_full_data_first():
    model = CordsNet()
    train, val = datasets()
    dl = GLISTERDataLoader(DataLoader(train), DataLoader(val), dss(model, kappa=0.5), batch_size=10)
    assert len(dl) == 6  # 60 examples during the 3 warm epochs
    for _ in range(3):
        assert sum(len(b[1]) for b in dl) == 60
    assert len(dl) == 2  # 18 selected from epoch 3 on
    assert sum(len(b[1]) for b in dl) == 18 and [s["epoch"] for s in dl.selections] == [3]


@pytest.mark.parametrize("change, message", [
    ({"fractoin": 0.3}, "unknown key 'fractoin' \\(did you mean 'fraction'\\?\\)"),
    ({"greedy": "Lazy"}, "dss_args.greedy: 'Lazy'"),
    ({"kappa": 0.5, "num_epochs": DotMap()}, "num_epochs: needed when kappa > 0"),
    ({"loss": nn.MSELoss()}, "cross-entropy"),
    ({"greedy": "RGreedy"}, "RGreedy needs r"),
])
def test_bad_dss_args_are_named(change, message):
    args = dss(CordsNet(), **change)
    with pytest.raises(ValueError, match=message):
        check_dss_args(args)


def test_missing_key_is_named_even_after_dotmap_created_it():
    args = dss(CordsNet())
    del args["eta"]
    _ = args.eta  # DotMap silently creates an empty value here
    with pytest.raises(ValueError, match="missing 'eta'"):
        check_dss_args(args)


def test_model_without_linear_layer_is_a_clear_error():
    train, val = datasets()
    with pytest.raises(TypeError, match="no nn.Linear layer"):
        GLISTERDataLoader(DataLoader(train), DataLoader(val), dss(nn.Sequential(nn.Flatten())), batch_size=5)

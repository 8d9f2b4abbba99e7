"""The SubsetSelector contract, for every registered selector."""

from __future__ import annotations

import pytest
import torch

from glister_train.data import ImageData
from glister_train.models import TinyNet
from glister_train.selection import SELECTORS, Environment, make_selector


def data(n: int, classes: int = 4, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % classes)


ENV = Environment(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25))


def shipped(name: str, train: ImageData, model: TinyNet):
    """Selector ``name`` with its shipped options, having watched one training pass if it watches them."""
    selector = make_selector(name, {}, ENV, len(train))
    if getattr(selector, "observes_training", False):
        with torch.no_grad():
            logits = model((train.x.float() / 255 - 0.5) / 0.25)
        selector.observe(torch.arange(len(train)), train.y, logits)
    return selector


@pytest.mark.parametrize("name", sorted(SELECTORS))
@pytest.mark.parametrize("budget", [1, 13, 60])
def test_selector_contract(name: str, budget: int):
    train, val = data(60), data(20, seed=1)
    model = TinyNet(4, 4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    a = shipped(name, train, model).select(model, train, val, budget, generator=torch.Generator().manual_seed(5))
    b = shipped(name, train, model).select(model, train, val, budget, generator=torch.Generator().manual_seed(5))
    if getattr(a, "cache", None) is not None and getattr(shipped(name, train, model), "redraws", False):
        again = shipped(name, train, model).redraw(a.cache, train, budget, generator=torch.Generator().manual_seed(6))
        assert len(again) == budget and len(torch.unique(again.indices)) == budget
    expected = len(train) if name == "full" else budget
    assert len(a) == expected and a.indices.dtype == torch.int64
    assert len(torch.unique(a.indices)) == len(a) and 0 <= int(a.indices.min()) and int(a.indices.max()) < len(train)
    assert a.weights.dtype == torch.float32 and bool((a.weights > 0).all())
    assert torch.equal(a.indices, b.indices), "same seed, same subset"
    assert not model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng_before), "global RNG untouched"


def test_random_subsets_differ_across_draws():
    train, val = data(100), data(10)
    g = torch.Generator().manual_seed(0)
    s = make_selector("adaptive-random")
    assert not torch.equal(s.select(None, train, val, 30, generator=g).indices,
                           s.select(None, train, val, 30, generator=g).indices)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_registered_selector_trains_two_epochs(npz_dir, tmp_path, name: str):
    """A selector in the registry is one the config accepts and the loop can train with."""
    from glister_train.run import train_run

    from .conftest import tiny_config

    cfg = tiny_config(npz_dir, selection={"selector": name, "fraction": 0.5, "select_every": 1}, train={"epochs": 2})
    summary = train_run(cfg, tmp_path / name, log=lambda _: None)
    assert summary["status"] == "completed" and summary["epochs_done"] == 2


def test_the_configs_models_are_the_registrys():
    from glister_train import config as C
    from glister_train.models import MODELS

    assert C.MODELS == tuple(MODELS)


def test_class_balanced_random_draws_in_the_validation_sets_mix():
    pixels = data(200).x
    skewed = torch.tensor([0] * 110 + [1] * 50 + [2] * 30 + [3] * 10)  # a long tail in the pool
    train, balanced_val = ImageData(pixels, skewed), data(40, seed=1)  # 10 of each class
    mixes = {}
    for mix in ("none", "size", "val_share"):
        selector = make_selector("adaptive-random", {"class_budget": mix})
        a = selector.select(None, train, balanced_val, 60, generator=torch.Generator().manual_seed(3))
        b = selector.select(None, train, balanced_val, 60, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.indices, b.indices) and len(torch.unique(a.indices)) == 60
        mixes[mix] = torch.bincount(skewed[a.indices], minlength=4).tolist()
    assert mixes["val_share"] == [17, 17, 16, 10]  # balanced, class 3 giving all it has
    assert mixes["size"] == [33, 15, 9, 3]  # the pool's proportions, exactly
    assert sum(mixes["none"]) == 60  # a plain uniform draw: proportions only on average

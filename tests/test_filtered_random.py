"""filtered-random, the shipped default, as a unit: the estimate, the quotas, the ranking and the contract."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from glister_train.data import ImageData
from glister_train.models import TinyNet
from glister_train.selection.base import Environment
from glister_train.selection.filtered_random import FilteredRandomOptions, FilteredRandomSelector, wrong_label_share
from glister_train.selection.quotas import budget_quotas

from .conftest import make_images


def selector(training_visible: bool = True, train_size: int = 0, **options) -> FilteredRandomSelector:
    env = Environment(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), training_visible=training_visible)
    return FilteredRandomSelector(FilteredRandomOptions(**options), env, train_size)


def images(n: int, seed: int, classes: int = 4) -> ImageData:
    x, y = make_images(n, classes, size=8, seed=seed)
    return ImageData(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y))


def noisy_problem(noise: float = 0.4):
    """A model trained on clean labels, a training pool with a share ``noise`` of its labels made wrong, a clean
    validation set in a skewed class mix (2:1:1:1), and records of the pool's logits as a training pass shows them."""
    every = images(800, seed=1)  # one draw: the classes look alike in both splits
    clean, val = every.subset(torch.arange(600)), every.subset(torch.arange(600, 800))
    val = val.subset(torch.cat([torch.nonzero(val.y == 0).squeeze(1), torch.nonzero(val.y != 0).squeeze(1)[::2]]))
    torch.manual_seed(0)
    model = TinyNet(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = (clean.x.float() / 255 - 0.5) / 0.25
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), clean.y).backward()
        opt.step()
    g = torch.Generator().manual_seed(5)
    wrong = torch.rand(len(clean.y), generator=g) < noise
    y = torch.where(wrong, (clean.y + 1 + torch.randint(0, 3, (len(clean.y),), generator=g)) % 4, clean.y)
    model.train()
    with torch.no_grad():
        logits = model(x)
    return model, ImageData(clean.x, y), val, wrong, logits


def test_the_shipped_composition_filters_wrong_labels_in_the_trusted_class_mix():
    model, train, val, wrong, logits = noisy_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    sel = selector(train_size=len(train))
    sel.observe(torch.arange(len(train)), train.y, logits)
    a = sel.select(model, train, val, 150, generator=torch.Generator().manual_seed(3))
    b_sel = selector(train_size=len(train))
    b_sel.observe(torch.arange(len(train)), train.y, logits)
    b = b_sel.select(model, train, val, 150, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.indices, b.indices) and len(torch.unique(a.indices)) == 150  # exact, deterministic
    assert a.stats["select_drop_share"] == pytest.approx(float(wrong.float().mean()), abs=0.1)  # estimated, ~0.4
    quotas = budget_quotas(train.y, 150, 4, torch.bincount(val.y, minlength=4).double())
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == quotas.tolist()  # the trusted set's mix
    assert float(wrong[a.indices].float().mean()) < 0.5 * float(wrong.float().mean())  # far fewer wrong labels
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    again = sel.redraw(a.cache, train, 150, generator=torch.Generator().manual_seed(4))  # a new draw, same filter
    assert len(torch.unique(again.indices)) == 150 and not torch.equal(again.indices, a.indices)
    assert float(wrong[again.indices].float().mean()) < 0.5 * float(wrong.float().mean())


def test_on_clean_labels_nothing_is_set_aside():
    model, train, val, wrong, logits = noisy_problem(noise=0.0)
    sel = selector(train_size=len(train), class_budget="size")
    sel.observe(torch.arange(len(train)), train.y, logits)
    a = sel.select(model, train, val, 150, generator=torch.Generator().manual_seed(3))
    assert a.stats["select_drop_share"] == 0.0 and a.stats["select_kept_share"] == 1.0
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == budget_quotas(train.y, 150, 4).tolist()


def test_without_the_training_pass_it_ranks_the_pool_itself():
    """Under torchrun or torch.compile the loop cannot show it the pass: the same filter from its own forward pass."""
    model, train, val, wrong, _ = noisy_problem()
    sel = selector(training_visible=False, train_size=len(train))
    assert not sel.observes_training
    a = sel.select(model, train, val, 150, generator=torch.Generator().manual_seed(3))
    assert len(torch.unique(a.indices)) == 150 and a.stats["select_seen_share"] == 1.0
    assert float(wrong[a.indices].float().mean()) < 0.5 * float(wrong.float().mean())


def test_an_estimate_below_ignore_below_sets_nothing_aside():
    model, train, val, wrong, logits = noisy_problem()  # an estimate of about 0.4
    shares = {}
    for ignore_below in (0.0, 0.3, 0.6):
        sel = selector(train_size=len(train), ignore_below=ignore_below)
        sel.observe(torch.arange(len(train)), train.y, logits)
        chosen = sel.select(model, train, val, 150, generator=torch.Generator().manual_seed(3))
        shares[ignore_below] = (chosen.stats["select_drop_share"], chosen.stats["select_kept_share"])
    assert shares[0.3] == shares[0.0] and shares[0.0][0] > 0.3 and shares[0.0][1] < 0.7
    assert shares[0.6] == (0.0, 1.0)


def test_the_estimate_is_one_minus_agreement_over_validation_accuracy():
    assert wrong_label_share(0.6, 1.0, 1.0) == pytest.approx(0.4)
    assert wrong_label_share(0.6, 1.0, 1.5) == pytest.approx(0.6)
    assert wrong_label_share(0.45, 0.75, 1.0) == pytest.approx(0.4)
    assert wrong_label_share(0.0, 1.0, 5.0) == 0.9  # capped
    assert wrong_label_share(1.0, 1.0, 1.0) == 0.0  # never negative


def test_what_it_watched_survives_a_checkpoint():
    _, train, _, _, logits = noisy_problem()
    sel = selector(train_size=len(train))
    sel.observe(torch.arange(100), train.y[:100], logits[:100])
    sel.observe_validation(torch.ones(5, 3))
    restored = selector(train_size=len(train))
    restored.load_state_dict(sel.state_dict())
    assert all(torch.equal(restored.records[k], v) for k, v in sel.records.items())
    assert torch.equal(restored.val_features, torch.ones(5, 3))


@pytest.mark.parametrize("options, message", [({"class_budget": "val_loss"}, "class_budget"),
                                              ({"agreement_sample": 0}, "agreement_sample"),
                                              ({"drop_share_scale": float("inf")}, "drop_share_scale"),
                                              ({"ignore_below": 1.0}, "ignore_below")])
def test_bad_options_name_the_key(options, message):
    from glister_train.errors import ConfigError

    with pytest.raises(ConfigError, match=f"selection.{message}"):
        FilteredRandomOptions(**options)


def test_what_the_pass_shows_it_stays_on_the_device_that_computed_it():
    """On a GPU a copy of each step's logits to the host would stall the step: the records stay where the logits
    are (the meta device stands in for a GPU here), and a checkpoint holds them on the CPU."""
    sel = selector(train_size=10)
    sel.observe(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0], device="meta"),
                torch.randn(4, 4, device="meta"))
    assert {v.device.type for v in sel.records.values()} == {"meta"}
    cpu = selector(train_size=10)
    cpu.observe(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.randn(2, 4))
    assert {v.device.type for v in cpu.state_dict()["records"].values()} == {"cpu"}

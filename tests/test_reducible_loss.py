"""reducible-loss as a unit: the trusted model, the ranking, the draw, the contract and the checkpoint."""

from __future__ import annotations

import pytest
import torch

from glister_train.errors import ConfigError
from glister_train.models import TinyNet
from glister_train.selection import make_selector
from glister_train.selection.base import Environment
from glister_train.selection.quotas import budget_quotas
from glister_train.selection.reducible_loss import ReducibleLossOptions, ReducibleLossSelector

from .test_filtered_random import noisy_problem


def selector(train_size: int, training_visible: bool = True, **options) -> ReducibleLossSelector:
    env = Environment(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), lr=0.1, train_batch_size=64,
                      training_visible=training_visible)
    return ReducibleLossSelector(ReducibleLossOptions(**{"trusted_epochs": 30, **options}), env, train_size)


def flat_logits(n: int) -> torch.Tensor:
    """Logits that give every label the same training loss: the ranking is then the trusted model's alone."""
    return torch.zeros(n, 4)


def test_labels_the_trusted_model_rejects_are_drawn_least_in_the_trusted_class_mix():
    model, train, val, wrong, _ = noisy_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    runs = []
    for _ in range(2):
        sel = selector(len(train), temperature=0.0)
        sel.observe(torch.arange(len(train)), train.y, flat_logits(len(train)))
        runs.append(sel.select(model, train, val, 150, generator=torch.Generator().manual_seed(3)))
    a, b = runs
    assert torch.equal(a.indices, b.indices) and len(torch.unique(a.indices)) == 150  # exact, deterministic
    assert float(sel.irreducible[wrong].mean()) > 2 * float(sel.irreducible[~wrong].mean())
    assert float(wrong[a.indices].float().mean()) < 0.5 * float(wrong.float().mean())
    quotas = budget_quotas(train.y, 150, 4, torch.bincount(val.y, minlength=4).double())
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == quotas.tolist()
    assert a.stats["select_trusted_time"] > 0
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_what_is_left_to_learn_ranks_first():
    """Equal trusted losses: the examples the training pass finds hardest are drawn."""
    model, train, val, _, _ = noisy_problem(noise=0.0)
    sel = selector(len(train), temperature=0.0)
    sel.irreducible = torch.zeros(len(train))  # as if trained: the draw reads the training losses alone
    logits = flat_logits(len(train))
    hard = torch.arange(len(train)) % 3 == 0
    logits[torch.arange(len(train)), train.y] = torch.where(hard, -5.0, 5.0)
    sel.observe(torch.arange(len(train)), train.y, logits)
    picked = sel.select(model, train, val, 100, generator=torch.Generator().manual_seed(0)).indices
    assert bool(hard[picked].all())


def test_examples_never_trained_on_are_drawn_first_and_the_temperature_mixes_the_rest():
    model, train, val, wrong, _ = noisy_problem()
    sel = selector(len(train), temperature=1.0)
    seen = torch.arange(len(train)) < 450
    sel.observe(torch.nonzero(seen).squeeze(1), train.y[seen], flat_logits(int(seen.sum())))
    first = sel.select(model, train, val, 60, generator=torch.Generator().manual_seed(1))
    assert not bool(seen[first.indices].any())  # 150 unseen, 60 to draw: only unseen ones
    sel.observe(torch.arange(len(train)), train.y, flat_logits(len(train)))
    draws = [sel.redraw(first.cache, train, 150, generator=torch.Generator().manual_seed(s)).indices for s in (2, 3)]
    assert not torch.equal(draws[0], draws[1])  # a draw, not the top
    assert float(wrong[draws[0]].float().mean()) < float(wrong.float().mean())  # still leaning away from wrong labels


def test_without_the_training_pass_it_scores_the_pool_itself():
    _, train, val, wrong, _ = noisy_problem()
    torch.manual_seed(1)
    model = TinyNet(4, 4)  # untrained: about the same loss on every label, so the trusted model's ranking shows
    sel = selector(len(train), training_visible=False, temperature=0.0)
    a = sel.select(model, train, val, 150, generator=torch.Generator().manual_seed(3))
    assert "loss" in a.cache and a.stats["select_seen_share"] == 1.0
    assert float(wrong[a.indices].float().mean()) < float(wrong.float().mean())


def test_a_resumed_selector_draws_the_same_subset_without_training_again():
    model, train, val, _, _ = noisy_problem()
    sel = selector(len(train))
    sel.observe(torch.arange(len(train)), train.y, flat_logits(len(train)))
    first = sel.select(model, train, val, 150, generator=torch.Generator().manual_seed(3))
    resumed = selector(len(train))
    resumed.load_state_dict(sel.state_dict())
    a = sel.select(model, train, val, 150, generator=torch.Generator().manual_seed(4))
    b = resumed.select(model, train, val, 150, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.indices, b.indices) and "select_trusted_time" not in b.stats
    assert "select_trusted_time" in first.stats


@pytest.mark.parametrize("options, message", [
    ({"trusted_epochs": 0}, "selection.trusted_epochs: 0 is invalid"),
    ({"temperature": -1.0}, "selection.temperature: -1.0 is invalid"),
    ({"drop_share_scale": 1.0}, "not an option of the reducible-loss selector"),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        make_selector("reducible-loss", options, Environment(mean=torch.zeros(3), std=torch.ones(3)), 10)


def test_it_needs_no_options():
    sel = make_selector("reducible-loss", {}, Environment(mean=torch.zeros(3), std=torch.ones(3)), 10)
    assert isinstance(sel, ReducibleLossSelector) and sel.options == ReducibleLossOptions()

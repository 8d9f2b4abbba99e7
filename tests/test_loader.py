from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from glister_train.data import ImageData
from glister_train.loader import AdaptiveSubsetLoader
from glister_train.selection import Selection


class Spy:
    """Records the epochs it is asked at (via the loader's epoch counter) and returns a fixed subset."""

    name: ClassVar[str] = "spy"
    reselects: ClassVar[bool] = True

    def __init__(self) -> None:
        self.calls = 0

    def select(self, model, train, val, budget, *, generator):
        self.calls += 1
        return Selection.uniform(torch.arange(budget))


def make(selector, *, n=50, epochs=10, every=3, kappa=0.0, batch=8, fraction=0.5, random_start=True,
         kappa_matched=False):
    pixels = torch.randint(0, 255, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    train = ImageData(pixels, torch.arange(n) % 5)
    return AdaptiveSubsetLoader(train, train, selector, fraction=fraction, epochs=epochs, select_every=every,
                                kappa=kappa, batch_size=batch, mean=torch.zeros(3), std=torch.ones(3),
                                random_start=random_start, kappa_matched=kappa_matched)


def selection_epochs(loader, epochs, spy):
    seen = []
    for epoch in range(epochs):
        calls = spy.calls
        loader.reselect_if_due(epoch, model=None)
        if spy.calls > calls:
            seen.append(epoch)
    return seen


@pytest.mark.parametrize("kappa, every, expected", [
    (0.0, 3, [3, 6, 9]),  # epoch 0 takes a random subset: the model has not trained yet
    (0.2, 3, [2, 5, 8]),  # two warm epochs on full data, then every 3
    (0.5, 1, [5, 6, 7, 8, 9]),
    (0.0, 20, []),
])
def test_spy_sees_calls_exactly_at_the_due_epochs(kappa, every, expected):
    spy = Spy()
    loader = make(spy, epochs=10, every=every, kappa=kappa)
    assert selection_epochs(loader, 10, spy) == expected


@pytest.mark.parametrize("epochs, kappa, fraction, trained, selected", [
    (10, 0.5, 0.5, [0, 1, 2], [5, 8]),  # ceil(10 * 0.5 * 0.5) = 3 full epochs; 3 and 4 skipped
    (20, 0.5, 0.1, [0], [10, 13, 16, 19]),  # ceil(1.0) = 1
    (10, 0.3, 0.3, [0], [3, 6, 9]),
])
def test_a_matched_warm_start_trains_its_share_on_full_data_and_skips_the_rest(epochs, kappa, fraction, trained,
                                                                              selected):
    spy, spy_unmatched = Spy(), Spy()
    loader = make(spy, epochs=epochs, kappa=kappa, fraction=fraction, kappa_matched=True)
    unmatched = make(spy_unmatched, epochs=epochs, kappa=kappa, fraction=fraction)
    warm = round(kappa * epochs)
    assert [e for e in range(epochs) if loader.skips(e)] == list(range(len(trained), warm))
    assert not any(unmatched.skips(e) for e in range(epochs))
    assert selection_epochs(loader, epochs, spy) == selection_epochs(unmatched, epochs, spy_unmatched) == selected
    # what the run trains on: the full set in the first epochs, then the budget; about the budget of every epoch
    loader = make(Spy(), epochs=epochs, kappa=kappa, fraction=fraction, kappa_matched=True)
    images = 0
    for epoch in range(epochs):
        if loader.skips(epoch):
            continue
        loader.reselect_if_due(epoch, None)
        assert len(loader.selection) == (50 if epoch in trained else loader.budget)
        images += len(loader.selection)
    assert epochs * loader.budget <= images < epochs * loader.budget + 50  # ceil: at most one epoch more


def test_warm_epochs_use_the_full_set_and_epoch_zero_a_random_subset():
    spy = Spy()
    warm = make(spy, kappa=0.2)
    assert len(warm.selection) == 50 and warm.reselect_if_due(0, None) is None
    cold = make(spy)
    sel = cold.reselect_if_due(0, None)
    assert sel.stats["selector"] == "random" and len(sel) == 25 and spy.calls == 0
    without = make(spy, random_start=False)
    assert without.reselect_if_due(0, None).stats["selector"] == "spy"


def test_len_equals_batches_yielded_and_iterating_advances_nothing():
    spy = Spy()
    loader = make(spy, n=50, fraction=0.5, batch=8)  # 25 examples -> 4 batches (8, 8, 8, 1)
    loader.reselect_if_due(0, None)
    chosen = loader.selection.indices.clone()
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == 4
        assert [len(b.y) for b in batches] == [8, 8, 8, 1]
        assert sum(len(b.y) for b in batches) == 25
    assert torch.equal(loader.selection.indices, chosen) and spy.calls == 0


def test_every_selected_example_is_served_once_per_pass_with_its_weight():
    class Weighted(Spy):
        def select(self, model, train, val, budget, *, generator):
            idx = torch.arange(0, 2 * budget, 2)
            return Selection(idx, idx.float() + 1)

    loader = make(Weighted(), n=40, fraction=0.25, batch=4, random_start=False)
    loader.reselect_if_due(0, None)
    labels, weights = [], []
    for b in loader:
        labels.append(b.y)
        weights.append(b.w)
    w = torch.cat(weights)
    assert sorted(w.tolist()) == [float(i + 1) for i in range(0, 20, 2)]
    assert torch.equal(torch.sort(torch.cat(labels)).values, torch.sort(torch.arange(0, 20, 2) % 5).values)


def test_state_dict_round_trip_restores_schedule_and_streams():
    a = make(Spy())
    a.reselect_if_due(0, None)
    list(a)
    state = a.state_dict()
    b = make(Spy())
    b.load_state_dict(state)
    assert torch.equal(a.selection.indices, b.selection.indices) and b.selected_at == 0
    assert all(torch.equal(x.x, y.x) for x, y in zip(a, b))


class WatchingSpy(Spy):
    """A selector that watches the training pass and the validation features through the contract, and keeps
    what it saw in its state."""

    observes_training = True
    redraws = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[list[int], list[int]]] = []
        self.validation: torch.Tensor | None = None

    def observe(self, indices, labels, logits):
        self.seen.append((indices.tolist(), labels.tolist()))

    def observe_validation(self, features):
        self.validation = features

    def redraw(self, cache, train, budget, *, generator):
        return Selection.uniform(torch.arange(budget), cache)

    def state_dict(self):
        return {"seen": list(self.seen), "validation": self.validation}

    def load_state_dict(self, state):
        self.seen, self.validation = state["seen"], state["validation"]


def test_the_loader_hands_the_selector_what_it_watches_and_checkpoints_it():
    spy = WatchingSpy()
    loader = make(spy, n=10, every=3)
    assert loader.observes_training and loader.wants_validation(0)
    loader.observe(torch.tensor([0, 6]), torch.tensor([0, 1]), torch.zeros(2, 5))
    loader.offer_validation(torch.ones(3, 4))
    restored = make(WatchingSpy(), n=10, every=3)
    restored.load_state_dict(loader.state_dict())
    assert restored.selector.seen == [([0, 6], [0, 1])] and torch.equal(restored.selector.validation, torch.ones(3, 4))
    plain = make(Spy(), n=10)
    assert not plain.observes_training and not plain.wants_validation(0)

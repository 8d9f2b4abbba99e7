"""experiments/oracle_ceiling.py: the pool cut to its correctly labelled examples, drawn at the same size an epoch."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "oracle_ceiling.py"
spec = importlib.util.spec_from_file_location("oracle_ceiling", SCRIPT)
oracle_ceiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(oracle_ceiling)


def _splits(noisy):
    from glister_train.data import ImageData, Splits

    n = len(noisy)
    train = ImageData(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.arange(n) % 2)
    return Splits(train=train, val=train, test=None, num_classes=2, mean=torch.zeros(1), std=torch.ones(1),
                  noisy=torch.tensor(noisy), origin=torch.arange(n) + 100)


def test_the_kept_pool_is_exactly_the_correctly_labelled_examples_in_order():
    clean = oracle_ceiling.correctly_labelled(_splits([False, True, False, True, True, False]))
    assert clean.train.x.flatten().tolist() == [0, 2, 5] and clean.train.y.tolist() == [0, 0, 1]
    assert clean.origin.tolist() == [100, 102, 105] and not clean.noisy.any()


def test_a_run_without_injected_noise_is_refused():
    from glister_train.errors import UsageError

    splits = _splits([False, False])
    with pytest.raises(UsageError, match="injects no label noise"):
        oracle_ceiling.correctly_labelled(type(splits)(**{**splits.__dict__, "noisy": None}))


def test_the_kept_pool_draws_as_many_an_epoch_as_the_whole_pool_would():
    from glister_train.selection.base import budget_for

    fraction = oracle_ceiling.same_draws(0.3, 22500, 13500)
    assert budget_for(fraction, 13500) == budget_for(0.3, 22500) == 6750
    assert oracle_ceiling.same_draws(0.9, 100, 50) == 1.0  # never more than everything kept

"""experiments/instance_noise.py: how the injected labels sit against the reference model that placed them."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "instance_noise.py"
spec = importlib.util.spec_from_file_location("instance_noise_description", SCRIPT)
instance_noise_description = importlib.util.module_from_spec(spec)
spec.loader.exec_module(instance_noise_description)


def test_wrong_labels_are_counted_against_the_reference_models_first_choice():
    true = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2, 0])
    given = torch.tensor([1, 0, 2, 1, 0, 2, 0, 1, 2, 0])  # three wrong: 0->1, 1->2, 2->0
    reference = torch.full((10, 3), 0.1)
    reference[torch.arange(10), true] = 0.8  # right about every image...
    reference[0] = torch.tensor([0.2, 0.7, 0.1])  # ...except the first wrong one, whose given label it picks
    reference[3] = torch.tensor([0.15, 0.25, 0.6])  # and one right label it gets wrong
    out = instance_noise_description.describe(given, true, reference, ["a", "b", "c"])
    assert out["wrong_share"] == 0.3
    assert out["wrong_labels_the_reference_picks"] == round(1 / 3, 4)
    assert out["reference_acc_on_right_labels"] == round(6 / 7, 4)
    assert out["top_flips"] == {"a->b": 1, "b->c": 1, "c->a": 1}
    assert out["wrong_share_least_confident_tenth"] == 1.0  # image 0: the reference's lowest on its true label

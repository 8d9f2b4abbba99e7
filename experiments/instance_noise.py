"""How ``data.noise_kind: instance`` comes out on a configuration: the wrong share overall and per class, the most
common flips, and how the wrong labels sit against the reference model's confidence, for the training split and the
trusted (validation) split. It trains the reference model first if the cache lacks it (``cpu-long``: about 30
minutes on one CPU thread).

    python experiments/instance_noise.py --preset cpu-long --data-dir data --label-noise 0.4 --val-noise 0.08 \\
        --json experiments/results/instance_noise.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glister_train import config as C  # noqa: E402
from glister_train.data import load_splits  # noqa: E402

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def describe(given: torch.Tensor, true: torch.Tensor, reference: torch.Tensor, names: list[str]) -> dict:
    """The wrong share, per class, the top flips, the wrong share in the reference model's least and most
    confident tenth (by its probability of the true label, ``reference`` holding its probabilities, one row per
    image), how many wrong labels are the reference model's own first choice, and how often it is right on the
    images whose labels were left right."""
    wrong = given != true
    confidence = reference[torch.arange(len(true)), true]
    first_choice = reference.argmax(1)
    order = torch.argsort(confidence)
    tenth = len(order) // 10
    flips: dict[str, int] = {}
    for a, b in zip(true[wrong].tolist(), given[wrong].tolist()):
        flips[f"{names[a]}->{names[b]}"] = flips.get(f"{names[a]}->{names[b]}", 0) + 1
    return {"images": len(true), "wrong_share": round(float(wrong.float().mean()), 5),
            "wrong_share_per_class": {names[c]: round(float(wrong[true == c].float().mean()), 4)
                                      for c in range(len(names))},
            "top_flips": dict(sorted(flips.items(), key=lambda kv: -kv[1])[:8]),
            "wrong_share_least_confident_tenth": round(float(wrong[order[:tenth]].float().mean()), 4),
            "wrong_share_most_confident_tenth": round(float(wrong[order[-tenth:]].float().mean()), 4),
            "wrong_labels_the_reference_picks": round(float((first_choice[wrong] == given[wrong]).float().mean()), 4),
            "reference_acc_on_right_labels": round(float((first_choice[~wrong] == true[~wrong]).float().mean()), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-long")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--label-noise", type=float, default=0.4)
    p.add_argument("--val-noise", type=float, default=0.08)
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    data = C.validate(C.merge(C.load_preset(args.preset), {"data": {
        "data_dir": args.data_dir, "noise_kind": "instance", "label_noise": args.label_noise,
        "val_noise": args.val_noise, "noise_seed": args.noise_seed}})).data
    splits = load_splits(data)
    clean = load_splits(C.replace(data, label_noise=0.0, val_noise=0.0))
    names = list(CIFAR10) if splits.num_classes == 10 else [str(c) for c in range(splits.num_classes)]
    reference = Path(splits.noise_reference)
    probabilities = torch.from_numpy(np.load(reference / "probabilities.npy"))
    recipe = json.loads((reference / "recipe.json").read_text())

    report = {"made_by": " ".join(sys.argv), "reference_folder": reference.name,
              "reference_val_acc": recipe["reference_val_acc"], "recipe": recipe,
              "train": describe(splits.train.y, clean.train.y, probabilities[splits.origin], names),
              "trusted": describe(splits.val.y, clean.val.y, probabilities[splits.val_origin], names)}
    text = json.dumps(report, indent=2) + "\n"
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

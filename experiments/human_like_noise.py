"""Label noise shaped like people's mistakes, for CIFAR-10, written as labels files (``data.train_labels``,
``data.val_labels``).

People mislabel the ambiguous images (a cat that looks like a dog), one image at a time, and they pick the class the
image resembles. Symmetric flips put wrong labels on easy images at random, which is the easy case for a
small-loss filter. This script models people's mistakes with a reference model that never sees the images it
relabels:

1. It trains the ``cpu-long`` network (ResNet-18 at width 16) on the CIFAR-10 training images *outside*
   ``cpu-long``'s 25,000-image pool, with their true labels.
2. It scores every training image. For image ``i`` with true label ``y``, let ``c'`` be the reference model's most
   likely other class and ``s_i = p_c' / (p_y + p_c')`` how ambiguous the image is between the two.
3. The label flips to ``c'`` with probability ``min(1, k * s_i)``. ``k`` is set by bisection so that the expected
   share of wrong labels is the target. Draws are seeded, and a separate draw is made for each labels file.

It writes ``OUT/labels.npz`` with ``train`` (40% wrong by default, like CIFAR-10N's "worst" labels at 40.2%) and
``trusted`` (8% wrong, like consolidated human labels at 9%), one label per image of the official training set, and
``OUT/noise.json`` with how the noise came out:
- the wrong share, overall and per class;
- the most common flips;
- the wrong share among the reference model's least and most confident tenth.

    python experiments/human_like_noise.py --data-dir data --out data/human_like \\
        --json experiments/results/human_like_noise.json
    python -m glister_train --preset cpu-long --fraction 0.3 --data-dir data \\
        --set data.train_labels=data/human_like/labels.npz --set data.val_labels=data/human_like/trusted.npy

The data (labels files) stay out of the repository; ``noise.json`` is small and committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glister_train import config as C  # noqa: E402
from glister_train.data import load_splits, normalize, read_dataset, stratified_sample  # noqa: E402
from glister_train.models import load_model  # noqa: E402
from glister_train.run import train_run  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def flip_probabilities(ambiguity: np.ndarray, rate: float) -> np.ndarray:
    """``min(1, k * ambiguity)`` with ``k`` such that the mean is ``rate`` (bisection; ambiguity in [0, 1])."""
    low, high = 0.0, 1e6
    for _ in range(200):
        k = (low + high) / 2
        if np.minimum(1.0, k * ambiguity).mean() < rate:
            low = k
        else:
            high = k
    return np.minimum(1.0, high * ambiguity)


def relabel(y: np.ndarray, confusion: np.ndarray, ambiguity: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Labels with about ``rate`` of them flipped to their most confusable class, the ambiguous ones most often."""
    flip = np.random.default_rng(seed).random(len(y)) < flip_probabilities(ambiguity, rate)
    return np.where(flip, confusion, y)


def describe(y: np.ndarray, given: np.ndarray, confidence: np.ndarray, pool: np.ndarray) -> dict:
    wrong = given != y
    order = np.argsort(confidence[pool])
    tenth = len(order) // 10
    pairs = {}
    for a, b in zip(y[wrong], given[wrong]):
        pairs[f"{CLASSES[a]}->{CLASSES[b]}"] = pairs.get(f"{CLASSES[a]}->{CLASSES[b]}", 0) + 1
    return {"wrong_share": float(wrong.mean()), "wrong_share_in_pool": float(wrong[pool].mean()),
            "wrong_share_per_class": {CLASSES[c]: round(float(wrong[y == c].mean()), 4) for c in range(10)},
            "top_flips": dict(sorted(pairs.items(), key=lambda kv: -kv[1])[:8]),
            "wrong_share_least_confident_tenth": float(wrong[pool][order[:tenth]].mean()),
            "wrong_share_most_confident_tenth": float(wrong[pool][order[-tenth:]].mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", type=Path, default=Path("data/human_like"))
    p.add_argument("--rate", type=float, default=0.4, help="wrong share of the training labels")
    p.add_argument("--trusted-rate", type=float, default=0.08, help="wrong share of the trusted (validation) labels")
    p.add_argument("--epochs", type=int, default=15, help="the reference model's")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    base = C.load_preset("cpu-long")
    train, _, _ = read_dataset(Path(args.data_dir), "cifar10", base.data)
    y = train.y.numpy()
    # cpu-long's pool, exactly as load_splits draws it (the validation split is taken from inside it)
    pool = stratified_sample(train.y, base.data.train_limit, torch.Generator().manual_seed(base.data.split_seed))
    outside = np.setdiff1d(np.arange(len(y)), pool.numpy())
    args.out.mkdir(parents=True, exist_ok=True)
    reference_data = args.out / "reference_data"
    reference_data.mkdir(exist_ok=True)
    np.savez(reference_data / "train.npz", x=train.x[outside].permute(0, 2, 3, 1).numpy(), y=y[outside])
    np.savez(reference_data / "test.npz", x=train.x[pool[:2000]].permute(0, 2, 3, 1).numpy(), y=y[pool[:2000].numpy()])

    start = time.perf_counter()
    cfg = C.validate(C.merge(base, {
        "data": {"dataset": "npz", "data_dir": str(reference_data), "train_limit": 0},
        "selection": {"selector": "full"}, "train": {"epochs": args.epochs},
        "runtime": {"threads": args.threads}, "run": {"seed": args.seed, "tracker": "none", "progress": "none"}}))
    reference_run = args.out / "reference_run"
    summary = train_run(cfg, reference_run, resume=(reference_run / "checkpoint.pt").is_file(), log=print)
    print(f"reference model: {summary['final_test_acc']:.4f} on 2,000 pool images it never saw "
          f"({time.perf_counter() - start:.0f} s)")

    model, _ = load_model(reference_run / "model.pt")
    model.eval()
    reference_splits = load_splits(cfg.data)  # its normalization: the one it trained with
    mean, std = reference_splits.mean, reference_splits.std
    probs = []
    with torch.no_grad():
        for i in range(0, len(y), 1000):
            probs.append(torch.softmax(model(normalize(train.x[i : i + 1000], mean, std)), 1))
    probs = torch.cat(probs).numpy()
    own = probs[np.arange(len(y)), y]
    others = probs.copy()
    others[np.arange(len(y)), y] = -1
    confusion = others.argmax(1)
    ambiguity = others.max(1) / (own + others.max(1))

    labels = relabel(y, confusion, ambiguity, args.rate, seed=1000 + args.seed)
    trusted = relabel(y, confusion, ambiguity, args.trusted_rate, seed=2000 + args.seed)
    np.savez(args.out / "labels.npz", labels=labels)
    np.save(args.out / "trusted.npy", trusted)
    pool = pool.numpy()
    report = {"made_by": " ".join(sys.argv), "reference_test_acc_on_pool_images": summary["final_test_acc"],
              # the labels' own digests (of the int64 arrays' bytes): a rerun elsewhere can check it made the same
              "sha256": {"train": hashlib.sha256(labels.astype(np.int64).tobytes()).hexdigest(),
                         "trusted": hashlib.sha256(trusted.astype(np.int64).tobytes()).hexdigest()},
              "reference_precision": cfg.runtime.precision,
              "reference_epochs": args.epochs, "rate": args.rate, "trusted_rate": args.trusted_rate,
              "train": describe(y, labels, own, pool), "trusted": describe(y, trusted, own, pool)}
    (args.out / "noise.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

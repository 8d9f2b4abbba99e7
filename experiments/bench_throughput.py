"""Does the framework cost anything? fit() against a bare PyTorch loop, same process, same everything.

Both train the same model (same init), on the same in-memory images, with the same batch, precision,
memory format, batched augmentation and SGD settings. The framework's figure is images / epoch_time
as fit() reports it (selection included; evaluation excluded, as for the bare loop). The two are
interleaved over several rounds and the median of each is compared.

    python experiments/bench_throughput.py --data-dir data --json throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from torch.nn import functional as F

from glister_train import config as C
from glister_train.data import augment, load_splits, normalize
from glister_train.models import build
from glister_train.runtime import resolve_runtime
from glister_train.tracking import MemoryTracker
from glister_train.train import fit, model_arch


def bare_loop(cfg: C.Config, splits, epochs: int) -> float:
    """What a user would write by hand; returns training images per second."""
    rt = resolve_runtime(cfg.runtime)
    torch.manual_seed(cfg.run.seed)
    model = build(model_arch(cfg, splits)).to(rt.device, memory_format=rt.memory_format)
    t = cfg.train
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                          weight_decay=t.weight_decay)
    gen = torch.Generator().manual_seed(0)
    x_all, y_all = splits.train.x, splits.train.y
    seen, start = 0, time.perf_counter()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y_all), generator=gen)
        for i in range(0, len(perm), t.batch_size):
            idx = perm[i : i + t.batch_size]
            x = normalize(augment(x_all[idx], gen), splits.mean, splits.std).contiguous(memory_format=rt.memory_format)
            with rt.autocast():
                out = model(x)
            loss = F.cross_entropy(out.float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
    return seen / (time.perf_counter() - start)


def framework(cfg: C.Config, splits) -> float:
    tracker = MemoryTracker()
    with tempfile.TemporaryDirectory() as run_dir:
        fit(cfg, splits, run_dir, tracker, log=lambda _: None)
    images = sum(m["subset_size"] for _, m in tracker.metrics)
    return images / sum(m["epoch_time"] for _, m in tracker.metrics)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--pool", type=int, default=10000, help="training images (a stratified sample of the train set)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="auto")
    p.add_argument("--epochs", type=int, default=1, help="epochs per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="write the result here")
    args = p.parse_args()

    cfg = C.validate(C.merge(C.load_preset("cpu-proxy"), {
        "data": {"dataset": args.dataset, "data_dir": args.data_dir, "train_limit": args.pool},
        "model": {"width": args.width},
        "selection": {"selector": "full"},
        # the bare loop's loss, so that the ratio is the harness's overhead alone
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "eval_every": 10**6, "early_learning": 0.0},
        "runtime": {"precision": args.precision},
        "run": {"progress": "none"},
    }))
    splits = load_splits(cfg.data)
    # evaluation runs once at the end of fit(); keep it tiny so it does not crowd the timed part
    splits = type(splits)(splits.train, splits.val.subset(torch.arange(10)), None, splits.num_classes,
                          splits.mean, splits.std)
    rt = resolve_runtime(cfg.runtime)
    print(f"{len(splits.train)} images, width {args.width}, batch {args.batch_size}, {rt.describe()}")
    bare, ours = [], []
    for r in range(args.rounds):
        bare.append(bare_loop(cfg, splits, args.epochs))
        ours.append(framework(cfg, splits))
        print(f"round {r + 1}: bare {bare[-1]:8.1f} img/s   framework {ours[-1]:8.1f} img/s", flush=True)
    result = {"framework_img_s": round(statistics.median(ours), 1), "bare_img_s": round(statistics.median(bare), 1)}
    result["ratio"] = round(result["framework_img_s"] / result["bare_img_s"], 3)
    print(f"{'':10} {'img/s':>8}\n{'bare':10} {result['bare_img_s']:8.1f}\n{'framework':10} "
          f"{result['framework_img_s']:8.1f}\nratio {result['ratio']:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({**result, "config": vars(args), "runtime": rt.describe()}, fh, indent=2)


if __name__ == "__main__":
    main()

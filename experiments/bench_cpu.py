"""Which precision, memory format, thread count and compile mode is fastest here?

Times training steps (forward, backward, SGD step) and inference batches of the
CIFAR ResNet-18 on random 32x32 inputs, for every combination asked for, and
prints images/s. The defaults in ``configs/`` and ``runtime.precision=auto`` were
chosen from this table (experiments/README.md, "CPU speed").

    python experiments/bench_cpu.py --widths 16 64 --json cpu.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
from torch.nn import functional as F

from glister_train.models import ResNet18


def images_per_second(width: int, batch: int, precision: str, channels_last: bool, threads: int,
                      compiled: bool, train: bool, seconds: float) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ResNet18(10, width)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train(train)
    run = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, 32, 32).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            if train:
                loss = F.cross_entropy(run(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                with torch.no_grad():
                    run(x)

    for _ in range(3):  # warm-up (and compilation)
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to warm up)")
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()

    rows = []
    print(f"{'mode':5} {'width':>5} {'prec':>4} {'ch_last':>7} {'threads':>7} {'compile':>7} {'img/s':>8}")
    compile_modes = [False, True] if args.compile else [False]
    for train, width, prec, cl, threads, comp in itertools.product(
        (True, False), args.widths, args.precisions, (False, True), args.threads, compile_modes
    ):
        ips = images_per_second(width, args.batch, prec, cl, threads, comp, train, args.seconds)
        row = dict(mode="train" if train else "infer", width=width, precision=prec, channels_last=cl,
                   threads=threads, compile=comp, batch=args.batch, img_s=round(ips, 1))
        rows.append(row)
        print(f"{row['mode']:5} {width:5d} {prec:>4} {cl!s:>7} {threads:7d} {comp!s:>7} {ips:8.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()

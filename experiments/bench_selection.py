"""What does a GLISTER selection cost, and what does it buy? On the real CIFAR-10.

For each width, pool size and fraction: the forward pass (candidate pool + validation set, eval
mode, the runtime's precision) and each greedy variant, timed separately; the peak memory each
adds; the GLISTER objective (mean validation log-likelihood after the lookahead step) against the
mean of random subsets of the same size, every variant scored with the full last layer.
``--lookahead mean`` keeps the step small, so the objective reads as a log-likelihood; with
``sum`` (the default, as in the paper) it is far off scale. Amortized cost = (forward + greedy) / R
against a full-data epoch, whose time comes from timing training steps of the same model here.

    python experiments/bench_selection.py --data-dir data --model runs/proxy-full/model.pt --json sel.json

Without ``--model`` (or for a width the model does not have) the network is freshly initialized:
the times hold, the objectives then say little.

``--backends eager openvino`` times the forward pass through each selection backend (OpenVINO's conversion
from the current weights included, as in training) and scores each backend's subset by its overlap with the
subset chosen from eager fp32 features (``agree``), the check that a faster forward keeps the ranking.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import threading
import time
from contextlib import contextmanager

import torch
from torch.nn import functional as F

from glister_train.config import DataConfig, RuntimeConfig
from glister_train.data import load_splits
from glister_train.models import ResNet18, load_model
from glister_train.runtime import resolve_runtime
from glister_train.selection.base import Environment
from glister_train.selection.glister import GlisterOptions, GlisterSelector


@contextmanager
def peak_rss():
    """Peak resident memory above the starting point, sampled every 2 ms (torch's CPU allocator keeps no stats)."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    base, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss() - base)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result = {}
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["mb"] = max(peak[0], rss() - base) / 2**20


def train_img_s(model, rt, steps: int = 12, batch: int = 128) -> float:
    model = model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=rt.memory_format)
    y = torch.randint(0, 10, (batch,))
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        with rt.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    p.add_argument("--model", help="a model.pt whose width is benchmarked with its trained weights")
    p.add_argument("--pools", type=int, nargs="+", default=[5000, 20000, 45000])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    p.add_argument("--greedy", nargs="+", default=["naive", "stochastic", "batched"])
    p.add_argument("--naive-max-budget", type=int, default=6000, help="skip naive above this budget (O(k n C D))")
    p.add_argument("--per-class", choices=["true", "false"], default="true")
    p.add_argument("--precision", default="auto")
    p.add_argument("--lookahead", choices=["sum", "mean"], default="sum")
    p.add_argument("--last-layers", nargs="+", choices=["full", "bias"], default=["full"])
    p.add_argument("--select-every", type=int, nargs="+", default=[20], help="R values for the amortized cost")
    p.add_argument("--randoms", type=int, default=5, help="random subsets averaged for the baseline objective")
    p.add_argument("--backends", nargs="+", default=["eager"], choices=["eager", "openvino"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = one per core)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()

    rt = resolve_runtime(RuntimeConfig(precision=args.precision, threads=args.threads))
    splits = load_splits(DataConfig(dataset=args.dataset, data_dir=args.data_dir))
    trained = load_model(args.model) if args.model else None
    perm = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
    rows = []
    header = (f"{'width':>5} {'pool':>6} {'frac':>4} {'budget':>6} {'greedy':>10} {'last':>4} {'backend':>8} {'fwd s':>6} "
              f"{'build':>5} {'greedy s':>8} {'grd/fwd':>7} {'MB':>6} {'objective':>9} {'random':>9} {'amort %':>7} "
              f"{'agree':>6}")
    print(f"{rt.describe()}, val={len(splits.val)}\n{header}")
    for width in args.widths:
        if trained and trained[1]["width"] == width:
            model, source = trained[0], "trained"
        else:
            torch.manual_seed(0)
            model, source = ResNet18(splits.num_classes, width), "random-init"
        model = model.to(memory_format=rt.memory_format)
        epoch_time = len(splits.train) / train_img_s(copy.deepcopy(model), rt)  # a copy: timing steps train it
        model.eval()
        for pool_size, backend in ((p_, b) for p_ in args.pools for b in args.backends):
            pool = torch.sort(perm[:pool_size]).values
            candidates = splits.train.subset(pool)

            def glister(mode: str = "batched", precision: str = rt.precision, backend: str = backend) -> GlisterSelector:
                options = GlisterOptions(eta=0.1, per_class=args.per_class == "true", lookahead=args.lookahead,
                                         greedy=mode, backend=backend)
                env = Environment(mean=splits.mean, std=splits.std, precision=precision, channels_last=rt.channels_last)
                return GlisterSelector(options, env)

            with peak_rss() as mem:
                start = time.perf_counter()
                full_problem, build_s = glister().problem(model, candidates, splits.val)
                forward = time.perf_counter() - start
            fwd_mb = mem["mb"]
            reference = None
            if len(args.backends) > 1:  # the ranking every backend is held to: eager fp32 features
                reference, _ = glister(precision="fp32", backend="eager").problem(model, candidates, splits.val)
            for last_layer in args.last_layers:
                problem = dataclasses.replace(full_problem, full=last_layer == "full")
                scored = full_problem  # every variant is scored with the full last-layer objective
                for fraction in args.fractions:
                    budget = round(fraction * pool_size)
                    g = torch.Generator().manual_seed(1)
                    randoms = [scored.objective(torch.randperm(pool_size, generator=g)[:budget])
                               for _ in range(args.randoms)]
                    random_obj = sum(randoms) / len(randoms)
                    for mode in args.greedy:
                        if mode == "naive" and budget > args.naive_max_budget:
                            continue
                        sel = glister(mode)
                        with peak_rss() as mem:
                            start = time.perf_counter()
                            order = sel.maximize(problem, budget, torch.Generator().manual_seed(2))
                            greedy_s = time.perf_counter() - start
                        agree = None
                        if reference is not None:
                            ref_order = sel.maximize(dataclasses.replace(reference, full=last_layer == "full"), budget,
                                                     torch.Generator().manual_seed(2))
                            agree = len(set(order.tolist()) & set(ref_order.tolist())) / budget
                        row = dict(width=width, model=source, pool=pool_size, fraction=fraction, budget=budget,
                                   greedy=mode, last_layer=last_layer, lookahead=args.lookahead, backend=backend,
                                   precision=rt.precision, threads=torch.get_num_threads(), forward_s=round(forward, 3),
                                   backend_build_s=round(build_s, 3), greedy_s=round(greedy_s, 3),
                                   greedy_over_forward=round(greedy_s / forward, 4),
                                   peak_mb=round(max(fwd_mb, mem["mb"]), 1), agreement_with_eager_fp32=agree,
                                   objective=round(scored.objective(order), 5), objective_random=round(random_obj, 5),
                                   full_epoch_s=round(epoch_time, 1),
                                   amortized_pct={r: round(100 * (forward + greedy_s) / r / epoch_time, 2)
                                                  for r in args.select_every})
                        rows.append(row)
                        amort = row["amortized_pct"][args.select_every[0]]
                        print(f"{width:5d} {pool_size:6d} {fraction:4.1f} {budget:6d} {mode:>10} {last_layer:>4} "
                              f"{backend:>8} {forward:6.1f} {build_s:5.1f} {greedy_s:8.2f} {greedy_s / forward:7.3f} "
                              f"{row['peak_mb']:6.0f} {row['objective']:9.4f} {random_obj:9.4f} {amort:7.2f} "
                              f"{'-' if agree is None else f'{agree:.3f}':>6}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()

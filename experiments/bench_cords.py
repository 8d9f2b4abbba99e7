"""One GLISTER selection here against CORDS 0.0.4's, on the same pool, budget, model and threads.

The setting of issue 15: 9,000 candidates and 1,000 validation images from the real CIFAR-10 training
set, a budget of 2,700 (30%), ResNet-18 at width 64 freshly initialized, 2 threads. CORDS runs as its
CIFAR-10 GLISTER config sets it (``selection_type: Supervised``, ``greedy: Stochastic``, bias-only
gradients, loader batch 20, eta = its learning rate 0.01). This project's selector runs in three ways:

- ``pass``: ``--selector glister`` (a forward pass over candidates and validation set, batched greedy, sum
  lookahead), eager in the runtime's precision;
- ``pass-openvino``: the same through the OpenVINO selection backend (conversion counted);
- ``default``: the default, ``--selector filtered-random``. It ranks the candidates by the logits the training
  pass already computed, so a selection's own forward work is the validation set and the agreement sample. Here
  those logits come from a train-mode forward over the pool on a copy of the model, timed apart (``records_s``): in
  training that work is part of the epoch and is measured there (the fractions table's cost column), not here.

Every subset is scored with one objective (mean validation log-likelihood after the sum lookahead step,
weight and bias gradients, eta 0.01) next to the mean of random subsets of the same size. CORDS is not a
dependency: ``pip install --no-deps cords==0.0.4`` (its declared requirements include torchtext 0.10, ray,
sphinx...); only its two GLISTER modules are loaded, by file, since the package's ``__init__`` imports every
strategy and their requirements.

    python experiments/bench_cords.py --data-dir data --json experiments/results/bench_cords.json
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from glister_train.config import DataConfig, RuntimeConfig
from glister_train.data import ImageData, load_splits, normalize
from glister_train.models import ResNet18
from glister_train.runtime import resolve_runtime
from glister_train.selection.base import Environment
from glister_train.selection.filtered_random import FilteredRandomOptions, FilteredRandomSelector
from glister_train.selection.glister import GlisterOptions, GlisterSelector


def load_cords_glister() -> type:
    """CORDS 0.0.4's GLISTERStrategy, loaded from its two files without running ``cords.selectionstrategies``."""
    spec = importlib.util.find_spec("cords")
    if spec is None:
        sys.exit("CORDS is not installed: pip install --no-deps cords==0.0.4 (see this script's docstring)")
    folder = Path(spec.submodule_search_locations[0]) / "selectionstrategies" / "SL"
    package = types.ModuleType("cords_sl")
    package.__path__ = [str(folder)]
    sys.modules["cords_sl"] = package
    for name in ("dataselectionstrategy", "glisterstrategy"):
        module_spec = importlib.util.spec_from_file_location(f"cords_sl.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
    return sys.modules["cords_sl.glisterstrategy"].GLISTERStrategy


class CordsModel(nn.Module):
    """The interface CORDS expects of a model: ``forward(x, last, freeze)`` and ``get_embedding_dim()``."""

    def __init__(self, net: ResNet18):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, last: bool = False, freeze: bool = False):
        with torch.set_grad_enabled(not freeze and torch.is_grad_enabled()):
            h = self.net.embed(x)
        out = self.net.fc(h)
        return (out, h) if last else out

    def get_embedding_dim(self) -> int:
        return self.net.fc.in_features


def time_cords(net: ResNet18, pool: ImageData, val: ImageData, budget: int, mean, std, args) -> tuple[list, float]:
    strategy_cls = load_cords_glister()
    as_set = lambda d: TensorDataset(normalize(d.x, mean, std), d.y)  # noqa: E731
    train_loader = DataLoader(as_set(pool), batch_size=args.cords_batch, shuffle=False)
    val_loader = DataLoader(as_set(val), batch_size=args.cords_batch, shuffle=False)
    model = CordsModel(net)
    strategy = strategy_cls(train_loader, val_loader, model, nn.CrossEntropyLoss(reduction="none"), args.eta, "cpu",
                            10, False, "Supervised", "Stochastic", logging.getLogger("cords"))
    torch.manual_seed(0)
    start = time.perf_counter()
    idxs, _ = strategy.select(budget, model.state_dict())
    return list(idxs), time.perf_counter() - start


def training_records(net: ResNet18, pool: ImageData, mean, std, rt, batch: int = 256) -> dict[str, torch.Tensor]:
    """What the training pass keeps of each example it trains on (train mode, the runtime's precision)."""
    model = copy.deepcopy(net).train()
    h_parts, z_parts = [], []
    with torch.no_grad():
        for start in range(0, len(pool), batch):
            x = normalize(pool.x[start : start + batch], mean, std).contiguous(memory_format=rt.memory_format)
            with rt.autocast():
                h = model.embed(x)
                z = model.fc(h)
            h_parts.append(h.float())
            z_parts.append(z.float())
    return {"h": torch.cat(h_parts), "logits": torch.cat(z_parts), "seen": torch.ones(len(pool), dtype=torch.bool)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--pool", type=int, default=9000)
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--budget", type=int, default=2700)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eta", type=float, default=0.01, help="CORDS' eta (its config's learning rate), and the scorer's")
    p.add_argument("--cords-batch", type=int, default=20, help="CORDS' CIFAR-10 GLISTER config's loader batch")
    p.add_argument("--ways", nargs="+", default=["cords", "pass", "pass-openvino", "default"],
                   choices=["cords", "pass", "pass-openvino", "default"])
    p.add_argument("--eval-batch", type=int, default=64, help="this project's forward batch (train.eval_batch_size on a CPU)")
    p.add_argument("--randoms", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args()

    rt = resolve_runtime(RuntimeConfig(threads=args.threads))
    splits = load_splits(DataConfig(data_dir=args.data_dir))
    pick = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[: args.pool + args.val]
    pool, val = splits.train.subset(pick[: args.pool]), splits.train.subset(pick[args.pool :])
    mean, std = splits.mean, splits.std
    torch.manual_seed(0)
    net = ResNet18(10, args.width).eval()

    scorer = GlisterSelector(GlisterOptions(eta=args.eta), Environment(mean=mean, std=std, precision="fp32"))
    problem, _ = scorer.problem(net, pool, val)
    g = torch.Generator().manual_seed(1)
    random_obj = sum(problem.objective(torch.randperm(args.pool, generator=g)[: args.budget])
                     for _ in range(args.randoms)) / args.randoms

    print(f"{rt.describe()}; pool {args.pool}, validation {args.val}, budget {args.budget}, width {args.width}")
    print(f"{'way':>14} {'select s':>9} {'forward s':>9} {'records s':>9} {'vs CORDS':>8} {'objective':>10} {'random':>10}")
    rows, cords_s = [], None
    for way in args.ways:
        forward_s = records_s = None
        if way == "cords":
            chosen, seconds = time_cords(net, pool, val, args.budget, mean, std, args)
            cords_s = seconds
        else:
            env = Environment(mean=mean, std=std, precision=rt.precision, channels_last=rt.channels_last,
                              batch_size=args.eval_batch, lr=args.eta)
            gen = torch.Generator().manual_seed(2)
            if way == "default":
                sel = FilteredRandomSelector(FilteredRandomOptions(), env, len(pool))
                start = time.perf_counter()
                records = training_records(net, pool, mean, std, rt)
                records_s = time.perf_counter() - start
                sel.observe(torch.arange(len(pool)), pool.y, records["logits"])
                start = time.perf_counter()
                selection = sel.select(net, pool, val, args.budget, generator=gen)
            else:
                sel = GlisterSelector(GlisterOptions(backend="openvino" if way == "pass-openvino" else "eager"), env)
                start = time.perf_counter()
                selection = sel.select(net, pool, val, args.budget, generator=gen)
            seconds = time.perf_counter() - start
            forward_s = selection.stats["select_forward_time"]
            chosen = selection.indices.tolist()
        assert len(set(chosen)) == args.budget, (way, len(set(chosen)))
        objective = problem.objective(torch.tensor(chosen))
        speedup = cords_s / seconds if cords_s else None
        rows.append(dict(way=way, select_s=round(seconds, 2), forward_s=forward_s and round(forward_s, 2),
                         records_s=records_s and round(records_s, 2), speedup_vs_cords=speedup and round(speedup, 1),
                         objective=round(objective, 4), objective_random=round(random_obj, 4), pool=args.pool,
                         val=args.val, budget=args.budget, width=args.width, threads=torch.get_num_threads(),
                         precision="fp32" if way == "cords" else rt.precision))  # CORDS has no autocast
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        print(f"{way:>14} {seconds:9.2f} {fmt(forward_s, '9.2f'):>9} {fmt(records_s, '9.2f'):>9} "
              f"{fmt(speedup, '7.1f'):>7}x {objective:10.4f} {random_obj:10.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

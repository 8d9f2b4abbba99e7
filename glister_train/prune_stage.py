"""``python -m glister_train prune``: prune a trained run's model, fine-tune it, and report what changed.

Output folder (complete once ``prune_report.json`` exists):
``capture.pt`` (the statistics ranked), ``pruned.pt`` (right after the last pruning step),
``model.pt`` (the final model), ``finetune/`` (or ``finetune-<step>/``, ``scratch/``: ordinary run
folders linked to the parent run), ``prune_report.json``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import config as C
from .capture import CAPTURE_FILE, CRITERIA, FilterStats, capture_pass, load_capture, save_capture
from .data import Splits, load_splits
from .errors import UsageError
from .evaluate import evaluate
from .io import atomic_write_json, new_output_folder
from .latency import torch_latency
from .models import build, conv_widths, load_model, save_model
from .prune import (
    SCOPES,
    TARGETS,
    CapturedImportance,
    count_macs_params,
    filter_count,
    filter_scores,
    prune_once,
    pruned_arch,
    ratio_for,
    reestimate_batchnorm,
    step_ratios,
    torch_pruning,
)
from .run import train_run
from .runtime import Runtime, resolve_runtime

REPORT = "prune_report.json"


def prune_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glister-train prune", allow_abbrev=False,
        description="Remove the least important conv filters of a trained run's model (torch-pruning keeps residual "
                    "connections consistent), optionally fine-tune with any selector, and report parameters, MACs, "
                    "CPU latency and test accuracy before pruning, after pruning and after fine-tuning.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished run folder (model.pt, config.yaml)")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (must be new or empty)")
    p.add_argument("--criterion", default="taylor", choices=CRITERIA,
                   help="taylor: |activation x gradient| (Molchanov); l1: filter weight norm; apoz: share of zeros "
                        "after the ReLU [taylor]")
    p.add_argument("--amount", type=float, default=0.5, help="share of --target to remove, in (0, 1) [0.5]")
    p.add_argument("--target", default="filters", choices=TARGETS,
                   help="what --amount is a share of; macs/params search the channel share that reaches it [filters]")
    p.add_argument("--scope", default="layer", choices=SCOPES,
                   help="layer: every layer loses the same share; global: one ranking over all layers [layer]")
    p.add_argument("--steps", type=int, default=1,
                   help="iterative pruning: prune in N equal steps, re-ranking (and fine-tuning) after each [1]")
    p.add_argument("--round-to", type=int, default=1, help="keep channel counts multiples of this (8: GPU-friendly) [1]")
    p.add_argument("--bn-batches", type=int, default=16,
                   help="re-estimate BatchNorm statistics on this many training batches after pruning (0: off) [16]")
    p.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning after each step [0]")
    p.add_argument("--finetune-lr", type=float, default=0.0, help="fine-tuning learning rate [the run's lr / 10]")
    p.add_argument("--scratch", action="store_true",
                   help="instead of fine-tuning, re-initialize the pruned architecture and train it for "
                        "--finetune-epochs at the run's learning rate")
    p.add_argument("--selector", default="full", choices=C.SELECTORS, help="selector for (re)training [full]")
    p.add_argument("--fraction", type=float, default=0.3, help="subset share when --selector is not full [0.3]")
    p.add_argument("--capture-batches", type=int, default=32,
                   help="training batches for the taylor/apoz statistics when the run has no capture.pt [32]")
    p.add_argument("--recapture", action="store_true", help="capture fresh statistics even if the run saved some")
    p.add_argument("--data-dir", help="dataset folder [the run's]")
    p.add_argument("--threads", type=int, help="CPU threads [the run's setting]")
    p.add_argument("--precision", choices=C.PRECISIONS, help="for evaluation, latency and fine-tuning [the run's]")
    p.add_argument("--tracker", choices=C.TRACKERS, help="tracker for the fine-tuning runs [the run's]")
    p.add_argument("--seed", type=int, help="seed for capture and fine-tuning [the run's]")
    return p


def check_args(args: argparse.Namespace) -> tuple[Path, Path]:
    run, out = Path(args.run), new_output_folder(args.out)
    for needed in ("model.pt", "config.yaml"):
        if not (run / needed).is_file():
            raise UsageError(f"--run {str(run)!r}: no {needed} there; pass a finished run folder (or a prune output)")
    if not 0 < args.amount < 1:
        raise UsageError(f"--amount {args.amount}: must be in (0, 1), e.g. 0.5 to remove half")
    if args.steps < 1:
        raise UsageError(f"--steps {args.steps}: must be >= 1")
    if args.round_to < 1:
        raise UsageError(f"--round-to {args.round_to}: must be >= 1")
    if args.finetune_epochs < 0:
        raise UsageError(f"--finetune-epochs {args.finetune_epochs}: must be >= 0")
    if args.scratch and (args.finetune_epochs < 1 or args.steps != 1):
        raise UsageError("--scratch trains the pruned architecture anew: it needs --finetune-epochs >= 1 and --steps 1")
    if args.bn_batches < 0:
        raise UsageError(f"--bn-batches {args.bn_batches}: must be >= 0 (0 turns the re-estimation off)")
    if args.capture_batches < 1:
        raise UsageError(f"--capture-batches {args.capture_batches}: must be >= 1")
    return run, out


def run_config(args: argparse.Namespace, run: Path) -> C.Config:
    cfg = C.load_file(run / "config.yaml")
    overrides: dict[str, dict[str, Any]] = {"data": {}, "runtime": {}, "run": {}}
    if args.data_dir:
        overrides["data"]["data_dir"] = args.data_dir
    if args.threads is not None:
        overrides["runtime"]["threads"] = args.threads
    if args.precision:
        overrides["runtime"]["precision"] = args.precision
    if args.tracker:
        overrides["run"]["tracker"] = args.tracker
    if args.seed is not None:
        overrides["run"]["seed"] = args.seed
    return C.validate(C.merge(cfg, overrides, "prune options"))


def measure(stage: str, model: nn.Module, splits: Splits, rt: Runtime, batch_size: int) -> dict[str, Any]:
    macs, params = count_macs_params(model.cpu())
    model = model.to(rt.device, memory_format=rt.memory_format)
    _, acc = evaluate(model, splits.test, splits.mean, splits.std, rt, batch_size)
    return {"stage": stage, "params": params, "macs": macs, "filters": filter_count(model), **torch_latency(model, rt),
            "test_acc": acc}


def statistics(args: argparse.Namespace, model: nn.Module, run: Path, splits: Splits, rt: Runtime, seed: int,
               fresh: bool, log) -> dict[str, Any]:
    """What the criterion ranks: weights alone for l1; the run's capture.pt if it fits, else a capture pass."""
    if args.criterion == "l1":
        return FilterStats(model, source="weights").result()
    saved = run / CAPTURE_FILE
    if saved.is_file() and not fresh and not args.recapture:
        capture = load_capture(saved)
        fits = all(len(capture["filters"].get(conv, {}).get(args.criterion, [])) == width
                   for conv, width in conv_widths(model).items())
        if fits:
            log(f"statistics: {saved} ({capture['source']})")
            return capture
    log(f"statistics: capture pass over {args.capture_batches} training batches")
    return capture_pass(model, splits.train, splits.mean, splits.std, rt, args.capture_batches, seed=seed)


def retrain(cfg: C.Config, folder: Path, splits: Splits, model: nn.Module, arch: dict[str, Any], epochs: int,
            lr: float, args: argparse.Namespace, parent: dict[str, Any], log) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` (pruned, or freshly initialized) in the tracked run folder ``folder``; returns the trained
    model and the run's summary.

    The model goes to ``<folder>-start.pt`` beside the folder and the run starts from it through
    ``model.init_from``, so the folder's ``config.yaml`` describes the run fully and ``--resume`` continues it."""
    start = folder.parent / f"{folder.name}-start.pt"
    save_model(start, model, arch)
    selection = {"selector": args.selector, "fraction": 1.0 if args.selector == "full" else args.fraction,
                 "kappa": 0.0, "first_subset": "random"}
    ft = C.validate(C.merge(cfg, {
        "model": {"init_from": str(start.resolve()), "freeze": ""},
        "train": {"epochs": epochs, "lr": lr, "capture_epochs": 0}, "selection": selection,
        "run": {"out": str(folder), "run_name": f"{folder.parent.name}-{folder.name}"},
    }, "prune"))
    log(f"{folder.name}: {epochs} epochs at lr {lr:g}, selector {ft.selection.selector} "
        f"fraction {ft.selection.fraction:g} -> {folder}")
    # a freshly pruned model is at 10-25% accuracy: its scores say little about the data, so the
    # first subset is random (first_subset) and the selector takes over from the next selection
    summary = train_run(ft, folder, log=log, splits=splits, parent=parent)
    trained, _ = load_model(folder / "model.pt")
    return trained, summary


def prune_main(argv: Sequence[str]) -> int:
    args = prune_parser().parse_args(list(argv))
    run, out = check_args(args)
    torch_pruning()  # a missing extra fails before any work
    cfg = run_config(args, run)
    model, arch = load_model(run / "model.pt")  # a bad model file fails before the data is read
    splits = load_splits(cfg.data)
    rt = resolve_runtime(cfg.runtime)
    bs = cfg.train.eval_batch_size
    log = lambda line: print(line, flush=True)  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)
    times = {"capture": 0.0, "prune": 0.0, "retrain": 0.0}
    rows = [measure("before pruning", model, splits, rt, bs)]
    widths_before = conv_widths(model)
    parent = {"run": str(run), "model": str(run / "model.pt"), "criterion": args.criterion, "amount": args.amount,
              "target": args.target, "scope": args.scope}

    model = model.cpu().to(memory_format=torch.contiguous_format)
    start = time.perf_counter()
    capture = statistics(args, model, run, splits, rt, cfg.run.seed, fresh=False, log=log)
    times["capture"] += time.perf_counter() - start
    save_capture(out / CAPTURE_FILE, capture)
    importance = CapturedImportance(model, filter_scores(capture, args.criterion))
    start = time.perf_counter()
    ratio = ratio_for(model, importance, args.target, args.amount, args.scope, args.round_to)
    times["prune"] += time.perf_counter() - start
    finetune_lr = args.finetune_lr or cfg.train.lr / 10
    retrained = None
    for step, step_ratio in enumerate(step_ratios(ratio, args.steps), start=1):
        if step > 1:  # the network changed: rank it again
            start = time.perf_counter()
            capture = statistics(args, model.cpu(), run, splits, rt, cfg.run.seed + step, fresh=True, log=log)
            importance = CapturedImportance(model, filter_scores(capture, args.criterion))  # the fine-tuned model's modules
            times["capture"] += time.perf_counter() - start
        start = time.perf_counter()
        model = model.cpu().to(memory_format=torch.contiguous_format)
        prune_once(model, importance, step_ratio, args.scope, args.round_to)
        times["prune"] += time.perf_counter() - start
        new_arch = pruned_arch(model, arch)
        log(f"step {step}/{args.steps}: {filter_count(model)} of {sum(widths_before.values())} filters kept "
            f"(channel ratio {ratio:.3f}, {args.scope} ranking by {args.criterion})")
        if step == args.steps:
            save_model(out / "pruned.pt", model, new_arch)
            rows.append(measure("after pruning", model, splits, rt, bs))
        model = model.to(rt.device, memory_format=rt.memory_format)
        if reestimate_batchnorm(model, splits.train, splits.mean, splits.std, rt, args.bn_batches,
                                seed=cfg.run.seed + step) and step == args.steps:
            rows.append(measure("after BN re-estimation", model, splits, rt, bs))
        if args.finetune_epochs and not args.scratch:
            folder = out / ("finetune" if args.steps == 1 else f"finetune-{step}")
            start = time.perf_counter()
            model, retrained = retrain(cfg, folder, splits, model.cpu(), new_arch, args.finetune_epochs, finetune_lr,
                                       args, {**parent, "step": step}, log)
            times["retrain"] += time.perf_counter() - start
    final_arch = pruned_arch(model, arch)
    if args.scratch:
        folder = out / "scratch"
        start = time.perf_counter()
        torch.manual_seed(cfg.run.seed)
        model, retrained = retrain(cfg, folder, splits, build(final_arch), final_arch, args.finetune_epochs, cfg.train.lr,
                                   args, {**parent, "reinitialized": True}, log)
        times["retrain"] += time.perf_counter() - start
    if retrained is not None:
        rows.append(measure("trained from scratch" if args.scratch else "after fine-tuning", model, splits, rt, bs))
    save_model(out / "model.pt", model, final_arch)

    report = {
        "parent_run": str(run), "criterion": args.criterion, "amount": args.amount, "target": args.target,
        "scope": args.scope, "steps": args.steps, "channel_ratio": ratio, "round_to": args.round_to,
        "bn_batches": args.bn_batches,
        "statistics": capture["source"], "runtime": rt.describe(), "model": str(out / "model.pt"),
        "retrain": None if retrained is None else {
            "mode": "scratch" if args.scratch else "finetune", "epochs": args.finetune_epochs,
            "lr": cfg.train.lr if args.scratch else finetune_lr, "selector": args.selector,
            "fraction": 1.0 if args.selector == "full" else args.fraction, "run_dir": retrained["run_dir"]},
        "times": times, "rows": rows, "widths_before": widths_before, "widths_after": conv_widths(model),
    }
    atomic_write_json(out / REPORT, report)
    print(table(rows))
    print(f"model: {out / 'model.pt'}\nreport: {out / REPORT}")
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [f"{'stage':<22} {'params':>9} {'MACs':>8} {'filters':>7} {'b1 ms':>6} {'b64 ms':>7} {'speed-up b1/b64':>15} "
             f"{'test acc':>8}"]
    for r in rows:
        speed = f"{base['latency_b1_ms'] / r['latency_b1_ms']:.2f}x/{base['latency_b64_ms'] / r['latency_b64_ms']:.2f}x"
        lines.append(f"{r['stage']:<22} {r['params']:>9,} {r['macs'] / 1e6:>7.2f}M {r['filters']:>7} "
                     f"{r['latency_b1_ms']:>6.2f} {r['latency_b64_ms']:>7.2f} {speed:>15} {100 * r['test_acc']:>7.2f}%")
    return "\n".join(lines)


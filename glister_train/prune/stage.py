"""``python -m glister_train prune``: prune a trained run's model, fine-tune it, and report what changed.

Output folder (complete once ``prune_report.json`` exists):
``capture.pt`` (the statistics ranked), ``pruned.pt`` (right after the last pruning step),
``model.pt`` (the final model), ``finetune/`` (or ``finetune-<step>/``, ``scratch/``: ordinary run
folders linked to the parent run), ``prune_report.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import config as C
from ..data import Splits, load_splits
from ..errors import UsageError
from ..evaluate import evaluate
from ..io import atomic_write_json, new_output_folder
from ..latency import torch_latency
from ..models import build, conv_widths, load_model, save_model
from ..run import train_run
from ..runtime import Runtime, resolve_runtime
from .capture import CAPTURE_FILE, CRITERIA, FilterStats, capture_pass, load_capture, save_capture
from .ranking import (
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


@dataclass(frozen=True)
class PruneOptions:
    """What to remove and how to retrain; checked when made (the same one-line errors as the run config)."""

    criterion: str = "taylor"  # taylor | l1 | apoz
    amount: float = 0.5  # share of `target` to remove, in (0, 1)
    target: str = "filters"  # filters | macs | params
    scope: str = "layer"  # layer: every layer loses the same share | global: one ranking
    steps: int = 1  # prune in this many steps, re-ranking (and fine-tuning) after each
    round_to: int = 1  # channel counts stay multiples of this
    bn_batches: int = 16  # training batches for BatchNorm re-estimation after each step (0: off)
    finetune_epochs: int = 0  # epochs of fine-tuning after each step
    finetune_lr: float = 0.0  # 0 = the run's learning rate / 10
    scratch: bool = False  # re-initialize the pruned architecture and train it instead of fine-tuning
    selector: str = "full"  # selector for (re)training
    fraction: float = 0.3  # its subset share (not for full)
    capture_batches: int = 32  # batches of the capture pass for taylor/apoz when no capture fits
    recapture: bool = False  # capture afresh even when the run saved statistics

    def __post_init__(self) -> None:
        def need(ok: bool, flag: str, value: Any, what: str) -> None:
            if not ok:
                raise UsageError(f"{flag} {value}: {what}")

        need(self.criterion in CRITERIA, "--criterion", self.criterion, f"choose one of {', '.join(CRITERIA)}")
        need(0 < self.amount < 1, "--amount", self.amount, "must be in (0, 1), e.g. 0.5 to remove half")
        need(self.target in TARGETS, "--target", self.target, f"choose one of {', '.join(TARGETS)}")
        need(self.scope in SCOPES, "--scope", self.scope, f"choose one of {', '.join(SCOPES)}")
        need(self.steps >= 1, "--steps", self.steps, "must be >= 1")
        need(self.round_to >= 1, "--round-to", self.round_to, "must be >= 1")
        need(self.bn_batches >= 0, "--bn-batches", self.bn_batches, "must be >= 0 (0 turns the re-estimation off)")
        need(self.finetune_epochs >= 0, "--finetune-epochs", self.finetune_epochs, "must be >= 0")
        need(self.finetune_lr >= 0, "--finetune-lr", self.finetune_lr, "must be >= 0 (0: the run's learning rate / 10)")
        need(self.selector in C.SELECTORS, "--selector", self.selector, f"choose one of {', '.join(C.SELECTORS)}")
        need(0 < self.fraction <= 1, "--fraction", self.fraction, "must be in (0, 1]")
        need(self.capture_batches >= 1, "--capture-batches", self.capture_batches, "must be >= 1")
        if self.scratch and (self.finetune_epochs < 1 or self.steps != 1):
            raise UsageError("--scratch trains the pruned architecture anew: it needs --finetune-epochs >= 1 and --steps 1")


def check_run(run: Path) -> None:
    for needed in ("model.pt", "config.yaml"):
        if not (run / needed).is_file():
            raise UsageError(f"--run {str(run)!r}: no {needed} there; pass a finished run folder (or a prune output)")


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


def statistics(options: PruneOptions, model: nn.Module, run: Path | None, splits: Splits, rt: Runtime, seed: int,
               fresh: bool, log) -> dict[str, Any]:
    """What the criterion ranks: weights alone for l1; the run's capture.pt if it fits, else a capture pass."""
    if options.criterion == "l1":
        return FilterStats(model, source="weights").result()
    saved = run / CAPTURE_FILE if run is not None else None
    if saved is not None and saved.is_file() and not fresh and not options.recapture:
        capture = load_capture(saved)
        fits = all(len(capture["filters"].get(conv, {}).get(options.criterion, [])) == width
                   for conv, width in conv_widths(model).items())
        if fits:
            log(f"statistics: {saved} ({capture['source']})")
            return capture
    log(f"statistics: capture pass over {options.capture_batches} training batches")
    return capture_pass(model, splits.train, splits.mean, splits.std, rt, options.capture_batches, seed=seed)


def retrain(cfg: C.Config, folder: Path, splits: Splits, model: nn.Module, arch: dict[str, Any], epochs: int,
            lr: float, options: PruneOptions, parent: dict[str, Any], log) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` (pruned, or freshly initialized) in the tracked run folder ``folder``; returns the trained
    model and the run's summary.

    The model goes to ``<folder>-start.pt`` beside the folder and the run starts from it through
    ``model.init_from``, so the folder's ``config.yaml`` describes the run fully and ``--resume`` continues it."""
    start = folder.parent / f"{folder.name}-start.pt"
    save_model(start, model, arch)
    selection = {"selector": options.selector, "fraction": C.trained_fraction(options.selector, options.fraction),
                 "kappa": 0.0, "first_subset": "random"}
    ft = C.validate(C.merge(C.with_selector(cfg, options.selector), {
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


def prune(model: nn.Module, arch: dict[str, Any], splits: Splits, cfg: C.Config, options: PruneOptions, out: Path, *,
          run: Path | None = None, log=print) -> tuple[nn.Module, dict[str, Any]]:
    """Prune ``model`` (of architecture ``arch``, trained under ``cfg``) as ``options`` say, retraining in run folders
    under ``out``; returns the final model and the report (also written to ``out/prune_report.json``, last).

    ``run``: the run folder the model came from, whose ``capture.pt`` is used when it fits."""
    rt = resolve_runtime(cfg.runtime)
    bs = rt.eval_batch(cfg.train.eval_batch_size)
    out.mkdir(parents=True, exist_ok=True)
    times = {"capture": 0.0, "prune": 0.0, "retrain": 0.0}
    rows = [measure("before pruning", model, splits, rt, bs)]
    widths_before = conv_widths(model)
    parent = {"run": str(run), "model": str(run / "model.pt") if run else None, "criterion": options.criterion,
              "amount": options.amount, "target": options.target, "scope": options.scope}

    model = model.cpu().to(memory_format=torch.contiguous_format)
    start = time.perf_counter()
    capture = statistics(options, model, run, splits, rt, cfg.run.seed, fresh=False, log=log)
    times["capture"] += time.perf_counter() - start
    save_capture(out / CAPTURE_FILE, capture)
    importance = CapturedImportance(model, filter_scores(capture, options.criterion))
    start = time.perf_counter()
    ratio = ratio_for(model, importance, options.target, options.amount, options.scope, options.round_to)
    times["prune"] += time.perf_counter() - start
    finetune_lr = options.finetune_lr or cfg.train.lr / 10
    retrained = None
    for step, step_ratio in enumerate(step_ratios(ratio, options.steps), start=1):
        if step > 1:  # the network changed: rank it again
            start = time.perf_counter()
            capture = statistics(options, model.cpu(), run, splits, rt, cfg.run.seed + step, fresh=True, log=log)
            importance = CapturedImportance(model, filter_scores(capture, options.criterion))  # the new model's modules
            times["capture"] += time.perf_counter() - start
        start = time.perf_counter()
        model = model.cpu().to(memory_format=torch.contiguous_format)
        prune_once(model, importance, step_ratio, options.scope, options.round_to)
        times["prune"] += time.perf_counter() - start
        new_arch = pruned_arch(model, arch)
        log(f"step {step}/{options.steps}: {filter_count(model)} of {sum(widths_before.values())} filters kept "
            f"(channel ratio {ratio:.3f}, {options.scope} ranking by {options.criterion})")
        if step == options.steps:
            save_model(out / "pruned.pt", model, new_arch)
            rows.append(measure("after pruning", model, splits, rt, bs))
        model = model.to(rt.device, memory_format=rt.memory_format)
        if reestimate_batchnorm(model, splits.train, splits.mean, splits.std, rt, options.bn_batches,
                                seed=cfg.run.seed + step) and step == options.steps:
            rows.append(measure("after BN re-estimation", model, splits, rt, bs))
        if options.finetune_epochs and not options.scratch:
            folder = out / ("finetune" if options.steps == 1 else f"finetune-{step}")
            start = time.perf_counter()
            model, retrained = retrain(cfg, folder, splits, model.cpu(), new_arch, options.finetune_epochs, finetune_lr,
                                       options, {**parent, "step": step}, log)
            times["retrain"] += time.perf_counter() - start
    final_arch = pruned_arch(model, arch)
    if options.scratch:
        folder = out / "scratch"
        start = time.perf_counter()
        torch.manual_seed(cfg.run.seed)
        model, retrained = retrain(cfg, folder, splits, build(final_arch), final_arch, options.finetune_epochs,
                                   cfg.train.lr, options, {**parent, "reinitialized": True}, log)
        times["retrain"] += time.perf_counter() - start
    if retrained is not None:
        rows.append(measure("trained from scratch" if options.scratch else "after fine-tuning", model, splits, rt, bs))
    save_model(out / "model.pt", model, final_arch)

    report = {
        "parent_run": str(run), "criterion": options.criterion, "amount": options.amount, "target": options.target,
        "scope": options.scope, "steps": options.steps, "channel_ratio": ratio, "round_to": options.round_to,
        "bn_batches": options.bn_batches, "options": dataclasses.asdict(options),
        "statistics": capture["source"], "runtime": rt.describe(), "model": str(out / "model.pt"),
        "retrain": None if retrained is None else {
            "mode": "scratch" if options.scratch else "finetune", "epochs": options.finetune_epochs,
            "lr": cfg.train.lr if options.scratch else finetune_lr, "selector": options.selector,
            "fraction": C.trained_fraction(options.selector, options.fraction), "run_dir": retrained["run_dir"]},
        "times": times, "rows": rows, "widths_before": widths_before, "widths_after": conv_widths(model),
    }
    atomic_write_json(out / REPORT, report)
    return model, report


def options_from(args: argparse.Namespace) -> PruneOptions:
    return PruneOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PruneOptions)})


def prune_main(argv: Sequence[str]) -> int:
    """The ``prune`` command: read the run, check everything, then :func:`prune`."""
    args = prune_parser().parse_args(list(argv))
    options = options_from(args)
    run = Path(args.run)
    check_run(run)
    out = new_output_folder(args.out)
    torch_pruning()  # a missing extra fails before any work
    cfg = run_config(args, run)
    model, arch = load_model(run / "model.pt")  # a bad model file fails before the data is read
    splits = load_splits(cfg.data)
    made = not out.exists()
    try:
        _, report = prune(model, arch, splits, cfg, options, out, run=run, log=lambda line: print(line, flush=True))
    except UsageError:  # refused input found mid-way (an unreadable capture.pt): leave no half-made --out behind
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    print(table(report["rows"]))
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


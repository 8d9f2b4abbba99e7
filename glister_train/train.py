"""fit(): the training loop, with a checkpoint per epoch and resume.

One epoch: re-select if due, one pass over the current subset (weighted cross-entropy,
SGD with Nesterov momentum, cosine schedule per epoch), evaluate, log, checkpoint.
``epoch_time`` is selection plus training: the cost the subset is meant to cut.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from . import distributed, warmstart
from .checkpoint import CHECKPOINT, restore, save_checkpoint
from .config import Config, trained_fraction
from .data import Splits
from .early_learning import EarlyLearningTargets
from .errors import NonFiniteSelection, TrainingDiverged
from .evaluate import evaluate
from .loader import AdaptiveSubsetLoader
from .loglines import epoch_line, selection_line
from .models import build, last_layer_parts, save_model
from .progress import Progress, bar_enabled
from .prune.capture import CAPTURE_FILE, FilterStats, save_capture
from .runtime import Runtime, resolve_runtime
from .selection import Environment, SubsetSelector, make_selector
from .tracking import Tracker

MODEL = "model.pt"


def model_arch(cfg: Config, splits: Splits) -> dict[str, Any]:
    return {"name": cfg.model.name, "num_classes": splits.num_classes, "width": cfg.model.width,
            "in_channels": int(splits.train.x.shape[1])}


def selector_for(cfg: Config, splits: Splits, runtime: Runtime) -> SubsetSelector:
    """The configured selector with its options, for this run's data and runtime."""
    env = Environment(mean=splits.mean, std=splits.std, device=runtime.device, precision=runtime.precision,
                      channels_last=runtime.channels_last, batch_size=runtime.eval_batch(cfg.train.eval_batch_size),
                      lr=cfg.train.lr, train_batch_size=cfg.train.batch_size,
                      training_visible=not (distributed.active() or cfg.runtime.compile))
    return make_selector(cfg.selection.selector, cfg.selection.options, env, len(splits.train))


def make_loader(cfg: Config, splits: Splits, runtime: Runtime, random_start: bool = True) -> AdaptiveSubsetLoader:
    s = cfg.selection
    fraction = trained_fraction(s.selector, s.fraction)
    return AdaptiveSubsetLoader(
        splits.train, splits.val, selector_for(cfg, splits, runtime), fraction=fraction, epochs=cfg.train.scheduled_epochs,
        select_every=s.select_every, kappa=s.kappa, kappa_matched=s.kappa_matched, batch_size=cfg.train.batch_size,
        mean=splits.mean, std=splits.std, augment=cfg.data.augment, seed=cfg.run.seed, device=runtime.device,
        channels_last=runtime.channels_last, random_start=random_start, noisy=splits.noisy)


@dataclass
class Training:
    """Everything the epoch loop works on, built by :func:`setup` before the run folder is touched."""

    cfg: Config
    splits: Splits
    rt: Runtime
    arch: dict[str, Any]
    model: nn.Module  # the plain module (saved, selected with, evaluated)
    eager: nn.Module  # what the loop calls: the model, or its DistributedDataParallel wrapper
    forward: nn.Module  # eager, or torch.compile of it
    opt: torch.optim.Optimizer
    sched: Any
    loader: AdaptiveSubsetLoader
    capture: FilterStats | None
    frozen: list[nn.Module]
    totals: dict[str, Any]
    early: EarlyLearningTargets | None = None  # the early-learning targets, when train.early_learning is on


def setup(cfg: Config, splits: Splits, *, checkpoint: dict | None = None, checkpoint_path: Path | None = None,
          log: Callable[[str], None] = print) -> Training:
    """Model, optimizer, schedule and loader as ``cfg`` says, restored from ``checkpoint`` if given.

    Everything comes from the config, so a run folder's ``config.yaml`` describes its run fully and
    ``--resume`` rebuilds it: a model to continue training (a pruned one, say) is ``model.init_from``.
    Every check that can fail (the device, the parent model of a warm start, the stage to freeze, a
    checkpoint that does not fit) fails here, before a run folder is written.
    """
    rt = resolve_runtime(cfg.runtime)
    torch.manual_seed(cfg.run.seed)
    arch = model_arch(cfg, splits)
    parent_arch, parent_state = warmstart.read_parent(cfg.model.init_from) if cfg.model.init_from else (None, None)
    if parent_arch is not None:
        arch = warmstart.inherited_arch(parent_arch, arch)
        log(f"init: architecture from {cfg.model.init_from}: {warmstart.describe_arch(arch)}")
    first = cfg.selection.first_subset
    random_start = first == "random" or (first == "auto" and not cfg.model.init_from)
    model = build(arch)
    frozen = warmstart.prepare(model, parent_state if checkpoint is None else None, cfg.model.init_from, cfg.model.freeze,
                               log)
    model = model.to(rt.device, memory_format=rt.memory_format)
    if rt.device.type == "cuda":  # the whole uint8 dataset fits on any GPU; batches are then gathered there
        splits = dataclasses.replace(splits, train=splits.train.to(rt.device))
    loader = make_loader(cfg, splits, rt, random_start)
    t = cfg.train
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=t.lr, momentum=t.momentum,
                          nesterov=t.nesterov and t.momentum > 0, weight_decay=t.weight_decay)
    epochs = t.scheduled_epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    capture = FilterStats(model, f"training epochs {epochs - t.capture_epochs + 1}-{epochs}") \
        if t.capture_epochs else None
    early = None
    if t.early_learning:
        early = EarlyLearningTargets(len(splits.train), splits.num_classes, t.early_learning,
                                     t.early_learning_momentum, rt.device)
    totals = {"epochs_done": 0, "train_time": 0.0, "select_time": 0.0, "eval_time": 0.0, "best_test_acc": None,
              "best_val_acc": None, "final_test_acc": None, "final_val_acc": None}
    if checkpoint is not None:
        totals = restore(checkpoint, model, opt, sched, loader, capture, checkpoint_path or Path(CHECKPOINT), early)
        log(f"resumed from {checkpoint_path or CHECKPOINT} after epoch {totals['epochs_done']}")
    eager = model
    if distributed.active():  # gradients averaged over ranks; DDP also broadcasts rank 0's weights now
        eager = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        log(f"data parallel: {distributed.world()} processes ({torch.distributed.get_backend()}), "
            f"{t.batch_size} images per step in all")
    forward = torch.compile(eager) if cfg.runtime.compile else eager
    return Training(cfg, splits, rt, arch, model, eager, forward, opt, sched, loader, capture, frozen, totals, early)


def fit(state: Training | Config, splits: Splits | None = None, run_dir: str | Path = ".", tracker: Tracker | None = None,
        *, log: Callable[[str], None] = print, **setup_options: Any) -> dict[str, Any]:
    """Train as set up, writing ``checkpoint.pt`` each epoch and ``model.pt`` at the end; returns totals.

    ``fit(cfg, splits, run_dir, tracker)`` sets up first (see :func:`setup` for the options).
    Under torchrun every rank calls this; rank 0 alone writes files and logs (see :mod:`distributed`).
    """
    state = state if isinstance(state, Training) else setup(state, splits, log=log, **setup_options)
    run_dir = Path(run_dir)
    t, totals = state.cfg.train, state.totals
    log(f"data: {state.splits.describe()} | {state.rt.describe()} | subset {state.loader.budget} of "
        f"{len(state.splits.train)}")
    if state.loader.budget < t.batch_size:  # --fraction 1e-6, a tiny train_limit: legal, but rarely meant
        log(f"note: the subset is {state.loader.budget} image(s), less than one batch of {t.batch_size}: each epoch "
            f"is one step on {state.loader.budget} image(s)")
    try:
        for epoch in range(totals["epochs_done"], t.scheduled_epochs):
            run_epoch(epoch, state, tracker, run_dir, log)
    except TrainingDiverged as exc:
        exc.checkpoint_epoch = totals["epochs_done"]
        raise

    if distributed.is_main():
        if state.capture is not None:
            save_capture(run_dir / CAPTURE_FILE, state.capture.result())
            last = t.scheduled_epochs
            log(f"per-filter statistics of epochs {last - t.capture_epochs + 1}-{last}: {run_dir / CAPTURE_FILE}")
        save_model(run_dir / MODEL, state.model, state.arch)
        tracker.log_artifact(str(run_dir / MODEL))
    distributed.barrier()  # no rank leaves before the model is on disk
    return totals


def run_epoch(epoch: int, state: Training, tracker: Tracker, run_dir: Path, log: Callable[[str], None]) -> None:
    """Re-select if due, train one pass over the subset, evaluate, log, checkpoint."""
    cfg, model, loader, opt, capture, t = state.cfg, state.model, state.loader, state.opt, state.capture, state.cfg.train
    if loader.skips(epoch):
        skip_epoch(epoch, state, tracker, run_dir, log)
        return
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        selection = loader.reselect_if_due(epoch, model)
    except NonFiniteSelection as exc:  # the model's features or logits are NaN: it diverged in the last epoch
        raise TrainingDiverged(epoch + 1, 0, float("nan"), f"the selection input ({exc})") from None
    select_time = time.perf_counter() - start
    capturing = capture is not None and epoch >= t.scheduled_epochs - t.capture_epochs
    with capture if capturing else contextlib.nullcontext():  # hooks on the eager module: this epoch runs uncompiled
        train_loss, train_acc = train_epoch(state.eager if capturing else state.forward, loader, opt, state.rt, epoch,
                                            bar_enabled(cfg.run.progress) and distributed.is_main(), state.frozen,
                                            state.early)
    state.sched.step()
    epoch_time = time.perf_counter() - start
    # the process's CPU seconds for the same work: its wall time on a core of its own, whatever else the
    # machine runs (single-threaded runs; with more threads it adds theirs up)
    epoch_cpu_time = time.process_time() - cpu_start
    metrics: dict[str, Any] = {"train_loss": train_loss, "train_acc": train_acc}
    if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.scheduled_epochs:
        # a selection due next epoch reads the validation features from this evaluation instead of a pass of its own
        keep = loader.wants_validation(epoch + 1) and not distributed.active()
        metrics.update(evaluate_splits(model, state.splits, state.rt, state.rt.eval_batch(t.eval_batch_size),
                                       keep_val=loader.offer_validation if keep else None))
        if not math.isfinite(metrics.get("val_loss", 0.0)):  # never keep a checkpoint of a broken model as good
            raise TrainingDiverged(epoch + 1, 0, metrics["val_loss"], "the validation loss")
    metrics.update(epoch_time=epoch_time, epoch_cpu_time=epoch_cpu_time, select_time=select_time,
                   subset_size=len(loader.selection),
                   lr=opt.param_groups[0]["lr"])
    if state.rt.device.type == "cuda":  # the epoch's peak, selection and evaluation included
        metrics["gpu_peak_mb"] = torch.cuda.max_memory_allocated(state.rt.device) / 2**20
        torch.cuda.reset_peak_memory_stats(state.rt.device)
    if selection is not None:
        metrics.update({k: v for k, v in selection.stats.items() if k.startswith("select_") and k != "select_time"})
        log(selection_line(epoch + 1, selection.stats))
    update_totals(state.totals, metrics, epoch_time - select_time)
    tracker.log_metrics(metrics, step=epoch + 1)
    log(epoch_line(epoch + 1, metrics))
    if distributed.is_main():
        save_checkpoint(run_dir / CHECKPOINT, cfg, model, opt, state.sched, loader, state.totals, capture, state.early)


def skip_epoch(epoch: int, state: Training, tracker: Tracker, run_dir: Path, log: Callable[[str], None]) -> None:
    """An epoch of the compute-matched warm start that is not trained: the learning rate steps on as if it had
    been, and it costs nothing (``subset_size`` 0)."""
    state.sched.step()
    metrics = {"epoch_time": 0.0, "epoch_cpu_time": 0.0, "select_time": 0.0, "subset_size": 0,
               "lr": state.opt.param_groups[0]["lr"], "skipped": 1}
    update_totals(state.totals, metrics, 0.0)
    tracker.log_metrics(metrics, step=epoch + 1)
    log(f"epoch={epoch + 1} skipped (the warm start counts against the budget: selection starts at epoch "
        f"{state.loader.warm_epochs + 1})")
    if distributed.is_main():
        save_checkpoint(run_dir / CHECKPOINT, state.cfg, state.model, state.opt, state.sched, state.loader,
                        state.totals, state.capture, state.early)


# on an accelerator a host-side check of every step's loss would stall its queue each step: there the steps run on
# and a non-finite loss is looked for every this many steps and at the end of the epoch (it stops training all the
# same, naming the first bad step; the epoch is never checkpointed)
CHECK_EVERY = 200


def checks_each_step(rt: Runtime) -> bool:
    """Whether a step's loss is checked on the host before its update (on a CPU that costs nothing)."""
    return rt.device.type == "cpu"


def train_epoch(model: nn.Module, loader: AdaptiveSubsetLoader, opt: torch.optim.Optimizer, rt: Runtime,
                epoch: int, show_bar: bool, frozen: list[nn.Module] = (),
                early: EarlyLearningTargets | None = None) -> tuple[float, float]:
    """One pass over the current subset; returns the weighted mean cross-entropy and the accuracy (over all ranks)."""
    model.train()
    warmstart.keep_frozen(frozen)
    progress = Progress(len(loader), f"epoch {epoch + 1}", show_bar)
    loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
    weight_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
    correct = torch.zeros((), dtype=torch.int64, device=rt.device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=rt.device)  # the first non-finite step, on the device
    each_step = checks_each_step(rt)
    seen = 0
    observe = loader.observes_training  # the selector watches this pass: it gets each example's logits
    for step, batch in enumerate(loader):
        loss = train_step(model, batch, opt, rt, epoch, step, progress, check=each_step, early=early)
        if not each_step:
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.value), step, first_bad)
            if (step + 1) % CHECK_EVERY == 0:
                stop_if_diverged(first_bad, epoch, progress)
        if observe:
            loader.observe(batch.idx, batch.y, loss.logits)
        loss_sum += (loss.losses * batch.w).sum()
        weight_sum += batch.w.sum()
        correct += (loss.logits.argmax(1) == batch.y).sum()
        seen += len(batch.y)
        progress.update(step + 1, loss.value)
    if not each_step:
        stop_if_diverged(first_bad, epoch, progress)
    progress.close()
    loss_sum, weight_sum, correct, seen = distributed.all_sum([float(loss_sum), float(weight_sum), float(correct), seen])
    return loss_sum / weight_sum, correct / seen


def stop_if_diverged(first_bad: torch.Tensor, epoch: int, progress: Progress) -> None:
    """TrainingDiverged naming the first non-finite step, if there was one (one host sync)."""
    step = int(first_bad)
    if step >= 0:
        progress.close()
        raise TrainingDiverged(epoch + 1, step + 1, float("nan"))


@dataclass
class StepResult:
    value: torch.Tensor  # the step's loss (detached)
    losses: torch.Tensor  # per-example cross-entropy (detached)
    logits: torch.Tensor  # (detached)


def train_step(model: nn.Module, batch: Any, opt: torch.optim.Optimizer, rt: Runtime, epoch: int, step: int,
               progress: Progress, check: bool = True, early: EarlyLearningTargets | None = None) -> StepResult:
    """Forward, weighted loss (cross-entropy, plus the early-learning penalty when ``early`` is given), backward,
    SGD step; with ``check``, a non-finite loss stops training before the step (without it the caller looks for one
    later, see ``CHECK_EVERY``)."""
    with rt.autocast():
        logits = model(batch.x)
    losses = F.cross_entropy(logits.float(), batch.y, reduction="none")
    loss = batch.loss(losses if early is None else losses + early.penalty(batch.idx, logits, batch.global_size))
    if check and not torch.isfinite(loss):
        progress.close()
        raise TrainingDiverged(epoch + 1, step + 1, float(loss.detach()))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return StepResult(loss.detach(), losses.detach(), logits.detach())


def evaluate_splits(model: nn.Module, splits: Splits, rt: Runtime, batch_size: int,
                    keep_val: Callable[[torch.Tensor], None] | None = None) -> dict[str, float]:
    """Loss and accuracy on the validation and test sets; ``keep_val`` receives the validation set's penultimate
    features (float32, CPU, in order) from the same pass."""
    start = time.perf_counter()
    out = {}
    for name, data in (("val", splits.val), ("test", splits.test)):
        if data is not None and not distributed.active():
            with penultimate_features(model, keep_val if name == "val" else None):
                out[f"{name}_loss"], out[f"{name}_acc"] = evaluate(model, data, splits.mean, splits.std, rt, batch_size)
        elif data is not None:  # each rank evaluates its shard; the sums are combined
            part = data.subset(torch.arange(len(data))[distributed.shard(len(data))])
            loss, acc = evaluate(model, part, splits.mean, splits.std, rt, batch_size) if len(part) else (0.0, 0.0)
            loss_sum, correct, n = distributed.all_sum([loss * len(part), acc * len(part), len(part)])
            out[f"{name}_loss"], out[f"{name}_acc"] = loss_sum / n, correct / n
    out["eval_time"] = time.perf_counter() - start
    return out


@contextlib.contextmanager
def penultimate_features(model: nn.Module, receive: Callable[[torch.Tensor], None] | None):
    """While the block runs, collect what enters the final linear layer; ``receive`` gets it all at the end
    (nothing is collected when it is None)."""
    if receive is None:
        yield
        return
    parts: list[torch.Tensor] = []
    hook = last_layer_parts(model)[1].register_forward_hook(
        lambda m, inputs, output: parts.append(inputs[0].detach().float().cpu()))
    try:
        yield
    finally:
        hook.remove()
    receive(torch.cat(parts))


def update_totals(totals: dict[str, Any], metrics: dict[str, Any], train_time: float) -> None:
    totals["epochs_done"] += 1
    totals["train_time"] += train_time
    totals["select_time"] += metrics["select_time"]
    totals["eval_time"] += metrics.get("eval_time", 0.0)
    for split in ("val", "test"):
        acc = metrics.get(f"{split}_acc")
        if acc is not None:
            totals[f"final_{split}_acc"] = acc
            best = totals[f"best_{split}_acc"]
            totals[f"best_{split}_acc"] = acc if best is None else max(best, acc)

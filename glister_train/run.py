"""One training run in its folder: config.yaml, params.json, metrics.jsonl, summary.json, checkpoint.pt, model.pt.

``summary.json`` says ``"status": "completed"`` only once the model is saved; until then it says
``running``, and ``failed`` or ``interrupted`` (with the error) if the run stops early.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import distributed, runlock
from .checkpoint import CHECKPOINT, read_checkpoint
from .config import Config, diff, flatten, load_file, to_yaml, trained_fraction
from .data import Splits, load_splits
from .errors import TrainingDiverged, UsageError
from .io import atomic_write_json, atomic_write_text, remove_stale_temporaries
from .provenance import provenance
from .tracking import FanOut, make_tracker
from .train import MODEL, Training, fit, setup

# keys that may differ between a run and its resumption: they change how it is shown, not what it computes
RESUMABLE_CHANGES = {"run.out", "run.progress", "run.tracker", "run.tracking_uri", "run.tracking_timeout",
                     "runtime.threads"}


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    s = cfg.selection
    return Path("runs") / f"{stamp}-{s.selector}-f{s.fraction:g}-s{cfg.run.seed}"


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_run_dir(run_dir: Path, cfg: Config, resume: bool) -> bool:
    """Refuse a folder in use, overwriting a run and resuming under another configuration.

    Returns whether there is a checkpoint to continue from. A folder whose run never finished an
    epoch (no checkpoint, not completed) holds nothing to lose: it restarts from scratch, with or
    without ``--resume``.
    """
    runlock.refuse_if_held(run_dir)
    has_checkpoint = (run_dir / CHECKPOINT).is_file()
    summary = read_summary(run_dir)
    status = (summary or {}).get("status", "unknown")
    if not resume:
        if has_checkpoint or status == "completed":
            raise UsageError(f"run folder {str(run_dir)!r} already holds a run (status: {status}); "
                             "pass --resume to continue it, or choose another --out")
        return False
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise UsageError(f"--resume: {str(run_dir)!r} has no config.yaml, so it is not a run folder to resume")
    changed = {k: v for k, v in diff(load_file(saved_path), cfg).items() if k not in RESUMABLE_CHANGES}
    if changed:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise UsageError(f"--resume: the configuration differs from the run's config.yaml ({listed}); "
                         "drop those options to resume, or start a new run with another --out")
    if not has_checkpoint and status == "completed":
        raise UsageError(f"--resume: {str(run_dir)!r} is completed but its checkpoint is gone; nothing to continue")
    return has_checkpoint


def check_checkpoint_config(state: dict[str, Any], cfg: Config, path: Path) -> None:
    """The checkpoint must come from this configuration (a copied or stale file would mix two runs)."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        return  # written before checkpoints carried their config
    now = flatten(cfg)
    changed = sorted(k for k in now if k in saved and saved[k] != now[k] and k not in RESUMABLE_CHANGES)
    if changed:
        listed = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed[:5])
        raise UsageError(f"--resume: {str(path)!r} was written under another configuration ({listed}); "
                         "it is not this run's checkpoint: delete it to restart, or use a new --out")


def train_run(cfg: Config, run_dir: Path, resume: bool = False, log: Callable[[str], None] = print, *,
              splits: Splits | None = None, parent: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load the data (unless ``splits`` are given), train, and write the run folder; raises on bad input before
    anything is written. ``parent`` describes where a warm start's model came from (a pruning, say): it goes to
    ``summary.json`` and to the tracker as ``parent.*`` parameters.

    Under torchrun, rank 0 does all of this; the other ranks train beside it with the checkpoint it
    read (the run folder may exist on rank 0's machine only) and write nothing.
    """
    if not distributed.is_main():
        splits = splits or load_splits(cfg.data)
        checkpoint = distributed.broadcast(None)
        state = setup(cfg, splits, checkpoint=checkpoint, log=lambda _: None)
        totals = fit(state, run_dir=run_dir, tracker=FanOut([]), log=lambda _: None)
        return {**totals, "status": "completed", "rank": distributed.rank()}
    made = make_run_dir(run_dir)
    runlock.acquire(run_dir)  # before any check of the folder: a second run into it waits its turn or is refused
    try:
        continuing = check_run_dir(run_dir, cfg, resume)
        splits = splits or load_splits(cfg.data)  # a missing dataset fails here, before anything is written
        checkpoint = read_checkpoint(run_dir / CHECKPOINT) if continuing else None
        if checkpoint is not None:
            check_checkpoint_config(checkpoint, cfg, run_dir / CHECKPOINT)
        elif any(p.name != runlock.LOCK for p in run_dir.iterdir()):
            log(f"{run_dir} has no checkpoint (its run never finished an epoch): starting it from the beginning")
        checkpoint = distributed.broadcast(checkpoint)
        # the model, a warm start's parent, the stage to freeze, the device and the checkpoint's fit are all
        # checked here, before the folder is written
        state = setup(cfg, splits, checkpoint=checkpoint, checkpoint_path=run_dir / CHECKPOINT, log=log)
    except BaseException:
        runlock.release(run_dir)
        remove_if_empty(made)
        raise
    remove_stale_temporaries(run_dir)  # a kill mid-write leaves them; SageMaker would sync them to S3
    try:
        return _train_locked(cfg, run_dir, state, checkpoint, log, parent)
    finally:
        runlock.release(run_dir)


def make_run_dir(run_dir: Path) -> list[Path]:
    """Create ``run_dir`` (and missing parents); returns the folders made, innermost first."""
    missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {str(run_dir)!r} is a file, not a folder; choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {str(run_dir)!r} cannot be created ({exc.strerror or exc}); choose another --out") \
            from None
    return missing


def remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a refused run made, innermost first, where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def noise_source(cfg: Config, splits: Splits, rate: float) -> dict[str, Any]:
    """How injected noise was made: its kind, rate and seed, and for instance noise the reference model's folder."""
    source = {"kind": cfg.data.noise_kind, "rate": rate, "seed": cfg.data.noise_seed}
    return {**source, "reference": splits.noise_reference} if splits.noise_reference else source


def _train_locked(cfg: Config, run_dir: Path, state: Training, checkpoint: dict[str, Any] | None,
                  log: Callable[[str], None], parent: dict[str, Any] | None) -> dict[str, Any]:
    splits = state.splits
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    summary: dict[str, Any] = {
        "status": "running", "run_dir": str(run_dir), "selector": cfg.selection.selector,
        "fraction": trained_fraction(cfg.selection.selector, cfg.selection.fraction),
        "seed": cfg.run.seed, "epochs": cfg.train.scheduled_epochs,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    summary["provenance"] = provenance(state.rt.device)
    if parent:
        summary["parent"] = parent
    if splits.noisy is not None:
        source = {"labels_file": cfg.data.train_labels} if cfg.data.train_labels else noise_source(cfg, splits,
                                                                                                     cfg.data.label_noise)
        summary["label_noise"] = {**source, "wrong": int(splits.noisy.sum()), "of": len(splits.noisy),
                                  "pool_share": float(splits.noisy.float().mean())}
    if splits.val_noisy is not None:
        source = {"labels_file": cfg.data.val_labels} if cfg.data.val_labels else noise_source(cfg, splits,
                                                                                                 cfg.data.val_noise)
        summary["validation_label_noise"] = {**source, "wrong": int(splits.val_noisy.sum()),
                                             "of": len(splits.val_noisy),
                                             "share": float(splits.val_noisy.float().mean())}
    if splits.class_sizes:
        summary["imbalance"] = {"ratio": cfg.data.imbalance, "seed": cfg.data.noise_seed,
                                "class_sizes": splits.class_sizes}
    atomic_write_json(run_dir / "summary.json", summary)
    epochs_done = int(checkpoint["totals"]["epochs_done"]) if checkpoint else None
    start = time.perf_counter()
    status, tracker = "failed", None
    try:  # from here on whatever stops the run is written to summary.json, the tracker's construction included
        tracker = make_tracker(cfg, run_dir, epochs_done=epochs_done, log=log)
        tracker.log_params({**flatten(cfg), **{f"parent.{k}": v for k, v in (parent or {}).items()}})
        totals = fit(state, run_dir=run_dir, tracker=tracker, log=log)
        status = "completed"
        summary.update(totals, model=str(run_dir / MODEL),
                       total_time=totals["train_time"] + totals["select_time"] + totals["eval_time"])
    except TrainingDiverged as exc:
        summary.update(error=str(exc), diverged_at={"epoch": exc.epoch, "step": exc.step})
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary.update(status=status, wall_time=time.perf_counter() - start,
                       finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if tracker is not None:
            tracker.close(status)
            if tracker.report():
                summary["tracking"] = tracker.report()
        atomic_write_json(run_dir / "summary.json", summary)
    return summary


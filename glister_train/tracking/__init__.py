"""Trackers: where parameters and metrics go. The local run folder is always written."""

from __future__ import annotations

from pathlib import Path

from .base import FanOut, Tracker
from .local import LocalTracker, read_metrics
from .memory import MemoryTracker
from .resilient import Resilient


def make_tracker(cfg, run_dir: str | Path, epochs_done: int | None = None, log=print) -> FanOut:
    """The local tracker plus the remote one ``cfg.run.tracker`` asks for (``auto``, ``local``, ``none``: none)."""
    trackers: list[Tracker] = [LocalTracker(run_dir, epochs_done)]
    run = cfg.run
    if run.tracker == "mlflow":
        from .mlflow import MlflowTracker

        remote = MlflowTracker(run.tracking_uri, run.experiment_name, run.run_name or Path(run_dir).name)
        trackers.append(Resilient("mlflow", remote, log))
    return FanOut(trackers)


__all__ = ["Tracker", "FanOut", "LocalTracker", "MemoryTracker", "Resilient", "make_tracker", "read_metrics"]

"""Trackers: where parameters and metrics go. The local run folder is always written."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import UsageError
from .base import FanOut, Tracker
from .local import LocalTracker, read_metrics
from .memory import MemoryTracker
from .resilient import Resilient


def make_tracker(cfg, run_dir: str | Path, epochs_done: int | None = None, log=print) -> FanOut:
    """The local tracker plus the remote one ``cfg.run.tracker`` asks for.

    ``auto`` is SageMaker Experiments inside a training job (``TRAINING_JOB_NAME`` set), local otherwise.
    """
    trackers: list[Tracker] = [LocalTracker(run_dir, epochs_done)]
    run = cfg.run
    in_job = bool(os.environ.get("TRAINING_JOB_NAME"))
    name = ("sagemaker" if in_job else "local") if run.tracker == "auto" else run.tracker
    if name == "sagemaker":
        _require("sagemaker.core", "sagemaker")
        from .sagemaker import SageMakerTracker

        run_name = run.run_name or os.environ.get("TRAINING_JOB_NAME") or Path(run_dir).name
        experiment = run.experiment_name or "glister-train"
        trackers.append(Resilient(
            "sagemaker", lambda: SageMakerTracker(experiment, _sagemaker_name(run_name), in_job=in_job), log,
            run.tracking_timeout))
    if name == "mlflow":
        _require("mlflow", "mlflow")
        from .mlflow import MlflowTracker

        run_name = run.run_name or Path(run_dir).name
        trackers.append(Resilient(
            "mlflow", lambda: MlflowTracker(run.tracking_uri, run.experiment_name, run_name), log,
            run.tracking_timeout))
    return FanOut(trackers)


def _require(module: str, extra: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise UsageError(f"the {extra} tracker needs {module}: pip install 'glister-train[{extra}]'")


def _sagemaker_name(name: str) -> str:
    """Experiments names allow letters, digits and hyphens, at most 120 characters in all."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in name)[:59]


__all__ = ["Tracker", "FanOut", "LocalTracker", "MemoryTracker", "Resilient", "make_tracker", "read_metrics"]

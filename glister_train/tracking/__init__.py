"""Trackers: where parameters and metrics go. The local run folder is always written."""

from __future__ import annotations

from pathlib import Path

from .base import FanOut, Tracker
from .local import LocalTracker, read_metrics
from .memory import MemoryTracker


def make_tracker(name: str, run_dir: str | Path, epochs_done: int | None = None) -> FanOut:
    """The local tracker plus the one ``name`` asks for (``auto``, ``local`` and ``none``: local only)."""
    trackers: list[Tracker] = [LocalTracker(run_dir, epochs_done)]
    return FanOut(trackers)


__all__ = ["Tracker", "FanOut", "LocalTracker", "MemoryTracker", "make_tracker", "read_metrics"]

"""The tracker contract, and a fan-out that sends every call to several trackers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Tracker(Protocol):
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_artifact(self, path: str) -> None: ...
    def close(self, status: str = "completed") -> None: ...


class FanOut:
    """Calls each tracker in turn, so the local run folder is written whatever a remote tracker does."""

    def __init__(self, trackers: Sequence[Tracker]):
        self.trackers = list(trackers)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.log_params(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_artifact(self, path: str) -> None:
        for t in self.trackers:
            t.log_artifact(path)

    def close(self, status: str = "completed") -> None:
        for t in self.trackers:
            t.close(status)

    def report(self) -> list[dict[str, Any]]:
        """What each remote tracker could not deliver (empty when there is none)."""
        return [t.report() for t in self.trackers if hasattr(t, "report")]

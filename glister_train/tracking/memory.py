"""A tracker that keeps everything in lists: for tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class MemoryTracker:
    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.artifacts: list[str] = []
        self.status: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path: str) -> None:
        self.artifacts.append(str(path))

    def close(self, status: str = "completed") -> None:
        self.status = status

"""The default tracker: plain files in the run folder (``params.json``, ``metrics.jsonl``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DiskFull
from ..io import atomic_write_json, atomic_write_text, device_of, out_of_space


class LocalTracker:
    def __init__(self, run_dir: str | Path, epochs_done: int | None = None):
        """``epochs_done``: a resumed run's checkpoint epoch; lines after it (written past the checkpoint) go."""
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.artifacts: list[str] = []
        if epochs_done is not None and self.metrics_path.exists():
            kept = [line for line, row in _rows(self.metrics_path) if row.get("epoch", 0) <= epochs_done]
            atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        elif self.metrics_path.exists():
            self.metrics_path.unlink()

    def log_params(self, params: Mapping[str, Any]) -> None:
        atomic_write_json(self.run_dir / "params.json", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        row = {"epoch": step, **{k: _finite_or_none(v) for k, v in metrics.items() if k != "epoch"}}
        try:
            with open(self.metrics_path, "a") as fh:  # one short line per epoch: appends are atomic enough
                fh.write(json.dumps(row) + "\n")
        except OSError as exc:
            if out_of_space(exc):
                raise DiskFull(str(self.metrics_path), device_of(self.run_dir)) from None
            raise

    def log_artifact(self, path: str) -> None:
        self.artifacts.append(str(path))

    def close(self, status: str = "completed") -> None:
        pass


def _finite_or_none(value: Any) -> Any:
    # JSON has no NaN or Infinity: write null so every line stays parseable
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, row) for each parseable line; a line cut short by a kill, a full disk or a partial restore is
    dropped (the epoch it belonged to is after the checkpoint and is trained again)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append((line, row))
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [row for _, row in _rows(path)] if path.exists() else []

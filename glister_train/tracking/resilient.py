"""Remote tracking that never stops training: failed calls are kept, retried, and reported."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .base import Tracker


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among the metrics (remote stores take no lists, strings or NaN)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Resilient:
    """Wraps a remote tracker: an exception in any call is logged, the call queued and retried on the next
    call and at close. ``report()`` says what was never delivered; the local run folder has it all anyway."""

    def __init__(self, name: str, tracker: Tracker | Callable[[], Tracker], warn: Callable[[str], None] = print):
        """``tracker`` may be a factory: creating a remote run is an API call that can fail too."""
        self.name, self.warn = name, warn
        self.tracker, self.factory = (None, tracker) if callable(tracker) and not hasattr(tracker, "log_metrics") \
            else (tracker, None)
        self.pending: list[tuple[str, tuple]] = []
        self.errors: list[str] = []

    def _call(self, method: str, *args: Any) -> None:
        self.pending.append((method, args))
        while self.pending:
            name, call_args = self.pending[0]
            try:
                if self.tracker is None:
                    self.tracker = self.factory()
                getattr(self.tracker, name)(*call_args)
            except Exception as exc:  # throttling, outage, bad credentials: training goes on
                message = f"{type(exc).__name__}: {str(exc)[:200]}"
                if not self.errors or self.errors[-1] != message:
                    self.warn(f"tracker {self.name}: {name} failed ({message}); kept locally, will retry")
                self.errors.append(message)
                return
            self.pending.pop(0)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._call("log_metrics", scalars(metrics), step)

    def log_artifact(self, path: str) -> None:
        self._call("log_artifact", str(path))

    def close(self, status: str = "completed") -> None:
        self._call("close", status)
        if self.pending and hasattr(self.tracker, "release"):
            self.tracker.release()  # the last chance has passed: free what the remote client holds

    def report(self) -> dict[str, Any]:
        undelivered = [name for name, _ in self.pending]
        return {"tracker": self.name, "delivered": not undelivered, "undelivered_calls": len(undelivered),
                "undelivered_metric_steps": sum(1 for name in undelivered if name == "log_metrics"),
                "errors": len(self.errors), "last_error": self.errors[-1] if self.errors else None}

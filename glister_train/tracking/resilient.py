"""Remote tracking that never stops training: calls are delivered in order on a background thread.

The training thread only appends to a queue, so a slow or dead endpoint costs it nothing. The worker
retries a failed call with a growing pause (1 s doubling to 60 s) and keeps the calls after it queued. At
``close`` the worker gets at most ``close_timeout`` seconds to deliver what is left; once a tracker has failed
``OPEN_AFTER`` times in a row (the circuit is open: the endpoint is down, not throttling) close tries once
more and gives up. ``report()`` says what was never delivered; the local run folder has it all anyway.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .base import Tracker

OPEN_AFTER = 3  # consecutive failures after which the endpoint counts as down
MAX_PAUSE = 60.0


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among the metrics (remote stores take no lists, strings or NaN)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Resilient:
    """Wraps a remote tracker (or a factory for one: creating a remote run is an API call that can fail too)."""

    def __init__(self, name: str, tracker: Tracker | Callable[[], Tracker], warn: Callable[[str], None] = print,
                 close_timeout: float = 10.0):
        self.name, self.warn, self.close_timeout = name, warn, close_timeout
        self.tracker, self.factory = (None, tracker) if callable(tracker) and not hasattr(tracker, "log_metrics") \
            else (tracker, None)
        self.pending: list[tuple[str, tuple]] = []
        self.errors: list[str] = []
        self.failures_in_a_row = 0
        self.closing = False
        self.gave_up = False
        self.cond = threading.Condition()
        self.worker = threading.Thread(target=self._deliver, name=f"tracker-{name}", daemon=True)
        self.worker.start()

    # ------------------------------------------------------------ the training thread's side

    def _call(self, method: str, *args: Any) -> None:
        with self.cond:
            if not self.gave_up:
                self.pending.append((method, args))
                self.cond.notify()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._call("log_metrics", scalars(metrics), step)

    def log_artifact(self, path: str) -> None:
        self._call("log_artifact", str(path))

    def close(self, status: str = "completed") -> None:
        self._call("close", status)
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.worker.join(self.close_timeout)
        with self.cond:
            self.gave_up = True  # whatever is left now stays undelivered
            self.cond.notify()
        if self.pending and not self.worker.is_alive() and hasattr(self.tracker, "release"):
            self.tracker.release()  # the last chance has passed: free what the remote client holds

    def report(self) -> dict[str, Any]:
        with self.cond:
            undelivered = [name for name, _ in self.pending]
            return {"tracker": self.name, "delivered": not undelivered, "undelivered_calls": len(undelivered),
                    "undelivered_metric_steps": sum(1 for name in undelivered if name == "log_metrics"),
                    "errors": len(self.errors), "last_error": self.errors[-1] if self.errors else None}

    # ------------------------------------------------------------ the worker

    def _deliver(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closing and not self.gave_up:
                    self.cond.wait()
                if self.gave_up or not self.pending:
                    return  # closed and delivered, or out of time
                name, args = self.pending[0]
            try:
                if self.tracker is None:
                    self.tracker = self.factory()
                getattr(self.tracker, name)(*args)
            except Exception as exc:  # throttling, outage, bad credentials: training goes on
                self._failed(name, exc)
                continue
            with self.cond:
                self.pending.pop(0)
                self.failures_in_a_row = 0

    def _failed(self, name: str, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {str(exc)[:200]}"
        if not self.errors or self.errors[-1] != message:
            self.warn(f"tracker {self.name}: {name} failed ({message}); kept locally, will retry")
        with self.cond:
            self.errors.append(message)
            self.failures_in_a_row += 1
            if self.closing:
                if self.failures_in_a_row > OPEN_AFTER:
                    self.gave_up = True  # down at the end, and tried once more: stop here
                    return
                self.cond.wait(0.1 * self.failures_in_a_row)
                return
            pause = min(MAX_PAUSE, 2.0 ** (self.failures_in_a_row - 1))
            self.cond.wait_for(lambda: self.closing or self.gave_up, timeout=pause)  # close cuts a pause short

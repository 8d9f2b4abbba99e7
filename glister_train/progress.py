"""A one-line progress bar with ETA on a terminal; silent otherwise (the epoch lines are the log)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total: int, label: str, enabled: bool, stream: TextIO = sys.stderr, width: int = 24):
        self.total, self.label, self.enabled, self.stream, self.width = total, label, enabled, stream, width
        self.start = time.perf_counter()
        self.last_draw = 0.0

    def update(self, done: int, loss: Any = None) -> None:
        """``loss`` may be a tensor: it is read (a device sync) only when the bar is drawn."""
        now = time.perf_counter()
        if not self.enabled or (now - self.last_draw < 0.2 and done < self.total):
            return
        self.last_draw = now
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        filled = self.width * done // max(self.total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        note = "" if loss is None else f" loss {float(loss):.3f}"
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total}{note} eta {_clock(eta)}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def bar_enabled(mode: str, stream: TextIO = sys.stderr) -> bool:
    return mode == "bar" or (mode == "auto" and stream.isatty())

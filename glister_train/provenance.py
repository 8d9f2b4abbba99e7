"""Where a figure came from: package version, git commit, torch and Python versions, machine and device."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


@lru_cache(maxsize=1)
def _commit() -> str | None:
    """The checkout's commit (with ``+dirty`` for uncommitted changes), or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def cpu_name() -> str | None:
    """The CPU's model name: timings and the auto precision depend on it (platform.processor() is empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def provenance(device: str | torch.device | None = None) -> dict[str, Any]:
    try:
        version = metadata.version("glister-train")
    except metadata.PackageNotFoundError:
        version = None
    return {"glister_train": version, "git_commit": _commit(), "torch": torch.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_name(),
            "device": str(device) if device is not None else None, "threads": torch.get_num_threads()}

"""One writer per run folder: a lock file with the owner's pid, host and boot, stale locks taken over.

A lock is stale when its process is gone: same host and boot but no such pid, or the same host after a
reboot (a restarted SageMaker job finds its own old lock in the restored checkpoint folder). A lock held on
another host cannot be checked from here, so it is refused with the path to delete if that run is gone.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from .errors import UsageError

LOCK = ".lock"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _owner() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def holder(run_dir: Path) -> dict | None:
    """The live owner of ``run_dir``'s lock, or None when it is free or stale."""
    try:
        owner = json.loads((run_dir / LOCK).read_text())
        pid, host, boot = int(owner["pid"]), str(owner["host"]), str(owner.get("boot_id", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no lock, or a half-written one from a killed process
    if host != socket.gethostname():
        return owner
    if boot != _boot_id() or pid == os.getpid() or not _alive(pid):
        return None
    return owner


def refuse_if_held(run_dir: Path) -> None:
    """A UsageError naming who holds ``run_dir``, if a live process does."""
    owner = holder(run_dir)
    if owner is not None:
        raise UsageError(
            f"run folder {str(run_dir)!r} is in use by process {owner['pid']} on {owner['host']} since "
            f"{owner.get('since', '?')}; wait for it to finish or stop it (if that run is gone, delete "
            f"{run_dir / LOCK})")


def acquire(run_dir: Path) -> Path:
    """Take the lock (the folder must exist); a live owner is a UsageError that says who holds it."""
    path = run_dir / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)  # exactly one starter wins
        except FileExistsError:
            refuse_if_held(run_dir)
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(_owner()))
        return path
    raise UsageError(f"run folder {str(run_dir)!r} was taken by another process just now; choose another --out")


def release(run_dir: Path) -> None:
    path = run_dir / LOCK
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass

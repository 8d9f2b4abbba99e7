"""Atomic file writes: a killed run never leaves a half-written file that looks valid."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import DiskFull

TMP_SUFFIX = ".tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """The ``.NAME.*.tmp`` files a killed writer left (never valid: the rename is what publishes a file)."""
    gone = []
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        gone.append(tmp)
    return gone


def _atomic_write(path: str | Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file gets what open() would have given it
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if out_of_space(exc):
            raise DiskFull(str(path), device_of(path.parent)) from None
        raise


def out_of_space(exc: BaseException) -> bool:
    """Whether a write failed for want of space: ENOSPC, or torch.save's zip writer, which reports it as a failed
    enforce ("unexpected pos") without the errno."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, RuntimeError) and ("unexpected pos" in str(exc) or "No space left" in str(exc))


def device_of(folder: Path) -> str:
    """The mount point holding ``folder`` (what a user frees space on)."""
    folder = folder.resolve()
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return str(folder)


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_write(path, lambda fh: fh.write(text), "w")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    _atomic_write(path, lambda fh: torch.save(obj, fh), "wb")


def new_output_folder(path: str | Path) -> Path:
    """``--out`` of a stage: a folder that does not exist yet or is empty, so no earlier result is mixed in."""
    from .errors import UsageError

    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"--out {str(path)!r} already exists and is not empty; choose another folder or delete it")
    return path


class UnreadableTorchFile(Exception):
    """A file ``torch.load(weights_only=True)`` refused: ``reason`` is one line, never torch's advice to load it
    with ``weights_only=False``."""

    def __init__(self, reason: str, code: bool, detail: str = ""):
        super().__init__(reason)
        self.code = code  # the file holds pickled objects other than tensors: loading it could run code
        self.detail = detail  # torch's error, its first line


def load_tensors(path: str | Path, map_location: str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a file it refuses is an UnreadableTorchFile saying why in one line."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "Weights only load failed" in text and "GLOBAL" in text:  # a pickle naming code (a class, a function)
            raise UnreadableTorchFile("it holds pickled objects other than tensors and was refused unread, since "
                                      "loading it could run code", code=True) from None
        first = next((line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line
                      and "Weights only" not in line and "WeightsUnpickler" not in line), "")
        detail = f"{type(exc).__name__}{': ' + first[:120] if first else ''}"
        raise UnreadableTorchFile(f"it is not a readable torch file ({detail})", code=False, detail=detail) from None

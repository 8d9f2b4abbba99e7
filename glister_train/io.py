"""Atomic file writes: a killed run never leaves a half-written file that looks valid."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

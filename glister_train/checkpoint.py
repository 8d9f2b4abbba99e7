"""The checkpoint: everything a run needs to continue bit-identically, written atomically after every epoch.

Model, optimizer, schedule, the loader's subset and cached scores, every RNG stream, the running totals, the
capture state, the early-learning targets and the flattened config (so a checkpoint from another configuration is
refused, not mixed in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, flatten
from .early_learning import EarlyLearningTargets
from .errors import CheckpointError
from .io import UnreadableTorchFile, atomic_torch_save, load_tensors
from .loader import AdaptiveSubsetLoader
from .prune.capture import FilterStats

CHECKPOINT = "checkpoint.pt"



def save_checkpoint(path: Path, cfg: Config, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                    loader: AdaptiveSubsetLoader, totals: dict[str, Any], capture: FilterStats | None = None,
                    early: EarlyLearningTargets | None = None) -> None:
    atomic_torch_save({
        "totals": totals, "config": flatten(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "loader": loader.state_dict(), "torch_rng": torch.get_rng_state(),
        "capture": capture.state_dict() if capture is not None else None,
        "early_learning": early.state_dict() if early is not None else None,
    }, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint for resuming; a missing, corrupt or truncated file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {str(path)!r}; start a new run without --resume")
    try:
        state = load_tensors(path)
    except UnreadableTorchFile as exc:
        what = f": {exc}" if exc.code else f" is corrupt, truncated or not from this run ({exc.detail})"
        raise CheckpointError(f"--resume: {str(path)!r}{what}; delete it to restart this run from scratch, or use "
                              "a new --out") from None
    try:
        int(state["totals"]["epochs_done"])
        return state
    except Exception as exc:  # not a checkpoint of this project
        raise _corrupt(path, exc) from None


def restore(state: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
            loader: AdaptiveSubsetLoader, capture: FilterStats | None = None,
            path: Path = Path(CHECKPOINT), early: EarlyLearningTargets | None = None) -> dict[str, Any]:
    """Put everything a checkpoint holds back in place; returns the running totals."""
    try:
        if capture is not None and state.get("capture"):
            capture.load_state_dict(state["capture"])
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        if early is not None:
            early.load_state_dict(state["early_learning"])
        torch.set_rng_state(state["torch_rng"])
        return dict(state["totals"])
    except Exception as exc:  # missing keys, shape mismatch
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(
        f"--resume: {str(path)!r} is corrupt, truncated or not from this run ({type(exc).__name__}: "
        f"{(str(exc).splitlines() or [''])[0][:160]}); "
        "delete it to restart this run from scratch, or use a new --out"
    )

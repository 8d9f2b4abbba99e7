"""Data parallelism on torch.distributed: set up from torchrun's environment, shard, gather, agree.

``torchrun --nproc_per_node N -m glister_train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup` joins the process group (gloo on CPU, nccl on GPUs). Every helper here is a no-op in a
single process, so the training code calls them unconditionally.
"""

from __future__ import annotations

import gc
import hashlib
import os
from typing import Any

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True when a launcher (torchrun) started several processes for this job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> torch.device | None:
    """Join the process group torchrun describes; returns this rank's device (None in a single process)."""
    if not launched():
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device in ("cuda", "auto") and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        # DDP's reducer sits in reference cycles: collect it while its process group still exists
        # (freed after destroy_process_group, gloo's threads abort the process), then leave together
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def shard(n: int, r: int | None = None, w: int | None = None) -> slice:
    """This rank's contiguous share of ``n`` items (the first ``n % world`` ranks get one more)."""
    r, w = rank() if r is None else r, world() if w is None else w
    size, extra = divmod(n, w)
    start = r * size + min(r, extra)
    return slice(start, start + size + (1 if r < extra else 0))


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's :func:`shard` of an ``n``-row tensor, in rank order, on every rank."""
    if not active():
        return local
    w, device = world(), _comm_device()
    longest = shard(n, 0, w).stop
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: len(range(n)[shard(n, r, w)])] for r, p in enumerate(parts)]).to(local.device)


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def fingerprint(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def check_same(t: torch.Tensor, what: str) -> None:
    """Raise unless ``t`` is bit-identical on every rank (e.g. the selected subset)."""
    if not active():
        return
    mine = fingerprint(t)
    everyone: list[Any] = [None] * world()
    dist.all_gather_object(everyone, mine)
    if len(set(everyone)) != 1:
        raise RuntimeError(f"ranks disagree on {what}: {everyone}; selection must be deterministic across ranks")


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (checkpoints live on rank 0's disk)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()

"""Per-filter statistics from training tensors: the SageMaker Debugger idea, with plain hooks.

While attached, :class:`FilterStats` watches every ReLU the model lists in ``activation_sites()``
(ReLU -> the convs whose output channels it carries) and accumulates, per channel and never as raw
tensors:

- ``apoz``: average percentage of zeros after the ReLU (Hu et al. 2016);
- ``taylor``: mean over examples of |mean over positions of a * dL/da| (Molchanov et al. 2017),
  with dL/da the gradient of the example's own loss (the batch-mean gradient times the batch size);
- ``act_mean``: mean activation;

and, per batch, for diagnosing vanishing or exploding signals: the RMS of each ReLU's output and
of its gradient, and the norm of each conv's weight gradient. Weight L1/L2 norms per filter are
read from the weights when the result is taken.

``result()`` is a dict of plain tensors and lists: ``torch.save`` it, ``torch.load(..., weights_only=True)``
it back, and read it with :func:`describe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageData, normalize
from ..errors import UsageError
from ..io import UnreadableTorchFile, atomic_torch_save, load_tensors
from ..runtime import Runtime

CAPTURE_FILE = "capture.pt"
CRITERIA = ("taylor", "l1", "apoz")


class FilterStats:
    def __init__(self, model: nn.Module, source: str = ""):
        if not hasattr(model, "activation_sites"):
            raise TypeError(f"{type(model).__name__} does not list its activation sites (activation_sites())")
        self.model, self.source = model, source
        self.modules = dict(model.named_modules())
        self.sites: dict[str, list[str]] = model.activation_sites()
        self.convs = [name for names in self.sites.values() for name in names]
        self.sums: dict[str, dict[str, torch.Tensor]] = {}
        self.examples = {site: 0 for site in self.sites}
        self.history: dict[str, dict[str, list[float]]] = {
            **{site: {"act_rms": [], "grad_rms": []} for site in self.sites},
            **{conv: {"weight_grad_norm": []} for conv in self.convs},
        }
        self.batches = 0
        self._handles: list[Any] = []

    # ------------------------------------------------------------ hooks

    def attach(self) -> FilterStats:
        if self._handles:
            return self
        for site in self.sites:
            self._handles.append(self.modules[site].register_forward_hook(self._forward_hook(site)))
        for conv in self.convs:
            weight = self.modules[conv].weight
            self._handles.append(weight.register_hook(self._weight_grad_hook(conv)))
        self._handles.append(self.model.register_forward_pre_hook(self._count_batch))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FilterStats:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _count_batch(self, module: nn.Module, args: Any) -> None:
        self.batches += 1

    def _forward_hook(self, site: str):
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            a = out.detach().float()
            n = a.shape[0]
            self._add(site, "zeros", (a == 0).float().mean(dim=(2, 3)).sum(0))
            self._add(site, "act", a.mean(dim=(2, 3)).sum(0))
            self.examples[site] += n
            self.history[site]["act_rms"].append(float(a.pow(2).mean().sqrt()))
            if out.requires_grad:
                out.register_hook(lambda grad: self._backward(site, a, grad))
        return hook

    def _backward(self, site: str, a: torch.Tensor, grad: torch.Tensor) -> None:
        g = grad.detach().float() * a.shape[0]  # d(own loss)/da, from the gradient of the batch mean
        self._add(site, "taylor", (a * g).mean(dim=(2, 3)).abs().sum(0))
        self._add(site, "grad_examples", torch.tensor([float(a.shape[0])]))
        self.history[site]["grad_rms"].append(float(g.pow(2).mean().sqrt()))

    def _weight_grad_hook(self, conv: str):
        def hook(grad: torch.Tensor) -> None:
            self.history[conv]["weight_grad_norm"].append(float(grad.detach().float().norm()))
        return hook

    def _add(self, site: str, key: str, value: torch.Tensor) -> None:
        slot = self.sums.setdefault(site, {})
        slot[key] = slot[key] + value.cpu() if key in slot else value.cpu().clone()

    # ------------------------------------------------------------ results

    def result(self) -> dict[str, Any]:
        """Per-filter statistics by conv name, per-layer histories, and what they came from."""
        filters: dict[str, dict[str, torch.Tensor]] = {}
        for site, convs in self.sites.items():
            sums, n = self.sums.get(site, {}), self.examples[site]
            graded = float(sums["grad_examples"][0]) if "grad_examples" in sums else 0.0
            for conv in convs:
                w = self.modules[conv].weight.detach().float().cpu().flatten(1)
                stats = {"l1": w.abs().sum(1), "l2": w.norm(dim=1)}
                if n:
                    stats.update(apoz=sums["zeros"] / n, act_mean=sums["act"] / n)
                if graded:
                    stats["taylor"] = sums["taylor"] / graded
                filters[conv] = stats
        return {"version": 1, "source": self.source, "batches": self.batches,
                "examples": max(self.examples.values(), default=0), "sites": self.sites,
                "filters": filters, "layers": self.history}

    def state_dict(self) -> dict[str, Any]:
        """The running sums, so that a capture spanning epochs survives a resume."""
        return {"sums": self.sums, "examples": self.examples, "history": self.history, "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.examples = state["sums"], state["examples"]
        self.history, self.batches = state["history"], state["batches"]


def capture_pass(model: nn.Module, data: ImageData, mean: torch.Tensor, std: torch.Tensor, runtime: Runtime,
                 batches: int, batch_size: int = 128, seed: int = 0) -> dict[str, Any]:
    """Forward and backward over ``batches`` random training batches, weights untouched.

    Eval mode: the statistics describe the network as it will be deployed (BatchNorm running
    statistics, which are left as they are), and nothing is updated.
    """
    was_training = model.training
    model.eval()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    stats = FilterStats(model, source=f"capture pass: {batches} batches of {batch_size} training images (eval mode)")
    try:
        with stats:
            for b in range(min(batches, -(-len(data) // batch_size))):
                idx = order[b * batch_size : (b + 1) * batch_size]
                x = normalize(data.x[idx].to(runtime.device), mean, std).contiguous(memory_format=runtime.memory_format)
                with runtime.autocast():
                    logits = model(x)
                F.cross_entropy(logits.float(), data.y[idx].to(runtime.device)).backward()
                model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return stats.result()


def save_capture(path: str | Path, result: dict[str, Any]) -> None:
    atomic_torch_save(result, path)


def load_capture(path: str | Path) -> dict[str, Any]:
    """A run's ``capture.pt``; one that is not readable, or not a capture, is a one-line UsageError."""
    try:
        capture = load_tensors(path)
    except UnreadableTorchFile as exc:
        raise UsageError(f"capture file {str(path)!r}: {exc}; delete it and the statistics are captured again") \
            from None
    if not isinstance(capture, dict) or not isinstance(capture.get("filters"), dict):
        raise UsageError(f"capture file {str(path)!r} is not a glister_train capture (no 'filters'); delete it and the "
                         "statistics are captured again")
    return capture


def describe(result: dict[str, Any]) -> str:
    """A per-conv table: filters, mean APoZ, Taylor spread, and the gradient-norm range (diagnosis)."""
    lines = [f"{result['source']} ({result['batches']} batches, {result['examples']} examples)",
             f"{'conv':<22} {'filters':>7} {'apoz':>6} {'taylor min/max':>20} {'w-grad norm first/last':>24}"]
    for conv, stats in result["filters"].items():
        apoz = f"{float(stats['apoz'].mean()):.3f}" if "apoz" in stats else "-"
        taylor = (f"{float(stats['taylor'].min()):.2e}/{float(stats['taylor'].max()):.2e}" if "taylor" in stats else "-")
        norms = result["layers"].get(conv, {}).get("weight_grad_norm", [])
        grads = f"{norms[0]:.2e}/{norms[-1]:.2e}" if norms else "-"
        lines.append(f"{conv:<22} {len(stats['l1']):>7} {apoz:>6} {taylor:>20} {grads:>24}")
    return "\n".join(lines)

"""A drop-in for CORDS' ``GLISTERDataLoader``: change the import, keep the training script.

    from glister_train.compat.cords import GLISTERDataLoader
    dl = GLISTERDataLoader(train_loader, val_loader, dss_args, logger, batch_size=20, shuffle=True, pin_memory=False)
    for epoch in range(num_epochs):
        for inputs, targets, weights in dl:
            ...

Like CORDS (and unlike :class:`glister_train.loader.AdaptiveSubsetLoader`), iterating starts the
next epoch and re-selects when due: that is the contract CORDS scripts rely on. Underneath it runs
this package's vectorized GLISTER (``selection/glister.py``). Differences from CORDS 0.0.4, on
purpose, are listed in the README ("CORDS compatibility").
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..selection.glister import LastLayerProblem, greedy
from ..selection.quotas import budget_quotas

REQUIRED = ("model", "loss", "eta", "num_classes", "linear_layer", "selection_type", "greedy", "fraction",
            "select_every", "kappa", "device")
OPTIONAL = ("type", "r", "num_epochs", "lookahead", "collate_fn", "seed")
GREEDY = {"Naive": "naive", "Stochastic": "stochastic", "RGreedy": "batched"}
SELECTION_TYPES = ("Supervised", "SL", "PerClass")  # CORDS treats anything but PerClass as one pool


def check_dss_args(dss_args: Any) -> dict[str, Any]:
    """The keys as a plain dict; a missing, misspelled or unsupported key is a ValueError naming it.

    DotMap creates a key when a missing attribute is read, so empty DotMap values count as missing.
    """
    items = dss_args.items() if hasattr(dss_args, "items") else dict(dss_args).items()
    args = {k: v for k, v in items if not (type(v).__name__ == "DotMap" and not v)}
    for key in args:
        if key not in REQUIRED + OPTIONAL:
            close = difflib.get_close_matches(key, REQUIRED + OPTIONAL, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"dss_args: unknown key {key!r}{hint}; supported: {', '.join(REQUIRED + OPTIONAL)}")
    missing = [k for k in REQUIRED if k not in args]
    if missing:
        raise ValueError(f"dss_args: missing {', '.join(repr(k) for k in missing)} (required: {', '.join(REQUIRED)})")
    if args.get("type", "GLISTER") != "GLISTER":
        raise ValueError(f"dss_args.type: {args['type']!r}; this loader implements 'GLISTER' only")
    if args["greedy"] not in GREEDY:
        raise ValueError(f"dss_args.greedy: {args['greedy']!r} is not one of {', '.join(GREEDY)}")
    if args["greedy"] == "RGreedy" and int(args.get("r", 0)) < 1:
        raise ValueError("dss_args.r: RGreedy needs r >= 1 (the number of rounds)")
    if args["selection_type"] not in SELECTION_TYPES:
        raise ValueError(f"dss_args.selection_type: {args['selection_type']!r} is not one of {', '.join(SELECTION_TYPES)}")
    if not 0 < float(args["fraction"]) <= 1:
        raise ValueError(f"dss_args.fraction: {args['fraction']!r} must be in (0, 1]")
    if int(args["select_every"]) < 1:
        raise ValueError(f"dss_args.select_every: {args['select_every']!r} must be >= 1")
    if not 0 <= float(args["kappa"]) < 1:
        raise ValueError(f"dss_args.kappa: {args['kappa']!r} must be in [0, 1)")
    if float(args["kappa"]) > 0 and "num_epochs" not in args:
        raise ValueError("dss_args.num_epochs: needed when kappa > 0 (warm-up length = kappa * num_epochs)")
    if not isinstance(args["loss"], nn.CrossEntropyLoss):
        raise ValueError(f"dss_args.loss: {type(args['loss']).__name__}; GLISTER's last-layer gradients here are "
                         "those of cross-entropy: pass nn.CrossEntropyLoss(reduction='none')")
    return args


class LastLayerView(nn.Module):
    """``embed(x)`` and ``fc`` for a CORDS model (``forward(x, last=True)``) or any module ending in nn.Linear."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.cords_protocol = hasattr(model, "get_embedding_dim")
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if self.cords_protocol:
            linears = [m for m in linears if m.in_features == model.get_embedding_dim()]
        if not linears:
            raise TypeError(f"{type(model).__name__} has no nn.Linear layer: GLISTER needs the final linear layer "
                            "(or the CORDS protocol: forward(x, last=True) -> (logits, embedding), get_embedding_dim())")
        self.fc = linears[-1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.cords_protocol:
            return self.model(x, last=True, freeze=True)[1]
        captured = []
        handle = self.fc.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return captured[-1].flatten(1)


class _Weighted(Dataset):
    def __init__(self, dataset: Dataset, indices: torch.Tensor, weights: torch.Tensor):
        self.dataset, self.indices, self.weights = dataset, indices.tolist(), weights

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, y = self.dataset[self.indices[i]][:2]
        return x, y, self.weights[i]


class GLISTERDataLoader:
    """Yields ``(inputs, targets, weights)`` from the current GLISTER subset; one ``iter()`` = one epoch."""

    def __init__(self, train_loader: DataLoader, val_loader: DataLoader, dss_args: Mapping[str, Any],
                 logger: logging.Logger | None = None, *, batch_size: int = 20, shuffle: bool = True,
                 pin_memory: bool = False, score_transform: Any = None, score_batch_size: int = 256, **loader_kwargs):
        args = check_dss_args(dss_args)
        self.args, self.logger = args, logger or logging.getLogger(__name__)
        self.train_ds, self.val_ds = train_loader.dataset, val_loader.dataset
        self.view = LastLayerView(args["model"])
        self.device = torch.device(args["device"])
        self.n = len(self.train_ds)
        self.budget = min(self.n, max(1, round(float(args["fraction"]) * self.n)))
        self.warm_epochs = round(float(args["kappa"]) * int(args.get("num_epochs", 0)))
        self.select_every = int(args["select_every"])
        self.score_transform, self.score_batch_size = score_transform, score_batch_size
        self.loader_kwargs = dict(batch_size=batch_size, shuffle=shuffle, pin_memory=pin_memory, **loader_kwargs)
        if args.get("collate_fn") is not None:
            self.loader_kwargs["collate_fn"] = args["collate_fn"]
        self.generator = torch.Generator().manual_seed(int(args.get("seed", 0)))
        self.epoch = 0  # the epoch the next iteration trains
        self.indices, self.weights = torch.arange(self.n), torch.ones(self.n)
        self.selected_at: int | None = None
        self.selections: list[dict[str, Any]] = []  # stats of every selection, for inspection

    # ------------------------------------------------------------ schedule (see loader.py)

    def due(self, epoch: int) -> bool:
        if epoch < self.warm_epochs:
            return False
        return self.selected_at is None or (epoch - self.warm_epochs) % self.select_every == 0

    def _size_at(self, epoch: int) -> int:
        return self.n if epoch < self.warm_epochs else self.budget

    def __len__(self) -> int:
        """Batches the next ``iter()`` yields (CORDS' len() can disagree with its iteration; this one cannot)."""
        size = self._size_at(self.epoch)
        bs, drop = self.loader_kwargs["batch_size"], self.loader_kwargs.get("drop_last", False)
        return size // bs if drop else math.ceil(size / bs)

    def __iter__(self) -> Iterator[tuple[Any, Any, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.due(epoch):
            self._select(epoch)
        elif epoch < self.warm_epochs:
            self.indices, self.weights = torch.arange(self.n), torch.ones(self.n)
        subset = _Weighted(self.train_ds, self.indices, self.weights)
        yield from DataLoader(subset, generator=self.generator, **self.loader_kwargs)

    # ------------------------------------------------------------ selection

    def _select(self, epoch: int) -> None:
        start = time.perf_counter()
        if epoch == 0 and not self.warm_epochs:  # an untrained model has nothing to say about the data
            self.indices = torch.sort(torch.randperm(self.n, generator=self.generator)[: self.budget]).values
            self.selected_at = epoch
            self.logger.info("epoch %d: random initial subset of %d", epoch, self.budget)
            return
        h, z, y = self._features(self.train_ds)
        hv, zv, yv = self._features(self.val_ds)
        r = torch.softmax(z, 1)
        r[torch.arange(len(r)), y] -= 1
        per_class = self.args["selection_type"] == "PerClass"
        groups = y if per_class else torch.zeros_like(y)
        lookahead = self.args.get("lookahead", "sum")
        problem = LastLayerProblem(h, r, groups, hv, zv, yv, float(self.args["eta"]), bool(self.args["linear_layer"]),
                                   lookahead == "mean")
        forward_time = time.perf_counter() - start
        quotas = budget_quotas(groups, self.budget, int(self.args["num_classes"]) if per_class else 1)
        mode = GREEDY[self.args["greedy"]]
        block = math.ceil(self.budget / int(self.args.get("r", 1))) if mode == "batched" else 1
        order = greedy(problem, self.budget, quotas, mode=mode, block=block, generator=self.generator)
        self.indices, self.weights = torch.sort(order).values, torch.ones(self.budget)
        self.selected_at = epoch
        stats = {"epoch": epoch, "forward_time": forward_time, "time": time.perf_counter() - start,
                 "objective": problem.objective(order),
                 "class_hist": torch.bincount(y[order], minlength=int(self.args["num_classes"])).tolist()}
        self.selections.append(stats)
        self.logger.info("epoch %d: GLISTER selected %d of %d in %.2fs (objective %.4f)", epoch, self.budget, self.n,
                         stats["time"], stats["objective"])

    @torch.no_grad()
    def _features(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, logits and labels of a whole dataset in eval mode (un-augmented with ``score_transform``)."""
        owner = _transform_owner(dataset) if self.score_transform is not None else None
        saved = owner.transform if owner is not None else None
        model = self.args["model"]
        was_training = model.training
        model.eval()
        try:
            if owner is not None:
                owner.transform = self.score_transform
            hs, zs, ys = [], [], []
            loader = DataLoader(dataset, batch_size=self.score_batch_size, shuffle=False,
                                collate_fn=self.loader_kwargs.get("collate_fn"))
            for batch in loader:
                x, y = batch[0].to(self.device), torch.as_tensor(batch[1])
                h = self.view.embed(x).float()
                hs.append(h.cpu())
                zs.append(self.view.fc(h).float().cpu())
                ys.append(y.cpu().long())
        finally:
            model.train(was_training)
            if owner is not None:
                owner.transform = saved
        return torch.cat(hs), torch.cat(zs), torch.cat(ys)


def _transform_owner(dataset: Any) -> Any:
    """The dataset object holding ``transform`` (through Subset/random_split wrappers), or None."""
    while dataset is not None:
        if hasattr(dataset, "transform"):
            return dataset
        dataset = getattr(dataset, "dataset", None)
    return None

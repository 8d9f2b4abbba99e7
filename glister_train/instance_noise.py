"""Label noise that falls where people's does (``data.noise_kind: instance``), after Chen et al. (AAAI 2021).

People mislabel the ambiguous images, and they pick the class the image resembles. A reference model, trained
briefly on the true labels of images it will not relabel, stands in for them: it scores each image of the pool by
the probability it gives the image's most likely wrong class. In each class, the ``round(rate * n_c)`` images with
the highest score take that wrong class. Symmetric flips put wrong labels on easy images at random; these land on
the hard ones, where a filter of low-confidence examples also finds the hard, correct ones.

The reference model never sees the images it scores. It trains on the dataset's training images outside the pool
(``data.train_limit`` leaves them: ``cpu-long`` keeps 25,000 of 50,000) when there are at least half as many as the
pool holds. Otherwise the pool is split in two stratified halves, and each half is scored by a model trained on the
other. The recipe is fixed, so that every run of a comparison sees the same labels: ``cpu-long``'s network and
optimizer (ResNet-18 at width 16, batch 128, learning rate 0.1), ``REFERENCE_EPOCHS`` epochs, seeded by
``data.noise_seed``.

The models and their scores are cached beside the data, in ``DATA_DIR/instance-noise/<digest>/``: ``recipe.json``
(the digest's inputs and the models' accuracy), ``fold-*`` (the reference runs, resumable), ``probabilities.npy``
(the reference probabilities of every pool image, by its index in the dataset; NaN outside the pool). The digest
covers the images, the true labels, the pool and the recipe, so a change in any of them trains anew.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import runlock
from .errors import DataError

REFERENCE_EPOCHS = 15
CACHE = "instance-noise"
# training options the reference models always run with off: left out of the recipe the cache is named by, so that
# adding one to the config (off by default) does not send every run to train the reference models again
OFF_IN_THE_REFERENCE = ("early_learning", "early_learning_momentum")
PROBABILITIES = "probabilities.npy"
RECIPE = "recipe.json"


def instance_flips(y: torch.Tensor, probabilities: torch.Tensor, rate: float) -> torch.Tensor:
    """Labels with, in each class, exactly ``round(rate * n_c)`` flipped: the examples whose most likely wrong
    class (by ``probabilities``, one row per example) is most probable, each to that class. Ties go to the lower
    index."""
    out = y.clone()
    wrong = probabilities.clone()
    wrong[torch.arange(len(y)), y] = -1.0
    score, target = wrong.max(1)
    for c in torch.unique(y).tolist():
        members = (y == c).nonzero().squeeze(1)
        k = round(rate * len(members))
        order = torch.argsort(score[members], descending=True, stable=True)[:k]
        out[members[order]] = target[members[order]]
    return out


def reference_recipe(noise_seed: int):
    """The reference models' training config (:mod:`glister_train.config`): ``cpu-long``'s, for ``REFERENCE_EPOCHS``
    epochs on full data, seeded by the noise seed."""
    from . import config as C

    return C.validate(C.merge(C.load_preset("cpu-long"), {
        # cross-entropy, as the cached reference models were trained (the recipe names their cache folder)
        "selection": {"selector": "full"}, "train": {"epochs": REFERENCE_EPOCHS, "early_learning": 0.0},
        "runtime": {"threads": torch.get_num_threads()},  # the caller's: a sweep's single-thread runs stay single
        "run": {"seed": noise_seed, "tracker": "none", "progress": "none"}}))


def folds(labels: torch.Tensor, pool: torch.Tensor, split_seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(images a reference model trains on, images it scores), by index in the dataset: the images outside the pool
    score the whole pool where there are at least half as many; else two stratified halves of the pool, crosswise."""
    from .data import stratified_sample

    outside = torch.ones(len(labels), dtype=torch.bool)
    outside[pool] = False
    if int(outside.sum()) * 2 >= len(pool):
        return [(outside.nonzero().squeeze(1), pool)]
    half = pool[stratified_sample(labels[pool], len(pool) // 2, torch.Generator().manual_seed(split_seed))]
    rest = pool[~torch.isin(pool, half)]
    return [(half, rest), (rest, half)]


def digest(x: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, recipe: dict) -> str:
    h = hashlib.sha256()
    for part in (x.contiguous().numpy().tobytes(), labels.numpy().astype(np.int64).tobytes(),
                 torch.sort(pool).values.numpy().astype(np.int64).tobytes(),
                 json.dumps(recipe, sort_keys=True).encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def cache_folder(x: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, data_dir: str | Path, noise_seed: int,
                 split_seed: int):
    """(the reference models' config, the recipe the digest covers, the cache folder it names)."""
    from .config import to_dict

    recipe_cfg = reference_recipe(noise_seed)
    train = {k: v for k, v in to_dict(recipe_cfg)["train"].items() if k not in OFF_IN_THE_REFERENCE}
    recipe = {"train": train, "model": to_dict(recipe_cfg)["model"],
              "augment": recipe_cfg.data.augment, "val_fraction": recipe_cfg.data.val_fraction,
              "seed": noise_seed, "split_seed": split_seed}
    return recipe_cfg, recipe, Path(data_dir).expanduser() / CACHE / digest(x, labels, pool, recipe)


def reference_probabilities(x: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, data_dir: str | Path,
                            noise_seed: int, split_seed: int, log: Callable[[str], None] = print
                            ) -> tuple[str, torch.Tensor]:
    """(the cache folder, the reference probabilities of the dataset's training images): ``x`` and ``labels`` are
    all of them, in the dataset's order; the rows outside ``pool`` are NaN. Read from the cache, or trained once and
    cached."""
    recipe_cfg, recipe, folder = cache_folder(x, labels, pool, data_dir, noise_seed, split_seed)
    cached = folder / PROBABILITIES
    if not cached.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _train_and_score(x, labels, pool, recipe_cfg, recipe, folder, split_seed, log)
    probabilities = torch.from_numpy(np.load(cached))
    if not torch.isfinite(probabilities[pool]).all():
        raise DataError(f"instance noise: {cached} lacks scores of pool images; delete {folder} to score again")
    return str(folder), probabilities


def _train_and_score(x, labels, pool, recipe_cfg, recipe, folder: Path, split_seed: int, log) -> None:
    from .data import ImageData, Splits, channel_stats, hold_out, normalize
    from .io import atomic_write_json
    from .models import load_model
    from .run import read_summary, train_run

    while (owner := runlock.holder(folder)) is not None:  # another run is training it: wait for its scores
        log(f"instance noise: process {owner['pid']} is training the reference model in {folder}; waiting")
        time.sleep(30)
        if (folder / PROBABILITIES).is_file():
            return
    runlock.acquire(folder)
    try:
        probabilities = np.full((len(labels), int(labels.max()) + 1), np.nan, dtype=np.float32)
        accuracies = []
        for i, (train_idx, score_idx) in enumerate(folds(labels, pool, split_seed)):
            images = ImageData(x[train_idx], labels[train_idx])
            kept, held = hold_out(images.y, max(1, round(recipe_cfg.data.val_fraction * len(images))),
                                  torch.Generator().manual_seed(split_seed))
            train = images.subset(kept)
            mean, std = channel_stats(train.x)
            splits = Splits(train, images.subset(held), None, int(labels.max()) + 1, mean, std)
            run = folder / f"fold-{i}"
            if (read_summary(run) or {}).get("status") != "completed":
                log(f"instance noise: training reference model {i + 1} on {len(train)} images it will not relabel "
                    f"({REFERENCE_EPOCHS} epochs, once; cached in {folder})")
                train_run(recipe_cfg, run, resume=(run / "checkpoint.pt").is_file(), log=log, splits=splits)
            accuracies.append((read_summary(run) or {}).get("final_val_acc"))
            model, _ = load_model(run / "model.pt")
            model.eval()
            with torch.no_grad():
                for start in range(0, len(score_idx), 1000):
                    idx = score_idx[start : start + 1000]
                    probabilities[idx.numpy()] = torch.softmax(model(normalize(x[idx], mean, std)), 1).numpy()
        atomic_write_json(folder / RECIPE, {**recipe, "reference_val_acc": accuracies,
                                            "folds": len(accuracies), "scored": len(pool)})
        tmp = folder / (PROBABILITIES + ".tmp.npy")
        np.save(tmp, probabilities)
        tmp.replace(folder / PROBABILITIES)
    finally:
        runlock.release(folder)

"""Shared test helpers: tiny generated datasets (never real data) and a tiny-model config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glister_train import config as C


def make_images(n: int, classes: int = 4, size: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: each class has its own colour and a noisy texture."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    colours = rng.integers(40, 215, size=(classes, 3))
    x = colours[y][:, None, None, :] + rng.normal(0, 30, size=(n, size, size, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def write_npz(folder: Path, n_train: int = 200, n_test: int = 80, classes: int = 4, size: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = make_images(n_train, classes, size, seed=1)
    np.savez(folder / "train.npz", x=x, y=y)
    x, y = make_images(n_test, classes, size, seed=2)
    np.savez(folder / "test.npz", x=x, y=y)
    return folder


def load_script(name: str):
    """A script in experiments/ as a module (they are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def npz_dir(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "data")


def tiny_config(data_dir: Path, **sections) -> C.Config:
    """A config that trains the tiny net on generated data in well under a second per epoch."""
    cfg = C.merge(C.Config(), {
        "data": {"dataset": "npz", "data_dir": str(data_dir)},
        "model": {"name": "tiny", "width": 4},
        "selection": {"selector": "adaptive-random", "fraction": 0.5, "select_every": 1},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.05},
        "runtime": {"device": "cpu", "precision": "fp32", "channels_last": False, "threads": 1},
        "run": {"progress": "none"},
    })
    return C.validate(C.merge(cfg, sections))


@pytest.fixture(autouse=True)
def _keep_global_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

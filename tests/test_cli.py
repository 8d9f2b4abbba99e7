"""The command line end to end, in a subprocess, as users and SageMaker run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import write_npz


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "glister_train", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.mark.slow
def test_smoke_preset_end_to_end(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    done = cli("--preset", "smoke", "--fraction", "0.3", "--dataset", "npz", "--data-dir", str(npz_dir),
               "--out", str(run), "--set", "runtime.threads=1")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch=")]
    assert len(lines) == 2
    assert all(key in lines[0] for key in ("train_loss=", "val_acc=", "test_acc=", "epoch_time=", "select_time=",
                                           "subset_size=54"))
    assert f"model: {run / 'model.pt'}" in done.stdout
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


@pytest.mark.slow
def test_print_config_shows_the_resolved_values():
    done = cli("--preset", "cpu-proxy", "--fraction", "0.3", "--print-config")
    assert done.returncode == 0, done.stderr
    assert "fraction: 0.3" in done.stdout and "width: 16" in done.stdout


@pytest.mark.slow
def test_resume_continues_a_run(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    common = ("--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--set", "model.name=tiny")
    assert cli(*common, "--epochs", "2", "--out", str(run)).returncode == 0
    again = cli(*common, "--epochs", "2", "--out", str(run))
    assert again.returncode == 2 and "already holds a run" in again.stderr
    resumed = cli("--resume", "--out", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout


@pytest.mark.parametrize("args, message", [
    (["--fraction", "0"], "selection.fraction: 0.0 is invalid"),
    (["--fraction", "1.2"], "it must be in (0, 1]"),
    (["--select-every", "0"], "selection.select_every: 0 is invalid"),
    (["--kappa", "1.0"], "selection.kappa: 1.0 is invalid"),
    (["--epochs", "0"], "train.epochs: 0 is invalid"),
    (["--set", "train.nope=1"], "unknown config key 'train.nope'"),
    (["--resume"], "is not a run folder to resume"),
    (["--init-from", "/no/such/model.pt"], "model.init_from: '/no/such/model.pt' is neither a model file"),
    (["--freeze", "layer9"], "model.freeze: 'layer9' is not a stage"),
    pytest.param(["--device", "cuda"], "runtime.device: 'cuda' was asked for but no CUDA device is visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")),
    (["--set", "data.label_noise=1.5"], "data.label_noise: 1.5 is invalid"),
    (["--set", "train.weight_decay=inf"], "train.weight_decay: inf is invalid"),
    (["--selector", "glister", "--set", "selection.sampling=top"], "selection.sampling: 'top' is invalid; it must be one of"),
    (["--set", "selection.eta=0.1"], "selection.eta: not an option of the filtered-random selector (its options: "
                                     "class_budget, agreement_sample, drop_share_scale, ignore_below)"),
])
@pytest.mark.slow
def test_bad_input_exits_non_zero_with_a_message(npz_dir: Path, tmp_path: Path, args, message):
    run = tmp_path / "run"
    done = cli("--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--out", str(run), *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not run.exists()


@pytest.mark.slow
def test_missing_dataset_leaves_no_run_folder(tmp_path: Path):
    run = tmp_path / "run"
    done = cli("--preset", "smoke", "--data-dir", str(tmp_path / "nothing"), "--set", "data.download=false",
               "--out", str(run))
    assert done.returncode == 2 and "cifar-10-batches-py" in done.stderr
    assert not (tmp_path / "nothing").exists()  # no empty data folder left behind
    assert not run.exists()


@pytest.mark.slow
def test_bad_labels_and_empty_image_folders(tmp_path: Path):
    write_npz(tmp_path / "d", classes=4)
    done = cli("--preset", "smoke", "--dataset", "npz", "--data-dir", str(tmp_path / "d"),
               "--set", "data.num_classes=2", "--out", str(tmp_path / "r1"))
    assert done.returncode == 2 and "is outside [0, 2)" in done.stderr
    (tmp_path / "f" / "train" / "cat").mkdir(parents=True)
    done = cli("--preset", "smoke", "--dataset", "folder", "--data-dir", str(tmp_path / "f"), "--out", str(tmp_path / "r2"))
    assert done.returncode == 2 and "holds no images" in done.stderr


@pytest.mark.slow
def test_corrupt_checkpoint_on_resume(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert cli("--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--set", "model.name=tiny",
               "--out", str(run)).returncode == 0
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    done = cli("--resume", "--out", str(run))
    assert done.returncode == 2 and "corrupt, truncated" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_nan_loss_exits_1_naming_epoch_and_step(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    done = cli("--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--set", "model.name=tiny",
               "--lr", "1e6", "--epochs", "6", "--precision", "fp32", "--out", str(run))
    assert done.returncode == 1 and re.search(r"loss is (nan|inf) at epoch \d+", done.stderr)
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"

"""The real SageMaker training toolkit runs the entry point, in program and in package mode.

The toolkit (``pip install sagemaker-training``) is what the PyTorch training containers run: it reads
``$SAGEMAKER_BASE_DIR/input/config/*.json``, sets the ``SM_*`` environment, and starts the entry point with the
hyperparameters as ``--name value``. ``SM_STUDIO_LOCAL_MODE`` keeps it from waiting on DNS for ``algo-1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glister_train.models import load_model

pytestmark = pytest.mark.integration  # a moto server or the SageMaker toolkit

pytest.importorskip("sagemaker_training")
REPO = Path(__file__).resolve().parent.parent
TOOLKIT = Path(sys.executable).parent / "train"


def job_dir(tmp: Path, program: str, submit: Path, data: Path, **hyperparameters) -> Path:
    """A SageMaker-shaped base directory: config files, the training channel, empty model/output folders."""
    base = tmp / "ml"
    config = base / "input" / "config"
    config.mkdir(parents=True)
    hps = {"sagemaker_program": json.dumps(program), "sagemaker_submit_directory": json.dumps(str(submit)),
           **{k: str(v) for k, v in hyperparameters.items()}}
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {"training": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}}))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}))
    shutil.copytree(data, base / "input" / "data" / "training")
    return base


def run_toolkit(base: Path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SM_STUDIO_LOCAL_MODE": "true",
                "TRAINING_JOB_NAME": "glister-test-job", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([str(TOOLKIT)], capture_output=True, text=True, timeout=600, env=full_env, cwd=base)


HYPERPARAMETERS = {"preset": "smoke", "selector": "glister", "fraction": "0.3", "epochs": "2", "tracker": "local",
                   "model.name": "tiny", "runtime.threads": "1"}


def check_job(base: Path, done: subprocess.CompletedProcess, checkpoints: Path) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model, arch = load_model(base / "model" / "model.pt")
    assert arch["name"] == "tiny" and model(torch.zeros(1, 3, 12, 12)).shape == (1, 4)
    summary = json.loads((base / "output" / "data" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["selector"] == "glister"
    assert (base / "output" / "data" / "metrics.jsonl").is_file() and (checkpoints / "checkpoint.pt").is_file()


def test_program_mode_trains_and_a_restarted_job_resumes(npz_dir: Path, tmp_path: Path):
    submit = tmp_path / "src"
    submit.mkdir()
    # the entry script the launcher stages; the package comes from this venv
    shutil.copy(REPO / "glister_train" / "sagemaker" / "train.py", submit / "train.py")
    checkpoints = tmp_path / "checkpoints"
    base = job_dir(tmp_path, "train.py", submit, npz_dir, out=checkpoints, **HYPERPARAMETERS)
    done = run_toolkit(base)
    check_job(base, done, checkpoints)
    assert "epoch=2 train_loss=" in done.stdout

    # a spot restart: same job, more epochs asked would be a different job; here the same job finds its
    # checkpoint (as SageMaker restores /opt/ml/checkpoints) and resumes instead of starting over
    (base / "model" / "model.pt").unlink()
    again = run_toolkit(base)
    check_job(base, again, checkpoints)
    assert "resumed from" in again.stdout and "epoch=1 " not in again.stdout


def test_package_mode_installs_and_runs_the_module(npz_dir: Path, tmp_path: Path):
    submit = tmp_path / "src"
    submit.mkdir()
    for name in ("glister_train", "configs"):
        shutil.copytree(REPO / name, submit / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "setup.cfg", "README.md"):
        shutil.copy(REPO / name, submit / name)
    checkpoints = tmp_path / "checkpoints"
    base = job_dir(tmp_path, "glister_train", submit, npz_dir, out=checkpoints, **HYPERPARAMETERS)
    site = tmp_path / "site"  # the toolkit's `pip install .` goes here, not into the venv under test
    done = run_toolkit(base, PIP_NO_DEPS="1", PIP_TARGET=str(site), PYTHONPATH=str(site))
    check_job(base, done, checkpoints)
    assert (site / "glister_train" / "configs" / "smoke.yaml").is_file()
    assert "-m glister_train" in done.stdout + done.stderr


def test_a_job_runs_the_whole_pipeline_and_exports_every_artifact(npz_dir: Path, tmp_path: Path):
    """The hyperparameter ``then`` chains pruning and compilation after training inside the job."""
    submit = tmp_path / "src"
    submit.mkdir()
    shutil.copy(REPO / "glister_train" / "sagemaker" / "train.py", submit / "train.py")
    checkpoints = tmp_path / "checkpoints"
    then = "prune --criterion l1 --amount 0.5 --finetune-epochs 1 --then compile --backend onnxruntime --test-limit 20"
    base = job_dir(tmp_path, "train.py", submit, npz_dir, out=checkpoints, then=then, **HYPERPARAMETERS)
    done = run_toolkit(base)
    check_job(base, done, checkpoints)
    _, arch = load_model(base / "model" / "prune" / "model.pt")
    assert arch["channels"] == {"conv1": 4, "conv2": 8}  # half of the smoke preset's tiny net
    assert list((base / "model" / "compile").rglob("*.onnx"))
    assert not list((base / "model").rglob("checkpoint.pt"))
    report = json.loads((base / "output" / "data" / "compile_compile_report.json").read_text())
    assert report["arch"]["channels"] == arch["channels"]  # compiled the pruned model
    assert (base / "output" / "data" / "prune_prune_report.json").is_file()

"""The SageMaker training-job contract.

Inside a training job (``SM_MODEL_DIR`` or ``TRAINING_JOB_NAME`` set), the same command line runs with:
- hyperparameters from ``SM_HPS`` (JSON) as defaults, overridden by those on the command line (the
  toolkit passes both; v3 ``SourceCode(command=...)`` passes only ``SM_HPS``);
- data from ``SM_CHANNEL_TRAINING`` in any format the harness reads (``dataset: auto``), and
  ``SM_CHANNEL_VALIDATION``, when given, as the validation set instead of a split;
- the run folder in the checkpoint directory (``/opt/ml/checkpoints``, which SageMaker syncs to S3
  and restores before a restarted spot job starts), so a restarted job finds its checkpoint and resumes;
- at the end, ``model.pt`` (and the resolved config) copied to ``SM_MODEL_DIR`` and the run's
  small files (config, params, metrics, summary) to ``SM_OUTPUT_DATA_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "/opt/ml/checkpoints"
EXPORTED = ("config.yaml", "params.json", "metrics.jsonl", "summary.json")


def in_training_job(env: Mapping[str, str] = os.environ) -> bool:
    return "SM_MODEL_DIR" in env or "TRAINING_JOB_NAME" in env


def hyperparameters(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``SM_HPS``, the job's hyperparameters ({} when absent or unreadable)."""
    try:
        hps = json.loads(env.get("SM_HPS") or "{}")
    except ValueError:
        return {}
    return hps if isinstance(hps, dict) else {}


def hyperparameter_argv(env: Mapping[str, str] = os.environ) -> list[str]:
    """``SM_HPS`` as command-line arguments (``{"fraction": 0.3}`` -> ``["--fraction", "0.3"]``)."""
    argv = []
    for key, value in sorted(hyperparameters(env).items()):
        if key.startswith("sagemaker_"):
            continue
        text = json.dumps(value) if isinstance(value, (bool, list, dict)) else str(value)
        argv += [f"--{key}", text]
    return argv


def job_overrides(env: Mapping[str, str] = os.environ) -> dict[str, dict[str, Any]]:
    """Config values implied by the job's environment (explicit hyperparameters still win)."""
    data: dict[str, Any] = {}
    if env.get("SM_CHANNEL_TRAINING"):
        data.update(data_dir=env["SM_CHANNEL_TRAINING"], dataset="auto", download=False)
    if env.get("SM_CHANNEL_VALIDATION"):
        data["val_dir"] = env["SM_CHANNEL_VALIDATION"]
    run: dict[str, Any] = {"out": CHECKPOINT_DIR, "progress": "none"}
    if env.get("TRAINING_JOB_NAME"):
        run["run_name"] = env["TRAINING_JOB_NAME"]
    return {"data": data, "run": run}


def export_outputs(run_dir: Path, env: Mapping[str, str] = os.environ) -> list[str]:
    """Copy the final model to ``SM_MODEL_DIR`` and the run's small files to ``SM_OUTPUT_DATA_DIR``."""
    written = []
    for key, names in (("SM_MODEL_DIR", ("model.pt", "config.yaml")), ("SM_OUTPUT_DATA_DIR", EXPORTED)):
        if not env.get(key):
            continue
        target = Path(env[key])
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, target / name)
                written.append(str(target / name))
    return written


def export_stages(folders: list[Path], env: Mapping[str, str] = os.environ) -> list[str]:
    """Each pipeline stage's folder (``RUN/prune``, ``RUN/compile``) to ``SM_MODEL_DIR/<stage>/`` (the pruned model,
    the compiled artifacts, the Neo tarball; no checkpoints) and its report to ``SM_OUTPUT_DATA_DIR``."""
    written = []
    for folder in folders:
        if env.get("SM_MODEL_DIR"):
            target = Path(env["SM_MODEL_DIR"]) / folder.name
            shutil.copytree(folder, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint.pt", ".lock"))
            written.append(str(target))
        if env.get("SM_OUTPUT_DATA_DIR"):
            output = Path(env["SM_OUTPUT_DATA_DIR"])
            output.mkdir(parents=True, exist_ok=True)
            for report in folder.glob("*_report.json"):
                shutil.copy2(report, output / f"{folder.name}_{report.name}")
                written.append(str(output / f"{folder.name}_{report.name}"))
    return written


def launcher_lost(env: Mapping[str, str] = os.environ) -> str:
    """Why this job should be running under torchrun but is not ('' when nothing is lost).

    SageMaker tuning jobs start the entry point through the container's legacy toolkit
    (``python train.py --key value``), which drops a ModelTrainer's Torchrun setting.
    """
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return ""
    hosts = json.loads(env.get("SM_HOSTS") or "[]")
    gpus = int(env.get("SM_NUM_GPUS") or 0)
    if len(hosts) > 1:
        return f"the job has {len(hosts)} instances"
    if gpus > 1:
        return f"the instance has {gpus} GPUs"
    return ""


def warn_if_launcher_lost(log, env: Mapping[str, str] = os.environ) -> bool:
    """Say so when the job asked for more than one process but got one; True on hosts that should stay idle."""
    reason = launcher_lost(env)
    if not reason:
        return False
    log(f"launcher: {reason} but this process was not started by torchrun (no WORLD_SIZE): it trains alone, "
        "on one device. Tuning jobs start the entry point through the legacy toolkit, which drops Torchrun; "
        "use a plain training job (python -m glister_train.sagemaker.launch --processes-per-host N) to train data-parallel.")
    hosts = json.loads(env.get("SM_HOSTS") or "[]")
    idle = len(hosts) > 1 and env.get("SM_CURRENT_HOST", hosts[0]) != hosts[0]
    if idle:
        log(f"launcher: {env.get('SM_CURRENT_HOST')} is not the first instance ({hosts[0]}): it stays idle so that "
            "only one copy of the run writes the model")
    return idle

"""Launch a GLISTER training run as a SageMaker training job (v3 SDK, extra ``[launch]``).

    python -m glister_train.sagemaker.launch --fraction 0.3 --selector glister --epochs 300 \\
        --role arn:aws:iam::123456789012:role/SageMakerRole --data s3://my-bucket/cifar10/ \\
        --instance-type ml.g5.xlarge --spot --max-run 36000 --max-wait 72000 \\
        --checkpoint-s3 s3://my-bucket/glister/checkpoints/ --experiment-name glister-cifar10

The job runs the PyTorch training image with the package staged as its source code (``train.py`` +
``glister_train/`` + ``configs/`` + a requirements.txt, from a checkout or an installed package), the
hyperparameters as ``--name value``, the training channel from S3 (``--upload-data DIR`` uploads a local folder first),
managed spot training with a checkpoint S3 URI (SageMaker restores it into ``/opt/ml/checkpoints``,
where the entry point resumes from), and metric definitions from ``glister_train.loglines``.
``--dry-run`` prints the job it would submit and sends nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ..config import configs_dir
from ..loglines import metric_definitions

PACKAGE = Path(__file__).resolve().parent.parent

REQUIREMENTS = ["pyyaml>=6.0", "sagemaker-core>=2.27,<3"]  # torch and numpy come with the image


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = p.add_argument_group("the run (hyperparameters)")
    run.add_argument("--preset", default="", help="a preset in configs/ (default: the standard configuration)")
    run.add_argument("--selector", default="glister")
    run.add_argument("--fraction", type=float, default=0.3)
    run.add_argument("--epochs", type=int)
    run.add_argument("--select-every", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                     help="any other hyperparameter, e.g. --hp train.lr=0.05 (repeatable)")
    run.add_argument("--experiment-name", default="glister-train")
    run.add_argument("--run-name", help="default: unique per call")
    job = p.add_argument_group("the job")
    job.add_argument("--role", help="IAM role ARN for the job (required unless --dry-run)")
    job.add_argument("--data", help="S3 URI of the training channel (CIFAR-10 batches, npz or image folder)")
    job.add_argument("--validation", help="S3 URI of a validation channel (used instead of a split)")
    job.add_argument("--upload-data", metavar="DIR", help="upload this local folder first and use it as --data")
    job.add_argument("--instance-type", default="ml.g5.xlarge")
    job.add_argument("--instance-count", type=int, default=1, help="instances; more than 1 trains data-parallel")
    job.add_argument("--processes-per-host", type=int, default=0,
                     help="torchrun processes per instance, usually one per GPU (0: the SDK default, one per GPU)")
    job.add_argument("--framework-version", default="2.5", help="PyTorch training image version")
    job.add_argument("--py-version", default="py311")
    job.add_argument("--region", help="default: the session's")
    job.add_argument("--spot", action="store_true", help="managed spot training (needs --max-wait)")
    job.add_argument("--max-run", type=int, default=24 * 3600, help="seconds")
    job.add_argument("--max-wait", type=int, help="seconds, spot only, >= --max-run")
    job.add_argument("--checkpoint-s3", help="S3 URI that /opt/ml/checkpoints syncs to (needed to resume spot jobs)")
    job.add_argument("--output-s3", help="S3 URI for model.tar.gz and output (default: the session bucket)")
    job.add_argument("--wait", action="store_true", help="wait for the job and stream its logs")
    job.add_argument("--dry-run", action="store_true", help="print the job and send nothing")
    return p


def unique_suffix() -> str:
    """The SDK names jobs base-YYYYmmddHHMMSS: two calls in one second would collide without this."""
    return uuid.uuid4().hex[:6]


def job_spec(args: argparse.Namespace, region: str) -> dict[str, Any]:
    """Everything the job is made of, as plain data (what --dry-run prints and submit() sends)."""
    from sagemaker.core import image_uris

    if args.spot and not args.max_wait:
        raise SystemExit("error: --spot needs --max-wait (seconds, at least --max-run)")
    if args.max_wait and args.max_wait < args.max_run:
        raise SystemExit(f"error: --max-wait {args.max_wait} must be at least --max-run {args.max_run}")
    suffix = unique_suffix()
    hyperparameters = {"selector": args.selector, "fraction": args.fraction,
                       "experiment-name": args.experiment_name,
                       "run-name": args.run_name or f"{args.selector}-f{round(args.fraction * 100)}-{suffix}"}
    for key in ("preset", "epochs", "select_every", "seed"):
        value = getattr(args, key)
        if value not in (None, ""):
            hyperparameters[key.replace("_", "-")] = value
    for item in args.hp:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --hp {item!r}: expected KEY=VALUE")
        hyperparameters[key] = value
    channels = {name: uri for name, uri in (("training", args.data), ("validation", args.validation)) if uri}
    if "training" not in channels and not args.upload_data:
        raise SystemExit("error: give --data s3://... or --upload-data DIR")
    return {
        "base_job_name": f"glister-train-{args.selector}-f{round(args.fraction * 100)}-{suffix}",
        "image": image_uris.retrieve(framework="pytorch", version=args.framework_version, py_version=args.py_version,
                                     image_scope="training", instance_type=args.instance_type, region=region),
        "instance_type": args.instance_type, "instance_count": args.instance_count,
        "hyperparameters": {k: str(v) for k, v in hyperparameters.items()},
        "channels": channels, "spot": args.spot, "max_run": args.max_run, "max_wait": args.max_wait,
        "checkpoint_s3": args.checkpoint_s3, "output_s3": args.output_s3,
        "metric_definitions": metric_definitions(), "role": args.role,
        # data parallel under torchrun (SDK v3 Torchrun); None = one plain process
        "torchrun": ({"process_count_per_node": args.processes_per_host or None}
                     if args.instance_count > 1 or args.processes_per_host > 1 else None),
    }


def stage_source(target: Path) -> Path:
    """The source the job runs: the entry script, the package, its presets and its requirements."""
    shutil.copy(PACKAGE / "sagemaker" / "train.py", target / "train.py")
    shutil.copytree(PACKAGE, target / "glister_train", ignore=shutil.ignore_patterns("__pycache__", "configs"))
    shutil.copytree(configs_dir(), target / "configs", ignore=shutil.ignore_patterns("__pycache__"))
    (target / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
    return target


def build_trainer(spec: dict[str, Any], source_dir: Path, session):
    from sagemaker.core.shapes import CheckpointConfig, MetricDefinition, OutputDataConfig
    from sagemaker.core.training.configs import Compute, SourceCode, StoppingCondition
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    stopping = StoppingCondition(max_runtime_in_seconds=spec["max_run"])
    if spec["max_wait"]:
        stopping = StoppingCondition(max_runtime_in_seconds=spec["max_run"], max_wait_time_in_seconds=spec["max_wait"])
    trainer = ModelTrainer(
        sagemaker_session=session, role=spec["role"], base_job_name=spec["base_job_name"],
        training_image=spec["image"],
        source_code=SourceCode(source_dir=str(source_dir), entry_script="train.py", requirements="requirements.txt"),
        compute=Compute(instance_type=spec["instance_type"], instance_count=spec["instance_count"],
                        enable_managed_spot_training=spec["spot"] or None),
        stopping_condition=stopping, hyperparameters=spec["hyperparameters"],
        distributed=Torchrun(**spec["torchrun"]) if spec["torchrun"] else None,
        output_data_config=OutputDataConfig(s3_output_path=spec["output_s3"]) if spec["output_s3"] else None,
    )
    if spec["checkpoint_s3"]:
        trainer = trainer.with_checkpoint_config(
            CheckpointConfig(s3_uri=spec["checkpoint_s3"], local_path="/opt/ml/checkpoints"))
    return trainer.with_metric_definitions(
        [MetricDefinition(name=d["Name"], regex=d["Regex"]) for d in spec["metric_definitions"]])


def submit(spec: dict[str, Any], session, upload_data: str | None = None, wait: bool = False):
    """Upload the data if asked, stage the source, and create the training job; returns the ModelTrainer."""
    from sagemaker.core.training.configs import InputData

    if upload_data:
        spec["channels"]["training"] = session.upload_data(
            upload_data, key_prefix=f"glister-train/data/{Path(upload_data).name}")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(spec, stage_source(Path(tmp)), session)
        channels = [InputData(channel_name=name, data_source=uri) for name, uri in spec["channels"].items()]
        trainer.train(input_data_config=channels, wait=wait, logs=wait)
    return trainer


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.dry_run:
        spec = job_spec(args, args.region or "us-east-1")
        print(json.dumps(spec, indent=2))
        return 0
    if not args.role:
        raise SystemExit("error: --role ARN is required to submit a job (or use --dry-run)")
    from sagemaker.core.helper.session_helper import Session

    from glister_train.tracking.sagemaker import SDK_CONFIG

    session = Session(sagemaker_config=SDK_CONFIG)
    spec = job_spec(args, args.region or session.boto_region_name)
    trainer = submit(spec, session, args.upload_data, args.wait)
    job = trainer._latest_training_job
    print(f"submitted training job {job.training_job_name if job else '(unknown)'}; "
          f"run {spec['hyperparameters']['run-name']} in experiment {args.experiment_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

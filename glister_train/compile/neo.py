"""SageMaker Neo: upload the TorchScript tarball and submit a compilation job for a target device.

The list of valid targets is botocore's own (the API's ``TargetDevice`` enum), so it stays in step
with the installed SDK; moto accepts any value, so the check here is the only one before AWS.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import StageFailed, UsageError
from .export import require

# Neo's PyTorch support: cloud instance targets (ml_*) up to 2.0, edge devices document 1.8
CLOUD_FRAMEWORK_VERSION = "2.0"
EDGE_FRAMEWORK_VERSION = "1.8"
TERMINAL = {"COMPLETED", "FAILED", "STOPPED"}


def target_devices() -> list[str]:
    botocore = require("botocore.session", "sagemaker")
    model = botocore.get_session().get_service_model("sagemaker")
    return list(model.shape_for("TargetDevice").enum)


def check_target(target: str) -> str:
    valid = target_devices()
    if target not in valid:
        raise UsageError(f"--neo {target!r} is not a Neo target device; valid targets: {', '.join(valid)}")
    return target


def framework_version(target: str) -> str:
    return CLOUD_FRAMEWORK_VERSION if target.startswith("ml_") else EDGE_FRAMEWORK_VERSION


def job_name(prefix: str = "glister-neo") -> str:
    # at most 63 characters; seconds alone collide when jobs are submitted together
    return f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"[:63]


def compilation_request(name: str, role: str, model_uri: str, output_uri: str, target: str, input_config: dict,
                        version: str, max_runtime: int = 900) -> dict[str, Any]:
    return {
        "CompilationJobName": name,
        "RoleArn": role,
        "InputConfig": {"S3Uri": model_uri, "DataInputConfig": json.dumps(input_config), "Framework": "PYTORCH",
                        "FrameworkVersion": version},
        "OutputConfig": {"S3OutputLocation": output_uri, "TargetDevice": target},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }


def submit(tarball: Path, input_config: dict, target: str, role: str, bucket: str, prefix: str = "glister-train/neo",
           version: str = "", wait: bool = False, session: Any = None, log=print, poll_seconds: float = 15.0) -> dict:
    """Upload ``tarball`` to ``s3://bucket/prefix/NAME/`` and create the job; returns name, request and status."""
    check_target(target)
    if not role:
        raise UsageError("--neo needs an IAM role SageMaker can assume: --neo-role ARN (or SAGEMAKER_ROLE)")
    if not bucket:
        raise UsageError("--neo needs an S3 bucket for the model and the compiled output: --neo-bucket NAME")
    boto3 = require("boto3", "sagemaker")
    session = session or boto3.Session()
    name = job_name()
    key = f"{prefix.strip('/')}/{name}/model.tar.gz"
    session.client("s3").upload_file(str(tarball), bucket, key)
    request = compilation_request(name, role, f"s3://{bucket}/{key}", f"s3://{bucket}/{prefix.strip('/')}/{name}/output",
                                  target, input_config, version or framework_version(target))
    client = session.client("sagemaker")
    client.create_compilation_job(**request)
    log(f"neo: submitted compilation job {name} for {target} (model s3://{bucket}/{key})")
    status = "InProgress"
    if wait:
        while True:
            described = client.describe_compilation_job(CompilationJobName=name)
            status = described["CompilationJobStatus"]
            log(f"neo: {name} {status}")
            if status.upper() in TERMINAL:
                break
            time.sleep(poll_seconds)
        if status.upper() != "COMPLETED":
            raise StageFailed(f"neo: compilation job {name} ended {status}: {described.get('FailureReason', '')}")
    return {"job_name": name, "status": status, "request": request}

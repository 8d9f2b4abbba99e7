"""The launcher against a moto server: assert on the CreateTrainingJob request it sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import write_npz
from .test_sagemaker_experiments import aws  # noqa: F401  (the moto server fixture)

pytestmark = pytest.mark.integration  # a moto server or the SageMaker toolkit

pytest.importorskip("sagemaker.train")


def launcher():
    from glister_train.sagemaker import launch

    return launch


def captured_session(sent: list, operation: str = "CreateTrainingJob"):
    import boto3
    from sagemaker.core.helper.session_helper import Session

    from glister_train.tracking.sagemaker import SDK_CONFIG

    boto = boto3.Session()
    boto.events.register(f"provide-client-params.sagemaker.{operation}",
                         lambda params, **_: sent.append(params))
    boto.client("s3").create_bucket(Bucket="glister-test")
    return Session(boto_session=boto, default_bucket="glister-test", sagemaker_config=SDK_CONFIG)


def test_spot_job_request_has_everything(aws, tmp_path: Path):  # noqa: F811
    launch = launcher()
    args = launch.parser().parse_args([
        "--fraction", "0.3", "--selector", "glister", "--epochs", "300", "--role", "arn:aws:iam::123456789012:role/sm",
        "--upload-data", str(write_npz(tmp_path / "cifar")), "--validation", "s3://glister-test/val/",
        "--spot", "--max-run", "3600", "--max-wait", "7200", "--checkpoint-s3", "s3://glister-test/ckpt/",
        "--experiment-name", "glister-exp", "--hp", "train.lr=0.05"])
    sent: list[dict] = []
    session = captured_session(sent)
    spec = launch.job_spec(args, "us-east-1")
    launch.submit(spec, session, args.upload_data)
    [request] = sent

    hps = request["HyperParameters"]
    assert hps["fraction"] == "0.3" and hps["selector"] == "glister" and hps["epochs"] == "300"
    assert hps["experiment-name"] == "glister-exp" and hps["run-name"].startswith("glister-f30-")
    assert hps["train.lr"] == "0.05"
    algo = request["AlgorithmSpecification"]
    assert algo["TrainingImage"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-gpu-py311"
    names = {d["Name"]: d["Regex"] for d in algo["MetricDefinitions"]}
    assert {"train_loss", "val_acc", "test_acc", "epoch_time", "select_time", "select_objective"} <= set(names)
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"] == {"S3Uri": "s3://glister-test/ckpt/", "LocalPath": "/opt/ml/checkpoints"}
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels["training"].startswith("s3://glister-test/glister-train/data/cifar")
    assert channels["validation"] == "s3://glister-test/val/"
    assert request["TrainingJobName"].startswith(spec["base_job_name"])

    import boto3  # the uploaded dataset is really in (moto's) S3
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="glister-test")["Contents"]]
    assert any(k.endswith("cifar/train.npz") for k in keys)


def test_job_names_are_unique_per_call():
    launch = launcher()
    args = launch.parser().parse_args(["--data", "s3://b/d/"])
    names = {launch.job_spec(args, "us-east-1")["base_job_name"] for _ in range(20)}
    assert len(names) == 20


def test_dry_run_sends_nothing(capsys):
    launch = launcher()
    assert launch.main(["--dry-run", "--data", "s3://b/d/", "--spot", "--max-wait", "90000"]) == 0
    out = capsys.readouterr().out
    assert '"spot": true' in out and '"max_wait": 90000' in out


def test_spot_without_max_wait_is_refused():
    launch = launcher()
    with pytest.raises(SystemExit, match="--spot needs --max-wait"):
        launch.job_spec(launch.parser().parse_args(["--data", "s3://b/d/", "--spot"]), "us-east-1")


def sweep_module():
    from glister_train import sweep

    return sweep


TUNE = {
    "preset": "cpu-proxy",
    "tune": {"objective": "val_acc", "max_jobs": 6, "max_parallel_jobs": 2,
             "ranges": {"fraction": {"type": "continuous", "min": 0.1, "max": 0.5},
                        "select_every": {"type": "integer", "min": 5, "max": 20},
                        "selector": {"type": "categorical", "values": ["glister", "adaptive-random"]}},
             "warm_start": {"type": "TransferLearning", "parents": ["glister-tune-aaaaaa", "glister-tune-bbbbbb"]}},
}
LAUNCH = ["--role", "arn:aws:iam::123456789012:role/sm", "--data", "s3://glister-test/cifar/", "--epochs", "40"]


@pytest.mark.parametrize("warm_type", ["TransferLearning", "IdenticalDataAndAlgorithm"])
def test_tuning_job_request_with_warm_start(aws, warm_type):  # noqa: F811
    sweep = sweep_module()
    spec = {**TUNE, "tune": {**TUNE["tune"], "warm_start": {**TUNE["tune"]["warm_start"], "type": warm_type}}}
    sent: list[dict] = []
    session = captured_session(sent, "CreateHyperParameterTuningJob")
    name = sweep.sagemaker_tune(spec, LAUNCH, session=session)
    [request] = sent
    assert request["HyperParameterTuningJobName"] == name and len(name) <= 32
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_acc"}
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    assert config["ResourceLimits"]["MaxParallelTrainingJobs"] == 2
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"][0]["Name"] == "fraction"
    assert ranges["IntegerParameterRanges"][0]["Name"] == "select-every"
    assert ranges["CategoricalParameterRanges"][0]["Values"] == ["glister", "adaptive-random"]
    warm = request["WarmStartConfig"]
    assert warm["WarmStartType"] == warm_type
    assert [p["HyperParameterTuningJobName"] for p in warm["ParentHyperParameterTuningJobs"]] == [
        "glister-tune-aaaaaa", "glister-tune-bbbbbb"]
    definition = request["TrainingJobDefinition"]
    static = definition["StaticHyperParameters"]
    assert static["epochs"] == "40" and static["preset"] == "cpu-proxy" and "fraction" not in static
    assert any(d["Name"] == "val_acc" for d in definition["AlgorithmSpecification"]["MetricDefinitions"])


def test_too_many_warm_start_parents_is_refused(aws):  # noqa: F811
    sweep = sweep_module()
    spec = {**TUNE, "tune": {**TUNE["tune"], "warm_start": {"type": "TransferLearning",
                                                            "parents": [f"p{i}" for i in range(6)]}}}
    with pytest.raises(SystemExit, match="SageMaker takes 1 to 5"):
        sweep.sagemaker_tune(spec, LAUNCH, session=captured_session([], "CreateHyperParameterTuningJob"))


def test_one_training_job_per_point(aws):  # noqa: F811
    sweep = sweep_module()
    sent: list[dict] = []
    session = captured_session(sent)
    todo = [{"selector": "glister", "fraction": 0.3, "seed": 0}, {"selector": "adaptive-random", "fraction": 0.3,
                                                                  "seed": 1}]
    names = sweep.sagemaker_jobs(todo, {"preset": "cpu-proxy"}, LAUNCH, session=session)
    assert len(sent) == 2 and len(set(names)) == 2
    assert [r["HyperParameters"]["selector"] for r in sent] == ["glister", "adaptive-random"]
    assert [r["HyperParameters"]["seed"] for r in sent] == ["0", "1"]


def test_data_parallel_job_runs_under_torchrun(aws, tmp_path: Path):  # noqa: F811
    import boto3

    launch = launcher()
    args = launch.parser().parse_args([
        "--role", "arn:aws:iam::123456789012:role/sm", "--data", "s3://glister-test/cifar/", "--instance-count", "2",
        "--processes-per-host", "4", "--instance-type", "ml.g5.12xlarge"])
    sent: list[dict] = []
    session = captured_session(sent)
    spec = launch.job_spec(args, "us-east-1")
    assert spec["torchrun"] == {"process_count_per_node": 4}
    launch.submit(spec, session)
    [request] = sent
    assert request["ResourceConfig"]["InstanceCount"] == 2
    # the SDK ships the Torchrun setting with the code: its driver starts torchrun from it
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="glister-test")["Contents"]]
    [config] = [k for k in keys if k.endswith("distributed.json")]
    assert json.loads(s3.get_object(Bucket="glister-test", Key=config)["Body"].read())["process_count_per_node"] == 4
    single = launch.job_spec(launch.parser().parse_args(["--data", "s3://b/d/"]), "us-east-1")
    assert single["torchrun"] is None

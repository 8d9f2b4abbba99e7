"""The SageMaker Experiments tracker against a real local AWS API: a moto server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from glister_train.run import train_run
from glister_train.tracking import read_metrics

from .conftest import tiny_config

pytestmark = pytest.mark.integration  # a moto server or the SageMaker toolkit

pytest.importorskip("sagemaker.core")
moto_server = pytest.importorskip("moto.server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def aws(monkeypatch):
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    # servers in one process share moto's state: start every test from an empty account
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"))
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "AWS_MAX_ATTEMPTS": "1", "SAGEMAKER_VALIDATE_ROLE": "false"}.items():
        monkeypatch.setenv(key, value)
    import boto3

    yield server, boto3.client("sagemaker")
    server.stop()


def test_run_appears_with_parameters_and_metrics(aws, npz_dir: Path, tmp_path: Path):
    _, sm = aws
    cfg = tiny_config(npz_dir, train={"epochs": 3},
                      run={"tracker": "sagemaker", "experiment_name": "glister-exp", "run_name": "tiny-run"})
    summary = train_run(cfg, tmp_path / "run", log=print)
    assert summary["tracking"][0]["delivered"], summary["tracking"]

    [component] = sm.list_trial_components(ExperimentName="glister-exp")["TrialComponentSummaries"]
    described = sm.describe_trial_component(TrialComponentName=component["TrialComponentName"])
    params = described["Parameters"]
    assert params["selection.fraction"]["NumberValue"] == 0.5 and params["model.name"]["StringValue"] == "tiny"
    metrics = {m["MetricName"]: m for m in described["Metrics"]}
    local = read_metrics(tmp_path / "run")
    assert metrics["train_loss"]["Count"] == 3
    assert metrics["train_loss"]["Last"] == pytest.approx(local[-1]["train_loss"])
    assert "select_overlap" in metrics  # per-selection metrics travel too
    assert "model.pt" in described["OutputArtifacts"]


def test_server_gone_mid_run_loses_nothing_locally(aws, npz_dir: Path, tmp_path: Path):
    server, _ = aws
    lines = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("epoch=2 "):
            server.stop()  # the API goes away after the second epoch's metrics were sent

    cfg = tiny_config(npz_dir, train={"epochs": 4}, run={"tracker": "sagemaker", "experiment_name": "outage"})
    summary = train_run(cfg, tmp_path / "run", log=log)
    assert summary["status"] == "completed"
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]
    report = json.loads((tmp_path / "run" / "summary.json").read_text())["tracking"][0]
    # delivery runs beside training, so the last steps sent before the stop may or may not have gone out
    assert report["delivered"] is False and 2 <= report["undelivered_metric_steps"] <= 4
    assert any("tracker sagemaker" in line and "will retry" in line for line in lines)


def test_report_reads_the_experiment_back(aws, npz_dir: Path, tmp_path: Path):
    from glister_train.report import local_runs, sagemaker_runs, table

    for selector in ("full", "adaptive-random"):
        cfg = tiny_config(npz_dir, selection={"selector": selector},
                          run={"tracker": "sagemaker", "experiment_name": "fractions", "run_name": selector})
        train_run(cfg, tmp_path / selector, log=lambda _: None)
    remote = {(r["selector"], r["fraction"]): r for r in table(sagemaker_runs("fractions"))}
    local = {(r["selector"], r["fraction"]): r for r in table(local_runs([str(tmp_path)]))}
    assert set(remote) == set(local) == {("full", 1.0), ("adaptive-random", 0.5)}
    for key, row in local.items():
        assert remote[key]["final_test_acc"] == pytest.approx(row["final_test_acc"])
        assert remote[key]["best_test_acc"] == pytest.approx(row["best_test_acc"])
        assert remote[key]["epoch_time"] == pytest.approx(row["epoch_time"])

"""Remote trackers: MLflow against a real SQLite store, and the retry-and-report wrapper."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from glister_train.run import train_run
from glister_train.tracking import MemoryTracker, Resilient, read_metrics

from .conftest import tiny_config


def quiet(_line: str) -> None:
    pass


def test_mlflow_run_reads_back_params_metrics_and_model(npz_dir: Path, tmp_path: Path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # a generous wait at the end (run.tracking_timeout): on a loaded machine the store and the model artifact took
    # longer than the shipped 10 s, and this test reads back everything
    cfg = tiny_config(npz_dir, run={"tracker": "mlflow", "tracking_uri": uri, "experiment_name": "exp",
                                    "run_name": "tiny", "tracking_timeout": 300})
    summary = train_run(cfg, tmp_path / "run", log=quiet)
    assert summary["status"] == "completed" and "tracking" in summary and summary["tracking"][0]["delivered"]

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.params["selection.fraction"] == "0.5" and run.data.params["model.name"] == "tiny"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    local = read_metrics(tmp_path / "run")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r["train_loss"])) for r in local]
    assert "model.pt" in [a.path for a in client.list_artifacts(run.info.run_id)]


class Flaky(MemoryTracker):
    """Fails its first ``failures`` calls of any kind, like a throttled or briefly unreachable API."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name in ("log_params", "log_metrics", "log_artifact", "close"):
            def call(*args):
                if self.failures > 0:
                    self.failures -= 1
                    raise ConnectionError("endpoint unreachable")
                return attr(*args)
            return call
        return attr


def test_resilient_retries_in_order_and_reports():
    remote = Flaky(failures=2)
    warnings = []
    t = Resilient("flaky", remote, warnings.append)
    t.log_params({"a": 1})
    t.log_metrics({"loss": 1.0, "hist": [1, 2], "nan": float("nan")}, step=1)
    t.log_metrics({"loss": 0.5}, step=2)
    t.close()  # wakes the worker from its pause after the failures and waits for it to deliver
    assert remote.params == {"a": 1}
    assert remote.metrics == [(1, {"loss": 1.0}), (2, {"loss": 0.5})]  # scalars only, in order
    assert remote.status == "completed" and t.report()["delivered"] and len(warnings) == 1


class Hanging(MemoryTracker):
    """Every call blocks until released (or ``seconds`` pass) and then fails: a blackholed endpoint behind long
    client retries. ``returned`` counts the calls that came back."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.calls, self.returned = seconds, 0, 0
        self.release = threading.Event()

    def __getattribute__(self, name):
        if name in ("log_params", "log_metrics", "log_artifact", "close"):
            def call(*args):
                self.calls += 1
                self.release.wait(self.seconds)
                self.returned += 1
                raise TimeoutError("read timed out")
            return call
        return super().__getattribute__(name)


def test_a_hanging_tracker_never_blocks_the_training_thread():
    remote = Hanging(60.0)  # hangs until released: the test counts calls, it does not time them
    t = Resilient("hanging", remote, quiet, close_timeout=0.5)
    t.log_params({"a": 1})
    for step in range(1, 200):
        t.log_metrics({"loss": 1.0}, step=step)
    assert remote.returned == 0  # all 200 calls came back while the remote still hangs in its first: they queue
    t.close()  # gives up after close_timeout, with the remote still hanging
    assert remote.returned == 0 and remote.calls == 1
    report = t.report()
    assert not report["delivered"] and report["undelivered_metric_steps"] == 199
    remote.release.set()


def test_a_refusing_tracker_is_given_up_at_close_after_one_more_try():
    remote = Flaky(failures=10**6)
    t = Resilient("down", remote, quiet, close_timeout=30)
    t.log_params({"a": 1})
    time.sleep(4)  # failures at 0, 1, 3 s: the circuit is open
    start = time.perf_counter()
    t.close()
    assert time.perf_counter() - start < 0.5 and not t.report()["delivered"]


def test_mlflow_outage_adds_little_to_a_run(npz_dir: Path, tmp_path: Path):
    """A dead MLflow server (nothing listens on port 9) once added about 247 s per call to the training thread."""
    pytest.importorskip("mlflow")
    # the tracker's modules imported before the clock starts: their first import (over a second in a fresh
    # environment) is not the outage this measures
    from mlflow.entities import Metric, Param  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401

    start = time.perf_counter()
    train_run(tiny_config(npz_dir, train={"epochs": 3}), tmp_path / "plain", log=quiet)
    plain = time.perf_counter() - start
    cfg = tiny_config(npz_dir, train={"epochs": 3}, run={"tracker": "mlflow", "tracking_uri": "http://127.0.0.1:9"})
    start = time.perf_counter()
    summary = train_run(cfg, tmp_path / "dead", log=quiet)
    dead = time.perf_counter() - start
    assert summary["status"] == "completed" and not summary["tracking"][0]["delivered"]
    assert len(read_metrics(tmp_path / "dead")) == 3
    assert dead - plain < max(0.05 * plain, 1.5), (plain, dead)


def test_a_dead_tracker_never_stops_training(npz_dir: Path, tmp_path: Path, monkeypatch):
    import glister_train.tracking as tracking

    dead = Flaky(failures=10**6)
    real = tracking.make_tracker

    def with_dead_remote(cfg, run_dir, epochs_done=None, log=print):
        fan = real(cfg, run_dir, epochs_done, log)
        fan.trackers.append(Resilient("dead", dead, log))
        return fan

    monkeypatch.setattr("glister_train.run.make_tracker", with_dead_remote)
    summary = train_run(tiny_config(npz_dir), tmp_path / "run", log=quiet)
    assert summary["status"] == "completed"
    assert len(read_metrics(tmp_path / "run")) == 2  # every metric is in the run folder
    report = json.loads((tmp_path / "run" / "summary.json").read_text())["tracking"][0]
    assert report["delivered"] is False and report["undelivered_metric_steps"] == 2

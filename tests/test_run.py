"""A run folder is never lost: restartable before its first checkpoint, one writer at a time, checkpoints
that belong to it. In-process through ``train_run`` (fast), plus the command line where exit codes matter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from glister_train import runlock
from glister_train.errors import TrainingDiverged, UsageError
from glister_train.run import train_run
from glister_train.tracking import read_metrics

from .conftest import tiny_config
from .test_cli import cli


def quiet(_line: str) -> None:
    pass


def test_a_run_that_diverged_in_its_first_epoch_can_be_restarted_and_resumed(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as caught:
        train_run(tiny_config(npz_dir, train={"lr": 1e6}), run, log=quiet)
    assert "no checkpoint had been written yet" in str(caught.value)
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert not (run / "checkpoint.pt").exists()
    # the corrected command starts the folder afresh ...
    assert train_run(tiny_config(npz_dir), run, log=quiet)["status"] == "completed"
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    # ... and --resume on a folder that never reached a checkpoint is a fresh start too
    other = tmp_path / "other"
    with pytest.raises(TrainingDiverged):
        train_run(tiny_config(npz_dir, train={"lr": 1e6}), other, log=quiet)
    lines: list[str] = []
    (other / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    import yaml

    saved = yaml.safe_load((other / "config.yaml").read_text())
    saved["train"]["lr"] = 0.05  # as a restarted job would find it: a config, a summary, no checkpoint
    (other / "config.yaml").write_text(yaml.safe_dump(saved))
    summary = train_run(tiny_config(npz_dir), other, resume=True, log=lines.append)
    assert summary["status"] == "completed" and any("starting it from the beginning" in line for line in lines)


def test_a_completed_run_is_never_overwritten(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    train_run(tiny_config(npz_dir), run, log=quiet)
    (run / "checkpoint.pt").unlink()
    with pytest.raises(UsageError, match="already holds a run"):
        train_run(tiny_config(npz_dir), run, log=quiet)


@pytest.mark.slow
def test_cli_restart_after_a_nan_in_epoch_1(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    common = ("--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--set", "model.name=tiny",
              "--precision", "fp32", "--batch-size", "8", "--out", str(run))
    failed = cli(*common, "--lr", "1e6")
    assert failed.returncode == 1 and "no checkpoint had been written yet" in failed.stderr
    done = cli(*common, "--lr", "0.05")
    assert done.returncode == 0, done.stderr
    assert "starting it from the beginning" in done.stdout


@pytest.mark.parametrize("options, message", [
    (["--selector", "filtered-random"], "non-finite validation logits"),  # its first pass: the validation set's
    (["--selector", "glister"], "non-finite candidate features"),
])
@pytest.mark.slow
def test_glister_on_a_diverged_model_exits_1_quickly(npz_dir: Path, tmp_path: Path, options: list[str], message: str):
    """A model with one NaN weight gives NaN features: GLISTER must stop the run, not loop (it once spun
    forever, growing its memory)."""
    import time

    import torch

    from glister_train.models import TinyNet, save_model

    model = TinyNet(4, 4)
    with torch.no_grad():
        model.conv1.weight.view(-1)[0] = float("nan")
    save_model(tmp_path / "nan.pt", model, {"name": "tiny", "num_classes": 4, "width": 4, "in_channels": 3})
    start = time.perf_counter()
    done = cli("--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--selector", "glister",
               "--init-from", str(tmp_path / "nan.pt"), "--precision", "fp32", "--out", str(tmp_path / "run"), *options)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert time.perf_counter() - start < 60


def _lock(run: Path, pid: int, host: str | None = None, boot: str | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / runlock.LOCK).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "boot_id": runlock._boot_id() if boot is None else boot,
                                                "since": "2026-01-01T00:00:00+00:00"}))


@pytest.mark.slow
def test_a_live_lock_refuses_a_second_writer_and_a_stale_one_is_taken_over(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(run, sleeper.pid)
        with pytest.raises(UsageError, match=f"in use by process {sleeper.pid}"):
            train_run(tiny_config(npz_dir), run, log=quiet)
        with pytest.raises(UsageError, match="in use by process"):
            train_run(tiny_config(npz_dir), run, resume=True, log=quiet)
        assert not (run / "summary.json").exists()  # refused before anything was written
        _lock(tmp_path / "far", sleeper.pid, host="another-host")
        with pytest.raises(UsageError, match="on another-host"):
            train_run(tiny_config(npz_dir), tmp_path / "far", log=quiet)
    finally:
        sleeper.kill()
        sleeper.wait()
    _lock(run, sleeper.pid)  # its process is gone now
    assert train_run(tiny_config(npz_dir), run, log=quiet)["status"] == "completed"
    assert not (run / runlock.LOCK).exists()  # released at the end
    _lock(tmp_path / "rebooted", os.getpid() + 1, boot="an-earlier-boot")  # a restarted job's own old lock
    assert train_run(tiny_config(npz_dir), tmp_path / "rebooted", log=quiet)["status"] == "completed"


def test_a_checkpoint_from_another_configuration_is_refused(npz_dir: Path, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    train_run(tiny_config(npz_dir, train={"epochs": 1}), a, log=quiet)
    train_run(tiny_config(npz_dir, train={"epochs": 1, "lr": 0.01}), b, log=quiet)
    (b / "checkpoint.pt").write_bytes((a / "checkpoint.pt").read_bytes())
    before = (b / "summary.json").read_text()
    with pytest.raises(UsageError, match="written under another configuration.*train.lr"):
        train_run(tiny_config(npz_dir, train={"epochs": 1, "lr": 0.01}), b, resume=True, log=quiet)
    assert (b / "summary.json").read_text() == before  # untouched


@pytest.mark.slow
def test_sigterm_marks_the_run_interrupted_and_resume_is_bit_identical(npz_dir: Path, tmp_path: Path):
    """What SageMaker spot, docker stop and Kubernetes send: the run stops at once, keeps its last checkpoint,
    says ``interrupted`` and exits 143; resuming gives the uninterrupted run's numbers exactly."""
    import signal
    import time

    common = ["--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--set", "model.name=tiny",
              "--precision", "fp32", "--epochs", "30", "--batch-size", "8", "--set", "runtime.threads=1"]
    whole = tmp_path / "whole"
    assert cli(*common, "--out", str(whole)).returncode == 0
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "glister_train", *common, "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert not (run / runlock.LOCK).exists()
    done = cli("--resume", "--out", str(run))
    assert done.returncode == 0, done.stderr
    assert [r["train_loss"] for r in read_metrics(run)] == [r["train_loss"] for r in read_metrics(whole)]


class _Payload:
    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.slow
@pytest.mark.parametrize("content", ["malicious", "text", "random_bytes", "not_a_model"])
def test_a_bad_model_file_is_one_line_and_runs_no_code(npz_dir: Path, tmp_path: Path, content: str):
    import torch

    sentinel = tmp_path / "ran"
    bad = tmp_path / "run" / "model.pt"
    bad.parent.mkdir()
    if content == "malicious":
        torch.save({"arch": {}, "state_dict": _Payload(str(sentinel))}, bad)
    elif content == "text":
        bad.write_text("hello")
    elif content == "random_bytes":
        bad.write_bytes(bytes(range(256)) * 3)
    else:
        torch.save({"weights": torch.zeros(2)}, bad)
    (tmp_path / "run" / "config.yaml").write_text(f"data: {{dataset: npz, data_dir: {npz_dir}}}\n")
    for args in (["prune", "--run", str(bad.parent), "--out", str(tmp_path / "p")],
                 ["compile", "--model", str(bad), "--out", str(tmp_path / "c")],
                 ["--init-from", str(bad), "--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir),
                  "--out", str(tmp_path / "t")]):
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert str(bad) in done.stderr and "weights_only" not in done.stderr
        assert ("pickled objects" in done.stderr) == (content == "malicious"), done.stderr
    assert not sentinel.exists()


def test_a_checkpoint_or_capture_of_pickled_code_is_refused_in_one_line(npz_dir: Path, tmp_path: Path, capsys):
    import torch

    from glister_train.checkpoint import read_checkpoint
    from glister_train.errors import CheckpointError
    from glister_train.prune.capture import load_capture

    sentinel = tmp_path / "ran"
    for name in ("checkpoint.pt", "capture.pt"):
        torch.save({"totals": {"epochs_done": 1}, "filters": _Payload(str(sentinel))}, tmp_path / name)
    with pytest.raises(CheckpointError) as refused:
        read_checkpoint(tmp_path / "checkpoint.pt")
    with pytest.raises(UsageError) as refused_capture:
        load_capture(tmp_path / "capture.pt")
    for message in (str(refused.value), str(refused_capture.value)):
        assert "pickled objects other than tensors" in message and "weights_only" not in message
        assert "\n" not in message
    assert not sentinel.exists()


def test_a_partial_metrics_line_and_leftover_temporaries_do_not_break_resume(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    cfg = tiny_config(npz_dir, train={"epochs": 3})
    train_run(cfg, run, log=quiet)
    whole = read_metrics(run)
    (run / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 4, "train_lo')  # a disk that filled up mid-line
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    assert train_run(cfg, run, resume=True, log=quiet)["status"] == "completed"
    assert read_metrics(run) == whole
    assert not list(run.glob(".*.tmp"))
    assert oct((run / "summary.json").stat().st_mode & 0o777) != oct(0o600)  # readable like any written file


@pytest.mark.slow
def test_random_sigkills_resume_to_the_uninterrupted_result(tmp_path: Path):
    """A few random SIGKILLs (experiments/fault_injection.py runs the same at scale)."""
    from .conftest import load_script

    fault = load_script("fault_injection")
    assert fault.main(["--trials", "3", "--epochs", "4", "--seed", "1"]) == 0


def test_a_checkpoint_that_loads_but_does_not_fit_leaves_the_folder_untouched(npz_dir: Path, tmp_path: Path):
    import torch

    run = tmp_path / "run"
    train_run(tiny_config(npz_dir), run, log=quiet)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model"].pop(next(iter(state["model"])))  # same configuration, weights that do not fit
    torch.save(state, run / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UsageError, match=f"{run / 'checkpoint.pt'}.*is corrupt, truncated or not from this run"):
        train_run(tiny_config(npz_dir), run, resume=True, log=quiet)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_report_on_a_folder_with_a_bad_config_is_one_line(tmp_path: Path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "summary.json").write_text('{"status": "completed"}')
    (run / "config.yaml").write_text("selection: [unclosed")
    done = cli("report", str(tmp_path), "--out", str(tmp_path / "rep"))
    assert done.returncode == 2 and "not valid YAML" in done.stderr and "Traceback" not in done.stderr


def test_the_folder_is_locked_before_it_is_checked(npz_dir: Path, tmp_path: Path, monkeypatch):
    # two runs into one --out: the second must find the first's lock or its finished run, never check an empty
    # folder, load its data and then take over a folder the first has meanwhile completed
    from glister_train import run as run_module

    order = []
    real_acquire, real_check = runlock.acquire, run_module.check_run_dir
    monkeypatch.setattr(runlock, "acquire", lambda d: order.append("lock") or real_acquire(d))
    monkeypatch.setattr(run_module, "check_run_dir", lambda *a: order.append("check") or real_check(*a))
    train_run(tiny_config(npz_dir, train={"epochs": 1}), tmp_path / "run", log=lambda _: None)
    assert order == ["lock", "check"]


def test_a_refused_run_leaves_no_folder_behind(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir, data={"data_dir": str(tmp_path / "missing")})
    with pytest.raises(UsageError):
        train_run(cfg, tmp_path / "new" / "run", log=lambda _: None)
    assert not (tmp_path / "new").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        train_run(tiny_config(npz_dir), tmp_path / "afile", log=lambda _: None)


def test_a_full_disk_is_one_line_naming_the_file_and_the_fix(npz_dir: Path, tmp_path: Path, monkeypatch, capsys):
    import glister_train.io as io
    from glister_train.cli import main

    def full(obj, fh):  # what torch.save's zip writer raises when the disk fills mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4992 vs 4886")

    monkeypatch.setattr(io.torch, "save", full)
    run = tmp_path / "run"
    code = main(["--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--set", "model.name=tiny",
                 "--epochs", "1", "--out", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("glister-train: error: no space left on ") and "checkpoint.pt" in err[0]
    assert err[0].endswith("free space and run again with --resume")
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert not list(run.glob(".*.tmp"))  # nothing half-written left behind


def test_a_tracker_that_cannot_be_built_marks_the_run_failed(npz_dir: Path, tmp_path: Path, monkeypatch):
    import glister_train.run as run_module

    def broken(*args, **kwargs):
        raise RuntimeError("tracker backend exploded")

    monkeypatch.setattr(run_module, "make_tracker", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        train_run(tiny_config(npz_dir, train={"epochs": 1}), tmp_path / "run", log=lambda _: None)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "exploded" in summary["error"]

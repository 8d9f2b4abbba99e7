"""``--then``: training, pruning and compilation in one command, each stage in its own folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glister_train import pipeline
from glister_train.cli import main
from glister_train.errors import UsageError
from glister_train.models import conv_widths, load_model

pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")


def tiny_args(npz_dir: Path, out: Path) -> list[str]:
    return ["--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--set", "model.name=tiny",
            "--set", "runtime.threads=1", "--set", "run.progress=none", "--epochs", "2", "--out", str(out)]


STAGES = ["--then", "prune", "--criterion", "l1", "--amount", "0.5", "--finetune-epochs", "1",
          "--then", "compile", "--backend", "onnxruntime", "--test-limit", "20"]


def test_train_prune_compile_in_one_command(npz_dir: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert main(tiny_args(npz_dir, run) + STAGES) == 0
    trained = conv_widths(load_model(run / "model.pt")[0])
    _, arch = load_model(run / "prune" / "model.pt")
    assert arch["channels"] == {conv: width // 2 for conv, width in trained.items()}
    report = json.loads((run / "compile" / "compile_report.json").read_text())
    assert report["model"] == str(run / "prune" / "model.pt")  # compile read what prune wrote
    assert report["arch"]["channels"] == arch["channels"]
    assert all(r["agreement"] > 0.9 for r in report["rows"] if "agreement" in r)

    # run again (a resumed run, a restarted job): the finished stages are skipped
    again = main(tiny_args(npz_dir, run) + ["--resume"] + STAGES)
    assert again == 0
    out = capsys.readouterr().out
    assert "stage 1 (prune): complete" in out and "stage 2 (compile): complete" in out

    # a report over the folder holding the run counts the run, not the fine-tuning inside its prune stage
    from glister_train.report import local_runs

    assert [r.path for r in local_runs([str(tmp_path)])] == [str(run)]


@pytest.mark.parametrize("stages, message", [
    (["--then", "prune", "--amount", "2"], "--amount 2.0"),
    (["--then", "prune", "--run", "x"], "--run is set by the pipeline"),
    (["--then", "quantize"], "--then quantize"),
    (["--then", "compile", "--backend", "nosuch"], "unknown backend nosuch"),
    (["--then", "prune", "--amont", "0.3"], "--then prune: unrecognized arguments: --amont 0.3"),
])
def test_a_bad_stage_option_fails_before_training(npz_dir: Path, tmp_path: Path, capsys, stages, message):
    run = tmp_path / "run"
    assert main(tiny_args(npz_dir, run) + stages) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err  # one line, not argparse's usage
    assert not run.exists()


def test_a_failed_stage_names_itself_and_keeps_the_earlier_ones(npz_dir: Path, tmp_path: Path, capsys, monkeypatch):
    from glister_train.compile import stage as compile_stage

    def broken(argv):
        raise RuntimeError("the compiler crashed")

    monkeypatch.setattr(compile_stage, "compile_main", broken)
    run = tmp_path / "run"
    assert main(tiny_args(npz_dir, run) + STAGES) == 1
    err = capsys.readouterr().err
    assert "stage 2 (compile) failed: RuntimeError: the compiler crashed" in err and "stages 1-1 are complete" in err
    assert (run / "model.pt").is_file() and (run / "prune" / "prune_report.json").is_file()
    assert not (run / "compile" / "compile_report.json").exists()


def test_a_sagemaker_hyperparameter_carries_the_stages_as_one_string():
    stages = pipeline.stages_of("prune --amount 0.3 --then compile --backend openvino")
    assert [(s.name, s.argv, s.folder) for s in stages] == [
        ("prune", ("--amount", "0.3"), "prune"), ("compile", ("--backend", "openvino"), "compile")]
    # the toolkit passes it on the command line too, sorted among the others: dropped there
    assert pipeline.without_then(["--fraction", "0.3", "--then", "prune --amount 0.3", "--tracker", "local"]) == [
        "--fraction", "0.3", "--tracker", "local"]
    _, twice = pipeline.split_stages(["--then", "prune", "--then", "prune"])
    assert [s.folder for s in twice] == ["prune", "prune-2"]
    with pytest.raises(UsageError, match="--out is set by the pipeline"):
        pipeline.split_stages(["--then", "compile", "--out", "x"])

"""experiments/gpu_check.py on the CPU: its arguments and its JSON, with a tiny configuration (the GPU runs it at
full size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import load_script


def test_bad_arguments_exit_2(tmp_path: Path):
    gpu_check = load_script("gpu_check")
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main([str(tmp_path), "--epochs", "0"])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_the_check_runs_on_the_cpu_and_writes_every_figure(tmp_path: Path):
    gpu_check = load_script("gpu_check")
    code = gpu_check.main([str(tmp_path), "--device", "cpu", "--images", "400", "--test-images", "80", "--width", "4",
                           "--epochs", "2", "--presets", "smoke", "gpu-fast@512", "--eval-batches", "16", "64",
                           "--no-tests", "--no-compile"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    runs = ["full", "filtered-random 30%", "glister 30%"]
    assert code == 0 and [(r["run"], r["preset"]) for r in report["runs"]] == [
        *((run, "smoke") for run in runs), *((run, "gpu-fast@512") for run in runs)]
    assert {(r["batch"], r["lr"]) for r in report["runs"]} == {(128, 0.05), (512, 0.4)}  # gpu-fast: 0.1 x 4
    for row in report["runs"]:
        assert row["epoch_s"] > 0 and row["images_per_s"] > 0 and row["subset"] == (360 if row["run"] == "full" else 108)
        assert row["run"] == "full" or 0 < row["of_full_epoch_r20"] <= row["of_full_epoch"]
    assert [r["eval_batch"] for r in report["evaluation"]] == [16, 64]
    assert all(r["images_per_s"] > 0 for r in report["evaluation"])


@pytest.mark.parametrize("entry, message", [("gpu-fats", "gpu-fats is not a preset"),
                                            ("gpu-fast@big", "the batch size after @ must be an integer")])
def test_a_bad_preset_entry_exits_2_naming_it(tmp_path: Path, capsys, entry, message):
    gpu_check = load_script("gpu_check")
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main([str(tmp_path), "--presets", entry])
    assert exit_.value.code == 2 and message in capsys.readouterr().err

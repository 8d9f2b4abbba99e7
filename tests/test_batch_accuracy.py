"""experiments/batch_accuracy.py: runs grouped by batch size and learning rate, unfinished ones left out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .conftest import load_script


def fake_run(folder: Path, batch: int, lr: float, seed: int, test_acc: float, status: str = "completed") -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"train": {"batch_size": batch, "lr": lr}, "run": {"seed": seed},
                                                        "runtime": {"precision": "bf16"}}))
    (folder / "summary.json").write_text(json.dumps({"status": status, "epochs_done": 2, "final_test_acc": test_acc,
                                                     "final_val_acc": test_acc + 0.01}))
    rows = [{"epoch": e, "subset_size": 1000, "epoch_time": 10.0 + e, "select_time": 0.0} for e in (1, 2)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_groups_by_batch_and_learning_rate_with_each_seed(tmp_path: Path, capsys):
    for seed, acc in enumerate((0.80, 0.82)):
        fake_run(tmp_path / "runs" / f"b512-s{seed}", 512, 0.256, seed, acc)
    fake_run(tmp_path / "runs" / "b20-s0", 20, 0.01, 0, 0.85)
    fake_run(tmp_path / "runs" / "b20-s1", 20, 0.01, 1, 0.10, status="running")
    assert load_script("batch_accuracy").main([str(tmp_path / "runs"), "--json", str(tmp_path / "out.json")]) == 0
    groups = json.loads((tmp_path / "out.json").read_text())["groups"]
    assert [(g["batch"], g["seeds"], g["steps"]) for g in groups] == [(20, [0], 2 * 50), (512, [0, 1], 2 * 2)]
    assert groups[1]["test_mean"] == pytest.approx(81.0) and groups[1]["test_std"] == pytest.approx(1.4142, abs=1e-3)
    out = capsys.readouterr().out
    assert "| 512 | 0.256 | 4 | 2 | 81.00 ± 1.41 |" in out and "not completed (skipped): b20-s1" in out


def test_a_missing_folder_exits_2_naming_it(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script("batch_accuracy").main([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2 and "nowhere is not a folder" in capsys.readouterr().err

"""The local sweep: a grid of runs, skipped when completed, resumed when checkpointed, one summary line each."""

from __future__ import annotations

import json
from pathlib import Path


def sweep_module():
    from glister_train import sweep

    return sweep


def grid_file(tmp_path: Path, npz_dir: Path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(f"""
preset: smoke
set: {{model.name: tiny, data.dataset: npz, data.data_dir: {npz_dir}}}
grid:
  selector: [full, adaptive-random, glister]
  fraction: [0.3, 0.5]
  seed: [0]
""")
    return path


def test_sweep_runs_skips_and_resumes(npz_dir: Path, tmp_path: Path, capsys):
    sweep = sweep_module()
    grid, out = grid_file(tmp_path, npz_dir), tmp_path / "sweep"
    assert sweep.main([str(grid), "--out", str(out), "--jobs", "2"]) == 0
    listing = json.loads((out / "sweep.json").read_text())
    assert len(listing) == 5  # full once (it ignores the fraction), 2 x 2 others
    assert all(p["status"] == "completed" for p in listing)
    printed = capsys.readouterr().out
    assert "glister-f0.3-s0" in printed and "test_acc=" in printed

    # a sweep killed mid-run: one run interrupted after its checkpoint, one never started
    interrupted = out / "glister-f0.5-s0"
    summary = json.loads((interrupted / "summary.json").read_text())
    (interrupted / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    never = out / "adaptive-random-f0.5-s0"
    for f in never.iterdir():
        f.unlink()
    half = out / "glister-f0.3-s0"  # killed during its first epoch: a summary saying running, no checkpoint
    (half / "checkpoint.pt").unlink()
    (half / "summary.json").write_text(json.dumps({"status": "running"}))
    assert sweep.main([str(grid), "--out", str(out), "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped: completed") == 2
    assert "resumed from" not in (half / "stdout.log").read_text()  # rerun from scratch
    assert "resumed from" in (interrupted / "stdout.log").read_text()
    assert all(p["status"] == "completed" for p in json.loads((out / "sweep.json").read_text()))

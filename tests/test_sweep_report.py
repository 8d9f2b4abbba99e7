"""The local sweep (skip, resume, summary) and the report (table, JSON, plots) on tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glister_train.cli import main as cli_main

from .conftest import load_script


def sweep_module():
    return load_script("sweep")


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


def test_report_table_json_and_plots(npz_dir: Path, tmp_path: Path, capsys):
    pytest.importorskip("matplotlib")
    sweep = sweep_module()
    grid, out = grid_file(tmp_path, npz_dir), tmp_path / "sweep"
    assert sweep.main([str(grid), "--out", str(out)]) == 0
    assert cli_main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["rows"]
    by_key = {(r["selector"], r["fraction"]): r for r in rows}
    assert set(by_key) == {("full", 1.0), ("adaptive-random", 0.3), ("adaptive-random", 0.5), ("glister", 0.3),
                           ("glister", 0.5)}
    full, glister = by_key[("full", 1.0)], by_key[("glister", 0.3)]
    assert full["cost_vs_full"] == pytest.approx(1.0) and full["vs_full"] == pytest.approx(0.0)
    assert glister["vs_adaptive_random"] == pytest.approx(
        glister["final_test_acc"] - by_key[("adaptive-random", 0.3)]["final_test_acc"])
    table = (tmp_path / "report" / "report.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "| glister | 0.3 | 1 |" in table
    for name in ("accuracy_vs_epoch.png", "accuracy_vs_time.png", "epoch_time_vs_fraction.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_report_without_runs_is_a_clear_error(tmp_path: Path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "no completed runs" in capsys.readouterr().err


def test_report_reads_an_mlflow_store_like_the_run_folders(npz_dir: Path, tmp_path: Path):
    pytest.importorskip("mlflow")
    from glister_train.report import local_runs, mlflow_runs, table
    from glister_train.run import train_run

    from .conftest import tiny_config

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for selector, fraction in (("full", 1.0), ("glister", 0.5)):
        cfg = tiny_config(npz_dir, selection={"selector": selector, "fraction": fraction},
                          run={"tracker": "mlflow", "tracking_uri": uri, "experiment_name": "fractions"})
        train_run(cfg, tmp_path / selector, log=lambda _: None)
    from_store = table(mlflow_runs(uri, "fractions"))
    from_folders = table(local_runs([str(tmp_path)]))
    assert [(r["selector"], r["fraction"]) for r in from_store] == [(r["selector"], r["fraction"]) for r in from_folders]
    for a, b in zip(from_store, from_folders):
        assert a["final_test_acc"] == pytest.approx(b["final_test_acc"])
        assert a["epoch_time"] == pytest.approx(b["epoch_time"])
        assert a["select_time"] == pytest.approx(b["select_time"], abs=1e-6)

"""The local sweep: a grid of runs, skipped when completed, resumed when checkpointed, one summary line each."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest


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


@pytest.mark.slow
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


def test_a_point_another_sweep_finished_or_is_running_is_left_to_it(tmp_path: Path, monkeypatch, capsys):
    """Two sweeps into one folder (one per core): a point the other finished after this one listed its work is
    skipped when its turn comes, not resumed over the finished run, and one it is running is not counted failed."""
    from glister_train import runlock

    sweep = sweep_module()
    grid = tmp_path / "g.yaml"
    grid.write_text("preset: smoke\npoints:\n  - {selector: full, seed: 0}\n  - {selector: full, seed: 1}\n")
    out = tmp_path / "sw"
    launched = []

    class OtherSweepFinishesTheNext:  # stands in for a run's process
        def __init__(self, cmd, **_):
            run_dir = Path(cmd[cmd.index("--out") + 1])
            launched.append(run_dir.name)
            for folder in (run_dir, out / "full-s1"):  # this run, and the other sweep's meanwhile
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "summary.json").write_text(json.dumps({"status": "completed", "final_test_acc": 0.5}))
            self.returncode = 0

        def poll(self):
            return self.returncode

    monkeypatch.setattr(sweep.subprocess, "Popen", OtherSweepFinishesTheNext)
    assert sweep.main([str(grid), "--out", str(out), "--jobs", "1", "--threads", "1"]) == 0
    assert launched == ["full-s0"]
    assert "full-s1                      skipped: completed" in capsys.readouterr().out

    # a point the other sweep is running now (its folder's lock held by a live process) is left to it
    shutil.rmtree(out)
    launched.clear()
    (out / "full-s0").mkdir(parents=True)
    (out / "full-s0" / ".lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(),
                                                       "boot_id": runlock._boot_id()}))
    assert sweep.main([str(grid), "--out", str(out), "--jobs", "1", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert launched == ["full-s1"]
    assert "full-s0                      skipped: running in process 1" in printed
    assert "1 running in another process" in printed


def test_a_point_without_a_folder_name_is_refused_and_nothing_is_removed(npz_dir: Path, tmp_path: Path):
    from glister_train.errors import UsageError

    sweep = sweep_module()
    out = tmp_path / "sw"
    (out / "kept").mkdir(parents=True)
    (out / "kept" / "notes.txt").write_text("x")
    for point in ("{}", "{'x.': '..'}"):
        grid = tmp_path / "g.yaml"
        grid.write_text(f"preset: smoke\npoints:\n  - {point}\n")
        with pytest.raises(UsageError, match="not a folder inside --out"):
            sweep.main([str(grid), "--out", str(out), "--jobs", "1", "--threads", "1"])
    assert (out / "kept" / "notes.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "g.yaml", "sw"]


@pytest.mark.slow
def test_a_folder_holding_other_files_is_neither_cleared_nor_written(npz_dir: Path, tmp_path: Path, capsys):
    sweep = sweep_module()
    out = tmp_path / "sw"
    (out / "s0").mkdir(parents=True)
    (out / "s0" / "notes.txt").write_text("mine")
    grid = tmp_path / "g.yaml"
    grid.write_text(f"preset: smoke\nset: {{model.name: tiny, data.dataset: npz, data.data_dir: {npz_dir}}}\n"
                    "points:\n  - {seed: 0}\n")
    assert sweep.main([str(grid), "--out", str(out), "--jobs", "1", "--threads", "1"]) == 1
    assert sorted(p.name for p in (out / "s0").iterdir()) == ["notes.txt"]
    assert "holds notes.txt, which no run writes" in capsys.readouterr().out


def test_jobs_and_threads_must_be_positive(tmp_path: Path):
    from glister_train.errors import UsageError

    grid = tmp_path / "g.yaml"
    grid.write_text("points:\n  - {seed: 0}\n")
    for flags in (["--jobs", "0", "--threads", "1"], ["--jobs", "0"], ["--threads", "-1"]):
        with pytest.raises(UsageError, match="must be an integer >= 1"):
            sweep_module().main([str(grid), "--out", str(tmp_path / "sw"), *flags])
    assert not (tmp_path / "sw").exists()


def test_bad_grid_files_are_one_line_errors(tmp_path: Path):
    from glister_train.errors import UsageError

    cases = {"missing.yaml": None, "bad.yaml": "grid: [1, 2\n", "list.yaml": "- 1\n- 2\n", "five.yaml": "grid: 5\n",
             "tag.yaml": "grid: !!python/object/apply:os.system ['touch pwned']\n", "empty.yaml": "preset: smoke\n",
             "points.yaml": "points: [1, 2]\n"}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(UsageError):
            sweep_module().main([str(tmp_path / name), "--out", str(tmp_path / "sw"), "--dry-run"])
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_selectors_shared_options_reach_its_points_only(tmp_path: Path):
    sweep = sweep_module()
    grid = tmp_path / "g.yaml"
    grid.write_text("preset: smoke\noptions:\n  glister: {greedy: stochastic}\npoints:\n"
                    "  - {selector: glister, seed: 0}\n  - {selector: adaptive-random, seed: 0}\n  - {seed: 1}\n")
    todo, spec = sweep.points(grid)
    commands = [" ".join(sweep.command(p, spec, tmp_path / "r", 1, [])) for p in todo]
    assert ["selection.greedy=stochastic" in c for c in commands] == [True, False, False]  # seed 1: the default
    grid.write_text("options:\n  best: {greedy: stochastic}\npoints:\n  - {seed: 0}\n")
    from glister_train.errors import UsageError

    with pytest.raises(UsageError, match="options for 'best', which is not a selector"):
        sweep.points(grid)


@pytest.mark.slow
def test_random_kills_of_a_sweep_keep_its_runs_and_touch_nothing_else(tmp_path: Path):
    """A few SIGKILLs of a whole sweep (experiments/fault_injection_sweep.py runs 30)."""
    from .conftest import load_script

    fault = load_script("fault_injection_sweep")
    assert fault.main(["--trials", "3", "--seed", "1", "--json", str(tmp_path / "trials.json")]) == 0
    trials = json.loads((tmp_path / "trials.json").read_text())["trials"]
    assert all(t["kept_unchanged"] and t["identical"] and t["outside_untouched"] for t in trials)

"""Bad input to the commands around training (sweep, report, prune, compile): what each prints and leaves behind.

    python experiments/bad_input_commands.py --json experiments/results/bad_input_commands.json

Each case runs the command in a fresh folder and records:
- its exit code;
- its standard error (the promise: one line, no traceback; `report` adds one warning line per folder it skips);
- what it left in the folder beyond what the case itself made.

Prints a markdown table: glister_train/README.md, "Bad input to the other commands".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


class Payload:
    def __reduce__(self):
        return (os.system, ("touch ran_code",))


def tiny_data(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 200), ("test", 40)):
        np.savez(folder / f"{name}.npz", x=rng.integers(0, 255, (n, 12, 12, 3), dtype=np.uint8), y=np.arange(n) % 4)
    return folder


def setup_cases(root: Path) -> list[tuple[str, str, list[str], callable]]:
    """(command, input, argv, preparation run in the case's folder)."""
    def write(name: str, text: str):
        return lambda d: (d / name).write_text(text)

    def run_folder(d: Path) -> None:
        subprocess.run([sys.executable, "-m", "glister_train", "--preset", "smoke", "--dataset", "npz", "--data-dir",
                        str(root / "data"), "--set", "model.name=tiny", "--epochs", "1", "--out", str(d / "run")],
                       capture_output=True, check=True)

    def broken_run(breakage):
        def prepare(d: Path) -> None:
            run_folder(d)
            breakage(d / "run")
        return prepare

    def evil_model(d: Path) -> None:
        (d / "run").mkdir()
        torch.save({"arch": {}, "state_dict": Payload()}, d / "run" / "model.pt")
        (d / "run" / "config.yaml").write_text(f"data: {{dataset: npz, data_dir: {root / 'data'}}}\n")

    def evil_capture(d: Path) -> None:
        run_folder(d)
        torch.save({"filters": Payload()}, d / "run" / "capture.pt")

    point = "preset: smoke\npoints:\n  - {seed: 0}\n"
    return [
        ("sweep", "a grid file that does not exist", ["sweep", "nope.yaml", "--out", "sw"], lambda d: None),
        ("sweep", "invalid YAML", ["sweep", "g.yaml", "--out", "sw"], write("g.yaml", "grid: [1, 2\n")),
        ("sweep", "a YAML list", ["sweep", "g.yaml", "--out", "sw"], write("g.yaml", "- 1\n- 2\n")),
        ("sweep", "`grid: 5`", ["sweep", "g.yaml", "--out", "sw"], write("g.yaml", "grid: 5\n")),
        ("sweep", "a `!!python` tag", ["sweep", "g.yaml", "--out", "sw"],
         write("g.yaml", "grid: !!python/object/apply:os.system ['touch ran_code']\n")),
        ("sweep", "neither `grid` nor `points`", ["sweep", "g.yaml", "--out", "sw"], write("g.yaml", "preset: smoke\n")),
        ("sweep", "a point `- {}` (no folder name)", ["sweep", "g.yaml", "--out", "sw"],
         write("g.yaml", "preset: smoke\npoints:\n  - {}\n")),
        ("sweep", "a point named `..`", ["sweep", "g.yaml", "--out", "sw"],
         write("g.yaml", "preset: smoke\npoints:\n  - {'x.': '..'}\n")),
        ("sweep", "`options` for no selector", ["sweep", "g.yaml", "--out", "sw"],
         write("g.yaml", "options:\n  best: {greedy: stochastic}\n" + point.split("\n", 1)[1])),
        ("sweep", "`--jobs 0`", ["sweep", "g.yaml", "--out", "sw", "--jobs", "0", "--threads", "1"], write("g.yaml", point)),
        ("sweep", "`--threads 0`", ["sweep", "g.yaml", "--out", "sw", "--threads", "0"], write("g.yaml", point)),
        ("sweep", "`--out` is a file", ["sweep", "g.yaml", "--out", "g.yaml"], write("g.yaml", point)),
        ("sweep", "a point's folder holds a user's file",
         ["sweep", "g.yaml", "--out", "sw", "--jobs", "1", "--threads", "1"],
         lambda d: (write("g.yaml", point)(d), (d / "sw" / "s0").mkdir(parents=True),
                    (d / "sw" / "s0" / "notes.txt").write_text("mine"))),
        ("report", "a folder that does not exist", ["report", "nope", "--out", "rep"], lambda d: None),
        ("report", "no completed run", ["report", ".", "--out", "rep"], lambda d: None),
        ("report", "summary.json not UTF-8 (beside a good run)", ["report", ".", "--out", "rep", "--no-plots"],
         lambda d: (run_folder(d), broken_run(lambda r: (r / "summary.json").write_bytes(b"\xff{"))(d / "bad"))),
        ("report", "summary.json not an object", ["report", "run", "--out", "rep"],
         broken_run(lambda r: (r / "summary.json").write_text("[1]"))),
        ("report", "a completed run with an empty metrics.jsonl", ["report", "run", "--out", "rep"],
         broken_run(lambda r: (r / "metrics.jsonl").write_text(""))),
        ("report", "a non-numeric accuracy", ["report", "run", "--out", "rep"],
         broken_run(lambda r: (r / "summary.json").write_text(json.dumps(
             {**json.loads((r / "summary.json").read_text()), "final_test_acc": "high"})))),
        ("prune", "a run folder that does not exist", ["prune", "--run", "nope", "--out", "p"], lambda d: None),
        ("prune", "a model file holding pickled code", ["prune", "--run", "run", "--out", "p"], evil_model),
        ("prune", "a capture.pt holding pickled code", ["prune", "--run", "run", "--criterion", "taylor", "--out", "p"],
         evil_capture),
        ("prune", "`--amount 2`", ["prune", "--run", "run", "--amount", "2", "--out", "p"], run_folder),
        ("prune", "`--out` not empty", ["prune", "--run", "run", "--out", "run"], run_folder),
        ("compile", "a model that does not exist", ["compile", "--model", "nope.pt", "--out", "c"], lambda d: None),
        ("compile", "an unknown backend", ["compile", "--model", "run", "--backend", "nosuch", "--out", "c"], run_folder),
        ("compile", "a model file holding pickled code", ["compile", "--model", "run/model.pt", "--out", "c"],
         evil_model),
        ("train", "a bad option inside `--then`", ["--preset", "smoke", "--dataset", "npz", "--data-dir",
                                                   str(root / "data"), "--out", "t", "--then", "prune", "--amont", "1"],
         lambda d: None),
        ("train", "`--fraction 1e-6`", ["--preset", "smoke", "--dataset", "npz", "--data-dir", str(root / "data"),
                                        "--set", "model.name=tiny", "--epochs", "1", "--fraction", "1e-6", "--out", "t"],
         lambda d: None),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny_data(root / "data")
        for i, (command, what, cmd, prepare) in enumerate(setup_cases(root)):
            folder = root / f"case{i}"
            folder.mkdir()
            prepare(folder)
            before = {str(f.relative_to(folder)) for f in folder.rglob("*")}
            done = subprocess.run([sys.executable, "-m", "glister_train", *cmd], cwd=folder, capture_output=True,
                                  text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
            left = sorted({str(f.relative_to(folder)) for f in folder.rglob("*")} - before)
            warnings = [line for line in done.stderr.splitlines() if line.startswith("report: skipped ")]
            err = [line for line in done.stderr.strip().splitlines() if line and line not in warnings]
            stdout_notes = [line for line in done.stdout.splitlines() if "not run:" in line or "note:" in line]
            rows.append({"command": command, "input": what, "exit": done.returncode,
                         "message": (err[-1] if err else warnings[-1] if warnings else stdout_notes[-1] if stdout_notes
                                     else "").replace(tmp, "..."),
                         "warnings": [w.replace(tmp, "...") for w in warnings],
                         "stderr_lines": len(err), "traceback": "Traceback" in done.stderr,
                         "left": [x for x in left if not x.startswith(("sw/", "rep/", "p/", "c/", "t/"))
                                  or x.count("/") < 2], "ran_code": (folder / "ran_code").exists()})
            r = rows[-1]
            shown = f"{r['warnings'][0]}, then: {r['message']}" if r["warnings"] and err else r["message"]
            print(f"| `{command}` | {what} | {shown} | {r['exit']} | "
                  f"{', '.join(r['left'][:4]) or 'nothing'} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    bad = [r for r in rows if r["traceback"] or r["ran_code"] or r["stderr_lines"] > 1]
    print(f"{len(rows) - len(bad)} of {len(rows)}: one line, no traceback, no code run")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())

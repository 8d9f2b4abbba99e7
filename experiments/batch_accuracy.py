"""Accuracy by batch size: the runs of configs/sweeps/gpu_batch.yaml grouped by batch size and learning rate.

    python -m glister_train sweep configs/sweeps/gpu_batch.yaml --out runs/gpu-batch --data-dir data --jobs 2 --threads 1
    python experiments/batch_accuracy.py runs/gpu-batch --json experiments/results/gpu_batch.json

For each (batch size, learning rate): the completed seeds, the optimizer steps per run, final test and validation
accuracy (mean ± std over the seeds, and each seed's), and the median training seconds per epoch on this machine.
Prints a table and writes JSON; a folder that is not a completed run is skipped and said.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from glister_train.report import run_config
from glister_train.run import read_summary
from glister_train.tracking import read_metrics


def read_run(folder: Path) -> dict | None:
    summary = read_summary(folder)
    if not (summary and summary.get("status") == "completed" and (folder / "config.yaml").is_file()):
        return None
    cfg = run_config(folder / "config.yaml")
    rows = read_metrics(folder)
    batch = cfg["train.batch_size"]
    return {"run": folder.name, "batch": batch, "lr": cfg["train.lr"], "seed": cfg["run.seed"],
            "epochs": summary["epochs_done"], "steps": sum(math.ceil(r["subset_size"] / batch) for r in rows),
            "test_acc": 100 * summary["final_test_acc"], "val_acc": 100 * summary["final_val_acc"],
            "epoch_train_s": statistics.median(r["epoch_time"] - r["select_time"] for r in rows),
            "precision": cfg["runtime.precision"]}


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f} (1 seed)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, help="the sweep's output folder")
    p.add_argument("--json", type=Path, help="where to write the table as JSON")
    args = p.parse_args(argv)
    if not args.runs.is_dir():
        p.error(f"{args.runs} is not a folder; give the sweep's --out folder")
    runs, skipped = [], []
    for folder in sorted(f for f in args.runs.iterdir() if f.is_dir()):
        run = read_run(folder)
        (runs.append(run) if run else skipped.append(folder.name))
    groups: dict[tuple[int, float], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["batch"], run["lr"]), []).append(run)
    table = []
    for (batch, lr), members in sorted(groups.items()):
        members.sort(key=lambda r: r["seed"])
        test, val = [r["test_acc"] for r in members], [r["val_acc"] for r in members]
        table.append({"batch": batch, "lr": lr, "seeds": [r["seed"] for r in members], "steps": members[0]["steps"],
                      "test_acc": test, "val_acc": val, "test_mean": statistics.mean(test),
                      "test_std": statistics.stdev(test) if len(test) > 1 else None,
                      "epoch_train_s": statistics.median(r["epoch_train_s"] for r in members),
                      "precision": members[0]["precision"]})
    print("| batch | lr | steps per run | seeds | final test acc (%) | final val acc (%) | train s / epoch here |")
    print("|---|---|---|---|---|---|---|")
    for row in table:
        print(f"| {row['batch']} | {row['lr']:g} | {row['steps']:,} | {len(row['seeds'])} | {spread(row['test_acc'])} | "
              f"{spread(row['val_acc'])} | {row['epoch_train_s']:.1f} |")
    if skipped:
        print(f"\nnot completed (skipped): {', '.join(skipped)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs_folder": str(args.runs), "groups": table, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

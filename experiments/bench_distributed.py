"""Data-parallel benchmark: selection and epoch time with 1 and 2 processes under torchrun.

    python experiments/bench_distributed.py --data-dir data --out runs/bench-ddp

Trains the cpu-proxy preset with GLISTER at 30% for a few epochs, selecting every epoch, as
(a) one process with 1 thread, (b) ``torchrun --nproc_per_node 2`` with 1 thread each, and (c) one
process with 2 threads (what the machine does without torchrun). Reports, per configuration, the
mean GLISTER forward and greedy times and the mean training time per epoch (selection excluded),
from each run's metrics.jsonl. Run it alone on the machine. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import mean


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", default="runs/bench-ddp")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--fraction", type=float, default=0.3)
    p.add_argument("--json", default="experiments/results/distributed.json")
    return p.parse_args(argv)


CONFIGS = {  # name -> (processes, threads per process)
    "1 process x 1 thread": (1, 1),
    "2 processes x 1 thread (torchrun)": (2, 1),
    "1 process x 2 threads": (1, 2),
}


def run(args: argparse.Namespace, name: str, processes: int, threads: int) -> dict:
    folder = Path(args.out) / name.split(" (")[0].replace(" ", "")
    if not (folder / "summary.json").is_file():
        train = ["--preset", "cpu-proxy", "--selector", "glister", "--fraction", str(args.fraction), "--epochs",
                 str(args.epochs), "--select-every", "1", "--data-dir", args.data_dir, "--out", str(folder),
                 "--set", f"runtime.threads={threads}", "--set", "run.progress=none", "--tracker", "local"]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                    "-m", "glister_train"] if processes > 1 else [sys.executable, "-m", "glister_train"]
        print(" ".join(launcher + train), flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if subprocess.run(launcher + train, env=env).returncode:
            sys.exit(f"{name} failed")
    epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    selections = [e for e in epochs if "select_forward_time" in e]  # GLISTER epochs (epoch 1 is random)
    return {
        "config": name, "processes": processes, "threads": threads, "run": str(folder),
        "select_forward_s": mean(e["select_forward_time"] for e in selections),
        "select_greedy_s": mean(e["select_greedy_time"] for e in selections),
        "select_s": mean(e["select_time"] for e in selections),
        "train_s": mean(e["epoch_time"] - e["select_time"] for e in epochs),
        "final_test_acc": epochs[-1]["test_acc"], "selections": len(selections),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = [run(args, name, *spec) for name, spec in CONFIGS.items()]
    print("| configuration | GLISTER forward (s) | greedy (s) | selection (s) | training per epoch (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['select_forward_s']:.2f} | {r['select_greedy_s']:.2f} | {r['select_s']:.2f} | "
              f"{r['train_s']:.2f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

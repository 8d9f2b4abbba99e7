"""Kill a training run with SIGKILL at random moments, resume it, and check it ends as an uninterrupted run.

    python experiments/fault_injection.py --trials 30 --json experiments/results/fault_injection.json

Each trial starts the same small GLISTER run (tiny network on generated data, a selection every other
epoch, a checkpoint per epoch), kills it after a random delay drawn over the reference run's whole wall
time (so kills land in data loading, mid-epoch, in a checkpoint write, in a selection, before the first
checkpoint and after the last), then repeats the command with ``--resume`` (the plain command when the kill
came before the folder held a config) until the run completes. The trial is identical when every epoch's
losses and accuracies and every weight of ``model.pt`` equal the uninterrupted run's bit for bit.
Prints one line per trial and ``K of N identical``; exits 1 unless N of N.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

METRIC_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def make_data(folder: Path, n_train: int = 3000, n_test: int = 200, classes: int = 4, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    colours = rng.integers(40, 215, size=(classes, 3))
    for name, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        x = colours[y][:, None, None, :] + rng.normal(0, 30, size=(n, size, size, 3))
        np.savez(folder / f"{name}.npz", x=np.clip(x, 0, 255).astype(np.uint8), y=y.astype(np.int64))
    return folder


def run_args(data: Path, epochs: int) -> list[str]:
    return ["--preset", "smoke", "--dataset", "npz", "--data-dir", str(data), "--set", "model.name=tiny",
            "--selector", "glister", "--fraction", "0.3", "--select-every", "2", "--epochs", str(epochs),
            "--batch-size", "16", "--precision", "fp32", "--set", "runtime.threads=1", "--set", "run.progress=none"]


def launch(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "glister_train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def outcome(run: Path) -> tuple[list, dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    state = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    return [[r.get(k) for k in METRIC_KEYS] for r in rows], state


def same(a: tuple[list, dict], b: tuple[list, dict]) -> bool:
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def status(run: Path) -> str:
    try:
        return json.loads((run / "summary.json").read_text()).get("status", "?")
    except (OSError, ValueError):
        return "none"


def trial(args: list[str], run: Path, delay: float, max_restarts: int = 5) -> tuple[str, int]:
    """Start, SIGKILL after ``delay`` seconds, then resume until completed; returns (where it was, restarts)."""
    proc = launch([*args, "--out", str(run)])
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    where = ("before the folder" if not (run / "config.yaml").exists() else
             "before the first checkpoint" if not (run / "checkpoint.pt").exists() else
             f"after epoch {torch.load(run / 'checkpoint.pt', weights_only=True)['totals']['epochs_done']}")
    if not killed:
        where = "finished before the kill"
    restarts = 0
    while status(run) != "completed" and restarts < max_restarts:
        again = [*args, "--out", str(run)] + (["--resume"] if (run / "config.yaml").exists() else [])
        done = launch(again)
        _, err = done.communicate()
        restarts += 1
        if done.returncode != 0:
            where += f"; restart {restarts} exited {done.returncode}: {err.strip().splitlines()[-1] if err else ''}"
    return where, restarts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    p.add_argument("--json", help="write the trials here")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cmd = run_args(make_data(tmp / "data"), args.epochs)
        start = time.perf_counter()
        reference = launch([*cmd, "--out", str(tmp / "reference")])
        folder_at = None
        while reference.poll() is None:  # when the run folder appears: before it is only the interpreter starting
            if folder_at is None and (tmp / "reference" / "config.yaml").exists():
                folder_at = time.perf_counter() - start
            time.sleep(0.01)
        _, err = reference.communicate()
        if reference.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed: {err}")
        wall = time.perf_counter() - start
        expected = outcome(tmp / "reference")
        # a few kills during start-up (data loading included), the rest spread over the training itself
        low = max(0.0, (folder_at or 0.0) - 0.5)
        print(f"reference run: {wall:.1f} s ({low + 0.5:.1f} s to its run folder), {len(expected[0])} epochs; "
              f"kills drawn in [{low:.1f}, {1.02 * wall:.1f}] s")
        results = []
        for i in range(args.trials):
            delay = rng.uniform(low, 1.02 * wall)
            run = tmp / f"trial{i}"
            where, restarts = trial(cmd, run, delay)
            ok = status(run) == "completed" and same(outcome(run), expected)
            results.append({"trial": i, "kill_after_s": round(delay, 2), "killed": where, "restarts": restarts,
                            "identical": ok})
            print(f"trial {i:2d}: kill at {delay:5.2f} s ({where}), {restarts} restart(s): "
                  f"{'identical' if ok else 'DIFFERENT'}", flush=True)
    good = sum(r["identical"] for r in results)
    print(f"{good} of {len(results)} identical")
    if args.json:
        Path(args.json).write_text(json.dumps({"reference_wall_s": round(wall, 2), "trials": results,
                                               "identical": good, "of": len(results)}, indent=2) + "\n")
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

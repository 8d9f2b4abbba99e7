"""Kill a sweep, its runs included, with SIGKILL at random moments, run it again, and check what it kept.

    python experiments/fault_injection_sweep.py --trials 30 --json experiments/results/fault_injection_sweep.json

The sweep has 4 points: small runs on generated data, two at a time. Each trial kills the whole process group
(the sweep and the runs it started) after a random delay, drawn over the uninterrupted sweep's wall time. It then
reruns the sweep command until every point is completed. A trial passes when all of these hold:

- every run completed before the kill is byte for byte what it was at the kill (not rerun, not rewritten);
- every run ends with the uninterrupted sweep's losses, accuracies and weights, bit for bit;
- nothing outside the sweep folder changed: a user's file beside it, and one in a folder of its own inside it.

Prints one line per trial and ``K of N kept``; exits 1 unless N of N.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_injection import make_data, outcome, same  # noqa: E402

POINTS = ("- {selector: filtered-random, seed: 0}", "- {selector: adaptive-random, seed: 1}",
          "- {selector: glister, seed: 2}", "- {selector: filtered-random, seed: 3}")


def grid(folder: Path, data: Path, epochs: int) -> Path:
    path = folder / "grid.yaml"
    path.write_text(f"preset: smoke\nset: {{model.name: tiny, data.dataset: npz, data.data_dir: {data}, "
                    f"train.epochs: {epochs}, train.batch_size: 16, runtime.precision: fp32, "
                    "selection.fraction: 0.3, selection.select_every: 2}\n"
                    "points:\n" + "".join(f"  {p}\n" for p in POINTS))
    return path


def sweep(grid_file: Path, out: Path) -> subprocess.Popen:
    """The sweep in a process group of its own, so that one kill takes its runs too."""
    return subprocess.Popen([sys.executable, "-m", "glister_train", "sweep", str(grid_file), "--out", str(out),
                             "--jobs", "2", "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def fingerprint(folder: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under ``folder`` (except under ``skip``), by relative path."""
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*"))
            if f.is_file() and (skip is None or skip not in f.parents)}


def completed(out: Path) -> dict[str, dict[str, str]]:
    """The completed runs in ``out`` and each one's fingerprint."""
    runs = {}
    for summary in out.glob("*/summary.json"):
        try:
            if json.loads(summary.read_text()).get("status") == "completed":
                runs[summary.parent.name] = fingerprint(summary.parent)
        except (OSError, ValueError):
            pass
    return runs


def trial(grid_file: Path, folder: Path, delay: float, expected: dict, max_reruns: int = 4) -> dict:
    out = folder / "sweep"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "mine.txt").write_text("a user's notes inside the sweep folder")
    (folder / "beside.txt").write_text("a user's file beside it")
    outside = fingerprint(folder, skip=out)
    inside = fingerprint(out / "notes")
    proc = sweep(grid_file, out)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = completed(out)
    reruns = 0
    while reruns < max_reruns and len(completed(out)) < len(expected):
        sweep(grid_file, out).wait()
        reruns += 1
    done = completed(out)
    unchanged = all(done.get(name) == prints for name, prints in kept.items())
    identical = len(done) == len(expected) and all(same(outcome(out / name), expected[name]) for name in expected)
    untouched = fingerprint(folder, skip=out) == outside and fingerprint(out / "notes") == inside
    return {"kill_after_s": round(delay, 2), "killed": killed, "completed_at_kill": len(kept), "reruns": reruns,
            "kept_unchanged": unchanged, "identical": identical, "outside_untouched": untouched,
            "ok": unchanged and identical and untouched}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    p.add_argument("--json", help="write the trials here")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        grid_file = grid(tmp, make_data(tmp / "data", n_train=1500), args.epochs)
        start = time.perf_counter()
        reference = sweep(grid_file, tmp / "reference")
        _, err = reference.communicate()
        wall = time.perf_counter() - start
        if reference.returncode != 0:
            raise SystemExit(f"the uninterrupted sweep failed: {err}")
        expected = {name: outcome(tmp / "reference" / name) for name in completed(tmp / "reference")}
        print(f"reference sweep: {wall:.1f} s, {len(expected)} runs; kills drawn in [0.5, {0.9 * wall:.1f}] s")
        results = []
        for i in range(args.trials):
            result = trial(grid_file, tmp / f"trial{i}", rng.uniform(0.5, 0.9 * wall), expected)
            results.append({"trial": i, **result})
            print(f"trial {i:2d}: kill at {result['kill_after_s']:5.2f} s with {result['completed_at_kill']} run(s) "
                  f"completed, {result['reruns']} rerun(s): {'kept' if result['ok'] else 'BROKEN ' + str(result)}",
                  flush=True)
    good = sum(r["ok"] for r in results)
    print(f"{good} of {len(results)} kept")
    if args.json:
        Path(args.json).write_text(json.dumps({"reference_wall_s": round(wall, 2), "trials": results, "kept": good,
                                               "of": len(results)}, indent=2) + "\n")
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""What a dead tracking server costs a run: the smoke preset with no remote tracker, with a healthy MLflow store
(SQLite) and with an MLflow server that is down (nothing listens on 127.0.0.1:9), ``--repeats`` times each.

    python experiments/bench_tracker_outage.py --data-dir data --json experiments/results/tracker_outage.json

Prints each run's ``wall_time`` from its summary.json (setup to close, tracker included) and whether the
remote tracker delivered.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, tracker, uri in (("none", "local", ""), ("mlflow healthy", "mlflow", f"sqlite:///{tmp}/ok{i}.db"),
                                       ("mlflow down", "mlflow", "http://127.0.0.1:9")):
                out = Path(tmp) / f"{i}-{name.replace(' ', '-')}"
                cmd = [sys.executable, "-m", "glister_train", "--preset", "smoke", "--data-dir", args.data_dir,
                       "--set", "runtime.threads=1", "--tracker", tracker, "--out", str(out)]
                if uri:
                    cmd += ["--set", f"run.tracking_uri={uri}"]
                subprocess.run(cmd, capture_output=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                s = json.loads((out / "summary.json").read_text())
                delivered = (s.get("tracking") or [{}])[0].get("delivered")
                rows.append({"tracker": name, "wall_s": round(s["wall_time"], 2), "delivered": delivered})
                print(f"{name:15} wall {s['wall_time']:6.2f} s  delivered={delivered}", flush=True)
    for name in ("none", "mlflow healthy", "mlflow down"):
        walls = [r["wall_s"] for r in rows if r["tracker"] == name]
        print(f"{name:15} mean wall {statistics.fmean(walls):6.2f} s over {len(walls)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compilation benchmark: every backend on each model, verified on the test set and timed at batch 1 and 64.

    python experiments/bench_compile.py --models runs/fractions/full-f1-s0 runs/bench-prune/l1-0.5 \\
        --data-dir data --out runs/bench-compile

Runs ``python -m glister_train compile --backend all`` once per model (skipped when its compile_report.json
exists), then prints one table and writes JSON. Run it alone on the machine: the latencies are medians of
repeated timed calls and another busy process distorts them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="run folders, prune outputs or model.pt files")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", default="runs/bench-compile")
    p.add_argument("--backends", nargs="+", default=["all"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--extra", default="", help='more compile options for every model, one string: "--test-limit 2000"')
    p.add_argument("--json", default="experiments/results/compile.json")
    return p.parse_args(argv)


def label(model: str) -> str:
    path = Path(model)
    return (path.parent if path.suffix == ".pt" else path).name


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for model in args.models:
        folder = out / label(model)
        if not (folder / "compile_report.json").is_file():
            command = [sys.executable, "-m", "glister_train", "compile", "--model", model, "--data-dir", args.data_dir,
                       "--backend", *args.backends, "--threads", str(args.threads), "--out", str(folder),
                       *shlex.split(args.extra)]
            print(" ".join(command), flush=True)
            if subprocess.run(command).returncode:
                sys.exit(f"compile failed for {model}")
        report = json.loads((folder / "compile_report.json").read_text())
        results.append({"model": model, "label": label(model), "report": str(folder / "compile_report.json"),
                        "rows": report["rows"], "test_images": report["test_images"], "threads": report["threads"]})
    print_table(results)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")


def print_table(results: list[dict]) -> None:
    print("| model | backend | size | b1 ms | b64 ms | speed-up b1 / b64 | test acc | top-1 agreement | max abs logit diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results:
        rows = [r for r in result["rows"] if "latency_b1_ms" in r]
        eager = {b: min(r[f"latency_b{b}_ms"] for r in rows if r["backend"].startswith("eager")) for b in (1, 64)}
        for r in rows:
            size = f"{r['size_bytes'] / 1e6:.2f} MB" if r["size_bytes"] else "-"
            print(f"| {result['label']} | {r['backend']} | {size} | {r['latency_b1_ms']:.3f} | {r['latency_b64_ms']:.2f} | "
                  f"{eager[1] / r['latency_b1_ms']:.2f}x / {eager[64] / r['latency_b64_ms']:.2f}x | "
                  f"{100 * r['test_acc']:.2f}% | {100 * r['agreement']:.2f}% | {r['max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()

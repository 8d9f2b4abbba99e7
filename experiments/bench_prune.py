"""Pruning benchmark: each criterion at each amount, before and after fine-tuning, on a trained run.

    python experiments/bench_prune.py --run runs/fractions/full-f1-s0 --data-dir data --out runs/bench-prune

Step 1 runs ``python -m glister_train prune`` once per (criterion, amount) (skipped when its
prune_report.json exists). Step 2 re-times every model (parent, pruned, fine-tuned) in one quiet
process, in fp32 and in bf16 autocast (channels_last), at batch 1 and 64: run it alone on the machine
(``--latency-only`` repeats just this step). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from glister_train.latency import torch_latency
from glister_train.models import load_model
from glister_train.runtime import Runtime


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a trained run folder (the cpu-proxy full-data run)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", default="runs/bench-prune")
    p.add_argument("--criteria", nargs="+", default=["taylor", "l1", "apoz"])
    p.add_argument("--amounts", nargs="+", type=float, default=[0.3, 0.5])
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--extra", default="", help='more prune options for every configuration, one string: '
                   '"--selector glister --fraction 0.3"')
    p.add_argument("--tag", default="", help="suffix of the output folders, for a variant (e.g. -glister)")
    p.add_argument("--latency-only", action="store_true", help="skip step 1; re-time the existing outputs")
    p.add_argument("--json", default="experiments/results/prune.json")
    return p.parse_args(argv)


def prune_runs(args: argparse.Namespace, out: Path) -> None:
    for criterion in args.criteria:
        for amount in args.amounts:
            folder = out / f"{criterion}-{amount:g}{args.tag}"
            if (folder / "prune_report.json").is_file():
                print(f"skip {folder}: done", flush=True)
                continue
            command = [sys.executable, "-m", "glister_train", "prune", "--run", args.run, "--data-dir", args.data_dir,
                       "--criterion", criterion, "--amount", str(amount), "--finetune-epochs",
                       str(args.finetune_epochs), "--threads", str(args.threads), "--tracker", "local",
                       "--out", str(folder), *shlex.split(args.extra)]
            print(" ".join(command), flush=True)
            log = out / f"{criterion}-{amount:g}{args.tag}.log"
            with open(log, "w") as handle:
                result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
            if result.returncode:
                sys.exit(f"prune failed ({result.returncode}); see {log}")
            print("\n".join(log.read_text().splitlines()[-6:]), flush=True)  # the prune command's table


def latencies(paths: dict[str, Path], threads: int, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Per model: the median over interleaved rounds of torch_latency's medians, fp32 and bf16 autocast.

    Models of the same architecture time the same; interleaving keeps a slow spell of the machine
    from landing on one model only.
    """
    models = {key: load_model(path)[0].to(memory_format=torch.channels_last) for key, path in paths.items()}
    samples: dict[str, dict[str, list[float]]] = {key: {} for key in models}
    for _ in range(rounds):
        for key, net in models.items():
            for precision in ("fp32", "bf16"):
                rt = Runtime(torch.device("cpu"), precision, True, threads)
                for name, value in torch_latency(net, rt).items():
                    samples[key].setdefault(f"{precision}_{name.removeprefix('latency_')}", []).append(value)
    return {key: {name: statistics.median(values) for name, values in per.items()} for key, per in samples.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    if not args.latency_only:
        prune_runs(args, out)
    parent_path = Path(args.run) / "model.pt"
    folders = {f"{criterion}-{amount:g}{args.tag}": (criterion, amount) for criterion in args.criteria
               for amount in args.amounts}
    timing = latencies({"parent": parent_path, **{name: out / name / "model.pt" for name in folders}}, args.threads)
    parent = timing["parent"]
    rows = []
    for name, (criterion, amount) in folders.items():
        report = json.loads((out / name / "prune_report.json").read_text())
        stages = {r["stage"]: r for r in report["rows"]}
        before, pruned = stages["before pruning"], stages["after pruning"]
        tuned = stages.get("after fine-tuning", stages.get("trained from scratch", pruned))
        retrain = report["retrain"] or {}
        rows.append({
            "name": name, "criterion": criterion, "amount": amount, "params": pruned["params"], "macs": pruned["macs"],
            "params_before": before["params"], "macs_before": before["macs"],
            "acc_before": before["test_acc"], "acc_pruned": pruned["test_acc"], "acc_finetuned": tuned["test_acc"],
            "acc_bn": stages.get("after BN re-estimation", {}).get("test_acc"), "bn_batches": report.get("bn_batches", 0),
            "finetune_epochs": retrain.get("epochs", 0), "finetune_selector": retrain.get("selector"),
            "finetune_fraction": retrain.get("fraction"), "finetune_time": report["times"]["retrain"],
            **timing[name], **{f"speedup_{k}": parent[k] / v for k, v in timing[name].items()},
        })
    print_table(parent, rows)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"parent": str(parent_path), "parent_latency": parent, "threads": args.threads,
                                           "rows": rows}, indent=2))
    print(f"wrote {args.json}")


def print_table(parent: dict[str, float], rows: list[dict]) -> None:
    print(f"parent: fp32 {parent['fp32_b1_ms']:.2f}/{parent['fp32_b64_ms']:.2f} ms, "
          f"bf16 {parent['bf16_b1_ms']:.2f}/{parent['bf16_b64_ms']:.2f} ms (batch 1/64)")
    print("| criterion | amount | fine-tuning | params | MACs | fp32 b1 / b64 speed-up | bf16 b1 / b64 speed-up | "
          "acc pruned | acc fine-tuned | vs parent |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        bn = "" if r["acc_bn"] is None else f" ({100 * r['acc_bn']:.2f}% after BN)"
        tuning = "-"
        if r["finetune_epochs"]:
            tuning = f"{r['finetune_epochs']} ep, {r['finetune_selector']} {r['finetune_fraction']:g}"
        print(f"| {r['criterion']} | {r['amount']:g} | {tuning} | "
              f"{r['params'] / 1e3:.0f}k ({r['params'] / r['params_before']:.0%}) | "
              f"{r['macs'] / 1e6:.1f}M ({r['macs'] / r['macs_before']:.0%}) | "
              f"{r['speedup_fp32_b1_ms']:.2f}x / {r['speedup_fp32_b64_ms']:.2f}x | "
              f"{r['speedup_bf16_b1_ms']:.2f}x / {r['speedup_bf16_b64_ms']:.2f}x | {100 * r['acc_pruned']:.2f}%{bn} | "
              f"{100 * r['acc_finetuned']:.2f}% | {100 * (r['acc_finetuned'] - r['acc_before']):+.2f} |")


if __name__ == "__main__":
    main()

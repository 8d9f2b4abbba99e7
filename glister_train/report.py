"""``python -m glister_train report RUNS... --out DIR``: the fractions table, plots and report.json.

Runs come from local run folders (or folders holding them: a sweep), from SageMaker Experiments
(``--sagemaker-experiment NAME``: ``list_trial_components`` / ``describe_trial_component``, whose metrics
arrive aggregated, so those runs have no per-epoch curves) or from an MLflow store (``--mlflow-uri URI
--mlflow-experiment NAME``, with full metric histories). They are grouped by selector and fraction (``full``
at 1.0); seeds are averaged. Epoch time is the mean of ``epoch_time`` over a run's epochs, so the selection
epochs' extra cost is spread over the epochs it serves (a median would hide it).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError
from .io import atomic_write_json, atomic_write_text
from .tracking import read_metrics


@dataclass
class RunRecord:
    path: str  # a folder, or where a remote run lives
    selector: str
    fraction: float
    seed: int
    summary: dict[str, Any]  # final_test_acc, best_test_acc, select_time
    metrics: list[dict[str, Any]]  # per epoch; empty when the source keeps only aggregates
    epoch_time: float  # mean over epochs, selection included


def _record(path: str, selector: str, fraction: float, seed: int, summary: dict[str, Any],
            metrics: list[dict[str, Any]], epoch_time: float | None = None) -> RunRecord:
    fraction = 1.0 if selector == "full" else float(fraction)
    if epoch_time is None:
        epoch_time = statistics.fmean(m["epoch_time"] for m in metrics)
    return RunRecord(path, selector, fraction, int(seed), summary, metrics, epoch_time)


def local_runs(paths: list[str]) -> list[RunRecord]:
    """Completed runs in the given folders (a run folder, or a folder of run folders, at any depth)."""
    runs = []
    for root in map(Path, paths):
        if not root.exists():
            raise UsageError(f"report: {str(root)!r} does not exist")
        for summary_path in sorted([root / "summary.json"] if (root / "summary.json").is_file()
                                   else root.rglob("summary.json")):
            run_dir = summary_path.parent
            summary = json.loads(summary_path.read_text())
            if summary.get("status") != "completed":
                continue
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
            runs.append(_record(str(run_dir), cfg["selection"]["selector"], cfg["selection"]["fraction"],
                                cfg["run"]["seed"], summary, read_metrics(run_dir)))
    return runs


def sagemaker_runs(experiment: str, client=None) -> list[RunRecord]:
    """Completed runs of a SageMaker experiment, from their trial components' parameters and aggregated metrics."""
    if client is None:
        import boto3

        client = boto3.client("sagemaker")
    runs = []
    pages = client.get_paginator("list_trial_components").paginate(ExperimentName=experiment)
    for summary in (s for page in pages for s in page["TrialComponentSummaries"]):
        tc = client.describe_trial_component(TrialComponentName=summary["TrialComponentName"])
        if tc.get("Status", {}).get("PrimaryStatus") != "Completed":
            continue
        params = {k: v.get("StringValue", v.get("NumberValue")) for k, v in tc.get("Parameters", {}).items()}
        metrics = {m["MetricName"]: m for m in tc.get("Metrics", [])}
        if "test_acc" not in metrics or "selection.selector" not in params:
            continue
        select = metrics.get("select_time", {})
        runs.append(_record(
            tc.get("TrialComponentArn", summary["TrialComponentName"]), params["selection.selector"],
            params["selection.fraction"], params["run.seed"],
            {"final_test_acc": metrics["test_acc"]["Last"], "best_test_acc": metrics["test_acc"]["Max"],
             "select_time": select.get("Avg", 0.0) * select.get("Count", 0)},
            [], epoch_time=metrics["epoch_time"]["Avg"]))
    return runs


def mlflow_runs(tracking_uri: str, experiment: str) -> list[RunRecord]:
    """Finished runs of an MLflow experiment, with their per-epoch metric histories."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError("report: --mlflow-uri needs MLflow: pip install 'glister-train[mlflow]'") from None
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise UsageError(f"report: no MLflow experiment {experiment!r} at {tracking_uri}")
    runs = []
    for run in client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'"):
        history: dict[int, dict[str, Any]] = defaultdict(dict)
        for key in ("test_acc", "epoch_time", "select_time"):
            for m in client.get_metric_history(run.info.run_id, key):
                history[m.step][key] = m.value
        rows = [{"epoch": step, **values} for step, values in sorted(history.items())]
        accs = [r["test_acc"] for r in rows if "test_acc" in r]
        p = run.data.params
        runs.append(_record(
            f"mlflow:{run.info.run_id}", p["selection.selector"], p["selection.fraction"], p["run.seed"],
            {"final_test_acc": accs[-1], "best_test_acc": max(accs),
             "select_time": sum(r.get("select_time", 0.0) for r in rows)}, rows))
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def by_group(runs: list[RunRecord]) -> dict[tuple[str, float], list[RunRecord]]:
    """Runs keyed by (selector, fraction): the seeds of one configuration together."""
    groups: dict[tuple[str, float], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(run.selector, run.fraction)].append(run)
    return groups


def table(runs: list[RunRecord]) -> list[dict[str, Any]]:
    groups = by_group(runs)
    full = groups.get(("full", 1.0))
    full_epoch = statistics.fmean(r.epoch_time for r in full) if full else None
    full_acc = statistics.fmean(r.summary["final_test_acc"] for r in full) if full else None
    rows = []
    order = {"full": 0, "adaptive-random": 1, "random": 2, "glister": 3}
    for (selector, fraction), members in sorted(groups.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 9))):
        final = _mean_std([r.summary["final_test_acc"] for r in members])
        best = _mean_std([r.summary["best_test_acc"] for r in members])
        epoch = statistics.fmean(r.epoch_time for r in members)
        rnd = groups.get(("adaptive-random", fraction))
        rows.append({
            "selector": selector, "fraction": fraction, "seeds": sorted(r.seed for r in members),
            "epoch_time": epoch, "cost_vs_full": epoch / full_epoch if full_epoch else None,
            "speedup": full_epoch / epoch if full_epoch else None,
            "final_test_acc": final[0], "final_test_acc_std": final[1],
            "best_test_acc": best[0], "best_test_acc_std": best[1],
            "vs_full": final[0] - full_acc if full_acc is not None else None,
            "vs_adaptive_random": (final[0] - statistics.fmean(r.summary["final_test_acc"] for r in rnd)
                                   if rnd and selector != "adaptive-random" else None),
            "select_time": statistics.fmean(r.summary.get("select_time", 0.0) for r in members),
        })
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def pct(x: float | None, signed: bool = False) -> str:
        return "-" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")

    lines = ["| selector | fraction | seeds | epoch time (s, selection incl.) | cost vs full | speed-up | "
             "final test acc (%) | best test acc (%) | vs full (pts) | vs adaptive random (pts) | selection total (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['selector']} | {r['fraction']:g} | {len(r['seeds'])} | {r['epoch_time']:.2f} | "
            f"{pct(r['cost_vs_full'])}% | {_times(r['speedup'])} | "
            f"{pct(r['final_test_acc'])} ± {pct(r['final_test_acc_std'])} | "
            f"{pct(r['best_test_acc'])} ± {pct(r['best_test_acc_std'])} | {pct(r['vs_full'], True)} | "
            f"{pct(r['vs_adaptive_random'], True)} | {r['select_time']:.1f} |")
    return "\n".join(lines) + "\n"


def _times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def plots(runs: list[RunRecord], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("report: plots need matplotlib: pip install 'glister-train[report]'") from None
    groups = by_group(runs)
    written = []
    for x_axis, name in (("epoch", "accuracy_vs_epoch.png"), ("time", "accuracy_vs_time.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (selector, fraction), members in sorted(groups.items()):
            members = [r for r in members if r.metrics]
            if not members:
                continue  # runs known only by their aggregates have no curve
            n = min(len(r.metrics) for r in members)
            acc = [statistics.fmean(r.metrics[i].get("test_acc") or 0.0 for r in members) for i in range(n)]
            if x_axis == "epoch":
                xs = [r_["epoch"] for r_ in members[0].metrics[:n]]
            else:
                xs, total = [], 0.0
                for i in range(n):
                    total += statistics.fmean(r.metrics[i]["epoch_time"] for r in members)
                    xs.append(total)
            style = {"full": "-", "adaptive-random": "--", "random": ":", "glister": "-."}.get(selector, "-")
            ax.plot(xs, [100 * a for a in acc], style, label=f"{selector} {fraction:g}")
        ax.set_xlabel("epoch" if x_axis == "epoch" else "training time, selection included (s)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(out / name)
    fig, ax = plt.subplots(figsize=(6, 4))
    for selector in sorted({r["selector"] for r in rows}):
        pts = sorted((r["fraction"], r["epoch_time"]) for r in rows if r["selector"] == selector)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=selector)
    ax.set_xlabel("fraction of the training set")
    ax.set_ylabel("epoch time, selection included (s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "epoch_time_vs_fraction.png", dpi=120)
    plt.close(fig)
    written.append(out / "epoch_time_vs_fraction.png")
    return written


def report_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="glister-train report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run folders, or folders holding them (a sweep)")
    p.add_argument("--sagemaker-experiment", metavar="NAME", help="also read this SageMaker experiment's runs")
    p.add_argument("--mlflow-uri", metavar="URI", help="also read runs from this MLflow tracking store")
    p.add_argument("--mlflow-experiment", default="glister-train", metavar="NAME")
    p.add_argument("--out", default="report", help="where report.md, report.json and the plots go")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    runs = local_runs(args.runs)
    if args.sagemaker_experiment:
        runs += sagemaker_runs(args.sagemaker_experiment)
    if args.mlflow_uri:
        runs += mlflow_runs(args.mlflow_uri, args.mlflow_experiment)
    if not runs:
        sources = args.runs + [s for s in (args.sagemaker_experiment, args.mlflow_uri) if s]
        raise UsageError(f"report: no completed runs in {', '.join(sources) or 'nothing (give RUNS or a store)'}")
    rows = table(runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows)
    atomic_write_text(out / "report.md", text)
    atomic_write_json(out / "report.json", {"rows": rows, "runs": [r.path for r in runs]})
    written = [] if args.no_plots else plots(runs, rows, out)
    print(text, end="")
    print(f"{len(runs)} runs; wrote {out / 'report.md'}, {out / 'report.json'}" +
          "".join(f", {p}" for p in written))
    return 0

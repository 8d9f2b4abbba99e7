"""``python -m glister_train report RUNS... --out DIR``: the fractions table, plots and report.json.

Runs come from local run folders (or folders holding them: a sweep), from SageMaker Experiments
(``--sagemaker-experiment NAME``: ``list_trial_components`` / ``describe_trial_component``, whose metrics
arrive aggregated, so those runs have no per-epoch curves) or from an MLflow store (``--mlflow-uri URI
--mlflow-experiment NAME``, with full metric histories). They are grouped by selector and fraction (``full``
at 1.0); seeds are averaged. Epoch time is the mean of ``epoch_time`` over a run's epochs, so the selection
epochs' extra cost is spread over the epochs it serves (a median would hide it). Each subset run is compared
with full data at full length (the ceiling, at equal epochs), with full data trained on a schedule of the subset
run's budget (``train.budget_fraction``, each read at the end of its own schedule), with adaptive random at its best
schedule (class-balanced random among them), at equal epochs and at equal time, and with the best of those
baselines, chosen by validation accuracy, at equal compute. No run is compared with another read mid-schedule.

``--clock`` says what every time (epoch times, the equal-time comparison, the time axis) is measured in:
- ``wall``: seconds, as the runs measured them.
- ``cpu``: the process's CPU seconds (``epoch_cpu_time``). For single-threaded runs on a shared machine that is
  closer to the time each would take on a core of its own (on a 2-core machine a test run beside a sweep
  stretched its epochs' wall time by half), but not immune to it: identical training work measured 12.1 to
  13.9 CPU s an epoch in different runs of one sweep, as the other core's load changed.
- ``epochs``: full-data epochs at the run's own pace. An epoch costs the share of the pool it trained on, and
  its selection costs the share of the pool the same run trains in that time (its median wall seconds per
  training image). Runs that do the same training then cost the same, whatever the machine was doing; only
  what differs in kind (selection) is charged, at the speed the run was actually getting.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, TrainConfig, flatten, merge, read_yaml, trained_fraction, validate
from .errors import UsageError
from .io import atomic_write_json, atomic_write_text
from .provenance import provenance
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
    config: dict[str, Any] = field(default_factory=dict)  # flattened, when the source has it
    label: str = ""  # the selector and the options that set it apart from the other runs (see label_runs)
    condition: str = ""  # the data and training setting it shares with the runs it is compared with
    # a selector as shipped, or with another class mix (the one option the committed runs of both selectors vary in);
    # false: a variant of it, plotted in the ablation figure
    headline: bool = True
    clock: str = "epoch_time"  # the per-epoch time it is measured by: epoch_time (wall) or epoch_cpu_time

    def curve(self) -> tuple[list[float], list[float]]:
        """(cumulative training + selection seconds, test accuracy) after each evaluated epoch."""
        times, accs, total = [], [], 0.0
        for m in self.metrics:
            total += m[self.clock]
            if m.get("test_acc") is not None:
                times.append(total)
                accs.append(m["test_acc"])
        return times, accs


def _record(path: str, selector: str, fraction: float, seed: int, summary: dict[str, Any],
            metrics: list[dict[str, Any]], epoch_time: float | None = None,
            config: dict[str, Any] | None = None, clock: str = "epoch_time") -> RunRecord:
    fraction = trained_fraction(selector, fraction)
    if epoch_time is None:
        epoch_time = statistics.fmean(m[clock] for m in metrics)
    return RunRecord(path, selector, fraction, int(seed), summary, metrics, epoch_time, config or {}, clock=clock)


# keys that say how a run was executed or named, not what it computed
NOT_A_SETTING = ("run.", "runtime.", "data.data_dir", "data.download", "data.dataset", "data.val_dir",
                 "selection.selector", "selection.fraction", "model.init_from")


# the selection keys every selector's schedule reads; the rest of `selection` are the selector's own options
SCHEDULE = ("selection.select_every", "selection.kappa", "selection.kappa_matched", "selection.first_subset")


def run_config(path: Path, metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A run folder's config.yaml, flattened; one written before the selectors owned their options is read in
    the current form, each retired lever it had on as ``selection.KEY (retired)``, and an option added since as
    the run ran it, told from its ``metrics`` where that depends on them (see :mod:`glister_train.retired`)."""
    from .retired import logged_drop_shares, translate

    raw, retired = translate(read_yaml(path), logged_drop_shares(metrics))
    cfg = flatten(validate(merge(Config(), raw, str(path))))
    for key in retired:  # a retired value of an option kept: the value read in its place is not what the run ran
        cfg.pop(f"selection.{key}", None)
    return {**cfg, **{f"selection.{k} (retired)": v for k, v in retired.items()}}


# training keys that are part of a method rather than a condition: a run with early learning is compared with the
# baselines of its data, under its own label
LOSS_KEYS = ("train.early_learning", "train.early_learning_momentum")

# how long a run's schedule is: for full data, a baseline's budget rather than a condition
SCHEDULE_LENGTH = ("train.epochs", "train.budget_fraction")


def trained_epochs(run: RunRecord) -> int | None:
    """The epochs the run's schedule spans (``train.budget_fraction`` shortens a full-data run's)."""
    if "train.epochs" not in run.config:
        return None
    # a tracker's parameters arrive as strings
    return TrainConfig(epochs=int(float(run.config["train.epochs"])),
                       budget_fraction=float(run.config.get("train.budget_fraction", 1.0))).scheduled_epochs


def selector_defaults(selector: str) -> dict[str, Any]:
    return flatten(validate(merge(Config(), {"selection": {"selector": selector}})))


def label_runs(runs: list[RunRecord]) -> None:
    """Name each run's group from the config keys that differ between the runs of the report.

    A data, model or training key that differs makes a *condition* (e.g. ``label_noise=0.4``): runs are
    only compared within one. A selection key that differs goes into the
    *label* (``adaptive-random select_every=1``, ``filtered-random rank_by=margin``) where it is not the default
    (``select_every`` always, when it differs: both of random's schedules are named); other selectors are named
    by their schedule only. The loss (``LOSS_KEYS``), where it differs between the runs, goes into the label of
    those that add one to cross-entropy, for every selector.
    """
    keys = sorted({k for r in runs for k in r.config if not k.startswith(NOT_A_SETTING)})
    subset_runs = [r for r in runs if r.selector != "full"] or runs
    # a full-data run on a shorter schedule (the budget of a subset run) is a baseline within the subset runs'
    # condition, not a condition of its own: the epochs it trained name it instead
    varying = [k for k in keys if len({json.dumps(r.config.get(k)) for r in (subset_runs if k in SCHEDULE_LENGTH
                                                                               else runs)}) > 1]
    epochs = Counter(trained_epochs(r) for r in subset_runs).most_common(1)[0][0] if runs else None
    for run in runs:
        run.condition = " ".join(f"{k.split('.')[-1]}={run.config.get(k)}" for k in varying
                                 if not k.startswith(("selection.", *LOSS_KEYS)) and run.config.get(k) != "") or "-"
    own = [k for k in varying if k.startswith("selection.")]
    defaults = {selector: selector_defaults(selector) for selector in {r.selector for r in runs}}
    for run in runs:
        mine = defaults[run.selector]
        parts = [] if run.selector == "full" else [
            f"{k.split('.')[-1]}={run.config.get(k)}" for k in own if k in run.config
            and (k in SCHEDULE or k in mine or k.endswith("(retired)"))
            and (run.config.get(k) != mine.get(k) or k == "selection.select_every")]
        if run.selector == "full" and "train.epochs" not in varying and trained_epochs(run) != epochs:
            parts = [f"epochs={trained_epochs(run)}"]
        if loss_of(run) and any(k in varying for k in LOSS_KEYS):  # a loss every run shares names none of them
            parts += [f"{k.split('.')[-1]}={run.config[k]}" for k in LOSS_KEYS if run.config.get(k) != mine.get(k)]
        run.label = " ".join([run.selector, *parts])
        run.headline = all(part.startswith(("select_every=", "class_budget=", "epochs=")) for part in parts)


CLOCKS = {"wall": "epoch_time", "cpu": "epoch_cpu_time", "epochs": "epoch_cost"}
UNITS = {"wall": "s", "cpu": "CPU s", "epochs": "full epochs"}


def clock_name(key: str) -> str:
    return next(name for name, k in CLOCKS.items() if k == key)


def add_epoch_costs(metrics: list[dict[str, Any]], fraction: float) -> None:
    """``epoch_cost`` for each epoch: full-data epochs at this run's own pace (see ``--clock epochs``)."""
    # the last epoch trains on the budget (a warm start's first epochs train on the whole pool)
    pool = metrics[-1]["subset_size"] / fraction if metrics else 1.0
    pace = statistics.median((m["epoch_time"] - m["select_time"]) / m["subset_size"] for m in metrics
                             if m["subset_size"])  # a skipped warm-start epoch trains nothing
    for m in metrics:
        m["epoch_cost"] = (m["subset_size"] + m["select_time"] / pace) / pool


def local_runs(paths: list[str], clock: str = "wall") -> list[RunRecord]:
    """Completed runs in the given folders (a run folder, or a folder of run folders, at any depth), timed by
    ``clock`` (see the module's docs). A run inside another run's folder (a pipeline's fine-tuning, ``RUN/prune/
    finetune``) belongs to that run's stages, not to the comparison."""
    runs = []
    for root in map(Path, paths):
        if not root.exists():
            raise UsageError(f"report: {str(root)!r} does not exist")
        for summary_path in sorted([root / "summary.json"] if (root / "summary.json").is_file()
                                   else root.rglob("summary.json")):
            run_dir = summary_path.parent
            if any((parent / "summary.json").is_file() for parent in run_dir.parents if root in parent.parents):
                continue
            try:
                record = local_run(run_dir, clock)
            except RunSkipped as exc:
                print(f"report: skipped {run_dir}: {exc}", file=sys.stderr)
                continue
            if record is not None:
                runs.append(record)
    return runs


class RunSkipped(Exception):
    """A folder that looks like a run but cannot be read as one: the report goes on without it."""


def local_run(run_dir: Path, clock: str) -> RunRecord | None:
    """The completed run in ``run_dir`` (None for one that is not completed); RunSkipped names what is wrong."""
    key = CLOCKS[clock]
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunSkipped(f"summary.json is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(summary, dict):
        raise RunSkipped(f"summary.json holds a {type(summary).__name__}, not an object")
    if summary.get("status") != "completed":
        return None
    for name in ("final_test_acc", "final_val_acc"):
        value = summary.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RunSkipped(f"summary.json's {name} is {value!r}, not a number")
    metrics = read_metrics(run_dir)
    try:
        cfg = run_config(run_dir / "config.yaml", metrics)
    except UsageError as exc:
        raise RunSkipped(str(exc)) from None
    if not metrics:
        raise RunSkipped("metrics.jsonl is missing, empty or unparseable")
    if any(key != "epoch_cost" and key not in m for m in metrics):
        raise UsageError(f"report: {str(run_dir)!r} has no {key} (written since CPU time was recorded); "
                         "use --clock wall")
    try:
        if clock == "epochs":
            add_epoch_costs(metrics, trained_fraction(cfg["selection.selector"], cfg["selection.fraction"]))
        return _record(str(run_dir), cfg["selection.selector"], cfg["selection.fraction"], cfg["run.seed"], summary,
                       metrics, statistics.fmean(m[key] for m in metrics), cfg, key)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise RunSkipped(f"metrics.jsonl is incomplete ({type(exc).__name__}: {exc})") from None


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
            [], epoch_time=metrics["epoch_time"]["Avg"], config=params))
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
             "select_time": sum(r.get("select_time", 0.0) for r in rows)}, rows, config=dict(p)))
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def by_group(runs: list[RunRecord]) -> dict[tuple[str, str, float], list[RunRecord]]:
    """Runs keyed by (condition, label, fraction): the seeds of one configuration together."""
    if runs and not runs[0].label:
        label_runs(runs)
    groups: dict[tuple[str, str, float], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(run.condition, run.label, run.fraction)].append(run)
    return groups


def acc_at(run: RunRecord, seconds: float) -> float:
    """Test accuracy on ``run``'s accuracy-vs-time curve at ``seconds`` (linear between evaluated epochs)."""
    times, accs = run.curve()
    if seconds <= times[0]:
        return accs[0] * seconds / times[0]  # from chance-free zero at time 0: only reached for tiny budgets
    for i in range(1, len(times)):
        if seconds <= times[i]:
            w = (seconds - times[i - 1]) / (times[i] - times[i - 1])
            return accs[i - 1] + w * (accs[i] - accs[i - 1])
    return accs[-1]


def equal_time(members: list[RunRecord], baseline: list[RunRecord]) -> tuple[float, float, float] | None:
    """Both groups at the time the faster one finishes: (own accuracy, baseline accuracy, that time), means
    over seeds. A slower run is judged at the baseline's end on its own curve (mid-schedule), a faster one
    against the baseline's curve at its own end: neither side gets time the other did not have."""
    if not all(r.metrics for r in members + baseline):
        return None
    own_end = statistics.fmean(r.curve()[0][-1] for r in members)
    base_end = statistics.fmean(r.curve()[0][-1] for r in baseline)
    t = min(own_end, base_end)
    return (statistics.fmean(acc_at(r, t) for r in members), statistics.fmean(acc_at(r, t) for r in baseline), t)


def verdict(diff: float | None, spread: float) -> str:
    """``win`` / ``loss`` only when the difference exceeds the seeds' spread (the two groups' stds added)."""
    if diff is None:
        return "-"
    return "win" if diff > spread else "loss" if diff < -spread else "tie"


def _selection_mean(run: RunRecord, key: str) -> float | None:
    values = [m[key] for m in run.metrics if m.get(key) is not None]
    return statistics.fmean(values) if values else None


def table(runs: list[RunRecord]) -> list[dict[str, Any]]:
    groups = by_group(runs)
    rows = []
    order = {"full": 0, "adaptive-random": 1, "random": 2, "glister": 3}
    for (condition, label, fraction), members in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][2], order.get(kv[1][0].selector, 9), kv[0][1])):
        selector = members[0].selector
        full = groups.get((condition, "full", 1.0))  # at full length: the ceiling
        # any full-data run's epochs cost the same: the unit of cost
        unit = full or next((g for (c, _, _), g in groups.items() if c == condition and g[0].selector == "full"), None)
        full_epoch = statistics.fmean(r.epoch_time for r in unit) if unit else None
        full_acc = statistics.fmean(r.summary["final_test_acc"] for r in full) if full else None
        final = _mean_std([r.summary["final_test_acc"] for r in members])
        best = _mean_std([r.summary["best_test_acc"] for r in members])
        epoch = statistics.fmean(r.epoch_time for r in members)
        row = {
            "condition": condition, "label": label, "selector": selector, "fraction": fraction,
            "seeds": sorted(r.seed for r in members),
            "epoch_time": epoch, "cost_vs_full": epoch / full_epoch if full_epoch else None,
            "speedup": full_epoch / epoch if full_epoch else None,
            "final_test_acc": final[0], "final_test_acc_std": final[1],
            "best_test_acc": best[0], "best_test_acc_std": best[1],
            "final_val_acc": statistics.fmean(r.summary.get("final_val_acc") or 0.0 for r in members),
            "vs_full": final[0] - full_acc if full_acc is not None else None,
            "select_time": statistics.fmean(r.summary.get("select_time", 0.0) for r in members),
            "noisy_share": _mean_or_none([_selection_mean(r, "select_noisy_share") for r in members]),
            "pool_noisy_share": _mean_or_none([_selection_mean(r, "select_pool_noisy_share") for r in members]),
        }
        row.update(against_budget_full(groups, condition, members, final))
        row.update(against_random(groups, condition, fraction, members, selector))
        row.update(against_best_baseline(groups, condition, fraction, members))
        rows.append(row)
    return rows


def _mean_or_none(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def against_budget_full(groups, condition: str, members: list[RunRecord], final: tuple[float, float]) -> dict[str, Any]:
    """Against full data trained on a schedule of about the subset run's cost (``full epochs=N``), each read at the
    end of its own schedule: what a user with that budget would run instead."""
    runs = budget_full(groups, condition, members)
    if runs is None:
        return {"budget_full_label": None, "vs_full_budget": None, "verdict_full_budget": "-"}
    accs = _mean_std([r.summary["final_test_acc"] for r in runs])
    diff = final[0] - accs[0]
    seeded = len(members) > 1 and len(runs) > 1
    return {"budget_full_label": runs[0].label, "vs_full_budget": diff,
            "verdict_full_budget": verdict(diff, final[1] + accs[1]) if seeded else "1 seed"}


def loss_of(run: RunRecord) -> tuple:
    """The loss options a run trained with, read from its config: empty for cross-entropy."""
    return tuple(run.config.get(k) for k in LOSS_KEYS) if float(run.config.get("train.early_learning") or 0) else ()


def _whole_cost(group: list[RunRecord]) -> float:
    return statistics.fmean(r.epoch_time * len(r.metrics) for r in group)


def budget_full_by_loss(groups, condition: str, members: list[RunRecord]) -> dict[tuple, list[RunRecord]]:
    """For each loss they trained with, the full-data runs on a shortened schedule (``full epochs=N``) whose whole
    run cost nearest the subset run's."""
    budget = [g for (c, label, _), g in groups.items() if c == condition and label.startswith("full epochs=")]
    if members[0].selector == "full":
        return {}
    nearest: dict[tuple, list[RunRecord]] = {}
    for group in sorted(budget, key=lambda g: abs(_whole_cost(g) - _whole_cost(members))):
        nearest.setdefault(loss_of(group[0]), group)
    return nearest


def budget_full(groups, condition: str, members: list[RunRecord]) -> list[RunRecord] | None:
    """The full-data runs on the budget-matched schedule trained with the subset run's loss, or where there are none
    the ones of any loss whose cost is nearest."""
    nearest = budget_full_by_loss(groups, condition, members)
    if not nearest:
        return None
    return nearest.get(loss_of(members[0])) or min(
        nearest.values(), key=lambda g: abs(_whole_cost(g) - _whole_cost(members)))


def random_groups(groups, condition: str, fraction: float) -> list[list[RunRecord]]:
    """Adaptive random at every schedule and class mix run at this fraction and condition."""
    return [g for (c, _, f), g in groups.items() if c == condition and f == fraction and g[0].selector == "adaptive-random"]


def _val_acc(group: list[RunRecord]) -> float:
    return statistics.fmean(r.summary.get("final_val_acc") or 0.0 for r in group)


def _shared_seeds(members: list[RunRecord], other: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """Seed with seed where both ran some: cells still filling up would otherwise compare different seeds."""
    shared = {r.seed for r in members} & {r.seed for r in other}
    if not shared:
        return members, other
    return [r for r in members if r.seed in shared], [r for r in other if r.seed in shared]


def against_best_baseline(groups, condition: str, fraction: float, members: list[RunRecord]) -> dict[str, Any]:
    """Against what a user would run instead for the same compute: the best, by validation accuracy, of adaptive
    random at each schedule and class mix (compared at equal time) and full data on the budget-matched schedule
    (compared at the end of both schedules), each with any loss it was run with."""
    none = {"best_baseline_label": None, "best_baseline_acc": None, "vs_best_baseline": None,
            "verdict_best_baseline": "-"}
    if members[0].selector in ("full", "adaptive-random"):
        return none
    candidates = random_groups(groups, condition, fraction) + list(budget_full_by_loss(groups, condition, members).values())
    if not candidates:
        return none
    best = max(candidates, key=_val_acc)
    own, base = _shared_seeds(members, best)
    if best[0].selector == "full":
        own_acc = statistics.fmean(r.summary["final_test_acc"] for r in own)
        base_acc = statistics.fmean(r.summary["final_test_acc"] for r in base)
    elif timed := equal_time(own, base):
        own_acc, base_acc = timed[0], timed[1]
    else:
        return none
    spread = (_mean_std([r.summary["final_test_acc"] for r in own])[1]
              + _mean_std([r.summary["final_test_acc"] for r in base])[1])
    seeded = len(own) > 1 and len(base) > 1
    return {"best_baseline_label": best[0].label, "best_baseline_acc": base_acc, "vs_best_baseline": own_acc - base_acc,
            "verdict_best_baseline": verdict(own_acc - base_acc, spread) if seeded else "1 seed"}


def against_random(groups, condition: str, fraction: float, members: list[RunRecord], selector: str) -> dict[str, Any]:
    """The comparison with adaptive random at the same fraction and condition, at its best schedule (e.g.
    R = GLISTER's and R = 1: a fresh subset costs it nothing), chosen by validation accuracy: the test set
    only reports."""
    candidates = random_groups(groups, condition, fraction)
    if not candidates or selector in ("adaptive-random", "full"):
        return {"random_label": None, "compared_seeds": [], "vs_adaptive_random": None, "equal_time_acc": None,
                "equal_time_random_acc": None, "equal_time_seconds": None, "vs_adaptive_random_equal_time": None,
                "verdict_equal_epochs": "-", "verdict_equal_time": "-"}
    best = max(candidates, key=_val_acc)
    members, best = _shared_seeds(members, best)
    std = _mean_std([r.summary["final_test_acc"] for r in members])[1]
    rnd_final = _mean_std([r.summary["final_test_acc"] for r in best])
    own = statistics.fmean(r.summary["final_test_acc"] for r in members)
    spread = std + rnd_final[1]
    seeded = len(members) > 1 and len(best) > 1  # one seed has no spread to judge a difference by
    timed = equal_time(members, best)
    diff_time = timed[0] - timed[1] if timed else None
    return {"random_label": best[0].label, "compared_seeds": sorted(r.seed for r in members),
            "vs_adaptive_random": own - rnd_final[0],
            "equal_time_acc": timed[0] if timed else None, "equal_time_random_acc": timed[1] if timed else None,
            "equal_time_seconds": timed[2] if timed else None, "vs_adaptive_random_equal_time": diff_time,
            "verdict_equal_epochs": verdict(own - rnd_final[0], spread) if seeded else "1 seed",
            "verdict_equal_time": ("-" if diff_time is None else verdict(diff_time, spread) if seeded else "1 seed")}


def markdown(rows: list[dict[str, Any]], clock: str = "wall") -> str:
    def pct(x: float | None, signed: bool = False) -> str:
        return "-" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")

    unit = UNITS[clock]
    at = "{:.1f} full epochs" if clock == "epochs" else "{:.0f} s"
    lines = [f"| condition | run | fraction | seeds | epoch time ({unit}, selection incl.) | cost vs full | final test acc (%) | "
             "vs full, equal epochs (pts) | vs full on a budget-matched schedule (pts) | "
             "vs adaptive random, equal epochs (pts) | vs adaptive random, equal time (pts) | "
             "vs the best baseline, equal compute (pts) | wrong labels chosen / pool (%) | selection total (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        epochs = "-" if r["vs_adaptive_random"] is None else \
            f"{pct(r['vs_adaptive_random'], True)} ({r['verdict_equal_epochs']})"
        timed = "-" if r["vs_adaptive_random_equal_time"] is None else (
            f"{pct(r['vs_adaptive_random_equal_time'], True)} ({r['verdict_equal_time']}; "
            f"{pct(r['equal_time_acc'])} vs {pct(r['equal_time_random_acc'])} at {at.format(r['equal_time_seconds'])})")
        best = "-" if r.get("vs_best_baseline") is None else (
            f"{pct(r['vs_best_baseline'], True)} ({r['verdict_best_baseline']}; {r['best_baseline_label']}: "
            f"{pct(r['best_baseline_acc'])})")
        noise = "-" if r["pool_noisy_share"] is None else f"{pct(r['noisy_share'])} / {pct(r['pool_noisy_share'])}"
        budget = "-" if r.get("vs_full_budget") is None else (
            f"{pct(r['vs_full_budget'], True)} ({r['verdict_full_budget']}; {r['budget_full_label']})")
        lines.append(
            f"| {r['condition']} | {r['label']} | {r['fraction']:g} | {len(r['seeds'])} | {r['epoch_time']:.2f} | "
            f"{pct(r['cost_vs_full'])}{'%' if r['cost_vs_full'] is not None else ''} | "
            f"{pct(r['final_test_acc'])} ± {pct(r['final_test_acc_std'])} | "
            f"{pct(r['vs_full'], True)} | {budget} | {epochs} | {timed} | {best} | {noise} | "
            f"{r['select_time']:.1f} |")
    return "\n".join(lines) + "\n"


def _times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def short_label(label: str, width: int = 72) -> str:
    """``filtered-random coverage (retired)=True select_every=3`` -> ``filtered-random coverage* R=3``: for plot
    legends (``*``: a retired lever), cut to ``width`` characters."""
    short = label.replace(" (retired)=", "*=").replace("=True", "").replace("select_every=", "R=")
    return short if len(short) <= width else short[: width - 1] + "…"


def mean_curve(members: list[RunRecord], x_axis: str) -> tuple[list[float], list[float]]:
    """(epoch or cumulative seconds, test accuracy) at the evaluated epochs, averaged over the seeds; epochs without a
    test accuracy (``train.eval_every`` > 1) are not points on the curve."""
    curves = [r.curve() for r in members]
    n = min(len(times) for times, _ in curves)
    acc = [statistics.fmean(accs[i] for _, accs in curves) for i in range(n)]
    if x_axis == "epoch":
        return [m["epoch"] for m in members[0].metrics if m.get("test_acc") is not None][:n], acc
    return [statistics.fmean(times[i] for times, _ in curves) for i in range(n)], acc


def subset_window(curves: list[tuple[str, list[float]]]) -> float | None:
    """The time axis's right end when full data would squeeze the subset runs into a corner: 1.15x the longest
    subset run, if a full-data run took over 1.3x that; else None (show everything). ``curves``: (selector, times)."""
    subset = [max(xs) for selector, xs in curves if selector != "full" and xs]
    full = [max(xs) for selector, xs in curves if selector == "full" and xs]
    if not subset or not full or max(full) <= 1.3 * max(subset):
        return None
    return 1.15 * max(subset)


def panels(groups: dict[tuple[str, str, float], list[RunRecord]]) -> dict[tuple[str, str, float], list[RunRecord]]:
    """The groups keyed by plot panel: a condition at one fraction, full data drawn in each of its condition's."""
    fractions = {c: sorted({f for c2, _, f in groups if c2 == c and f < 1}) for c, _, _ in groups}
    out = {}
    for (condition, label, fraction), members in groups.items():
        for f in (fractions[condition] or [fraction]) if fraction == 1 else [fraction]:
            panel = condition if condition != "-" else ""
            out[(f"{panel}, {f:.0%} of the data".lstrip(", "), label, fraction)] = members
    return out


STYLES = {"full": "-", "adaptive-random": "--", "random": ":", "glister": "-.", "filtered-random": "-"}


def curve_figure(plt: Any, groups: dict[tuple[str, str, float], list[RunRecord]], conditions: list[str], x_axis: str,
                 unit: str, path: Path, ablation: bool = False) -> Path:
    """Test accuracy against epochs or time, one panel per condition, one curve per group (its seeds averaged),
    the legend inside the panel. In an ablation figure the shipped selectors are thin grey references."""
    labels = sorted({label for _, label, _ in groups})
    colour = dict(zip(labels, (plt.cm.tab10.colors * (len(labels) // 10 + 1))))  # one colour per method, every panel
    columns = min(len(conditions), 2 if ablation else 3)
    rows = math.ceil(len(conditions) / columns)
    height = 4.6 + (2.6 if ablation else 0)  # room for the legend below an ablation panel
    fig, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, height * rows), squeeze=False)
    for ax in axes.flat[len(conditions):]:
        ax.set_visible(False)
    for ax, condition in zip(axes.flat, conditions):
        curves = []
        for (c, label, fraction), members in sorted(groups.items()):
            members = [r for r in members if r.metrics]
            if c != condition or not members:
                continue  # runs known only by their aggregates have no curve
            xs, acc = mean_curve(members, x_axis)
            curves.append((members[0].selector, xs))
            legend = f"{short_label(label)}, {fraction:.0%} (n={len(members)})"
            reference = ablation and members[0].headline
            line, = ax.plot(xs, [100 * a for a in acc], STYLES.get(members[0].selector, "-"), label=legend,
                            color="0.6" if reference else colour[label], linewidth=1 if reference else 1.5)
            if members[0].selector == "full" and x_axis == "time" and xs:
                ax.axhline(100 * acc[-1], color=line.get_color(), linewidth=1.2, linestyle=":",
                           label=f"full data's final, at {xs[-1]:.3g} {unit}")
        right = subset_window(curves) if x_axis == "time" else None
        if right is not None:
            ax.set_xlim(0, right)  # full data runs on past the edge; its final accuracy is the dotted line
        ax.set_title("\n".join(textwrap.wrap(condition, 70)), fontsize=9)
        ax.set_xlabel("epoch" if x_axis == "epoch" else f"training time, selection included ({unit})")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if ablation:  # many long names: below the panel, where they cover no curve
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
        else:
            ax.legend(fontsize=7, loc="lower right", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the whole legend, never cut at an edge
    plt.close(fig)
    return path


def plots(runs: list[RunRecord], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("report: plots need matplotlib: pip install 'glister-train[report]'") from None
    groups = panels(by_group(runs))
    conditions = sorted({c for c, _, _ in groups})
    unit = UNITS[clock_name(runs[0].clock)]
    headline = {key: members for key, members in groups.items() if members[0].headline}
    variants = {key: members for key, members in groups.items() if not members[0].headline}
    written = []
    for x_axis, name in (("epoch", "accuracy_vs_epoch.png"), ("time", "accuracy_vs_time.png")):
        written.append(curve_figure(plt, headline, conditions, x_axis, unit, out / name))
    if variants:  # each variant beside the shipped selectors' curves of its condition, in a figure of its own
        default = {key: members for key, members in headline.items() if members[0].selector != "full"}
        written.append(curve_figure(plt, {**variants, **default}, sorted({c for c, _, _ in variants}), "epoch",
                                    unit, out / "ablation_vs_epoch.png", ablation=True))
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({(r["condition"], r["label"]) for r in rows}):
        pts = sorted((r["fraction"], r["epoch_time"]) for r in rows if (r["condition"], r["label"]) == key)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=" ".join(k for k in key if k != "-"))
    ax.set_xlabel("fraction of the training set")
    ax.set_ylabel(f"epoch time, selection included ({unit})")
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
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="time runs by wall seconds, CPU seconds (single-threaded runs on a shared machine), or "
                        "full-data epochs at each run's own pace (see above)")
    args = p.parse_args(argv)
    if args.clock != "wall" and (args.sagemaker_experiment or args.mlflow_uri):
        raise UsageError(f"report: --clock {args.clock} reads per-epoch times from run folders; remote stores hold "
                         "aggregated wall time only: use --clock wall")
    runs = local_runs(args.runs, args.clock)
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
    text = markdown(rows, args.clock)
    atomic_write_text(out / "report.md", text)
    atomic_write_json(out / "report.json", {"rows": rows, "clock": args.clock, "runs": [r.path for r in runs],
                                            "made_by": provenance(),
                                            "run_provenance": sorted({json.dumps(r.summary.get("provenance", {}).get(
                                                "git_commit")) for r in runs})})
    written = [] if args.no_plots else plots(runs, rows, out)
    print(text, end="")
    print(f"{len(runs)} runs; wrote {out / 'report.md'}, {out / 'report.json'}" +
          "".join(f", {p}" for p in written))
    return 0

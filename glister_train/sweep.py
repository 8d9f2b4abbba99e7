"""Run a grid of training runs locally: selector x fraction x seed x any config key.

    python -m glister_train sweep configs/sweeps/fractions.yaml --out runs/fractions --data-dir data

Each point is its own process (``python -m glister_train ...``), ``--jobs`` at a time with the cores split
between them (so threads are never oversubscribed). A point whose run folder says ``completed`` is
skipped, one with a checkpoint is resumed: a killed sweep continues where it stopped when run again.
Two sweeps may share an output folder (say, one per core): each leaves alone a point the other has finished
or is running when its turn comes. One summary line per finished run; ``sweep.json`` in the output folder
lists every point and its status.

The grid file (YAML):

    preset: cpu-proxy            # applied to every point
    set: {data.dataset: cifar10} # fixed config keys for every point
    options:                     # a selector's own options for its points only (the others do not read them)
      glister: {greedy: stochastic}
    grid:                        # the product of these; keys are flags (selector, fraction, select_every,
      selector: [full, adaptive-random, glister]    #  seed, epochs, kappa, lr) or dotted config keys
      fraction: [0.1, 0.3, 0.5]
      seed: [0, 1]
    points:                      # and/or explicit points, e.g. one lever at a time
      - {selector: glister, fraction: 0.3, seed: 0, selection.per_class: false}

``full`` trains on everything whatever the fraction, so it runs once per remaining combination.

Each point runs ``python -m glister_train`` in the current folder, so relative paths (``--data-dir data``) mean
what they mean here.

On SageMaker (``--sagemaker jobs``: one training job per point through :mod:`glister_train.sagemaker.launch`; or
``--sagemaker tune``: one HyperparameterTuner job over the file's ``tune:`` section), with the launcher's
options after ``--`` (``--role``, ``--data``, ``--instance-type``, ``--spot`` ...):

    tune:
      objective: val_acc          # a metric definition name; tuned on validation, never on test
      max_jobs: 12
      max_parallel_jobs: 2
      ranges:
        fraction: {type: continuous, min: 0.1, max: 0.5}
        select_every: {type: integer, min: 5, max: 20}
        selector: {type: categorical, values: [glister, adaptive-random]}
      warm_start:                 # optional: up to 5 parent tuning jobs
        type: TransferLearning    # or IdenticalDataAndAlgorithm
        parents: [glister-tune-a1b2c3]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import runlock
from .choices import SELECTOR_NAMES
from .errors import UsageError
from .io import TMP_SUFFIX

FLAGS = {"selector", "fraction", "select_every", "seed", "epochs", "kappa", "lr", "width", "batch_size"}
SHORT = {"selector": "", "fraction": "f", "seed": "s", "select_every": "r", "kappa": "k", "epochs": "e", "lr": "lr"}


def read_grid(grid_file: Path) -> dict[str, Any]:
    """The grid file as a mapping, or a UsageError naming what is wrong with it (no YAML tag runs code)."""
    from .config import load_yaml

    spec = load_yaml(grid_file, "sweep: grid file") or {}
    if not isinstance(spec, dict):
        raise UsageError(f"sweep: {str(grid_file)!r} must hold a mapping with 'grid' and/or 'points', "
                         f"not a {type(spec).__name__}")
    grid, listed = spec.get("grid"), spec.get("points")
    if grid is not None and not isinstance(grid, dict):
        raise UsageError(f"sweep: {str(grid_file)!r}: 'grid' must map keys to lists of values, got {grid!r}")
    if listed is not None and not (isinstance(listed, list) and all(isinstance(p, dict) for p in listed)):
        raise UsageError(f"sweep: {str(grid_file)!r}: 'points' must be a list of mappings, e.g. "
                         "'- {selector: random, seed: 0}'")
    if not grid and not listed:
        raise UsageError(f"sweep: {str(grid_file)!r} has neither a 'grid' mapping nor a 'points' list")
    options = spec.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise UsageError(f"sweep: {str(grid_file)!r}: 'options' must map a selector to its options, e.g. "
                         "'glister: {greedy: stochastic}'")
    unknown = sorted(set(options) - set(SELECTOR_NAMES))
    if unknown:
        raise UsageError(f"sweep: {str(grid_file)!r}: options for {unknown[0]!r}, which is not a selector "
                         f"({', '.join(SELECTOR_NAMES)})")
    return spec


def point_selector(point: dict[str, Any], spec: dict[str, Any]) -> str:
    """The selector a point runs: its own, the file's ``set``, or its preset's."""
    if "selector" in point:
        return str(point["selector"])
    if "selection.selector" in (spec.get("set") or {}):
        return str(spec["set"]["selection.selector"])
    return preset_selector(str(spec.get("preset") or ""))


@functools.cache
def preset_selector(preset: str) -> str:
    """The selector a preset names (read once per preset, not once per point)."""
    from .config import load_preset

    return load_preset(preset).selection.selector


def selector_options(point: dict[str, Any], spec: dict[str, Any]) -> list[tuple[str, Any]]:
    """(``selection.KEY``, value) of the file's ``options`` for the point's selector."""
    mine = (spec.get("options") or {}).get(point_selector(point, spec)) or {}
    return [(f"selection.{key}", value) for key, value in mine.items()]


def points(grid_file: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The grid's product, then any explicit ``points:`` (one-at-a-time variations), without duplicates."""
    spec = read_grid(grid_file)
    grid = spec.get("grid") or {}
    keys = list(grid)
    product = [dict(zip(keys, values))
               for values in itertools.product(*(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys))]
    out, seen = [], set()
    for point in (product if grid else []) + [dict(p) for p in spec.get("points") or []]:
        if point.get("selector") == "full" and "fraction" in point:
            point["fraction"] = 1.0  # full ignores the fraction: one run, not one per fraction
        check_run_name(run_name(point), point, grid_file)
        key = json.dumps(point, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(point)
    return out, spec


def check_run_name(name: str, point: dict[str, Any], grid_file: Path) -> None:
    """A point's folder name must be one folder inside ``--out``: not empty, no separator, not ``.`` or ``..``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UsageError(f"sweep: {str(grid_file)!r}: the point {point!r} gives the run folder name {name!r}, which "
                         "is not a folder inside --out; give the point a key with a value (e.g. seed: 0)")


def run_name(point: dict[str, Any]) -> str:
    parts = []
    for key, value in point.items():
        label = SHORT.get(key, key.split(".")[-1])
        parts.append(f"{label}{value:g}" if isinstance(value, float) else f"{label}{value}")
    return "-".join(parts).replace("/", "_")


def command(point: dict[str, Any], spec: dict[str, Any], run_dir: Path, threads: int, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "glister_train"]
    if spec.get("preset"):
        cmd += ["--preset", str(spec["preset"])]
    for key, value in [*(spec.get("set") or {}).items(), *selector_options(point, spec)]:
        cmd += ["--set", f"{key}={value}"]
    for key, value in point.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)] if key in FLAGS else ["--set", f"{key}={value}"]
    cmd += ["--set", f"runtime.threads={threads}", "--set", "run.progress=none", *extra, "--out", str(run_dir)]
    if (run_dir / "checkpoint.pt").is_file():
        cmd.append("--resume")
    return cmd


# what a run (and the sweep's log of it) writes in its folder; anything else there is not the sweep's to touch
RUN_FILES = {"config.yaml", "summary.json", "params.json", "metrics.jsonl", "checkpoint.pt", "model.pt", "capture.pt",
             "stdout.log", ".lock"}


def foreign_entries(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` that no run writes (a user's file, a sub-folder): the sweep leaves such a folder alone."""
    if not run_dir.exists():
        return []
    if not run_dir.is_dir():
        return [run_dir.name]
    return sorted(p.name for p in run_dir.iterdir()
                  if p.is_dir() or not (p.name in RUN_FILES or (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX))))


def status(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status", "unknown")
    except (OSError, ValueError):
        return "new"


def summary_line(name: str, run_dir: Path, seconds: float, rc: int) -> str:
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return f"{name:28} exit {rc}, no summary ({seconds:.0f} s)"
    acc = s.get("final_test_acc")
    per_epoch = (s.get("train_time", 0) + s.get("select_time", 0)) / max(s.get("epochs_done") or 1, 1)
    return (f"{name:28} {s['status']:10} test_acc={'n/a' if acc is None else f'{acc:.4f}'} "
            f"epoch_time={per_epoch:.2f}s select_time={s.get('select_time', 0):.1f}s wall={seconds:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="glister-train sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path, help="grid YAML file (see above)")
    p.add_argument("--out", type=Path, required=True, help="sweep folder; one run folder per point inside")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    p.add_argument("--jobs", type=int, default=cores, help=f"runs at a time (default: {cores}, one per core)")
    p.add_argument("--threads", type=int, help="threads per run (default: the cores divided by --jobs); two sweeps "
                   "side by side with --jobs 1 --threads 1 each share two cores as one with --jobs 2 would")
    p.add_argument("--data-dir", help="passed to every run")
    p.add_argument("--dry-run", action="store_true", help="print the commands and run nothing")
    p.add_argument("--sagemaker", choices=["jobs", "tune"], help="run on SageMaker instead (launcher options after --)")
    argv = list(sys.argv[1:] if argv is None else argv)
    launcher_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args, extra = p.parse_known_args(argv)
    for flag, value in (("--jobs", args.jobs), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UsageError(f"sweep: {flag} {value} is invalid; it must be an integer >= 1")
    if args.sagemaker:
        todo, spec = points(args.grid)
        names = sagemaker_jobs(todo, spec, launcher_argv) if args.sagemaker == "jobs" else [
            sagemaker_tune(spec, launcher_argv)]
        for name in names:
            print(f"submitted {name}")
        return 0
    if args.data_dir:
        extra += ["--data-dir", args.data_dir]
    todo, spec = points(args.grid)
    threads = args.threads or max(1, cores // args.jobs)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"sweep: --out {str(args.out)!r} is a file; give a folder")
    args.out.mkdir(parents=True, exist_ok=True)
    queue, refused = [], 0
    for point in todo:
        run_dir = args.out / run_name(point)
        if status(run_dir) == "completed":
            print(f"{run_dir.name:28} skipped: completed")
            continue
        foreign = foreign_entries(run_dir)
        if foreign:  # never write into (or clear) a folder holding anything but a run of this point
            print(f"{run_dir.name:28} not run: {run_dir} holds {', '.join(foreign[:3])}, which no run writes; move "
                  "them or choose another --out", flush=True)
            refused += 1
            continue
        queue.append((point, run_dir))
    print(f"{len(todo)} points, {len(queue)} to run, {args.jobs} at a time with {threads} thread(s) each", flush=True)
    if args.dry_run:
        for point, run_dir in queue:
            print(" ".join(command(point, spec, run_dir, threads, extra)))
        return 0

    running: list[tuple[subprocess.Popen, str, Path, float]] = []
    failed = elsewhere = 0
    while queue or running:
        while queue and len(running) < args.jobs:
            point, run_dir = queue.pop(0)
            # another sweep into the same folder may have finished this point since, or be running it now
            if status(run_dir) == "completed":
                print(f"{run_dir.name:28} skipped: completed", flush=True)
                continue
            if (owner := runlock.holder(run_dir)) is not None:
                print(f"{run_dir.name:28} skipped: running in process {owner['pid']} on {owner['host']}", flush=True)
                elsewhere += 1
                continue
            # a run killed before its first checkpoint is left as it is: the run itself starts it over (it takes
            # the folder's lock first, so a folder another process is writing is refused, never cleared)
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / "stdout.log", "a") as log:  # the run writes to its own copy of the handle
                proc = subprocess.Popen(command(point, spec, run_dir, threads, extra), stdout=log,
                                        stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            running.append((proc, run_dir.name, run_dir, time.perf_counter()))
        time.sleep(1)
        for item in list(running):
            proc, name, run_dir, start = item
            if proc.poll() is not None:
                running.remove(item)
                failed += proc.returncode != 0
                print(summary_line(name, run_dir, time.perf_counter() - start, proc.returncode), flush=True)
    listing = [{"point": pt, "run_dir": str(args.out / run_name(pt)), "status": status(args.out / run_name(pt))}
               for pt in todo]
    (args.out / "sweep.json").write_text(json.dumps(listing, indent=2) + "\n")
    print(f"done: {sum(x['status'] == 'completed' for x in listing)} of {len(listing)} completed; {failed} failed"
          + (f"; {refused} not run (folders holding other files)" if refused else "")
          + (f"; {elsewhere} running in another process" if elsewhere else ""))
    return 1 if failed or refused else 0


# ---------------------------------------------------------------- SageMaker


def _launcher_args(point: dict[str, Any], spec: dict[str, Any], launcher_argv: list[str]):
    from .sagemaker import launch

    argv = list(launcher_argv)
    if spec.get("preset"):
        argv += ["--preset", str(spec["preset"])]
    for key, value in [*(spec.get("set") or {}).items(), *(selector_options(point, spec) if point else [])]:
        argv += ["--hp", f"{key}={value}"]
    for key, value in point.items():
        if key in ("selector", "fraction", "seed", "epochs", "select_every"):
            argv += [f"--{key.replace('_', '-')}", str(value)]
        else:
            argv += ["--hp", f"{key}={value}"]
    return launch, launch.parser().parse_args(argv)


def _session():
    from sagemaker.core.helper.session_helper import Session

    from glister_train.tracking.sagemaker import SDK_CONFIG

    return Session(sagemaker_config=SDK_CONFIG)


def sagemaker_jobs(todo: list[dict[str, Any]], spec: dict[str, Any], launcher_argv: list[str], session=None) -> list[str]:
    """One training job per grid point; returns the job names."""
    session = session or _session()
    names = []
    for point in todo:
        launch, args = _launcher_args(point, spec, launcher_argv)
        job_spec = launch.job_spec(args, args.region or session.boto_region_name)
        trainer = launch.submit(job_spec, session, args.upload_data)
        names.append(trainer._latest_training_job.training_job_name if trainer._latest_training_job else "?")
    return names


def sagemaker_tune(spec: dict[str, Any], launcher_argv: list[str], session=None) -> str:
    """A HyperparameterTuner job over ``spec['tune']`` (warm start built by hand: the SDK's helper is broken)."""
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter
    from sagemaker.core.shapes import HyperParameterTuningJobWarmStartConfig, ParentHyperParameterTuningJob
    from sagemaker.core.training.configs import InputData
    from sagemaker.train.tuner import HyperparameterTuner

    from .sagemaker import launch

    tune = spec.get("tune") or {}
    if not tune.get("ranges"):
        raise SystemExit("error: --sagemaker tune needs a 'tune: ranges:' section in the grid file")
    session = session or _session()
    ranges = {}
    for key, r in tune["ranges"].items():
        kind = r.get("type")
        name = key.replace("_", "-") if key in FLAGS else key
        if kind == "continuous":
            ranges[name] = ContinuousParameter(r["min"], r["max"])
        elif kind == "integer":
            ranges[name] = IntegerParameter(r["min"], r["max"])
        elif kind == "categorical":
            ranges[name] = CategoricalParameter([str(v) for v in r["values"]])
        else:
            raise SystemExit(f"error: tune.ranges.{key}.type: {kind!r} is not continuous, integer or categorical")
    warm = None
    if tune.get("warm_start"):
        ws = tune["warm_start"]
        parents = list(ws.get("parents") or [])
        if not 1 <= len(parents) <= 5:
            raise SystemExit(f"error: tune.warm_start.parents: {len(parents)} given; SageMaker takes 1 to 5")
        if ws.get("type") not in ("TransferLearning", "IdenticalDataAndAlgorithm"):
            raise SystemExit(f"error: tune.warm_start.type: {ws.get('type')!r}; use TransferLearning or "
                             "IdenticalDataAndAlgorithm")
        warm = HyperParameterTuningJobWarmStartConfig(
            parent_hyper_parameter_tuning_jobs=[ParentHyperParameterTuningJob(hyper_parameter_tuning_job_name=p)
                                                for p in parents],
            warm_start_type=ws["type"])
    launch_mod, args = _launcher_args({}, spec, launcher_argv)
    job_spec = launch_mod.job_spec(args, args.region or session.boto_region_name)
    for name in ranges:  # tuned keys are not static hyperparameters
        job_spec["hyperparameters"].pop(name, None)
    job_name = f"glister-tune-{launch.unique_suffix()}"  # <= 32 characters; the SDK's defaults have minute granularity
    with tempfile.TemporaryDirectory() as tmp:
        trainer = launch.build_trainer(job_spec, launch.stage_source(Path(tmp)), session)
        tuner = HyperparameterTuner(
            model_trainer=trainer, objective_metric_name=tune.get("objective", "val_acc"),
            hyperparameter_ranges=ranges, metric_definitions=job_spec["metric_definitions"],
            objective_type=tune.get("objective_type", "Maximize"), max_jobs=int(tune.get("max_jobs", 10)),
            max_parallel_jobs=int(tune.get("max_parallel_jobs", 2)), warm_start_config=warm)
        channels = [InputData(channel_name=n, data_source=u) for n, u in job_spec["channels"].items()]
        tuner.tune(inputs=channels, job_name=job_name, wait=False)
    return job_name


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m glister_train [train] [options]`` (training is the default command)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import config as C
from .errors import DiskFull, StageFailed, Terminated, TrainingDiverged, UsageError

# flag -> (config key, type, help); the flags users reach for most, everything else via --set
FLAGS: dict[str, tuple[str, type, str]] = {
    "--fraction": ("selection.fraction", float, "share of the training set per epoch, in (0, 1]"),
    "--selector": ("selection.selector", str, f"one of {', '.join(C.SELECTORS)}"),
    "--select-every": ("selection.select_every", int, "epochs between selections (R)"),
    "--kappa": ("selection.kappa", float, "share of the epochs trained on full data before selection, in [0, 1)"),
    "--epochs": ("train.epochs", int, "number of epochs"),
    "--budget-fraction": ("train.budget_fraction", float,
                          "selector full: train ceil(F x epochs) epochs, the budget of a run at fraction F"),
    "--batch-size": ("train.batch_size", int, "training batch size"),
    "--lr": ("train.lr", float, "initial learning rate (cosine schedule)"),
    "--capture-epochs": ("train.capture_epochs", int, "record per-filter statistics for pruning in the last N epochs"),
    "--seed": ("run.seed", int, "seed for initialization, selection, shuffling and augmentation"),
    "--width": ("model.width", int, "ResNet-18 width multiplier (64 = standard)"),
    "--init-from": ("model.init_from", str, "start from this model file or run folder (its architecture and weights)"),
    "--freeze": ("model.freeze", str, "keep every stage up to this one fixed, e.g. layer3 (resnet18: stem, layer1-4)"),
    "--num-classes": ("data.num_classes", int, "number of classes (0 = from the dataset); a new classifier if it differs"),
    "--data-dir": ("data.data_dir", str, "dataset folder"),
    "--dataset": ("data.dataset", str, f"one of {', '.join(C.DATASETS)}"),
    "--device": ("runtime.device", str, f"one of {', '.join(C.DEVICES)}"),
    "--precision": ("runtime.precision", str, f"one of {', '.join(C.PRECISIONS)}"),
    "--out": ("run.out", str, "run folder (default: runs/<time>-<selector>-f<fraction>-s<seed>)"),
    "--tracker": ("run.tracker", str, f"one of {', '.join(C.TRACKERS)} (the run folder is always written)"),
    "--experiment-name": ("run.experiment_name", str, "experiment to log the run under"),
    "--run-name": ("run.run_name", str, "name of the run in the tracker"),
}


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glister-train",
        allow_abbrev=False,  # hyperparameters must name a flag exactly
        description="Train on adaptively selected subsets of the data. Config resolution, later wins: "
                    "configs/base.yaml, --preset, --config, the flags below, --set.",
        epilog=f"presets: {', '.join(C.preset_names())}. After training, '--then prune [its options] --then compile "
               "[its options]' prunes and compiles the model in the same command (RUN/prune/, RUN/compile/). "
               "Other commands: sweep, report, prune, compile (python -m glister_train COMMAND --help).",
    )
    p.add_argument("--preset", default="", help="a file in configs/ by name, e.g. smoke or cpu-proxy")
    p.add_argument("--config", metavar="FILE", help="a YAML file of overrides (same shape as configs/base.yaml)")
    for flag, (key, kind, text) in FLAGS.items():
        # SageMaker passes hyperparameters as given (--select_every 5): accept both spellings
        aliases = [flag, "--" + flag[2:].replace("-", "_")] if "-" in flag[2:] else [flag]
        p.add_argument(*aliases, dest=flag[2:].replace("-", "_"), type=str, metavar=kind.__name__.upper(),
                       help=f"{text} [{key}]")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set train.weight_decay=1e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def resolve_config(args: argparse.Namespace, base: C.Config | None = None,
                   environment: dict[str, dict[str, Any]] | None = None) -> C.Config:
    """base (or preset), --config, the environment's values (a SageMaker job's), flags, then --set."""
    cfg = base if base is not None else C.load_preset(args.preset)
    if base is not None and args.preset:
        cfg = C.merge(cfg, C.read_yaml(C.configs_dir() / f"{args.preset}.yaml"), args.preset)
    if args.config:
        cfg = C.merge(cfg, C.read_yaml(args.config), args.config)
    if environment:
        cfg = C.merge(cfg, environment, "the SageMaker job environment")
    for flag, (key, _, _) in FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            section, name = key.split(".")
            cfg = C.merge(cfg, {section: {name: value}}, flag)
    for assignment in args.set:
        cfg = C.merge(cfg, C.parse_assignment(assignment), "--set")
    return C.validate(cfg)


def dotted_assignments(extra: Sequence[str]) -> list[str]:
    """Leftover ``--section.key value`` pairs (hyperparameters naming any config key) as ``--set`` items."""
    out, i = [], 0
    while i < len(extra):
        key = extra[i]
        if not key.startswith("--") or "." not in key or i + 1 >= len(extra):
            raise UsageError(f"unrecognized argument {key!r}; see --help (any config key works as --section.key VALUE)")
        out.append(f"{key[2:]}={extra[i + 1]}")
        i += 2
    return out


def train_main(argv: Sequence[str]) -> int:
    from . import distributed, pipeline
    from .run import default_run_dir, train_run
    from .sagemaker import job as sagemaker_job

    job = sagemaker_job.in_training_job()
    if job:  # the stages come from the hyperparameter `then` alone (see pipeline.without_then)
        argv = pipeline.without_then(sagemaker_job.hyperparameter_argv() + list(argv))
        stages = pipeline.stages_of(sagemaker_job.hyperparameters().get("then", ""))
    else:
        argv, stages = pipeline.split_stages(argv)
    args, extra = train_parser().parse_known_args(argv)
    args.set = dotted_assignments(extra) + args.set
    base = None
    if job and not args.resume:  # a restarted spot job finds its checkpoint and continues
        out = args.out or sagemaker_job.CHECKPOINT_DIR
        args.resume = (Path(out) / "checkpoint.pt").is_file()
        if args.resume:
            args.out = out
    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out RUN_DIR: the run folder to continue")
        saved = Path(args.out) / "config.yaml"
        if not saved.is_file():
            raise UsageError(f"--resume: {str(saved)!r} does not exist, so {args.out!r} is not a run folder to resume")
        base = C.load_file(saved)
    cfg = resolve_config(args, base, sagemaker_job.job_overrides() if job and base is None else None)
    if args.print_config:
        print(C.to_yaml(cfg), end="")
        return 0
    pipeline.check(stages)  # a bad stage option fails now, not after training
    device = distributed.setup(cfg.runtime.device)
    main_rank = distributed.is_main()
    # rank 0's view wins: on other instances the checkpoint (and so the config to resume) may be missing
    cfg, resume, out = distributed.broadcast((cfg, args.resume, str(cfg.run.out or default_run_dir(cfg))))
    run_dir = Path(out)
    log = (lambda line: print(line, flush=True)) if main_rank else (lambda line: None)
    if device is not None:
        log(f"torchrun: rank {distributed.rank()} of {distributed.world()} on {device}")
    elif job and sagemaker_job.warn_if_launcher_lost(log):
        return 0
    log(f"run folder: {run_dir}")
    summary = train_run(cfg, run_dir, resume=resume, log=log)
    # only after success: a rank that failed exits and torchrun stops the others, where a shutdown
    # barrier would wait for ranks stuck in the next collective
    distributed.shutdown()
    if not main_rank:
        return 0
    print(f"done: final test_acc={_fmt(summary.get('final_test_acc'))} best test_acc={_fmt(summary.get('best_test_acc'))} "
          f"time={summary['total_time']:.1f}s (selection {summary['select_time']:.1f}s)")
    print(f"model: {summary['model']}")
    folders = pipeline.run_stages(run_dir, stages, log) if stages else []
    if job:
        for path in sagemaker_job.export_outputs(run_dir) + sagemaker_job.export_stages(folders):
            print(f"exported: {path}")
    return 0


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def report_command(argv: Sequence[str]) -> int:
    from .report import report_main

    return report_main(list(argv))


def prune_command(argv: Sequence[str]) -> int:
    from .prune.stage import prune_main

    return prune_main(list(argv))


def compile_command(argv: Sequence[str]) -> int:
    from .compile.stage import compile_main

    return compile_main(list(argv))


def sweep_command(argv: Sequence[str]) -> int:
    from .sweep import main as sweep_main

    return sweep_main(list(argv))


COMMANDS = {"train": train_main, "report": report_command, "prune": prune_command, "compile": compile_command,
            "sweep": sweep_command}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS["train"]
    if argv and argv[0] in COMMANDS:
        command = COMMANDS[argv.pop(0)]
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return command(argv)
    except UsageError as exc:
        print(f"glister-train: error: {exc}", file=sys.stderr)
        return 2
    except (TrainingDiverged, StageFailed, DiskFull) as exc:
        print(f"glister-train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print("glister-train: interrupted; resume with --resume --out RUN_DIR", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: Any) -> None:
    # the epoch in progress is abandoned; the checkpoint of the last finished one resumes bit-identically
    raise Terminated()

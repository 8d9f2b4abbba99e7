"""Train, then hand the model on: ``python -m glister_train [training options] --then prune ... --then compile ...``.

Each ``--then STAGE`` is followed by that stage's own options, exactly as its command takes them (``python -m
glister_train prune --help``), without the input and output folders, which the pipeline sets: a stage reads the
folder the step before it wrote (the run folder, then ``RUN/prune/``) and writes ``RUN/<stage>/``. Every stage's
options are checked before training starts, so a typo fails in a second, not after the run. A stage folder is
complete once its report (``prune_report.json``, ``compile_report.json``) exists: running the pipeline again (a
resumed run, a restarted SageMaker job) skips the stages that finished and redoes one that was cut off. A stage
that fails leaves the run and the stages before it complete, and the error names the stage.

Why flags and not a ``stages:`` section in the config: the stages are separate commands with their own options and
reports, so the same words work on their own and in the chain, and inside a SageMaker job the hyperparameter
``then`` carries the same text (``"prune --criterion l1 --amount 0.3 --then compile --backend openvino"``).
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StageFailed, UsageError

STAGES = ("prune", "compile")
# what each stage is told to read and where it writes; the pipeline sets these, the user does not
INPUT_FLAG = {"prune": "--run", "compile": "--model"}


@dataclass(frozen=True)
class Stage:
    name: str
    argv: tuple[str, ...]
    folder: str  # inside the run folder


def split_stages(argv: Sequence[str]) -> tuple[list[str], list[Stage]]:
    """(the training arguments, the stages after them): everything after the first ``--then`` is stages."""
    segments: list[list[str]] = [[]]
    for token in argv:
        if token == "--then":
            segments.append([])
        else:
            segments[-1].append(token)
    stages: list[Stage] = []
    for segment in segments[1:]:
        if not segment or segment[0] not in STAGES:
            got = segment[0] if segment else "nothing"
            raise UsageError(f"--then {got}: a stage name must follow --then; choose one of {', '.join(STAGES)}")
        name, rest = segment[0], tuple(segment[1:])
        taken = [flag for flag in (INPUT_FLAG[name], "--out") if any(a == flag or a.startswith(flag + "=") for a in rest)]
        if taken:
            verb = "is" if len(taken) == 1 else "are"
            raise UsageError(f"--then {name}: {' and '.join(taken)} {verb} set by the pipeline (it reads the previous "
                             f"step's folder and writes RUN/{name}/); drop it")
        count = sum(s.name == name for s in stages)
        stages.append(Stage(name, rest, name if not count else f"{name}-{count + 1}"))
    return segments[0], stages


def stages_of(text: str) -> list[Stage]:
    """The stages of a chain written as one string (the SageMaker hyperparameter ``then``):
    ``"prune --amount 0.3 --then compile --backend openvino"``."""
    return split_stages(["--then", *shlex.split(text)])[1] if text.strip() else []


def without_then(argv: Sequence[str]) -> list[str]:
    """``argv`` less its ``--then VALUE`` pairs: inside a job the chain is read from ``SM_HPS`` alone, because
    the toolkit also passes every hyperparameter on the command line, sorted, where ``--then`` would swallow
    whatever follows it."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--then":
            skip = True
        elif not token.startswith("--then="):
            out.append(token)
    return out


def check(stages: Sequence[Stage]) -> None:
    """Parse and validate every stage's options now, before any training (argparse exits 2 on a bad flag)."""
    for stage in stages:
        placeholders = [INPUT_FLAG[stage.name], "-", "--out", "-"]
        if stage.name == "prune":
            from .prune.ranking import torch_pruning
            from .prune.stage import options_from, prune_parser

            options_from(parse_stage(prune_parser(), stage, placeholders))
            torch_pruning()  # the [prune] extra, checked now
        else:
            from .compile.stage import compile_parser, options_from

            options_from(parse_stage(compile_parser(), stage, placeholders))


def parse_stage(parser: Any, stage: Stage, placeholders: list[str]) -> Any:
    """A stage's options; a bad one is a one-line UsageError naming the stage (not argparse's usage and exit)."""
    def error(message: str) -> None:
        raise UsageError(f"--then {stage.name}: {message} (see python -m glister_train {stage.name} --help)")

    parser.error = error
    return parser.parse_args([*stage.argv, *placeholders])


def run_stages(run_dir: Path, stages: Sequence[Stage], log: Callable[[str], None] = print) -> list[Path]:
    """Run each stage on the previous step's folder; returns the stage folders."""
    from .compile import stage as compile_stage
    from .prune import stage as prune_stage

    modules = {"prune": (prune_stage.prune_main, prune_stage.REPORT),
               "compile": (compile_stage.compile_main, compile_stage.REPORT)}
    source, folders = run_dir, []
    for number, stage in enumerate(stages, start=1):
        out = run_dir / stage.folder
        main, report = modules[stage.name]
        if (out / report).is_file():
            log(f"stage {number} ({stage.name}): complete in {out}, skipped")
        else:
            if out.exists():  # an earlier attempt stopped inside this stage: its folder is incomplete
                shutil.rmtree(out)
            log(f"stage {number} ({stage.name}): {shlex.join(stage.argv)} on {source} -> {out}")
            try:
                main([*stage.argv, INPUT_FLAG[stage.name], str(source), "--out", str(out)])
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                done = "the run" + (f" and stages 1-{number - 1}" if number > 1 else "")
                raise StageFailed(f"stage {number} ({stage.name}) failed: {type(exc).__name__}: {exc}; "
                                  f"{done} are complete in {run_dir}") from exc
        folders.append(out)
        source = out
    return folders

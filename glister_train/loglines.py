"""The lines a run prints, one per epoch and one per selection, and the regexes that parse them back.

``epoch=3 train_loss=0.9100 train_acc=0.6500 val_loss=1.0200 val_acc=0.6400 test_acc=0.6300 epoch_time=12.3000 ...``
and ``selection epoch=3 selector=glister select_forward_time=... select_objective=...`` are for humans and for
SageMaker, which scrapes a job's log with :func:`metric_definitions` (at most 40, one capture group each) for
CloudWatch and a tuner's objective. Printer and parser live together so they cannot drift apart; a test runs the
harness and checks that every regex captures exactly the values written to ``metrics.jsonl``.
"""

from __future__ import annotations

from typing import Any

NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
EPOCH_LINE = r"(?:^|\n)epoch=[0-9]+ train_loss="  # only epoch lines start with `epoch=N train_loss=`
SELECTION_LINE = r"selection epoch=[0-9]+ selector=\S+"

EPOCH_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "epoch_time", "select_time")
SELECTION_FIELDS = ("select_forward_time", "select_greedy_time", "select_objective", "select_objective_random",
                    "select_overlap", "select_drop_share")


def metric_definitions() -> list[dict[str, str]]:
    """``[{"Name": ..., "Regex": ...}]`` as CreateTrainingJob and the tuner take them."""
    defs = [{"Name": "train_loss", "Regex": EPOCH_LINE + NUMBER}]
    defs += [{"Name": f, "Regex": EPOCH_LINE + r"\S+ .*?\b" + f + "=" + NUMBER} for f in EPOCH_FIELDS[1:]]
    defs += [{"Name": f, "Regex": SELECTION_LINE + r" .*?\b" + f + "=" + NUMBER} for f in SELECTION_FIELDS]
    return defs


EPOCH_LINE_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "epoch_time", "select_time",
                   "subset_size")


def epoch_line(epoch: int, metrics: dict[str, Any]) -> str:
    """``epoch=3 train_loss=0.9100 ...``: one plain line per epoch, for humans and SageMaker metric regexes."""
    parts = [f"epoch={epoch}"]
    for key in EPOCH_LINE_KEYS:
        if key in metrics:
            value = metrics[key]
            parts.append(f"{key}={value}" if isinstance(value, int) else f"{key}={value:.4f}")
    return " ".join(parts)


def selection_line(epoch: int, stats: dict[str, Any]) -> str:
    """``selection epoch=3 selector=glister select_time=... select_objective=...``: one line per selection."""
    parts = [f"selection epoch={epoch} selector={stats.get('selector', '?')}"]
    for key, value in stats.items():
        if key.startswith("select_") and isinstance(value, float):
            parts.append(f"{key}={value:.4f}")
    if "select_class_hist" in stats:
        parts.append("classes=" + ",".join(map(str, stats["select_class_hist"])))
    return " ".join(parts)

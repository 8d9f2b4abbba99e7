"""Name -> regex for SageMaker's MetricDefinitions: one source of truth for the launcher and the sweep.

SageMaker scrapes the job's log with these (at most 40, one capture group each) for CloudWatch and the
tuner's objective. They match the lines train.py prints, e.g.
``epoch=3 train_loss=0.9100 train_acc=0.6500 val_loss=1.0200 val_acc=0.6400 test_acc=0.6300 epoch_time=12.3000 ...``
and ``selection epoch=3 selector=glister select_forward_time=... select_objective=...``.
"""

from __future__ import annotations

NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
EPOCH_LINE = r"(?:^|\n)epoch=[0-9]+ train_loss="  # only epoch lines start with `epoch=N train_loss=`
SELECTION_LINE = r"selection epoch=[0-9]+ selector=\S+"

EPOCH_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "epoch_time", "select_time")
SELECTION_FIELDS = ("select_forward_time", "select_greedy_time", "select_objective", "select_objective_random",
                    "select_overlap")


def metric_definitions() -> list[dict[str, str]]:
    """``[{"Name": ..., "Regex": ...}]`` as CreateTrainingJob and the tuner take them."""
    defs = [{"Name": "train_loss", "Regex": EPOCH_LINE + NUMBER}]
    defs += [{"Name": f, "Regex": EPOCH_LINE + r"\S+ .*?\b" + f + "=" + NUMBER} for f in EPOCH_FIELDS[1:]]
    defs += [{"Name": f, "Regex": SELECTION_LINE + r" .*?\b" + f + "=" + NUMBER} for f in SELECTION_FIELDS]
    return defs

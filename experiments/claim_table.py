"""The claim's tables from run folders: the headline (one row per method, one column per condition) and the ablation
of the default's levers, each cell the final test accuracy's mean ± std over the seeds, with the seed count.

Reads run folders (``config.yaml``, ``summary.json``, ``metrics.jsonl``) under the given roots. A folder written
before the selectors owned their options is read in the current form (``glister_train.retired``): its retired levers
name its ablation row. Adaptive random's row takes, per condition, the schedule (R = 1 or R = 3) with the higher mean
final validation accuracy: chosen on validation, reported on test.

``--report REPORT.json`` (what ``python -m glister_train report`` wrote for the same runs, so run it after a
``--gather``) adds the standing: the shipped default in each condition against the baselines ``report`` paired it
with, at equal epochs and at equal compute, each a win or a loss only beyond the seeds' spread.

``--gather SWEEP...`` first copies the small files of every completed run of those sweep folders into the first root
as ``ROOT/<sweep>/<run>/`` (how results are committed). ``--readme FILE...`` rewrites the tables in place between the
markers ``<!-- claim-table -->`` / ``<!-- ablation-table -->`` / ``<!-- standing-table -->`` and their closing
``<!-- /... -->``.

    python experiments/claim_table.py experiments/results/long/run_files --json experiments/results/long/claim_table.json \\
        --report experiments/results/long/report.json --readme README.md glister_train/selection/filtered_random.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glister_train.config import TrainConfig, flatten, load_preset, validate  # noqa: E402
from glister_train.report import LOSS_KEYS  # noqa: E402
from glister_train.retired import logged_drop_shares, translate  # noqa: E402
from glister_train.selection import SELECTORS  # noqa: E402

SMALL_FILES = ("config.yaml", "summary.json", "metrics.jsonl")
# (column, label noise, noise kind, fraction, class imbalance, the training labels' file (none: the dataset's),
# wrong share of the trusted labels)
CONDITIONS = (("clean 30%", 0.0, "symmetric", 0.3, 1.0, None, 0.0), ("clean 10%", 0.0, "symmetric", 0.1, 1.0, None, 0.0),
              ("sym. noise", 0.4, "symmetric", 0.3, 1.0, None, 0.0), ("pair noise", 0.4, "pairs", 0.3, 1.0, None, 0.0),
              ("instance 40%", 0.4, "instance", 0.3, 1.0, None, 0.08),
              ("instance 20%", 0.2, "instance", 0.3, 1.0, None, 0.08),
              # CIFAR-10N's worst-of-three human labels, the trusted set their majority (experiments/human_labels.py)
              ("human labels", 0.0, "symmetric", 0.3, 1.0, "cifar-10n/worse.npy", 0.0),
              # the labels files of an earlier model of people's mistakes (sampled flips, 75% of cats wrong)
              ("people-like (files)", 0.0, "symmetric", 0.3, 1.0, "human_like/labels.npz", 0.0),
              ("10x skew", 0.0, "symmetric", 0.3, 10.0, None, 0.0))
# all at 30%
COLUMNS = ("clean 30%", "sym. noise", "pair noise", "instance 40%", "instance 20%", "human labels", "10x skew")
FULL, FULL_BUDGET = "full data, 45 epochs", "full data, 14 epochs"
RANDOM, BALANCED = "adaptive random", "class-balanced random"
# adaptive random in the pool's class mix, then the validation set's (retired): measured against class-balanced random
DEFERRED = "deferred-balanced random"
# the default selector on cross-entropy (the ablation's base); the default as shipped adds early learning at weight 1
GLISTER, DEFAULT = "GLISTER", "filtered-random"
# early-learning regularization (train.early_learning; configs/base.yaml sets 1) at the weights measured: 1 and the
# published 3, on the default and on the baselines that were best with cross-entropy
EARLY_WEIGHTS = (1, 3)


def with_early_learning(row: str, weight: int) -> str:
    return f"{row} + early_learning: {weight}"


EARLY = {w: with_early_learning(DEFAULT, w) for w in EARLY_WEIGHTS}
BALANCED_EARLY = {w: with_early_learning(f"{BALANCED}, R = 1", w) for w in EARLY_WEIGHTS}
FULL_BUDGET_EARLY = {w: with_early_learning(FULL_BUDGET, w) for w in EARLY_WEIGHTS}
SHIPPED = EARLY[1]
HEADLINE = (FULL, FULL_BUDGET, RANDOM, BALANCED, GLISTER, DEFAULT,
            *(row for w in EARLY_WEIGHTS for row in (FULL_BUDGET_EARLY[w], BALANCED_EARLY[w], EARLY[w])))
SHOWN_AS = {DEFAULT: "filtered-random, cross-entropy",
            # the shipped row's weight is in the note under the table
            **{row: "filtered-random (default)" if row == SHIPPED else f"filtered-random + EL {w}"
               for w, row in EARLY.items()},
            **{row: f"class-balanced random + EL {w}" for w, row in BALANCED_EARLY.items()},
            **{row: f"{FULL_BUDGET} + EL {w}" for w, row in FULL_BUDGET_EARLY.items()}}
# training options that change the loss (report's), with their defaults: a run that sets one is its own row
LOSS_OPTIONS = {k.split(".")[-1]: getattr(TrainConfig, k.split(".")[-1]) for k in LOSS_KEYS}
# the options a method is named by when they hold their defaults (anything else is an ablation row)
DEFAULTS = {name: dataclasses.asdict(SELECTORS[name].Options()) for name in ("filtered-random", "glister", "reducible-loss")}
# GLISTER's committed runs ran with the validation set's class mix, but under instance noise and for one seed of
# symmetric noise with the pool's (those sweeps did not pin the quotas); both are GLISTER as published otherwise, so
# they share its row, with a note
IGNORED_IN_NAME = {"glister": ("class_budget",)}
# the default before it read an estimate below 20% as 0: the ablation compares the runs that changed it with it
EARLIER_DEFAULT = f"{DEFAULT} + ignore_below: 0.0"
# on clean data with a stratified validation set the two class mixes give equal quotas and so the same subsets: the
# committed clean runs of the default ran with the pool's mix
SAME_ON_CLEAN = {f"{DEFAULT} + class_budget: size": DEFAULT, f"{EARLIER_DEFAULT} + class_budget: size": EARLIER_DEFAULT}


def method(cfg: dict[str, Any], drop_shares: list[float] | None = None) -> str:
    """The row a run belongs to: a headline method, or the default (or GLISTER) with what it changed
    (``drop_shares``: the estimates the run logged, which tell how a run from before ``ignore_below`` reads)."""
    new, retired = translate(cfg, drop_shares)
    s, train = new["selection"], cfg.get("train", {})
    selector = s["selector"]
    schedule = []
    if s.get("kappa_matched"):
        schedule.append(f"compute-matched warm start, kappa {s['kappa']:g}")
    loss = "".join(f" + {k}: {train[k]:g}" for k in LOSS_OPTIONS
                   if train.get("early_learning") and train.get(k, LOSS_OPTIONS[k]) != LOSS_OPTIONS[k])
    if selector == "full":
        epochs = TrainConfig(epochs=train.get("epochs", 45), budget_fraction=train.get("budget_fraction", 1.0)).scheduled_epochs
        return (FULL if epochs == 45 else FULL_BUDGET if epochs == 14 else f"full data, {epochs} epochs") + loss
    if selector == "adaptive-random":
        if retired.get("class_budget") == "deferred":
            return (f"{DEFERRED}, R = {s.get('select_every', 20)}, from {retired['balance_from']:.0%} of the epochs "
                    "(retired)" + loss)
        if s.get("class_budget", "none") == "val_share":
            return f"{BALANCED}, R = {s.get('select_every', 20)}" + loss
        return f"{RANDOM}, R = {s.get('select_every', 20)}" + "".join(f", {x}" for x in schedule) + loss
    name = DEFAULT if selector == "filtered-random" else GLISTER if selector == "glister" else selector
    if selector == "glister" and "drop_by" in retired:  # the soft filters the default grew out of, in short
        t = float(s["temperature"])
        name = f"GLISTER soft, T = {f'{t:.0e}'.replace('e+0', 'e') if t >= 1000 else f'{t:g}'}, confidence filter (retired)"
        if "agreement_sample" in retired:
            name += ", estimate from the records"
        return name
    if selector == "filtered-random" and s.get("ignore_below") == 0.0:
        name = EARLIER_DEFAULT  # named first, so that what was tried on top of it reads as its change
    changed = [f"{k}: {v}" for k, v in s.items() if k in DEFAULTS.get(selector, {})
               and k not in IGNORED_IN_NAME.get(selector, ()) and v != DEFAULTS[selector][k]
               and not (name == EARLIER_DEFAULT and k == "ignore_below")]
    if retired.get("class_budget"):  # a retired class mix stood in for the one translate() gives
        changed = [x for x in changed if not x.startswith("class_budget: ")]
    changed += [f"{k}: {v} (retired)" for k, v in retired.items()]
    return name + "".join(f" + {x}" for x in [*changed, *schedule]) + loss


def same_labels(labels_file: str, known: str | None) -> bool:
    """Whether a run's training labels file (empty: the dataset's labels) is the condition's, by its last folder and
    name: where the data folder lies differs from machine to machine."""
    if not labels_file or known is None:
        return not labels_file and known is None
    return ("/" + Path(labels_file).as_posix()).endswith("/" + known)


def condition(cfg: dict[str, Any]) -> str | None:
    d, s = cfg["data"], cfg["selection"]
    fraction = 1.0 if s["selector"] == "full" else s["fraction"]
    labels_file = d.get("train_labels") or ""
    for name, noise, kind, f, imbalance, labels, val_noise in CONDITIONS:
        if d.get("imbalance", 1.0) != imbalance or d["label_noise"] != noise or (noise and d["noise_kind"] != kind):
            continue
        if d.get("val_noise", 0.0) != val_noise:
            continue
        if not same_labels(labels_file, labels):
            continue
        if fraction == f or (fraction == 1.0 and f == 0.3):  # full data is shown once, in the 30% columns
            return name
    return None


def gather(sweeps: list[Path], dest: Path) -> int:
    copied = 0
    for summary in sorted(path for sweep in sweeps for path in sweep.glob("*/summary.json")):
        run = summary.parent
        if json.loads(summary.read_text()).get("status") != "completed":
            continue
        target = dest / run.parent.name / run.name
        target.mkdir(parents=True, exist_ok=True)
        for name in SMALL_FILES:
            shutil.copy2(run / name, target / name)
        copied += 1
    return copied


def late_wrong_share(metrics: list[dict[str, Any]], epochs: int) -> float | None:
    """The share of wrong labels among the chosen examples over the last 15 epochs (%), where noise was injected."""
    shares = [(m["epoch"], m["select_noisy_share"]) for m in metrics if "select_noisy_share" in m]
    late = [s for e, s in shares if e > epochs - 15] or [s for _, s in shares]  # full data selects once
    return 100 * statistics.fmean(late) if late else None


def collect(roots: list[Path]) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """{row: {condition: {seed: {test_acc, val_acc, wrong_late, run}}}} of every completed run."""
    cells: dict = {}
    for root in roots:
        for summary_path in sorted(root.rglob("summary.json")):
            run = summary_path.parent
            summary = json.loads(summary_path.read_text())
            if summary.get("status") != "completed":
                continue
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            cond = condition(cfg)
            if cond is None:
                continue
            metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
            row = method(cfg, logged_drop_shares(metrics))
            if cond in ("clean 30%", "clean 10%"):
                row = SAME_ON_CLEAN.get(row, row)
            rows = [row]
            if row == DEFAULT and "ignore_below" not in cfg["selection"]:
                rows.append(EARLIER_DEFAULT)  # it drew what both draw: the base of the levers tried on the earlier
            for row in rows:
                cells.setdefault(row, {}).setdefault(cond, {})[summary["seed"]] = {
                    "test_acc": 100 * summary["final_test_acc"], "val_acc": 100 * summary["final_val_acc"],
                    "wrong_late": late_wrong_share(metrics, cfg["train"]["epochs"]),
                    "run": f"{run.parent.name}/{run.name}"}
    return cells


def best_schedule(cells: dict, cond: str, method: str) -> str | None:
    """A random baseline's schedule (its row, R = 1 or 3) with the higher mean final validation accuracy in ``cond``."""
    rows = [r for r in cells if r in (f"{method}, R = 1", f"{method}, R = 3") and cond in cells[r]]
    return max(rows, key=lambda r: statistics.fmean(v["val_acc"] for v in cells[r][cond].values()), default=None)


def summary(seeds: dict[int, dict[str, Any]] | None, full: int | None = None, pm: str = " ± ") -> str:
    """``mean ± std (n)`` of the test accuracies (``pm`` between the two), the seed count left out when it is
    ``full``; one seed is shown alone, as a screening."""
    if not seeds:
        return "-"
    values = [v["test_acc"] for v in seeds.values()]
    count = "" if len(values) == full else f" ({len(values)})"
    if len(values) == 1:
        return f"{values[0]:.2f}{count}"
    return f"{statistics.fmean(values):.2f}{pm}{statistics.stdev(values):.2f}{count}"


def headline(cells: dict) -> str:
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    chosen = {m: {c: best_schedule(cells, c, m) for c in COLUMNS} for m in (RANDOM, BALANCED)}
    for row in HEADLINE:
        # "±" unspaced: six columns of mean±std stay within 130 characters a row
        values = [summary(cells.get(chosen[row][c] if row in chosen else row, {}).get(c), full=3, pm="±")
                  if row not in chosen or chosen[row][c] else "-" for c in COLUMNS]
        if row in SHOWN_AS and all(v == "-" for v in values):
            continue
        lines.append(f"| {SHOWN_AS.get(row, row)} | " + " | ".join(values) + " |")
    picks = "; ".join(f"{m}: " + ", ".join(f"{c} R = {chosen[m][c].rsplit('= ', 1)[1]}" for c in COLUMNS
                                           if chosen[m][c]) for m in chosen if any(chosen[m].values()))
    note = (f"Final test accuracy (%), mean ± std over 3 seeds unless (n) says otherwise; the subset runs train on 30% "
            f"of the data. The random baselines' R, chosen on validation accuracy: {picks}. GLISTER ran with the "
            "validation set's class mix, except under instance noise and seed 0 under symmetric noise (the pool's). "
            "The default trains with early learning at weight 1 (train.early_learning=1, configs/base.yaml); the rows "
            "without early learning trained on cross-entropy (train.early_learning=0), those with EL W (early learning at "
            "weight W) with train.early_learning=W.")
    return "\n".join([*lines, "", *textwrap.wrap(note, 110)])


def changed_from(row: str, earlier: bool) -> str:
    """The row an ablation row is measured against: a baseline with early learning against itself without it, and
    the default with it against the default without it (the loss's gain); a retired class mix of adaptive random
    against class-balanced random at the same R with the same loss; the levers tried on the earlier default against
    it; every other row (GLISTER's too) against the default with the same loss."""
    cross_entropy = without_loss(row)
    loss = row[len(cross_entropy):]
    if row.startswith(DEFERRED):
        return cross_entropy.replace(DEFERRED, BALANCED, 1).split(", from ")[0] + loss
    if loss and (cross_entropy == DEFAULT or cross_entropy.startswith((FULL_BUDGET, FULL, RANDOM, BALANCED))):
        return cross_entropy
    return (EARLIER_DEFAULT if earlier else DEFAULT) + loss


def without_loss(row: str) -> str:
    """``row`` trained on cross-entropy: the name less the loss options ``method`` appends last."""
    cuts = [row.find(f" + {k}: ") for k in LOSS_OPTIONS if f" + {k}: " in row]
    return row[: min(cuts)] if cuts else row


def ablation(cells: dict) -> str:
    """Every other row against the default it changed in the same condition (the earlier default, acting on every
    estimate, for the levers tried on top of it; a baseline with early learning, against itself without it): the
    levers that lost or tied, and why not."""
    lines = ["| variant | condition | test accuracy | vs the default it changed | wrong labels late |",
             "|---|---|---|---|---|"]
    rows = sorted(r for r in cells if r not in HEADLINE and not r.startswith((f"{RANDOM}, R = ", f"{BALANCED}, R = "))
                  or "warm" in r or r in HEADLINE and "early_learning" in r)
    order = [name for name, *_ in CONDITIONS]
    for row in rows:
        for cond, seeds in sorted(cells[row].items(), key=lambda item: order.index(item[0])):
            earlier = row.startswith(EARLIER_DEFAULT + " + ")
            base = cells.get(changed_from(row, earlier), {}).get(cond, {})
            same = [s for s in seeds if s in base]  # paired: the seeds both ran
            delta = statistics.fmean(seeds[s]["test_acc"] - base[s]["test_acc"] for s in same) if same else math.nan
            wrong = [v["wrong_late"] for v in seeds.values() if v["wrong_late"] is not None]
            lines.append(f"| {row.replace(DEFAULT + ' + ', '')} | {cond} | {summary(seeds)} | "
                         f"{'-' if math.isnan(delta) else f'{delta:+.2f} ({len(same)})'} | "
                         f"{f'{statistics.fmean(wrong):.1f}%' if wrong else '-'} |")
    return "\n".join(lines)


# the shipped default's selection options, schedule and loss on the claim's proxy, by the short names ``report``
# labels runs with
SHIPPED_VALUES = {k.split(".")[-1]: str(v) for k, v in flatten(validate(load_preset("cpu-long"))).items()
                  if k.startswith("selection.") or k in LOSS_KEYS}


def is_shipped(label: str, loss_named: bool) -> bool:
    """Whether a ``report`` label is the shipped default: the default selector with no option set apart from what it
    ships with, and with its loss named where the report names losses (it does when some runs train on another)."""
    selector, *parts = label.split()
    if selector != DEFAULT or not all("=" in part for part in parts):  # a retired lever: "rank_by (retired)=margin"
        return False
    options = dict(part.split("=", 1) for part in parts)
    if loss_named and "early_learning" not in options:
        return False
    return all(SHIPPED_VALUES.get(k) == v for k, v in options.items())


def report_column(named: str, fraction: float) -> str | None:
    """The headline column of a condition as ``report`` names it (``imbalance=10.0 label_noise=0.0 ...``) at
    ``fraction``."""
    data: dict[str, Any] = {}
    for part in named.split():
        key, _, value = part.partition("=")
        data[key] = value if key in ("noise_kind", "train_labels", "val_labels") else float(value)
    data.setdefault("label_noise", 0.0)
    cfg = {"data": data, "selection": {"selector": "filtered-random", "fraction": fraction}}
    column = condition(cfg)
    return column if column in COLUMNS else None


def baseline_name(label: str) -> str:
    """A ``report`` baseline label in short words for the standing's narrow cells: ``adaptive-random
    class_budget=val_share select_every=1 early_learning=1.0`` is ``balanced R1 EL1`` (EL: early learning)."""
    parts = label.split()
    options = dict(part.split("=", 1) for part in parts[1:])
    loss = f" EL{float(options['early_learning']):g}" if float(options.get("early_learning", 0)) else ""
    if parts[0] == "full":
        return f"full {options.get('epochs', 'all')} ep{loss}"
    mix = "balanced" if options.get("class_budget") == "val_share" else "random"
    return f"{mix} R{options['select_every']}{loss}"


def standing(report: dict[str, Any]) -> str:
    """The shipped default in each condition against what ``report`` paired it with: random draws at their best
    schedule and class mix at equal epochs, full data on the budget-matched schedule, and the best of all of them
    (chosen on validation accuracy, any loss) at equal compute."""
    def versus(diff: float | None, verdict: str, name: str | None) -> str:
        return "-" if diff is None else f"{100 * diff:+.2f} {verdict} ({baseline_name(name)})"

    rows = {}
    loss_named = any("early_learning=" in r["label"] for r in report["rows"])
    for r in report["rows"]:
        column = report_column(r["condition"], r["fraction"])
        if not is_shipped(r["label"], loss_named) or column is None:
            continue
        pool = r["pool_noisy_share"]
        wrong = "-" if pool is None else f"{100 * r['noisy_share']:.1f}/{round(100 * pool, 1):g}"
        rows[column] = (f"| {column} | {100 * r['final_test_acc']:.2f}±{100 * r['final_test_acc_std']:.2f} | "
                        f"{versus(r['vs_adaptive_random'], r['verdict_equal_epochs'], r['random_label'])} | "
                        f"{versus(r['vs_full_budget'], r['verdict_full_budget'], r['budget_full_label'])} | "
                        f"{versus(r['vs_best_baseline'], r['verdict_best_baseline'], r['best_baseline_label'])} | "
                        f"{wrong} |")
    lines = ["| condition | default | vs random, equal epochs | vs full data, same budget | vs best, equal compute | "
             "wrong / pool (%) |",
             "|---|---|---|---|---|---|"]
    return "\n".join([*lines, *(rows[c] for c in COLUMNS if c in rows)])


def replace_between(markdown: str, marker: str, new: str) -> str:
    """``markdown`` with what lies between ``<!-- marker -->`` and ``<!-- /marker -->`` replaced by ``new``."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in markdown or end not in markdown:
        raise SystemExit(f"no '{start}' ... '{end}' block to replace")
    head, rest = markdown.split(start, 1)
    return f"{head}{start}\n{new}\n{end}{rest.split(end, 1)[1]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path, help="folders holding run folders (searched recursively)")
    p.add_argument("--gather", type=Path, nargs="+", metavar="SWEEP", help="first copy completed runs' small files")
    p.add_argument("--json", type=Path)
    p.add_argument("--report", type=Path, help="report.json of the same runs: adds the default's standing")
    p.add_argument("--readme", type=Path, nargs="+", metavar="FILE", help="rewrite the tables in these markdown files")
    args = p.parse_args()
    if args.gather:
        print(f"copied {gather(args.gather, args.roots[0])} completed runs")
    cells = collect(args.roots)
    tables = {"claim-table": headline(cells), "ablation-table": ablation(cells)}
    if args.report:
        tables["standing-table"] = standing(json.loads(args.report.read_text()))
    for text in tables.values():
        print(text, end="\n\n")
    if args.json:
        args.json.write_text(json.dumps(cells, indent=2, sort_keys=True) + "\n")
    for path in args.readme or []:
        text = path.read_text()
        for marker, table in tables.items():
            if f"<!-- {marker} -->" in text:
                text = replace_between(text, marker, table)
        path.write_text(text)


if __name__ == "__main__":
    main()

"""The claim's per-seed table: final test accuracy of every configuration, seed by seed, per condition.

Reads run folders (``config.yaml``, ``summary.json``, ``metrics.jsonl``) under the given roots, names each run's
configuration from its config, and prints one markdown row per configuration: test accuracy (%) for seeds 0 / 1 / 2
under each condition (clean 30%, clean 10%, 40% symmetric noise 30%, 40% pair noise 30%), then mean ± std over
the seeds present, and the share of wrong labels among the chosen examples under noise (all selections / the last
15 epochs). ``report`` makes the equal-epoch and equal-time comparisons; this is the raw material beside it.

``--gather SWEEP...`` first copies the small files of every completed run of those sweep folders (e.g.
``runs/long-clean runs/long-noise``) into the first root, as ``ROOT/<sweep>/<run>/``: that is how results are committed.
``--readme FILE...`` rewrites the table in those markdown files in place (the one whose header row is this table's).

    python experiments/claim_table.py experiments/results/long/run_files --gather runs/long-clean runs/long-noise \\
        --json experiments/results/long/claim_table.json --readme README.md glister_train/selection/README.md
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
from pathlib import Path

import yaml

SMALL_FILES = ("config.yaml", "summary.json", "metrics.jsonl")
# (name, label noise, noise kind, fraction, class imbalance)
CONDITIONS = (("clean, 30%", 0.0, "symmetric", 0.3, 1.0), ("clean, 10%", 0.0, "symmetric", 0.1, 1.0),
              ("40% symmetric noise, 30%", 0.4, "symmetric", 0.3, 1.0), ("40% pair noise, 30%", 0.4, "pairs", 0.3, 1.0),
              ("10x class imbalance, 30%", 0.0, "symmetric", 0.3, 10.0))
ROWS = ("full data", "adaptive random, R = 1", "adaptive random, R = 3", "GLISTER as it was (batched greedy, sum)",
        "GLISTER gain tilt (T = 1), confidence filter, records estimate",
        "filter + uniform draws (T = 1e6), records estimate", "filter + uniform draws (T = 1e6), eval-mode estimate",
        "filter + uniform draws (T = inf), eval-mode estimate, quotas by pool size (on clean data: the default's subsets)",
        "T = inf + `hard_ratio` (above-mean-loss examples drawn more often, importance-weighted)",
        "T = inf + `drop_by: margin` (the margin averaged over training ranks what is dropped)",
        "T = inf + `drop_share_scale`", "T = inf + `drop_by: margin` + `drop_share_scale`",
        "T = inf + `class_budget: val_loss` (per-class quotas by validation loss)",
        "**default**: T = inf + `class_budget: val_share` (the subset's class mix follows the validation set's)",
        "default + `coverage` (the kept examples trained on fewest times drawn first)",
        "default + `curriculum` (easy first: the least confident set aside early)",
        "default + compute-matched warm start (`kappa_matched`: full-data epochs inside the budget), kappa",
        "adaptive random + compute-matched warm start, kappa")


def configuration(cfg: dict) -> str | None:
    s = cfg["selection"]
    if s["selector"] == "full":
        return ROWS[0]
    if s["selector"] == "adaptive-random":
        if s.get("kappa_matched", False):
            return f"{ROWS[17]} {s['kappa']:g}, R = {s['select_every']}"
        return f"adaptive random, R = {s['select_every']}"
    if s["sampling"] == "greedy":
        return ROWS[3]
    t, sample = float(s["temperature"]), s.get("agreement_sample", 0)  # older configs lack the key
    if t == 1.0:
        return ROWS[4]
    if math.isinf(t):
        if not sample:
            return None
        if s.get("kappa_matched", False):
            return f"{ROWS[16]} {s['kappa']:g}"
        if s.get("hard_ratio", 1.0) > 1:
            return f"{ROWS[8]}: {s['hard_ratio']:g}"
        if s.get("curriculum", 0.0) > 0:
            return f"{ROWS[15]}: {s['curriculum']:g}"
        if s.get("coverage", False):
            return ROWS[14]
        margin, scale, quotas = s.get("drop_by") == "margin", s.get("drop_share_scale", 1.0), s.get("class_budget", "size")
        if margin or scale != 1:  # a stricter filter: its row names the quotas when they are not the pool's sizes
            row = f"{ROWS[11]}: {scale:g}" if margin and scale != 1 else f"{ROWS[10]}: {scale:g}" if scale != 1 else ROWS[9]
            return row if quotas == "size" else f"{row}, `class_budget: {quotas}`"
        if quotas != "size":
            return ROWS[13] if quotas == "val_share" else ROWS[12]
        return ROWS[7]
    return ROWS[6] if sample else ROWS[5]


def condition(cfg: dict) -> str | None:
    d, fraction = cfg["data"], 1.0 if cfg["selection"]["selector"] == "full" else cfg["selection"]["fraction"]
    for name, noise, kind, f, imbalance in CONDITIONS:
        if d.get("imbalance", 1.0) != imbalance:
            continue
        if d["label_noise"] == noise and (noise == 0 or d["noise_kind"] == kind) and (fraction in (f, 1.0)):
            if fraction == 1.0 and f != 0.3:
                continue  # full data is shown once per noise condition, in the 30% column
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


def wrong_label_shares(metrics: list[dict], epochs: int) -> tuple[float, float] | None:
    shares = [(m["epoch"], m["select_noisy_share"]) for m in metrics if "select_noisy_share" in m]
    if not shares:
        return None
    late = [s for e, s in shares if e > epochs - 15] or [s for _, s in shares]  # full data selects once, at the start
    return 100 * statistics.fmean(s for _, s in shares), 100 * statistics.fmean(late)


def collect(roots: list[Path]) -> dict:
    cells: dict = {}
    for root in roots:
        for summary_path in sorted(root.rglob("summary.json")):
            run = summary_path.parent
            summary = json.loads(summary_path.read_text())
            if summary.get("status") != "completed":
                continue
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            row, cond = configuration(cfg), condition(cfg)
            if row is None or cond is None:
                continue
            metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
            cell = cells.setdefault(row, {}).setdefault(cond, {})
            cell[summary["seed"]] = {"test_acc": 100 * summary["final_test_acc"], "run": run.name,
                                     "wrong_labels": wrong_label_shares(metrics, cfg["train"]["epochs"])}
    return cells


def table(cells: dict) -> str:
    head = ["configuration"] + [f"{name}: seed 0 / 1 / 2 (mean ± std)" for name, *_ in CONDITIONS]
    head.append("wrong labels chosen, symmetric noise: all selections / last 15 epochs, per seed (pool: 40%)")
    head.append("wrong labels chosen, pair noise (pool: 20%)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(cells, key=lambda r: max(i for i, name in enumerate(ROWS) if r.startswith(name))):
        out = [row]
        for name, *_ in CONDITIONS:
            seeds = cells[row].get(name, {})
            values = [seeds[s]["test_acc"] if s in seeds else None for s in (0, 1, 2)]
            text = " / ".join("-" if v is None else f"{v:.2f}" for v in values)
            present = [v for v in values if v is not None]
            if len(present) >= 2:
                text += f" ({statistics.fmean(present):.2f} ± {statistics.stdev(present):.2f})"
            out.append(text)
        for noise_condition in (CONDITIONS[2][0], CONDITIONS[3][0]):
            noisy = cells[row].get(noise_condition, {})
            shares = [noisy[s]["wrong_labels"] for s in sorted(noisy) if noisy[s]["wrong_labels"]]
            out.append("; ".join(f"{a:.1f} / {b:.1f}" for a, b in shares) or "-")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def replace_table(markdown: str, new: str) -> str:
    """``markdown`` with the table whose header row is ``new``'s replaced by ``new``; an error if there is none."""
    lines, header = markdown.split("\n"), new.split("\n")[0]
    if header not in lines:
        raise SystemExit("no claim table (a row starting '| configuration | clean, 30%') to replace")
    start = end = lines.index(header)
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[:start] + new.split("\n") + lines[end:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path, help="folders holding run folders (searched recursively)")
    p.add_argument("--gather", type=Path, nargs="+", metavar="SWEEP", help="first copy completed runs' small files")
    p.add_argument("--json", type=Path)
    p.add_argument("--readme", type=Path, nargs="+", metavar="FILE", help="rewrite the table in these markdown files")
    args = p.parse_args()
    if args.gather:
        print(f"copied {gather(args.gather, args.roots[0])} completed runs")
    cells = collect(args.roots)
    markdown = table(cells)
    print(markdown)
    if args.json:
        args.json.write_text(json.dumps(cells, indent=2, sort_keys=True))
    for path in args.readme or []:
        path.write_text(replace_table(path.read_text(), markdown))


if __name__ == "__main__":
    main()

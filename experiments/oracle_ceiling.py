"""How far selection could go if it knew which labels are wrong: the ceiling of any filter under a noise model.

Draws the run's subsets (any selector, its own options) from only the correctly labelled examples of the pool, the
injected noise's own record of them picking them out, at the same number of examples an epoch as the run would
draw from the whole pool. No method can do this (the record is the truth a filter estimates); the gap between this
run and the same selector on the whole pool is what a perfect detector of wrong labels would be worth, and the gap to
a real filter is what its mistakes cost. An experiment, not a selector: the run folders it writes hold the reduced
pool's configuration (the fraction rescaled, ``wrong`` 0 in ``summary.json``), so keep them out of the claim's run
files; the table and ``--json`` say what they are.

    python experiments/oracle_ceiling.py --preset cpu-long --selector adaptive-random --fraction 0.3 \\
        --set selection.select_every=1 --set selection.class_budget=val_share --set data.noise_kind=instance \\
        --set data.label_noise=0.4 --set data.val_noise=0.08 --data-dir data --seeds 0 1 2 \\
        --out runs/oracle-ceiling --json experiments/results/oracle_ceiling.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glister_train.cli import resolve_config, train_parser  # noqa: E402
from glister_train.config import merge, validate  # noqa: E402
from glister_train.data import Splits, load_splits  # noqa: E402
from glister_train.errors import UsageError  # noqa: E402
from glister_train.run import train_run  # noqa: E402
from glister_train.selection.base import budget_for  # noqa: E402


def correctly_labelled(splits: Splits) -> Splits:
    """``splits`` with the training pool cut to the examples whose labels the injected noise left right."""
    if splits.noisy is None:
        raise UsageError("oracle_ceiling: the run injects no label noise (data.label_noise is 0): nothing to take out")
    keep = (~splits.noisy).nonzero().squeeze(1)
    origin = splits.origin[keep] if splits.origin is not None else None
    return dataclasses.replace(splits, train=splits.train.subset(keep), noisy=splits.noisy[keep], origin=origin)


def same_draws(fraction: float, pool: int, kept: int) -> float:
    """The fraction of the kept examples that draws as many an epoch as ``fraction`` of the whole pool."""
    return min(1.0, budget_for(fraction, pool) / kept)


def main() -> None:
    p = train_parser()
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    p.add_argument("--json", type=Path, help="write the table's rows here")
    args = p.parse_args()
    if not args.out:
        raise UsageError("oracle_ceiling: --out is required (a folder; one run folder per seed inside)")
    rows = []
    for seed in args.seeds:
        cfg = merge(resolve_config(args), {"run": {"seed": seed}}, "--seeds")
        splits = load_splits(cfg.data)
        clean = correctly_labelled(splits)
        fraction = same_draws(cfg.selection.fraction, len(splits.train), len(clean.train))
        cfg = validate(merge(cfg, {"selection": {"fraction": fraction}}, "the kept pool"))
        run_dir = Path(args.out) / f"{cfg.selection.selector}-s{seed}"
        summary = train_run(cfg, run_dir, resume=args.resume, splits=clean)
        rows.append({"seed": seed, "selector": cfg.selection.selector, "pool": len(splits.train),
                     "kept": len(clean.train), "per_epoch": budget_for(fraction, len(clean.train)),
                     "final_test_acc": summary["final_test_acc"], "final_val_acc": summary["final_val_acc"],
                     "run_dir": str(run_dir)})
    print("| seed | selector | pool | kept (correct labels) | drawn an epoch | final test acc (%) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['selector']} | {r['pool']} | {r['kept']} | {r['per_epoch']} | "
              f"{100 * r['final_test_acc']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"made_by": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except UsageError as exc:
        sys.exit(f"error: {exc}")

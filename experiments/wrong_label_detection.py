"""How well does each model's confidence in the given label find the wrong labels, under a noise setting?

A selector that sets aside low-confidence examples is only as good as the ranking it sets them aside by. This
trains, on the ``cpu-long`` network and optimizer:
- ``trusted``: a model on the validation (trusted) split alone, its own labels a little wrong (``--val-noise``);
- ``noisy``: a model on the whole noisy training split, trained for each of ``--noisy-epochs`` (a whole cosine
  schedule each), read in eval mode on un-augmented images, as it is, with its last layer refitted to the trusted
  set's features (L-BFGS), and fine-tuned on the trusted set for ``--tune-epochs`` (learning rate 0.01);

and ranks the training split by each model's probability of the given label, lowest first. It reports, per ranking,
the AUC for telling wrong labels from right ones and the share of wrong labels among the lowest 20% and 40%
(the pool is ``--label-noise`` wrong: a perfect ranking finds only wrong labels in its lowest ``--label-noise``).

    python experiments/wrong_label_detection.py --data-dir data --json experiments/results/wrong_label_detection.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glister_train import config as C  # noqa: E402
from glister_train.data import Splits, channel_stats, load_splits, normalize  # noqa: E402
from glister_train.models import load_model  # noqa: E402
from glister_train.run import train_run  # noqa: E402
from glister_train.tracking import read_metrics  # noqa: E402


def given_probability(model: torch.nn.Module, splits: Splits, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Each training image's probability of its given label, eval mode, un-augmented."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(splits.train), 500):
            x = normalize(splits.train.x[i : i + 500], mean, std)
            out.append(torch.softmax(model(x), 1)[torch.arange(len(x)), splits.train.y[i : i + 500]])
    return torch.cat(out)


def fit_head(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
             steps: int = 300, weight_decay: float = 5e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) minimizing the cross-entropy on (``features``, ``labels``) plus an L2 penalty on the weight,
    from the given ones, by L-BFGS (no randomness): multinomial logistic regression on the penultimate features."""
    w = weight.detach().float().cpu().clone().requires_grad_(True)
    b = bias.detach().float().cpu().clone().requires_grad_(True)
    x, y = features.float().cpu(), labels.cpu()
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def refit_head(model: torch.nn.Module, splits: Splits, steps: int = 300) -> torch.Tensor:
    """Each training image's probability of its given label from the model's penultimate features and a last layer
    fitted anew to the trusted set's (eval mode, un-augmented)."""
    from glister_train.models import last_layer_parts
    from glister_train.selection.base import Environment
    from glister_train.selection.forward import eval_features

    env = Environment(mean=splits.mean, std=splits.std, batch_size=500)
    hv, _, _ = eval_features(model, splits.val.x, env)
    h, _, _ = eval_features(model, splits.train.x, env)
    fc = last_layer_parts(model)[1]
    w, b = fit_head(hv, splits.val.y, fc.weight, fc.bias, steps=steps)
    return torch.softmax(h @ w.T + b, 1)[torch.arange(len(h)), splits.train.y]


def scores(rank: torch.Tensor, wrong: torch.Tensor) -> dict[str, float]:
    """AUC of ``-rank`` for ``wrong`` (Mann-Whitney), and the wrong share among the lowest 20% and 40%."""
    order = torch.argsort(rank)
    positions = torch.empty(len(rank))
    positions[order] = torch.arange(len(rank), dtype=torch.float)
    n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
    # the share of (wrong, right) pairs in which the wrong label ranks lower
    auc = float((positions[~wrong].sum() - n_right * (n_right - 1) / 2) / (n_wrong * n_right))
    return {"auc": round(auc, 4),
            "wrong_in_lowest_20%": round(float(wrong[order[: len(rank) // 5]].float().mean()), 4),
            "wrong_in_lowest_40%": round(float(wrong[order[: 2 * len(rank) // 5]].float().mean()), 4)}


def trusted_model(args, base: C.Config, splits: Splits, tmp: Path) -> dict[str, dict]:
    """A model trained on the trusted split alone (the test set only reports its accuracy)."""
    mean, std = channel_stats(splits.val.x)
    trusted = Splits(splits.val, splits.val, splits.test, splits.num_classes, mean, std)
    cfg = C.validate(C.merge(base, {"train": {"epochs": args.trusted_epochs, "eval_every": args.trusted_epochs}}))
    start = time.perf_counter()
    summary = train_run(cfg, tmp / "trusted", log=lambda _: None, splits=trusted)
    model, _ = load_model(tmp / "trusted" / "model.pt")
    return {f"trusted model, {args.trusted_epochs} epochs on {len(splits.val)} images": {
        **scores(given_probability(model, splits, mean, std), splits.noisy),
        "test_acc": summary["final_test_acc"], "seconds": round(time.perf_counter() - start)}}


def noisy_models(args, base: C.Config, splits: Splits, epochs: int, tmp: Path) -> dict[str, dict]:
    """A model trained ``epochs`` on the noisy training split; the same with its last layer refitted to the trusted
    set; the same fine-tuned on the trusted set for ``args.tune_epochs``."""
    cfg = C.validate(C.merge(base, {"train": {"epochs": epochs, "eval_every": epochs}}))
    start = time.perf_counter()
    summary = train_run(cfg, tmp / f"noisy-{epochs}", log=lambda _: None, splits=splits)
    model, _ = load_model(tmp / f"noisy-{epochs}" / "model.pt")
    name = f"noisy model, {epochs} full epochs"
    out = {name: {**scores(given_probability(model, splits, splits.mean, splits.std), splits.noisy),
                  "test_acc": summary["final_test_acc"], "seconds": round(time.perf_counter() - start),
                  "train_acc_on_given_labels": read_metrics(tmp / f"noisy-{epochs}")[-1]["train_acc"]},
           f"{name}, last layer refitted on the trusted set": {**scores(refit_head(model, splits), splits.noisy),
                                                                "test_acc": summary["final_test_acc"]}}
    tuned = C.validate(C.merge(base, {
        "train": {"epochs": args.tune_epochs, "eval_every": args.tune_epochs, "lr": 0.01},
        "model": {"init_from": str(tmp / f"noisy-{epochs}" / "model.pt")}}))
    start = time.perf_counter()
    trusted = Splits(splits.val, splits.val, splits.test, splits.num_classes, splits.mean, splits.std)
    summary = train_run(tuned, tmp / f"tuned-{epochs}", log=lambda _: None, splits=trusted)
    model, _ = load_model(tmp / f"tuned-{epochs}" / "model.pt")
    out[f"{name}, fine-tuned {args.tune_epochs} epochs on the trusted set"] = {
        **scores(given_probability(model, splits, splits.mean, splits.std), splits.noisy),
        "test_acc": summary["final_test_acc"], "seconds": round(time.perf_counter() - start)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--noise-kind", default="instance")
    p.add_argument("--label-noise", type=float, default=0.4)
    p.add_argument("--val-noise", type=float, default=0.08)
    p.add_argument("--trusted-epochs", type=int, default=30)
    p.add_argument("--noisy-epochs", type=int, nargs="+", default=[2, 6])
    p.add_argument("--tune-epochs", type=int, default=2, help="fine-tuning a noisy model on the trusted set")
    p.add_argument("--skip-trusted", action="store_true", help="only the noisy models and what is made of them")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    base = C.validate(C.merge(C.load_preset("cpu-long"), {
        "data": {"data_dir": args.data_dir, "noise_kind": args.noise_kind, "label_noise": args.label_noise,
                 "val_noise": args.val_noise},
        "selection": {"selector": "full"}, "runtime": {"threads": args.threads, "precision": "fp32"},
        "train": {"early_learning": 0.0},  # the models whose rankings are committed trained on cross-entropy
        "run": {"tracker": "none", "progress": "none"}}))
    splits = load_splits(base.data)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_trusted:
            results.update(trusted_model(args, base, splits, Path(tmp)))
            print(json.dumps(results, indent=1), flush=True)
        for epochs in args.noisy_epochs:
            results.update(noisy_models(args, base, splits, epochs, Path(tmp)))
            print(json.dumps(results, indent=1), flush=True)
    report = {"made_by": " ".join(sys.argv), "pool_wrong_share": float(splits.noisy.float().mean()),
              "rankings": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("| ranking | AUC | wrong in lowest 20% | wrong in lowest 40% | its test acc |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['auc']:.3f} | {100 * r['wrong_in_lowest_20%']:.1f}% | {100 * r['wrong_in_lowest_40%']:.1f}% "
              f"| {100 * r['test_acc']:.2f} |")


if __name__ == "__main__":
    main()

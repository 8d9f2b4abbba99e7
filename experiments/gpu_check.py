"""The standard job on one GPU: the gpu-marked tests, then epoch times at full data and at 30%, in one script.

    python experiments/gpu_check.py OUT                 # on a GPU machine: about 8 minutes on one H100
    python experiments/gpu_check.py OUT --device cpu --images 2000 --test-images 200 --width 8 --epochs 2 \
        --no-tests --no-compile

It needs nothing from the network and no dataset. It writes CIFAR-10's shape of generated images to `OUT/data`:
50,000 + 10,000 images of 32 x 32 x 3, seeded. Timings need no real pixels.

For each `--presets` entry (by default `base`, the CORDS-faithful batch 20; `gpu-fast`, batch 128; and
`gpu-fast@512`: a preset at another batch size, its learning rate scaled linearly) it trains ResNet-18 at `--width`
(64, the standard) for `--epochs` epochs, three runs:
- full data;
- the default (`filtered-random`) at 30%;
- `--selector glister` at 30% (its batched greedy on the GPU);
and, unless `--no-compile`, `gpu-fast`'s full-data run once more with `runtime.compile=true` (the first preset's if
`gpu-fast` is not among them), whose first epoch minus a later one is what `torch.compile` costs and whose later
epochs are what it saves.

A selection runs every epoch (`select_every 1`), so its cost is measured; the table also gives it amortized over
the standard schedule's 20 epochs. For each run it reports:
- images/s of training;
- the epoch time with selection included, as the median of the epochs after the first (compilation and warm-up);
- the selection time;
- the peak GPU memory;
- the 30% epoch as a share of the full one, and the same with the selection amortized over R = 20.
Then the evaluation pass (`glister_train.evaluate`) over the test images at each `--eval-batches` size, the
figure behind the evaluation batch a GPU run uses by default.

Everything goes to `OUT/gpu_check.json`, and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = (("full", "full", 1.0), ("filtered-random 30%", "filtered-random", 0.3), ("glister 30%", "glister", 0.3))


def make_data(folder: Path, images: int, test_images: int) -> Path:
    """CIFAR-10-shaped uint8 images and labels, seeded (written once, reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", images), ("test", test_images)):
        path = folder / f"{name}.npz"
        if not path.is_file():
            y = np.arange(n) % 10
            np.savez(path, x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y=y.astype(np.int64))
    return folder


def gpu_tests(device: str) -> dict:
    """The gpu-marked tests: their counts, and the summary line pytest closes on."""
    if device != "cuda":
        return {"skipped": "not on a GPU"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    return {"exit": done.returncode, "summary": last}


def batch_and_lr(entry: str) -> tuple[str, int, float]:
    """``gpu-fast`` -> (the preset, its batch size, its learning rate); ``gpu-fast@512`` -> the preset at batch 512,
    its learning rate scaled linearly."""
    from glister_train.config import load_preset

    preset, _, batch = entry.partition("@")
    train = load_preset(preset).train
    if not batch:
        return preset, train.batch_size, train.lr
    return preset, int(batch), train.lr * int(batch) / train.batch_size


def train(out: Path, data: Path, name: str, selector: str, fraction: float, entry: str, args: argparse.Namespace,
          compiled: bool = False) -> dict:
    preset, batch, lr = batch_and_lr(entry)
    run = out / "runs" / f"{name.replace(' ', '-').replace('%', '').replace(',', '')}-{entry.replace('@', '-b')}"
    cmd = [sys.executable, "-m", "glister_train", "--preset", preset, "--dataset", "npz", "--data-dir", str(data),
           "--batch-size", str(batch), "--lr", repr(lr),
           "--selector", selector, "--fraction", str(fraction), "--select-every", "1", "--epochs", str(args.epochs),
           "--device", args.device, "--set", f"model.width={args.width}", "--set", f"train.eval_every={args.epochs}",
           "--set", f"runtime.compile={str(compiled).lower()}", "--set", "run.progress=none",
           "--set", "run.tracker=local", "--out", str(run)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.run_timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"run": name, "preset": entry, "batch": batch, "error": (done.stderr.strip().splitlines() or ["?"])[-1],
                "wall_s": wall}
    from glister_train.tracking import read_metrics

    rows = read_metrics(run)
    timed = rows[1:] or rows  # the first epoch pays for warm-up
    epoch = statistics.median(r["epoch_time"] for r in timed)
    select = statistics.median(r["select_time"] for r in timed)
    images = statistics.median(r["subset_size"] / max(r["epoch_time"] - r["select_time"], 1e-9) for r in timed)
    return {"run": name, "preset": entry, "batch": batch, "lr": lr, "epoch_s": round(epoch, 3),
            "first_epoch_s": round(rows[0]["epoch_time"], 3), "select_s": round(select, 3),
            "train_s": round(epoch - select, 3), "images_per_s": round(images, 1),
            "gpu_peak_mb": max((r.get("gpu_peak_mb", 0.0) for r in rows), default=0.0),
            "subset": rows[-1]["subset_size"], "final_test_acc": rows[-1].get("test_acc"), "wall_s": round(wall, 1)}


def evaluation_speed(data: Path, args: argparse.Namespace) -> list[dict]:
    """Test images per second of the evaluation pass at each batch size, on an untrained standard network."""
    import torch

    from glister_train.config import RuntimeConfig
    from glister_train.data import _read_npz_file
    from glister_train.evaluate import evaluate
    from glister_train.models import build
    from glister_train.runtime import resolve_runtime

    runtime = resolve_runtime(RuntimeConfig(device=args.device))
    images = _read_npz_file(data / "test.npz").to(runtime.device)  # the loader's own reading of the dataset
    model = build({"name": "resnet18", "width": args.width, "num_classes": 10}).to(runtime.device)
    model = model.to(memory_format=runtime.memory_format)
    mean, std = torch.full((3,), 0.5, device=runtime.device), torch.full((3,), 0.25, device=runtime.device)
    rows = []
    for batch in args.eval_batches:
        evaluate(model, images, mean, std, runtime, batch)  # warm-up: kernels chosen, memory pooled
        start = time.perf_counter()
        evaluate(model, images, mean, std, runtime, batch)
        seconds = time.perf_counter() - start
        rows.append({"eval_batch": batch, "seconds": round(seconds, 3), "images_per_s": round(len(images) / seconds, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="where the data, runs and gpu_check.json go")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--test-images", type=int, default=10000)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--presets", nargs="+", default=["base", "gpu-fast", "gpu-fast@512"],
                   help="configs/ presets to time at their batch size and learning rate, or PRESET@BATCH: at another "
                        "batch size, the learning rate scaled linearly")
    p.add_argument("--eval-batches", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    p.add_argument("--run-timeout", type=float, default=240, help="seconds one run may take")
    p.add_argument("--no-tests", action="store_true", help="skip the gpu-marked tests")
    args = p.parse_args(argv)
    for flag, value in (("--images", args.images), ("--test-images", args.test_images), ("--width", args.width),
                        ("--epochs", args.epochs), *(("--eval-batches", b) for b in args.eval_batches)):
        if value < 1:
            p.error(f"{flag} {value} is invalid; it must be an integer >= 1")
    from glister_train.config import preset_names

    for entry in args.presets:
        preset, _, batch = entry.partition("@")
        if preset not in preset_names():
            p.error(f"--presets {entry}: {preset} is not a preset; available: {', '.join(preset_names())}")
        if batch and not (batch.isdigit() and int(batch) >= 1):
            p.error(f"--presets {entry}: the batch size after @ must be an integer >= 1, e.g. gpu-fast@512")
    args.out.mkdir(parents=True, exist_ok=True)
    data = make_data(args.out / "data", args.images, args.test_images)
    report = {"device": args.device, "images": args.images, "width": args.width, "epochs": args.epochs,
              "tests": {} if args.no_tests else gpu_tests(args.device), "runs": []}
    if args.device == "cuda":
        import torch

        report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible"
    plan = [(name, selector, fraction, preset, False) for preset in args.presets for name, selector, fraction in RUNS]
    if not args.no_compile:
        plan.append(("full, compiled", "full", 1.0, "gpu-fast" if "gpu-fast" in args.presets else args.presets[0], True))
    for name, selector, fraction, preset, compiled in plan:
        row = train(args.out, data, name, selector, fraction, preset, args, compiled)
        report["runs"].append(row)
        print(json.dumps(row), flush=True)
    report["evaluation"] = evaluation_speed(data, args)
    full = {r["preset"]: r for r in report["runs"] if r["run"] == "full" and "error" not in r}
    for r in report["runs"]:
        base = full.get(r["preset"])
        if base and "error" not in r and r["run"] not in ("full", "full, compiled"):
            r["of_full_epoch"] = round(r["epoch_s"] / base["epoch_s"], 3)
            r["of_full_epoch_r20"] = round((r["train_s"] + r["select_s"] / 20) / base["epoch_s"], 3)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{report.get('gpu', args.device)}, width {args.width}, {args.images} images, tests: "
          f"{report['tests'].get('summary', report['tests'].get('skipped', 'not run'))}")
    print("| run | preset (batch) | epoch s | first epoch s | selection s | images/s | peak GPU MB | of full epoch "
          "| at R = 20 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        if "error" in r:
            print(f"| {r['run']} | {r['preset']} ({r['batch']}) | failed: {r['error']} ||||||")
            continue
        print(f"| {r['run']} | {r['preset']} ({r['batch']}) | {r['epoch_s']:.2f} | {r['first_epoch_s']:.2f} | "
              f"{r['select_s']:.2f} | {r['images_per_s']:.0f} | {r['gpu_peak_mb']:.0f} | "
              f"{r.get('of_full_epoch', 1.0):.3f} | {r.get('of_full_epoch_r20', 1.0):.3f} |")
    print("\n| evaluation batch | seconds for the test images | images/s |\n|---|---|---|")
    for r in report["evaluation"]:
        print(f"| {r['eval_batch']} | {r['seconds']:.3f} | {r['images_per_s']:.0f} |")
    failed = [r for r in report["runs"] if "error" in r]
    return 1 if failed or report["tests"].get("exit", 0) not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glister_train import config as C
from glister_train.data import load_splits
from glister_train.errors import CheckpointError, TrainingDiverged
from glister_train.models import load_model
from glister_train.run import train_run
from glister_train.tracking import MemoryTracker, read_metrics
from glister_train.train import fit, setup

from .conftest import tiny_config

# Recorded from this code on torch 2.14 (CPU, 1 thread, fp32): a change in the loop, the data
# path, the loss or the seeding shows up here first.
GOLDEN_TRAIN_LOSS = [1.3548560, 1.2439389]


def quiet(_line: str) -> None:
    pass


def test_two_epochs_match_golden_losses(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir)
    tracker = MemoryTracker()
    fit(cfg, load_splits(cfg.data), tmp_path, tracker, log=quiet)
    losses = [m["train_loss"] for _, m in tracker.metrics]
    assert losses == pytest.approx(GOLDEN_TRAIN_LOSS, rel=1e-5, abs=1e-6)
    steps = [step for step, _ in tracker.metrics]
    assert steps == [1, 2]
    first = tracker.metrics[0][1]
    for key in ("train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "epoch_time", "select_time", "subset_size"):
        assert key in first
    assert first["subset_size"] == 90  # half of the 180 training images


def test_run_folder_contents(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir)
    run = tmp_path / "run"
    summary = train_run(cfg, run, log=quiet)
    assert summary["status"] == "completed"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "params.json", "metrics.jsonl", "summary.json",
                                               "model.pt", "checkpoint.pt"}
    assert C.load_file(run / "config.yaml") == cfg
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["epochs_done"] == 2
    assert on_disk["final_test_acc"] == read_metrics(run)[-1]["test_acc"]
    model, arch = load_model(run / "model.pt")
    assert arch == {"name": "tiny", "num_classes": 4, "width": 4, "in_channels": 3}
    assert model(torch.zeros(1, 3, 12, 12)).shape == (1, 4)


SOFT_REDRAW = {"selector": "glister", "sampling": "soft", "select_every": 2}
FROM_TRAINING = {"selector": "filtered-random", "select_every": 2}
# its trusted model's losses, the training pass's records and the cache all have to survive the interruption
REDUCIBLE = {"selector": "reducible-loss", "select_every": 2, "trusted_epochs": 2}


MATCHED_WARM = {"select_every": 2, "kappa": 0.6, "kappa_matched": True}  # 5 epochs: 0-1 full, 2 skipped, then 0.5


@pytest.mark.parametrize("selection", [{"select_every": 2}, SOFT_REDRAW, FROM_TRAINING, MATCHED_WARM, REDUCIBLE],
                         ids=["adaptive-random", "glister-soft-redraw", "filtered-random", "matched-warm-start",
                              "reducible-loss"])
def test_resume_after_interruption_matches_an_uninterrupted_run(npz_dir: Path, tmp_path: Path, selection):
    cfg = tiny_config(npz_dir, train={"epochs": 5}, selection=selection)
    full = train_run(cfg, tmp_path / "full", log=quiet)

    # stop after epoch 2: run 2 epochs of the same config, then mark the folder as killed mid-run
    part = tmp_path / "part"
    _interrupt_after(cfg, part, epochs=3)
    resumed = train_run(cfg, part, resume=True, log=quiet)
    assert resumed["status"] == "completed"
    assert [m.get("train_loss") for m in read_metrics(part)] == [m.get("train_loss") for m in read_metrics(tmp_path / "full")]
    assert resumed["final_test_acc"] == full["final_test_acc"]
    a, _ = load_model(tmp_path / "full" / "model.pt")
    b, _ = load_model(part / "model.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _interrupt_after(cfg: C.Config, run: Path, epochs: int) -> None:
    """Train ``epochs`` epochs of ``cfg`` and stop as a kill would: KeyboardInterrupt from the log."""
    lines = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith(f"epoch={epochs + 1} "):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, run, log=log)
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir, train={"epochs": 6, "lr": 1e6}, runtime={"precision": "fp32"})
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at epoch \d+, step \d+") as info:
        train_run(cfg, run, log=quiet)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["diverged_at"]["epoch"] == info.value.epoch
    assert not (run / "model.pt").exists()
    if info.value.epoch > 1:  # the checkpoint holds the last epoch that finished
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        assert state["totals"]["epochs_done"] == info.value.epoch - 1


def test_corrupt_checkpoint_is_a_clear_error_and_leaves_the_folder_alone(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir)
    run = tmp_path / "run"
    train_run(cfg, run, log=quiet)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    before = (run / "summary.json").read_text()
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        train_run(cfg, run, resume=True, log=quiet)
    assert (run / "summary.json").read_text() == before


def test_resume_refuses_a_changed_config(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir)
    train_run(cfg, tmp_path / "run", log=quiet)
    with pytest.raises(Exception, match=r"selection.fraction: 0.5 -> 0.3"):
        train_run(C.merge(cfg, {"selection": {"fraction": 0.3}}), tmp_path / "run", resume=True, log=quiet)
    with pytest.raises(Exception, match="already holds a run"):
        train_run(cfg, tmp_path / "run", log=quiet)


def test_weights_reach_the_loss(npz_dir: Path, tmp_path: Path):
    """A selector that zeroes half the weights trains exactly like one that drops those examples' loss."""
    from glister_train.loader import AdaptiveSubsetLoader
    from glister_train.models import TinyNet
    from glister_train.runtime import resolve_runtime
    from glister_train.selection import Selection
    from glister_train.train import train_epoch

    cfg = tiny_config(npz_dir)
    splits = load_splits(cfg.data)
    rt = resolve_runtime(cfg.runtime)

    def one_epoch(weights: torch.Tensor) -> float:
        torch.manual_seed(0)
        model = TinyNet(4, 4)
        loader = AdaptiveSubsetLoader(splits.train, splits.val, None, fraction=1.0, epochs=1, select_every=1,
                                      kappa=0.0, batch_size=1000, mean=splits.mean, std=splits.std, augment=False)
        loader.selection = Selection(torch.arange(len(splits.train)), weights)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss, _ = train_epoch(model, loader, opt, rt, 0, False)
        return loss

    n = len(splits.train)
    w = torch.ones(n)
    doubled = one_epoch(2 * w)
    assert doubled == pytest.approx(one_epoch(w), rel=1e-6)  # weights are normalized per batch
    half = torch.where(splits.train.y == 0, torch.tensor(3.0), torch.tensor(1.0))
    assert one_epoch(half) != pytest.approx(one_epoch(w), rel=1e-4)


def test_label_noise_is_what_the_loss_sees_and_selections_measure_it(npz_dir: Path, tmp_path: Path):
    from glister_train.data import normalize
    from glister_train.runtime import resolve_runtime
    from glister_train.train import make_loader

    cfg = tiny_config(npz_dir, data={"label_noise": 0.3, "val_noise": 0.1, "augment": False},
                      selection={"selector": "glister"})
    splits = load_splits(cfg.data)
    assert splits.noisy.any() and int(splits.val_noisy.sum()) == round(0.1 * len(splits.val))
    # each image the loader yields carries its noisy label, never the true one
    images = normalize(splits.train.x, splits.mean, splits.std)
    index = {images[i].numpy().tobytes(): i for i in range(len(images))}
    loader = make_loader(cfg, splits, resolve_runtime(cfg.runtime))
    for batch in loader:
        for x, y in zip(batch.x, batch.y):
            assert int(y) == int(splits.train.y[index[x.numpy().tobytes()]])
    summary = train_run(cfg, tmp_path / "run", log=quiet)
    assert summary["label_noise"]["wrong"] == int(splits.noisy.sum())
    assert summary["validation_label_noise"] == {"kind": "symmetric", "rate": 0.1, "seed": 0, "wrong": 2, "of": 20,
                                                 "share": pytest.approx(0.1)}
    rows = read_metrics(tmp_path / "run")
    shares = [r["select_noisy_share"] for r in rows if "select_noisy_share" in r]
    assert len(shares) == 2 and all(0 <= s <= 1 for s in shares)
    # the random first subset holds about the pool's share (the noise has its own stream: with seed 0 for both
    # it once drew exactly the flipped examples)
    assert abs(shares[0] - float(splits.noisy.float().mean())) < 0.15
    assert rows[0]["select_pool_noisy_share"] == pytest.approx(float(splits.noisy.float().mean()))


def test_a_matched_warm_start_skips_epochs_but_keeps_the_learning_rate_schedule(npz_dir: Path, tmp_path: Path):
    matched = tiny_config(npz_dir, train={"epochs": 5}, selection=MATCHED_WARM)
    train_run(matched, tmp_path / "matched", log=quiet)
    extra = tiny_config(npz_dir, train={"epochs": 5}, selection={**MATCHED_WARM, "kappa_matched": False})
    train_run(extra, tmp_path / "extra", log=quiet)
    rows, rows_extra = read_metrics(tmp_path / "matched"), read_metrics(tmp_path / "extra")
    assert [r["subset_size"] for r in rows] == [180, 180, 0, 90, 90]  # ceil(0.6 * 5 * 0.5) = 2 full epochs
    assert [r["subset_size"] for r in rows_extra] == [180, 180, 180, 90, 90]
    assert [r["lr"] for r in rows] == pytest.approx([r["lr"] for r in rows_extra])
    skipped = rows[2]
    assert skipped["skipped"] == 1 and skipped["epoch_time"] == 0 and "train_loss" not in skipped
    assert rows[0]["train_loss"] == pytest.approx(rows_extra[0]["train_loss"])  # the same warm start up to there


def test_soft_glister_redraws_every_epoch_and_scores_every_r(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir, train={"epochs": 5}, selection=SOFT_REDRAW)
    train_run(cfg, tmp_path / "run", log=quiet)
    rows = read_metrics(tmp_path / "run")
    # epoch 1 random (untrained model), 2 a fresh random draw (no scores yet), 3 and 5 scored, 4 redrawn
    assert ["select_objective" in r for r in rows] == [False, False, True, False, True]
    assert all("select_overlap" in r for r in rows[1:])
    assert "select_forward_time" not in rows[3] and rows[3]["select_time"] < rows[2]["select_time"]


def test_the_default_reads_the_training_pass_and_runs_only_small_passes(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir, train={"epochs": 5}, selection=FROM_TRAINING)
    train_run(cfg, tmp_path / "run", log=quiet)
    rows = read_metrics(tmp_path / "run")
    scored = [r for r in rows if "select_forward_time" in r]
    assert [r["epoch"] for r in scored] == [3, 5] and all("select_overlap" in r for r in rows[1:])
    seen = [r["select_seen_share"] for r in rows if "select_seen_share" in r]
    assert seen == sorted(seen) and 0.5 <= seen[0] < seen[-1] <= 1.0  # fraction 0.5: half are seen per epoch
    # the only forward pass is the validation set's (a quarter of the pool here)
    assert all(r["subset_size"] == rows[0]["subset_size"] for r in rows)


@pytest.mark.parametrize("selection", [SOFT_REDRAW, FROM_TRAINING], ids=["glister-soft", "filtered-random"])
def test_a_selection_reads_the_validation_features_the_evaluation_just_computed(npz_dir: Path, tmp_path: Path,
                                                                               selection):
    # evaluating every epoch, each scored selection finds the validation features of the same weights ready;
    # evaluating only at the end, it runs the validation pass itself: the same subsets either way
    reused = train_run(tiny_config(npz_dir, train={"epochs": 5, "eval_every": 1}, selection=selection),
                       tmp_path / "reused", log=quiet)
    own = train_run(tiny_config(npz_dir, train={"epochs": 5, "eval_every": 5}, selection=selection),
                    tmp_path / "own", log=quiet)
    rows, own_rows = read_metrics(tmp_path / "reused"), read_metrics(tmp_path / "own")
    assert [r.get("select_val_reused") for r in rows] == [None, None, 1.0, None, 1.0]
    assert [r.get("select_val_reused") for r in own_rows] == [None, None, 0.0, None, 0.0]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in own_rows]
    assert reused["final_test_acc"] == own["final_test_acc"]


def test_a_full_data_run_records_the_fraction_it_trained_on(npz_dir: Path, tmp_path: Path):
    cfg = tiny_config(npz_dir, selection={"selector": "full", "fraction": 0.1}, train={"epochs": 1})
    summary = train_run(cfg, tmp_path / "run", log=quiet)
    assert summary["fraction"] == 1.0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["fraction"] == 1.0


def test_full_data_on_a_subset_runs_budget_is_a_whole_shorter_schedule(npz_dir: Path, tmp_path: Path):
    """budget_fraction 0.5 of 6 epochs trains exactly what a 3-epoch run does, its cosine schedule ending at 0."""
    budget = tiny_config(npz_dir, selection={"selector": "full"}, train={"epochs": 6, "budget_fraction": 0.5})
    summary = train_run(budget, tmp_path / "budget", log=quiet)
    short = tiny_config(npz_dir, selection={"selector": "full"}, train={"epochs": 3})
    train_run(short, tmp_path / "short", log=quiet)
    rows, rows_short = read_metrics(tmp_path / "budget"), read_metrics(tmp_path / "short")
    assert summary["epochs"] == 3 and len(rows) == 3
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in rows_short]
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12) and rows[-1]["test_acc"] == rows_short[-1]["test_acc"]


def test_summary_records_provenance(npz_dir: Path, tmp_path: Path):
    import torch as _torch

    train_run(tiny_config(npz_dir), tmp_path / "run", log=quiet)
    prov = json.loads((tmp_path / "run" / "summary.json").read_text())["provenance"]
    assert prov["torch"] == _torch.__version__ and prov["device"] == "cpu" and prov["python"]
    assert "git_commit" in prov and "glister_train" in prov and prov["cpu"]  # the model name, from /proc/cpuinfo


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_glister_trains_on_a_gpu(npz_dir: Path, tmp_path: Path):
    """The device switch: the same run on CUDA (data gathered on the GPU, bf16 autocast where supported)."""
    cfg = tiny_config(npz_dir, runtime={"device": "cuda", "precision": "auto"},
                      selection={"selector": "glister", "fraction": 0.5, "select_every": 1})
    summary = train_run(cfg, tmp_path / "gpu", log=lambda _: None)
    assert summary["status"] == "completed" and summary["provenance"]["device"].startswith("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_default_with_early_learning_trains_on_a_gpu(npz_dir: Path, tmp_path: Path):
    """The default watching the training pass on the GPU (its records stay there) with the early-learning targets
    there too, under bf16 autocast where supported: the targets reach the checkpoint, finite and visited."""
    cfg = tiny_config(npz_dir, runtime={"device": "cuda", "precision": "auto"}, train={"early_learning": 1.0},
                      selection={"selector": "filtered-random", "fraction": 0.5, "select_every": 1})
    summary = train_run(cfg, tmp_path / "gpu", log=lambda _: None)
    assert summary["status"] == "completed" and summary["provenance"]["device"].startswith("cuda")
    targets = torch.load(tmp_path / "gpu" / "checkpoint.pt", weights_only=True)["early_learning"]["targets"]
    assert torch.isfinite(targets).all() and (targets.sum(1) > 0).any()


def test_the_default_ranks_its_own_pass_where_the_loop_cannot_show_it_training(npz_dir: Path, tmp_path: Path):
    """Under torch.compile (as under torchrun) the hook on the last layer does not run: the default then runs the
    pool through the model at each selection instead of watching the training pass, and still trains."""
    from glister_train.runtime import resolve_runtime
    from glister_train.train import selector_for

    splits = load_splits(tiny_config(npz_dir).data)
    eager = tiny_config(npz_dir, selection={"selector": "filtered-random"})
    assert selector_for(eager, splits, resolve_runtime(eager.runtime)).observes_training
    compiled = tiny_config(npz_dir, selection={"selector": "filtered-random"}, runtime={"compile": True})
    assert not selector_for(compiled, splits, resolve_runtime(compiled.runtime)).observes_training


def test_a_subset_smaller_than_one_batch_is_said(npz_dir: Path, tmp_path: Path):
    lines = []
    train_run(tiny_config(npz_dir, selection={"fraction": 1e-6}, train={"epochs": 1}), tmp_path / "run",
              log=lines.append)
    assert any("the subset is 1 image(s), less than one batch of 16" in line for line in lines)


def count_host_reads(monkeypatch) -> dict[str, int]:
    """Counts every read of a tensor's value by the host (each a device synchronisation on an accelerator)."""
    reads = {"n": 0}
    for name in ("__bool__", "item", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original):
            reads["n"] += 1
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_on_an_accelerator_the_step_never_waits_for_the_host(npz_dir: Path, tmp_path: Path, monkeypatch):
    """Where each step's loss is not checked on the host (a GPU), an epoch reads device values a fixed number of
    times, however many steps it has: no .item() or bool() per step. Run here on the CPU with that mode forced."""
    import glister_train.train as train_module
    from glister_train.runtime import resolve_runtime
    from glister_train.train import train_epoch

    monkeypatch.setattr(train_module, "checks_each_step", lambda rt: False)
    reads = count_host_reads(monkeypatch)
    counts = {}
    for batch_size in (32, 8):  # 3 steps, then 12
        cfg = tiny_config(npz_dir, train={"batch_size": batch_size})
        state = setup(cfg, load_splits(cfg.data), log=quiet)
        state.loader.reselect_if_due(0, state.model)
        reads["n"] = 0
        train_epoch(state.model, state.loader, state.opt, resolve_runtime(cfg.runtime), 0, False)
        counts[len(state.loader)] = reads["n"]
    assert len(set(counts.values())) == 1, counts  # the same reads for 3 steps as for 12


def test_evaluation_reads_the_device_once_however_many_batches(npz_dir: Path, monkeypatch):
    from glister_train.evaluate import evaluate
    from glister_train.runtime import resolve_runtime

    cfg = tiny_config(npz_dir)
    splits = load_splits(cfg.data)
    rt = resolve_runtime(cfg.runtime)
    model = setup(cfg, splits, log=quiet).model
    results, reads = {}, count_host_reads(monkeypatch)
    for batch in (len(splits.test), 7):
        reads["n"] = 0
        results[batch] = evaluate(model, splits.test, splits.mean, splits.std, rt, batch)
        results[batch] = (*results[batch], reads["n"])
    big, small = results.values()
    assert big[2] == small[2] == 2  # the loss and the accuracy, once each
    assert big[1] == small[1] and big[0] == pytest.approx(small[0], rel=1e-5)


def test_on_an_accelerator_a_nan_still_stops_training_naming_the_first_bad_step(npz_dir: Path, tmp_path: Path,
                                                                                monkeypatch):
    import glister_train.train as train_module

    monkeypatch.setattr(train_module, "checks_each_step", lambda rt: False)
    cfg = tiny_config(npz_dir, train={"epochs": 6, "lr": 1e6}, runtime={"precision": "fp32"})
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch \d+, step \d+") as deferred:
        train_run(cfg, tmp_path / "deferred", log=quiet)
    monkeypatch.setattr(train_module, "checks_each_step", lambda rt: True)
    with pytest.raises(TrainingDiverged) as checked:
        train_run(cfg, tmp_path / "checked", log=quiet)
    assert (deferred.value.epoch, deferred.value.step) == (checked.value.epoch, checked.value.step)
    assert json.loads((tmp_path / "deferred" / "summary.json").read_text())["status"] == "failed"

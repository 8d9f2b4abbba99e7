"""Tensor capture, filter ranking, structural pruning, and the prune command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from glister_train.cli import main
from glister_train.data import ImageData
from glister_train.models import ResNet18, TinyNet, build, conv_widths, load_model, save_model
from glister_train.prune.capture import FilterStats, capture_pass, load_capture
from glister_train.run import train_run
from glister_train.runtime import Runtime

from .conftest import tiny_config

tp = pytest.importorskip("torch_pruning")

from glister_train.prune.ranking import (  # noqa: E402  (needs torch-pruning)
    MAX_LAYER_RATIO,
    CapturedImportance,
    count_macs_params,
    filter_scores,
    plan_removals,
    prune_once,
    pruned_arch,
    ratio_for,
    reestimate_batchnorm,
    step_ratios,
)

FP32 = Runtime(torch.device("cpu"), "fp32", False, 1)


def quiet(_line: str) -> None:
    pass


def stop_training_in_epoch(monkeypatch, epoch: int) -> None:
    """The ``epoch``-th call of ``train_epoch`` raises KeyboardInterrupt (Ctrl-C mid-run); ``monkeypatch.undo()`` ends it."""
    from glister_train import train as train_module

    real, calls = train_module.train_epoch, {"n": 0}

    def stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", stop)


def tiny_batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


# ---------------------------------------------------------------- criteria


def test_criteria_match_hand_computation():
    torch.manual_seed(0)
    model = TinyNet(num_classes=4, width=3)
    x, y = tiny_batch()
    with FilterStats(model) as stats:
        F.cross_entropy(model(x), y).backward()
    result = stats.result()["filters"]

    # by hand, one example at a time, each with its own loss: no batch-size scaling to get wrong
    taylor, zeros = torch.zeros(3), torch.zeros(3)
    for i in range(len(x)):
        a = F.relu(model.conv1(x[i : i + 1]))
        a.retain_grad()
        out = model.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(model.conv2(a)), 1), 1))
        F.cross_entropy(out, y[i : i + 1]).backward()
        for c in range(3):
            taylor[c] += abs(float((a[0, c] * a.grad[0, c]).mean().detach())) / len(x)
            zeros[c] += float((a[0, c] == 0).sum()) / a[0, c].numel() / len(x)
    w = model.conv1.weight.detach()
    assert result["conv1"]["taylor"] == pytest.approx(taylor.tolist(), rel=1e-4, abs=1e-9)
    assert result["conv1"]["apoz"] == pytest.approx(zeros.tolist(), abs=1e-6)
    assert result["conv1"]["l1"].tolist() == pytest.approx([float(w[c].abs().sum()) for c in range(3)], rel=1e-6)
    assert result["conv1"]["l2"].tolist() == pytest.approx([float(w[c].norm()) for c in range(3)], rel=1e-6)
    assert torch.all(result["conv1"]["taylor"] > 0)


def test_capture_records_diagnostics_and_detaches():
    model = TinyNet(num_classes=4, width=3)
    x, y = tiny_batch()
    stats = FilterStats(model).attach()
    for _ in range(2):
        F.cross_entropy(model(x), y).backward()
    stats.detach()
    model(x)  # not counted
    result = stats.result()
    assert result["batches"] == 2 and result["examples"] == 12
    assert len(result["layers"]["relu1"]["act_rms"]) == 2 and len(result["layers"]["relu1"]["grad_rms"]) == 2
    assert len(result["layers"]["conv2"]["weight_grad_norm"]) == 2
    assert all(v > 0 for v in result["layers"]["conv2"]["weight_grad_norm"])


def test_capture_pass_leaves_the_model_untouched(tmp_path: Path):
    model = ResNet18(num_classes=4, width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = ImageData(torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8), torch.arange(40) % 4)
    result = capture_pass(model, data, torch.zeros(3), torch.ones(3) * 255, FP32, batches=2, batch_size=16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics included
    assert set(result["filters"]) == set(conv_widths(model))
    assert result["batches"] == 2 and result["examples"] == 32
    torch.save(result, tmp_path / "c.pt")
    assert load_capture(tmp_path / "c.pt")["filters"]["layer2.0.shortcut.0"]["taylor"].shape == (8,)


def test_scores_are_normalized_per_layer():
    capture = {"source": "t", "filters": {"a": {"taylor": torch.tensor([3.0, 4.0]), "apoz": torch.tensor([0.25, 1.0])}}}
    assert filter_scores(capture, "taylor")["a"].tolist() == pytest.approx([0.6, 0.8])
    assert filter_scores(capture, "apoz")["a"].tolist() == pytest.approx([0.75, 0.0])
    with pytest.raises(Exception, match="no 'l1'"):
        filter_scores(capture, "l1")


# ---------------------------------------------------------------- pruning


def prune(model, amount, scope="layer", criterion="l1", target="filters", steps=1):
    scores = filter_scores(FilterStats(model).result(), criterion)
    importance = CapturedImportance(model, scores)
    ratio = ratio_for(model, importance, target, amount, scope)
    for step_ratio in step_ratios(ratio, steps):
        importance.scores = filter_scores(FilterStats(model).result(), criterion)
        prune_once(model, importance, step_ratio, scope)
    return model


def test_kept_filters_keep_their_weights():
    torch.manual_seed(0)
    model = TinyNet(num_classes=4, width=4)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    kept1 = torch.sort(torch.topk(original["conv1.weight"].abs().flatten(1).sum(1), 2).indices).values
    kept2 = torch.sort(torch.topk(original["conv2.weight"].abs().flatten(1).sum(1), 4).indices).values
    prune(model, 0.5)
    assert torch.equal(model.conv1.weight, original["conv1.weight"][kept1])
    assert torch.equal(model.conv1.bias, original["conv1.bias"][kept1])
    assert torch.equal(model.conv2.weight, original["conv2.weight"][kept2][:, kept1])
    assert torch.equal(model.fc.weight, original["fc.weight"][:, kept2])


def test_pruned_resnet_runs_with_the_requested_reduction():
    torch.manual_seed(0)
    model = ResNet18(num_classes=10, width=8)
    stem = model.conv1.weight.detach().clone()
    widths = conv_widths(model)
    prune(model, 0.5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert conv_widths(model) == {k: v // 2 for k, v in widths.items()}
    # the stem keeps its input channels: every kept filter is one of the originals, unchanged
    for row in model.conv1.weight.detach():
        assert any(torch.equal(row, original) for original in stem)


def test_macs_and_params_targets_are_reached():
    for target, index in (("macs", 0), ("params", 1)):
        model = ResNet18(num_classes=10, width=8)
        before = count_macs_params(model)[index]
        prune(model, 0.4, target=target)
        reduction = 1 - count_macs_params(model)[index] / before
        assert 0.4 <= reduction < 0.5, (target, reduction)


def test_an_unreachable_target_is_refused():
    from glister_train.errors import UsageError

    with pytest.raises(UsageError, match="--amount 0.999 of the params cannot be removed with --scope layer"):
        prune(ResNet18(num_classes=10, width=8), 0.999, target="params")


def test_global_ranking_never_empties_a_layer():
    torch.manual_seed(0)
    model = ResNet18(num_classes=10, width=8)
    scores = filter_scores(FilterStats(model).result(), "l1")
    scores["layer3.0.conv1"] = torch.zeros(32)  # a dead layer: every filter ranks last
    widths = conv_widths(model)
    importance = CapturedImportance(model, scores)
    prune_once(model, importance, 0.5, "global")
    after = conv_widths(model)
    assert after["layer3.0.conv1"] == 4  # 10% of 32, rounded up
    assert all(after[k] >= widths[k] * (1 - MAX_LAYER_RATIO) for k in widths)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_removal_plans():
    scores = [torch.tensor([0.5, 0.1, 0.9, 0.3]), torch.tensor([0.2, 0.8, 0.05, 0.6, 0.7, 0.4, 0.35, 0.9, 0.1, 0.15])]
    assert plan_removals(scores, 0.5, "layer") == [[1, 3], [0, 2, 6, 8, 9]]
    assert plan_removals(scores, 0.75, "global") == [[0, 1, 3], [0, 2, 3, 5, 6, 8, 9]]
    # global: the 7 lowest of 14 overall, but no group below 10% of its channels (here: 1 of 4)
    assert plan_removals([torch.zeros(4), torch.ones(10)], 0.5, "global") == [[0, 1, 2], [0, 1, 2, 3]]
    assert plan_removals(scores, 0.5, "layer", round_to=4) == [[], [2, 8]]
    assert step_ratios(0.5, 2) == pytest.approx([0.25, 1 / 3])


def test_batchnorm_statistics_are_re_estimated_from_the_data():
    torch.manual_seed(0)
    model = ResNet18(num_classes=4, width=4).eval()
    data = ImageData(torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8), torch.arange(16) % 4)
    mean, std = torch.full((3,), 0.4), torch.full((3,), 0.2)
    assert reestimate_batchnorm(model, data, mean, std, FP32, batches=1, batch_size=16)
    x = (data.x.float() / 255 - 0.4) / 0.2
    conv = model.conv1(x).detach()
    assert torch.allclose(model.bn1.running_mean, conv.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(model.bn1.running_var, conv.var(dim=(0, 2, 3)), rtol=1e-4)  # unbiased, as BatchNorm keeps it
    assert model.bn1.momentum == 0.1 and not model.training
    assert not reestimate_batchnorm(TinyNet(num_classes=4, width=2), data, mean, std, FP32, batches=1)


def test_iterative_pruning_reaches_the_same_widths():
    model = ResNet18(num_classes=10, width=8)
    widths = conv_widths(model)
    prune(model, 0.5, steps=2)
    assert conv_widths(model) == {k: v // 2 for k, v in widths.items()}


def test_pruned_model_round_trips_without_torch_pruning(tmp_path: Path):
    model = prune(ResNet18(num_classes=10, width=8).eval(), 0.3)
    arch = pruned_arch(model, {"name": "resnet18", "num_classes": 10, "width": 8, "in_channels": 3})
    save_model(tmp_path / "m.pt", model, arch)
    loaded, loaded_arch = load_model(tmp_path / "m.pt")
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(loaded.eval()(x), model(x))
    assert conv_widths(loaded) == conv_widths(model) and loaded_arch == json.loads(json.dumps(arch))
    with pytest.raises(ValueError, match="no conv layer named bogus"):
        build({**arch, "channels": {"bogus": 3}})
    with pytest.raises(ValueError, match="shortcut"):
        build({**arch, "channels": {"layer2.0.shortcut.0": 3}})


# ---------------------------------------------------------------- training capture and the command


def test_training_captures_the_last_epochs_and_survives_resume(npz_dir: Path, tmp_path: Path, monkeypatch):
    cfg = tiny_config(npz_dir, train={"epochs": 3, "capture_epochs": 2})
    train_run(cfg, tmp_path / "once", log=quiet)
    once = load_capture(tmp_path / "once" / "capture.pt")
    assert once["source"] == "training epochs 2-3"
    assert len(once["layers"]["conv1"]["weight_grad_norm"]) == once["batches"] == 2 * 6  # 90 images, batch 16

    interrupted = tiny_config(npz_dir, train={"epochs": 3, "capture_epochs": 2}, run={"out": str(tmp_path / "r")})
    stop_training_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_run(interrupted, tmp_path / "r", log=quiet)
    monkeypatch.undo()
    train_run(interrupted, tmp_path / "r", resume=True, log=quiet)
    resumed = load_capture(tmp_path / "r" / "capture.pt")
    assert resumed["batches"] == once["batches"]
    for conv, stats in once["filters"].items():
        assert torch.allclose(resumed["filters"][conv]["taylor"], stats["taylor"], rtol=1e-5)


@pytest.mark.slow
def test_prune_command_end_to_end(npz_dir: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    train_run(tiny_config(npz_dir, train={"epochs": 2, "capture_epochs": 1}), run, log=quiet)
    out = tmp_path / "pruned"
    code = main(["prune", "--run", str(run), "--criterion", "taylor", "--amount", "0.5", "--finetune-epochs", "1",
                 "--selector", "glister", "--fraction", "0.5", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "statistics: " + str(run / "capture.pt") in text  # the training-time capture was used
    for stage in ("before pruning", "after pruning", "after fine-tuning"):
        assert stage in text
    report = json.loads((out / "prune_report.json").read_text())
    assert [r["stage"] for r in report["rows"]] == ["before pruning", "after pruning", "after fine-tuning"]
    before, pruned, tuned = report["rows"]
    assert pruned["params"] < before["params"] and pruned["macs"] < before["macs"] and tuned["params"] == pruned["params"]
    for row in report["rows"]:
        assert row["latency_b1_ms"] > 0 and row["latency_b64_ms"] > 0 and 0 <= row["test_acc"] <= 1
    assert report["widths_after"] == {"conv1": 2, "conv2": 4}
    model, arch = load_model(out / "model.pt")
    assert arch["channels"] == {"conv1": 2, "conv2": 4} and model(torch.zeros(1, 3, 12, 12)).shape == (1, 4)
    summary = json.loads((out / "finetune" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["parent"]["run"] == str(run)
    assert summary["selector"] == "glister"
    params = json.loads((out / "finetune" / "params.json").read_text())
    assert params["parent.criterion"] == "taylor"

    # chained: prune the pruned model again, re-initialized and trained from scratch
    again = tmp_path / "again"
    assert main(["prune", "--run", str(out / "finetune"), "--criterion", "apoz", "--amount", "0.5", "--scratch",
                 "--finetune-epochs", "1", "--out", str(again)]) == 0
    assert [r["stage"] for r in json.loads((again / "prune_report.json").read_text())["rows"]][-1] == "trained from scratch"
    assert conv_widths(load_model(again / "model.pt")[0]) == {"conv1": 1, "conv2": 2}


def test_prune_is_a_plain_function(npz_dir: Path, tmp_path: Path):
    """prune(model, arch, splits, cfg, options, out) -> (model, report): what the command wraps."""
    from glister_train.config import load_file
    from glister_train.data import load_splits
    from glister_train.errors import UsageError
    from glister_train.prune.stage import PruneOptions, prune

    run = tmp_path / "run"
    train_run(tiny_config(npz_dir, train={"epochs": 1}), run, log=quiet)
    cfg = load_file(run / "config.yaml")
    model, arch = load_model(run / "model.pt")
    pruned, report = prune(model, arch, load_splits(cfg.data), cfg, PruneOptions(criterion="l1", amount=0.5),
                           tmp_path / "out", log=quiet)
    assert conv_widths(pruned) == report["widths_after"] == {"conv1": 2, "conv2": 4}
    assert [r["stage"] for r in report["rows"]] == ["before pruning", "after pruning"]
    assert json.loads((tmp_path / "out" / "prune_report.json").read_text())["options"]["criterion"] == "l1"
    with pytest.raises(UsageError, match="--round-to 0"):
        PruneOptions(round_to=0)


@pytest.mark.slow
def test_iterative_pruning_from_the_command_line(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    train_run(tiny_config(npz_dir, train={"epochs": 1}), run, log=quiet)
    out = tmp_path / "steps"
    assert main(["prune", "--run", str(run), "--criterion", "l1", "--amount", "0.5", "--steps", "2",
                 "--finetune-epochs", "1", "--out", str(out)]) == 0
    assert (out / "finetune-1" / "model.pt").is_file() and (out / "finetune-2" / "model.pt").is_file()
    assert json.loads((out / "prune_report.json").read_text())["widths_after"] == {"conv1": 2, "conv2": 4}
    assert conv_widths(load_model(out / "finetune-1" / "model.pt")[0]) == {"conv1": 3, "conv2": 6}


@pytest.mark.slow
def test_an_interrupted_fine_tune_resumes_from_its_own_folder(npz_dir: Path, tmp_path: Path, monkeypatch):
    """The fine-tune folder describes its run fully (the pruned model through model.init_from), so
    ``--resume --out OUT/finetune`` rebuilds the pruned widths and ends where an uninterrupted prune ends."""
    run = tmp_path / "run"
    train_run(tiny_config(npz_dir, train={"epochs": 1}), run, log=quiet)
    argv = ["prune", "--run", str(run), "--criterion", "l1", "--amount", "0.5", "--finetune-epochs", "3",
            "--selector", "glister", "--fraction", "0.5"]
    assert main(argv + ["--out", str(tmp_path / "whole")]) == 0

    stop_training_in_epoch(monkeypatch, 2)
    try:
        main(argv + ["--out", str(tmp_path / "cut")])
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    folder = tmp_path / "cut" / "finetune"
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    assert not (tmp_path / "cut" / "prune_report.json").exists()

    assert main(["--resume", "--out", str(folder)]) == 0
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"
    resumed, arch = load_model(folder / "model.pt")
    whole, _ = load_model(tmp_path / "whole" / "finetune" / "model.pt")
    assert arch["channels"] == {"conv1": 2, "conv2": 4}
    for name, tensor in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


@pytest.mark.parametrize("args, message", [
    (["--run", "{tmp}/nothing"], "no model.pt there"),
    (["--run", "{run}", "--amount", "1.5"], "--amount 1.5"),
    (["--run", "{run}", "--scratch"], "--scratch"),
    (["--run", "{run}", "--out", "{run}"], "not empty"),
])
def test_prune_command_rejects_bad_input(npz_dir: Path, tmp_path: Path, capsys, args, message):
    run = tmp_path / "run"
    train_run(tiny_config(npz_dir, train={"epochs": 1}), run, log=quiet)
    argv = ["prune", "--out", str(tmp_path / "out")] + [a.format(tmp=tmp_path, run=run) for a in args]
    if "--out" in args:
        argv = ["prune"] + [a.format(tmp=tmp_path, run=run) for a in args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

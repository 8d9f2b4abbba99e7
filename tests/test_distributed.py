"""Data-parallel training under the real torchrun (two CPU processes, gloo), and warm starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from glister_train import distributed
from glister_train.cli import main
from glister_train.errors import ConfigError
from glister_train.models import ResNet18, save_model
from glister_train.run import train_run
from glister_train.sagemaker.job import launcher_lost, warn_if_launcher_lost

from .conftest import tiny_config

# Two processes reduce gradients in a different order than one: weights agree to float32 rounding.
# Measured on this machine after 3 epochs: 9e-8; the bound leaves room for other CPUs.
WEIGHT_TOLERANCE = 1e-5


def quiet(_line: str) -> None:
    pass


def torchrun(*args: str, script: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    target = [str(script)] if script else ["-m", "glister_train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             *target, *args], capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode:
        raise AssertionError(f"torchrun failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def config_file(tmp_path: Path, data: Path, **sections) -> Path:
    from glister_train import config as C

    train = {"epochs": 3, **sections.pop("train", {})}
    cfg = tiny_config(data, train=train, selection={"selector": "glister", "fraction": 0.5, "select_every": 1},
                      **sections)
    path = tmp_path / "cfg.yaml"
    path.write_text(C.to_yaml(cfg))
    return path


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)["state_dict"]


def subset(run: Path) -> torch.Tensor:
    return torch.load(run / "checkpoint.pt", weights_only=True)["loader"]["indices"]


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.integration  # torchrun
def test_two_processes_match_one(npz_dir: Path, tmp_path: Path):
    cfg = config_file(tmp_path, npz_dir)
    assert main(["--config", str(cfg), "--out", str(tmp_path / "one")]) == 0
    result = torchrun("--config", str(cfg), "--out", str(tmp_path / "two"))
    assert "torchrun: rank 0 of 2" in result.stdout and "rank 1" not in result.stdout  # rank 1 stays quiet
    assert "data parallel: 2 processes (gloo)" in result.stdout
    one, two = tmp_path / "one", tmp_path / "two"
    assert torch.equal(subset(one), subset(two))  # GLISTER on gathered features picks the same subset
    assert max_difference(weights(one), weights(two)) < WEIGHT_TOLERANCE
    lines = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]  # written once, by rank 0
    reference = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    for mine, theirs in zip(lines, reference):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert mine["test_acc"] == theirs["test_acc"] and mine["subset_size"] == theirs["subset_size"]
    assert json.loads((two / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
@pytest.mark.integration  # torchrun
def test_early_learning_in_two_processes_matches_one(npz_dir: Path, tmp_path: Path):
    """Each rank trains on its share of a batch, but every rank moves the targets of the whole batch: the targets
    and the weights end as one process leaves them (an example's next visit may fall to the other rank)."""
    cfg = config_file(tmp_path, npz_dir, train={"epochs": 3, "early_learning": 3.0})
    assert main(["--config", str(cfg), "--out", str(tmp_path / "one")]) == 0
    torchrun("--config", str(cfg), "--out", str(tmp_path / "two"))
    targets = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["early_learning"]["targets"]
               for run in ("one", "two")]
    assert (targets[0].sum(1) > 0.5).any()  # some examples were visited twice or more, on either rank
    assert float((targets[0] - targets[1]).abs().max()) < WEIGHT_TOLERANCE
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < WEIGHT_TOLERANCE


@pytest.mark.integration  # torchrun
def test_resume_under_torchrun(npz_dir: Path, tmp_path: Path):
    cfg = config_file(tmp_path, npz_dir)
    torchrun("--config", str(cfg), "--out", str(tmp_path / "straight"))
    # the same job, stopped by an interruption in epoch 3 on every rank, then resumed
    stopper = tmp_path / "stop_in_epoch_3.py"
    stopper.write_text(textwrap.dedent("""
        import sys
        from glister_train import cli, train

        real, calls = train.train_epoch, []

        def stop(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        train.train_epoch = stop
        sys.exit(cli.main())
    """))
    stopped = torchrun("--config", str(cfg), "--out", str(tmp_path / "resumed"), script=stopper, check=False)
    assert stopped.returncode != 0
    run = tmp_path / "resumed"
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["totals"]["epochs_done"] == 2
    result = torchrun("--resume", "--out", str(run))
    assert "resumed from" in result.stdout
    assert torch.equal(subset(run), subset(tmp_path / "straight"))
    assert max_difference(weights(run), weights(tmp_path / "straight")) == 0.0  # same ranks, same order: exact


def _collectives(rank: int, world: int, store: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        assert distributed.shard(5) == [slice(0, 3), slice(3, 5)][rank]
        local = torch.arange(5.0)[distributed.shard(5)][:, None] * torch.ones(1, 2)
        assert torch.equal(distributed.gather_rows(local, 5), torch.arange(5.0)[:, None] * torch.ones(1, 2))
        assert distributed.all_sum([1.0, rank]) == [2.0, 1.0]
        distributed.check_same(torch.tensor([1, 2, 3]), "a subset")
        with pytest.raises(RuntimeError, match="ranks disagree on a subset"):
            distributed.check_same(torch.tensor([rank]), "a subset")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.integration  # torchrun
def test_collectives_in_two_processes(tmp_path: Path):
    torch.multiprocessing.spawn(_collectives, args=(2, str(tmp_path / "store")), nprocs=2)


def test_single_process_helpers_are_no_ops():
    assert not distributed.active() and distributed.world() == 1 and distributed.is_main()
    assert distributed.shard(7) == slice(0, 7)
    t = torch.randn(3, 2)
    assert distributed.gather_rows(t, 3) is t and distributed.broadcast("x") == "x"
    distributed.check_same(t, "anything")


# ---------------------------------------------------------------- under SageMaker's launchers


def test_a_lost_torchrun_is_detected_and_said():
    two_hosts = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "0"}
    assert launcher_lost(two_hosts) == "the job has 2 instances"
    assert launcher_lost({"SM_HOSTS": '["algo-1"]', "SM_NUM_GPUS": "4"}) == "the instance has 4 GPUs"
    assert launcher_lost({**two_hosts, "WORLD_SIZE": "8"}) == ""
    assert launcher_lost({"SM_HOSTS": '["algo-1"]', "SM_NUM_GPUS": "1"}) == ""
    said: list[str] = []
    assert warn_if_launcher_lost(said.append, two_hosts) is True  # the second instance stays idle
    assert "not started by torchrun" in said[0] and "stays idle" in said[1]
    assert warn_if_launcher_lost(said.append, {**two_hosts, "SM_CURRENT_HOST": "algo-1"}) is False


# ---------------------------------------------------------------- warm starts


def parent_run(npz_dir: Path, tmp_path: Path, **sections) -> Path:
    run = tmp_path / "parent"
    train_run(tiny_config(npz_dir, model={"name": "resnet18", "width": 4}, **sections), run, log=quiet)
    return run


def test_frozen_stages_stay_bit_identical(npz_dir: Path, tmp_path: Path):
    parent = parent_run(npz_dir, tmp_path)
    before = weights(parent)
    cfg = tiny_config(npz_dir, model={"init_from": str(parent), "freeze": "layer3"},
                      selection={"selector": "glister", "fraction": 0.5})
    train_run(cfg, tmp_path / "child", log=quiet)
    after = weights(tmp_path / "child")
    frozen = [k for k in before if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3")]
    trained = [k for k in before if k.startswith(("layer4", "fc")) and not k.endswith("num_batches_tracked")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # BatchNorm statistics included
    assert all(not torch.equal(before[k], after[k]) for k in trained)


def test_init_from_replaces_a_classifier_of_another_size(npz_dir: Path, tmp_path: Path):
    parent = parent_run(npz_dir, tmp_path)
    cfg = tiny_config(npz_dir, model={"init_from": str(parent / "model.pt")}, data={"num_classes": 6},
                      train={"epochs": 1})
    lines: list[str] = []
    train_run(cfg, tmp_path / "child", log=lines.append)
    child = weights(tmp_path / "child")
    assert child["fc.weight"].shape == (6, 32) and "(new classifier)" in " ".join(lines)
    assert "architecture from" in " ".join(lines) and "resnet18 width 4" in " ".join(lines)


def test_init_from_inherits_a_pruned_architecture(npz_dir: Path, tmp_path: Path):
    model = ResNet18(num_classes=4, width=4, channels={"layer1.0.conv1": 2})
    save_model(tmp_path / "pruned.pt", model, {"name": "resnet18", "num_classes": 4, "width": 4, "in_channels": 3,
                                               "channels": {"layer1.0.conv1": 2}})
    cfg = tiny_config(npz_dir, model={"init_from": str(tmp_path / "pruned.pt")}, train={"epochs": 1})
    train_run(cfg, tmp_path / "child", log=quiet)
    assert weights(tmp_path / "child")["layer1.0.conv1.weight"].shape[0] == 2


@pytest.mark.parametrize("first_subset, selector", [("auto", "glister"), ("selector", "glister"), ("random", "random")])
def test_first_subset_of_a_warm_start(npz_dir: Path, tmp_path: Path, first_subset: str, selector: str):
    """A warm-started model's first subset is the selector's by default; ``first_subset: random`` (prune
    fine-tuning: a freshly pruned model's scores say little) makes it random."""
    parent = parent_run(npz_dir, tmp_path)
    cfg = tiny_config(npz_dir, model={"init_from": str(parent)}, train={"epochs": 1},
                      selection={"selector": "glister", "fraction": 0.5, "first_subset": first_subset})
    lines: list[str] = []
    train_run(cfg, tmp_path / "child", log=lines.append)
    assert f"selection epoch=1 selector={selector} " in "\n".join(lines)


def test_init_from_errors_name_the_problem(npz_dir: Path, tmp_path: Path):
    model = ResNet18(num_classes=4, width=4)
    state = model.state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(3, 4, 3, 3)
    torch.save({"arch": {"name": "resnet18", "num_classes": 4, "width": 4, "in_channels": 3}, "state_dict": state},
               tmp_path / "odd.pt")
    with pytest.raises(ConfigError, match=r"layer2.0.conv1.weight: \(3, 4, 3, 3\) in the parent, \(8, 4, 3, 3\) here"):
        train_run(tiny_config(npz_dir, model={"init_from": str(tmp_path / "odd.pt")}), tmp_path / "a", log=quiet)
    with pytest.raises(ConfigError, match="neither a model file nor a run folder"):
        train_run(tiny_config(npz_dir, model={"init_from": str(tmp_path / "nope")}), tmp_path / "b", log=quiet)
    save_model(tmp_path / "ok.pt", model, {"name": "resnet18", "num_classes": 4, "width": 4, "in_channels": 3})
    with pytest.raises(ConfigError, match="'layer9' is not a stage of ResNet18; choose one of stem, layer1"):
        train_run(tiny_config(npz_dir, model={"init_from": str(tmp_path / "ok.pt"), "freeze": "layer9"}),
                  tmp_path / "c", log=quiet)


@pytest.mark.slow
def test_cli_flags_for_warm_starts(npz_dir: Path, tmp_path: Path, capsys):
    parent = parent_run(npz_dir, tmp_path)
    out = tmp_path / "child"
    code = main(["--preset", "smoke", "--dataset", "npz", "--data-dir", str(npz_dir), "--init-from", str(parent),
                 "--freeze", "layer2", "--epochs", "1", "--out", str(out), "--set", "data.train_limit=0",
                 "--set", "data.test_limit=0"])
    assert code == 0
    text = capsys.readouterr().out
    assert "frozen up to layer2" in text and "architecture from" in text


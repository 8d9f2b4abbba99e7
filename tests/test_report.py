"""The report: grouping, equal-epoch and equal-time comparisons, the table, JSON and plots, and its clocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glister_train.cli import main as cli_main

from .test_sweep import grid_file, sweep_module


def test_report_table_json_and_plots(npz_dir: Path, tmp_path: Path, capsys):
    pytest.importorskip("matplotlib")
    sweep = sweep_module()
    grid, out = grid_file(tmp_path, npz_dir), tmp_path / "sweep"
    assert sweep.main([str(grid), "--out", str(out)]) == 0
    assert cli_main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["rows"]
    by_key = {(r["selector"], r["fraction"]): r for r in rows}
    assert set(by_key) == {("full", 1.0), ("adaptive-random", 0.3), ("adaptive-random", 0.5), ("glister", 0.3),
                           ("glister", 0.5)}
    full, glister = by_key[("full", 1.0)], by_key[("glister", 0.3)]
    assert full["cost_vs_full"] == pytest.approx(1.0) and full["vs_full"] == pytest.approx(0.0)
    assert glister["vs_adaptive_random"] == pytest.approx(
        glister["final_test_acc"] - by_key[("adaptive-random", 0.3)]["final_test_acc"])
    table = (tmp_path / "report" / "report.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "| glister | 0.3 | 1 |" in table
    for name in ("accuracy_vs_epoch.png", "accuracy_vs_time.png", "epoch_time_vs_fraction.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_report_without_runs_is_a_clear_error(tmp_path: Path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "no completed runs" in capsys.readouterr().err


def test_report_reads_an_mlflow_store_like_the_run_folders(npz_dir: Path, tmp_path: Path):
    pytest.importorskip("mlflow")
    from glister_train.report import local_runs, mlflow_runs, table
    from glister_train.run import train_run

    from .conftest import tiny_config

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for selector, fraction in (("full", 1.0), ("glister", 0.5)):
        cfg = tiny_config(npz_dir, selection={"selector": selector, "fraction": fraction},
                          run={"tracker": "mlflow", "tracking_uri": uri, "experiment_name": "fractions",
                               # the store must be complete to compare: on a loaded machine the store and the
                               # model artifact took longer than the shipped 10 s a run waits for its tracker
                               "tracking_timeout": 300})
        train_run(cfg, tmp_path / selector, log=lambda _: None)
    from_store = table(mlflow_runs(uri, "fractions"))
    from_folders = table(local_runs([str(tmp_path)]))
    assert [(r["selector"], r["fraction"]) for r in from_store] == [(r["selector"], r["fraction"]) for r in from_folders]
    for a, b in zip(from_store, from_folders):
        assert a["final_test_acc"] == pytest.approx(b["final_test_acc"])
        assert a["epoch_time"] == pytest.approx(b["epoch_time"])
        assert a["select_time"] == pytest.approx(b["select_time"], abs=1e-6)


def _hand_run(selector: str, seed: int, epoch_times: list[float], accs: list[float], val_acc: float | None = None,
              **config):
    """A run with these epoch times and test accuracies; its final validation accuracy is the test one unless given."""
    from glister_train.config import Config, flatten
    from glister_train.report import _record

    metrics = [{"epoch": i + 1, "epoch_time": t, "test_acc": a} for i, (t, a) in enumerate(zip(epoch_times, accs))]
    cfg = {**flatten(Config()), "selection.selector": selector, "selection.fraction": 0.3, "run.seed": seed, **config}
    summary = {"final_test_acc": accs[-1], "best_test_acc": max(accs), "select_time": 0.0,
               "final_val_acc": accs[-1] if val_acc is None else val_acc}
    return _record(f"{selector}-{seed}", selector, 0.3, seed, summary, metrics, config=cfg)


def test_equal_time_interpolates_on_the_faster_runs_end():
    """Hand-made curves: a slow selector (15 s an epoch) against adaptive random (10 s an epoch)."""
    from glister_train.report import acc_at, equal_time, table

    slow = [_hand_run("glister", s, [15, 15, 15], [0.4, 0.6, 0.8 + 0.01 * s]) for s in (0, 1, 2)]
    fast = [_hand_run("adaptive-random", s, [10, 10, 10], [0.5, 0.6, 0.7]) for s in (0, 1, 2)]
    assert acc_at(fast[0], 25) == pytest.approx(0.65) and acc_at(fast[0], 99) == pytest.approx(0.7)
    own, base, t = equal_time(slow, fast)
    # at 30 s (random's end) the slow runs are two thirds into their second-to-last epoch: 0.6 + (0/15)...
    assert t == pytest.approx(30) and base == pytest.approx(0.7)
    assert own == pytest.approx(0.6)  # 30 s = the end of the slow runs' 2nd epoch
    rows = {r["label"]: r for r in table(slow + fast)}
    row = rows["glister"]
    assert row["vs_adaptive_random"] == pytest.approx(0.81 - 0.7)  # equal epochs: a win ...
    assert row["verdict_equal_epochs"] == "win"
    assert row["vs_adaptive_random_equal_time"] == pytest.approx(-0.1)  # ... equal time: a loss
    assert row["verdict_equal_time"] == "loss"


def test_full_data_at_full_length_is_the_ceiling_and_never_read_mid_schedule():
    """Full data at 10 s an epoch against a subset run at 3 s: compared at equal epochs only; its accuracy partway
    through its own schedule (its learning rate still high) is no baseline."""
    from glister_train.report import markdown, table

    full = [_hand_run("full", s, [10, 10], [0.5, 0.9 + 0.01 * s]) for s in (0, 1)]
    subset = [_hand_run("adaptive-random", s, [3, 3, 3], [0.3, 0.5, 0.6 + 0.01 * s]) for s in (0, 1)]
    row = next(r for r in table(full + subset) if r["selector"] == "adaptive-random")
    assert row["vs_full"] == pytest.approx(0.605 - 0.905)
    assert row["cost_vs_full"] == pytest.approx(0.3)
    assert not any("equal_time_full" in key or "full_equal_time" in key for key in row)
    assert "equal time (pts) | vs full" not in markdown(table(full + subset))


def _budget_cells(val_random: float, val_balanced: float, val_budget: float):
    """Hand-made cells at 30% of a 10-epoch schedule, 3 seeds each: filtered-random, adaptive random (R = 1), class-balanced
    random, full data on the budget-matched schedule (3 epochs at 10 s) and at full length (10 epochs)."""
    epochs = {"train.epochs": 10, "selection.select_every": 1}
    runs = []
    for s in (0, 1, 2):
        runs += [
            _hand_run("filtered-random", s, [3.1] * 10, [0.5] * 9 + [0.70 + 0.001 * s], **epochs),
            _hand_run("adaptive-random", s, [3] * 10, [0.5] * 9 + [0.66 + 0.001 * s], val_acc=val_random, **epochs),
            _hand_run("adaptive-random", s, [3] * 10, [0.5] * 9 + [0.64 + 0.001 * s], val_acc=val_balanced,
                      **epochs, **{"selection.class_budget": "val_share"}),
            _hand_run("full", s, [10] * 3, [0.5, 0.6, 0.68 + 0.001 * s], val_acc=val_budget,
                      **epochs, **{"train.budget_fraction": 0.3}),
            _hand_run("full", s, [10] * 10, [0.5] * 9 + [0.80 + 0.001 * s], **epochs)]
    return runs


def test_a_budget_matched_full_run_is_a_baseline_in_the_subset_runs_condition():
    from glister_train.report import table

    rows = {r["label"]: r for r in table(_budget_cells(0.6, 0.6, 0.6))}
    assert set(rows) == {"filtered-random", "adaptive-random",
                         "adaptive-random class_budget=val_share", "full epochs=3", "full"}
    assert {r["condition"] for r in rows.values()} == {"-"}
    default = rows["filtered-random"]
    assert default["budget_full_label"] == "full epochs=3"
    assert default["vs_full_budget"] == pytest.approx(0.701 - 0.681)  # each at the end of its own schedule
    assert default["vs_full"] == pytest.approx(0.701 - 0.801)  # the ceiling: full length, equal epochs


@pytest.mark.parametrize("val_accs, best, diff", [
    ((0.9, 0.6, 0.6), "adaptive-random", 0.66 - 0.66),  # at equal time: random's end, 30 s
    ((0.6, 0.9, 0.6), "adaptive-random class_budget=val_share", 0.66 - 0.64),
    ((0.6, 0.6, 0.9), "full epochs=3", 0.701 - 0.681),  # both at the end of their schedules
])
def test_each_run_meets_the_best_baseline_by_validation_accuracy_at_equal_compute(val_accs, best, diff):
    """The validation set picks the baseline; the test set only reports. Random is met at equal time (the
    filtered-random runs, 3% slower an epoch, are read on their own curve at random's end, 30 s), budget-matched
    full data at the end of both schedules."""
    from glister_train.report import acc_at, table

    runs = _budget_cells(*val_accs)
    row = next(r for r in table(runs) if r["selector"] == "filtered-random")
    assert row["best_baseline_label"] == best
    if best.startswith("adaptive-random"):
        own = [r for r in runs if r.selector == "filtered-random"]
        expected_own = sum(acc_at(r, 30.0) for r in own) / 3
        base = 0.661 if "class_budget" not in best else 0.641
        assert row["best_baseline_acc"] == pytest.approx(base)
        assert row["vs_best_baseline"] == pytest.approx(expected_own - base)
    else:
        assert row["vs_best_baseline"] == pytest.approx(diff)
        assert row["verdict_best_baseline"] == "win"  # 2 points, against stds of 0.1
    for r in table(runs):
        if r["selector"] in ("full", "adaptive-random"):
            assert r["vs_best_baseline"] is None


def test_budget_fraction_sets_the_epochs_a_full_run_trains():
    from glister_train.config import TrainConfig

    assert TrainConfig(epochs=45, budget_fraction=0.3).scheduled_epochs == 14  # 13.5, rounded up: never less
    assert TrainConfig(epochs=10, budget_fraction=0.3).scheduled_epochs == 3
    assert TrainConfig(epochs=10, budget_fraction=0.01).scheduled_epochs == 1
    assert TrainConfig(epochs=45).scheduled_epochs == 45


def test_runs_are_grouped_by_condition_and_labelled_by_what_differs():
    from glister_train.report import table

    runs = [_hand_run("adaptive-random", 0, [1, 1], [0.5, 0.6], **{"selection.select_every": 3}),
            _hand_run("adaptive-random", 0, [1, 1], [0.5, 0.65], **{"selection.select_every": 1}),
            _hand_run("glister", 0, [1, 1], [0.5, 0.64], **{"selection.select_every": 3, "selection.sampling": "soft"}),
            _hand_run("adaptive-random", 0, [1, 1], [0.4, 0.5], **{"selection.select_every": 1,
                                                                   "data.label_noise": 0.4})]
    rows = table(runs)
    assert {(r["condition"], r["label"]) for r in rows} == {
        ("label_noise=0.0", "adaptive-random select_every=3"), ("label_noise=0.0", "adaptive-random select_every=1"),
        ("label_noise=0.0", "glister sampling=soft select_every=3"),
        ("label_noise=0.4", "adaptive-random select_every=1")}
    soft = next(r for r in rows if r["label"] == "glister sampling=soft select_every=3")
    # compared with the better of random's two schedules, in its own condition only
    assert soft["random_label"] == "adaptive-random select_every=1"
    assert soft["vs_adaptive_random"] == pytest.approx(0.64 - 0.65)


def test_early_learning_names_a_method_in_the_condition_of_its_data_and_is_compared_with_its_baselines():
    from glister_train.report import table

    runs = [_hand_run("adaptive-random", 0, [1, 1], [0.5, 0.6], **{"selection.select_every": 1}),
            _hand_run("filtered-random", 0, [1, 1], [0.5, 0.62], **{"selection.select_every": 1}),
            _hand_run("filtered-random", 0, [1, 1], [0.5, 0.66], **{"selection.select_every": 1,
                                                                    "train.early_learning": 3.0})]
    rows = {r["label"]: r for r in table(runs)}
    assert set(rows) == {"adaptive-random", "filtered-random", "filtered-random early_learning=3.0"}
    assert {r["condition"] for r in rows.values()} == {"-"}
    elr = rows["filtered-random early_learning=3.0"]
    assert elr["random_label"] == "adaptive-random"
    assert elr["vs_adaptive_random"] == pytest.approx(0.66 - 0.6)


def test_a_loss_every_run_shares_names_none_of_them():
    """The shipped configuration trains with early learning: a report of such runs alone reads as one of
    cross-entropy runs does (full data is the ceiling, labels carry no loss)."""
    from glister_train.report import table

    elr = {"selection.select_every": 1, "train.early_learning": 1.0}
    runs = [_hand_run("full", 0, [2, 2], [0.5, 0.7], **elr),
            _hand_run("adaptive-random", 0, [1, 1], [0.5, 0.6], **elr),
            _hand_run("filtered-random", 0, [1, 1], [0.5, 0.66], **elr)]
    rows = {r["label"]: r for r in table(runs)}
    assert set(rows) == {"full", "adaptive-random", "filtered-random"}
    assert rows["full"]["vs_full"] == pytest.approx(0.0)
    assert rows["filtered-random"]["vs_full"] == pytest.approx(0.66 - 0.7)


def test_full_data_on_the_budget_is_paired_with_runs_of_its_own_loss():
    from glister_train.report import table

    budget = {"selection.select_every": 1, "train.budget_fraction": 0.5}
    runs = [_hand_run("full", 0, [2], [0.61], **budget),
            _hand_run("full", 0, [2], [0.64], **budget, **{"train.early_learning": 3.0}),
            _hand_run("filtered-random", 0, [1, 1], [0.5, 0.62], **{"selection.select_every": 1}),
            _hand_run("filtered-random", 0, [1, 1], [0.5, 0.66], **{"selection.select_every": 1,
                                                                    "train.early_learning": 3.0})]
    rows = {r["label"]: r for r in table(runs)}
    assert rows["filtered-random"]["vs_full_budget"] == pytest.approx(0.62 - 0.61)
    assert rows["filtered-random early_learning=3.0"]["vs_full_budget"] == pytest.approx(0.66 - 0.64)
    # the best baseline is chosen among every loss, by validation accuracy: the cross-entropy run meets the other's
    full_elr = next(label for label in rows if label.startswith("full ") and "early_learning=3.0" in label)
    assert rows["filtered-random"]["best_baseline_label"] == full_elr
    assert rows["filtered-random early_learning=3.0"]["best_baseline_label"] == full_elr
    assert rows["filtered-random"]["vs_best_baseline"] == pytest.approx(0.62 - 0.64)


def test_a_selectors_option_does_not_split_another_selectors_seeds():
    """An option of one selector present in another's config (an old folder, a hand-made one) does not split the
    other's seeds; for its own selector it names a group."""
    from glister_train.report import table

    runs = [_hand_run("adaptive-random", 0, [1, 1], [0.5, 0.6], **{"selection.select_every": 1}),
            _hand_run("adaptive-random", 1, [1, 1], [0.5, 0.7], **{"selection.select_every": 1,
                                                                   "selection.rank_by": "margin"}),
            _hand_run("glister", 0, [1, 1], [0.5, 0.64], **{"selection.select_every": 3,
                                                            "selection.class_budget": "size"}),
            _hand_run("glister", 0, [1, 1], [0.5, 0.62], **{"selection.select_every": 3,
                                                            "selection.class_budget": "val_share"})]
    rows = table(runs)
    random = [r for r in rows if r["label"].startswith("adaptive-random")]
    assert [(r["label"], r["seeds"]) for r in random] == [("adaptive-random select_every=1", [0, 1])]
    assert len([r for r in rows if r["label"].startswith("glister")]) == 2  # for glister the option matters


def test_random_baselines_best_schedule_is_chosen_on_validation_not_test():
    """R = 1 ends higher on test but lower on validation than R = 3: the comparison takes R = 3."""
    from glister_train.report import table

    runs = [_hand_run("adaptive-random", 0, [1, 1], [0.5, 0.60], val_acc=0.62, **{"selection.select_every": 3}),
            _hand_run("adaptive-random", 0, [1, 1], [0.5, 0.65], val_acc=0.58, **{"selection.select_every": 1}),
            _hand_run("glister", 0, [1, 1], [0.5, 0.63], **{"selection.select_every": 3, "selection.sampling": "soft"})]
    soft = next(r for r in table(runs) if r["selector"] == "glister")
    assert soft["random_label"] == "adaptive-random select_every=3"
    assert soft["vs_adaptive_random"] == pytest.approx(0.63 - 0.60)


def test_cpu_clock_times_runs_by_their_cpu_seconds(npz_dir: Path, tmp_path: Path, capsys):
    """--clock cpu: epoch times and the time axis come from epoch_cpu_time, which every epoch records."""
    from glister_train.report import local_runs
    from glister_train.run import train_run

    from .conftest import tiny_config

    run = tmp_path / "runs" / "a"
    train_run(tiny_config(npz_dir, train={"epochs": 2}), run, log=lambda _: None)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < m["epoch_cpu_time"] for m in metrics)
    wall, cpu = local_runs([str(tmp_path / "runs")])[0], local_runs([str(tmp_path / "runs")], "cpu")[0]
    assert cpu.epoch_time == pytest.approx(sum(m["epoch_cpu_time"] for m in metrics) / 2)
    assert wall.epoch_time == pytest.approx(sum(m["epoch_time"] for m in metrics) / 2)
    assert cpu.curve()[0][-1] == pytest.approx(sum(m["epoch_cpu_time"] for m in metrics))
    assert cli_main(["report", str(tmp_path / "runs"), "--clock", "cpu", "--no-plots", "--out", str(tmp_path / "r")]) == 0
    assert "epoch time (CPU s, selection incl.)" in (tmp_path / "r" / "report.md").read_text()
    assert json.loads((tmp_path / "r" / "report.json").read_text())["clock"] == "cpu"


def test_curves_have_points_only_at_evaluated_epochs():
    """With evaluation every 2nd epoch the curve has no zero-accuracy dips in between."""
    from glister_train.report import mean_curve

    runs = [_hand_run("adaptive-random", s, [1, 1, 1, 1], [0.5, 0.6, 0.7, 0.8]) for s in (0, 1)]
    for r in runs:
        for m in r.metrics[0::2]:
            del m["test_acc"]
    assert mean_curve(runs, "epoch") == ([2, 4], [0.6, 0.8])
    assert mean_curve(runs, "time") == ([2.0, 4.0], [0.6, 0.8])


def test_the_comparison_pairs_seeds_when_the_cells_share_some():
    """Seed 1 of a selector against random's seeds 0 and 1: only seed 1 is compared."""
    from glister_train.report import table

    runs = [_hand_run("adaptive-random", 0, [1, 1], [0.5, 0.70]), _hand_run("adaptive-random", 1, [1, 1], [0.5, 0.60]),
            _hand_run("glister", 1, [1, 1], [0.5, 0.62])]
    row = next(r for r in table(runs) if r["selector"] == "glister")
    assert row["compared_seeds"] == [1]
    assert row["vs_adaptive_random"] == pytest.approx(0.02) and row["vs_adaptive_random_equal_time"] == pytest.approx(0.02)


def test_epochs_clock_charges_selection_at_the_runs_own_pace():
    """--clock epochs on a hand-made example: the same training at half the speed costs the same, and a
    selection costs the share of the pool the run trains in that time."""
    from glister_train.report import add_epoch_costs

    def run(seconds_per_image: float, select_seconds: float) -> list[dict]:
        epochs = [{"subset_size": 30, "select_time": 0.0, "epoch_time": 30 * seconds_per_image} for _ in range(4)]
        epochs[2].update(select_time=select_seconds, epoch_time=30 * seconds_per_image + select_seconds)
        add_epoch_costs(epochs, 0.3)  # a pool of 100
        return [m["epoch_cost"] for m in epochs]

    fast, slow = run(0.1, 1.0), run(0.2, 2.0)
    assert fast == pytest.approx([0.3, 0.3, 0.4, 0.3])  # 1 s of selection = the 10 images trained in 1 s
    assert slow == pytest.approx(fast)
    full = [{"subset_size": 100, "select_time": 0.0, "epoch_time": 7.0 + i} for i in range(3)]
    add_epoch_costs(full, 1.0)
    assert [m["epoch_cost"] for m in full] == pytest.approx([1.0, 1.0, 1.0])  # machine drift is not charged


def test_epochs_clock_counts_a_warm_start_as_full_epochs_and_a_skipped_epoch_as_nothing():
    from glister_train.report import add_epoch_costs

    epochs = [{"subset_size": 100, "select_time": 0.0, "epoch_time": 10.0},  # warm: the whole pool of 100
              {"subset_size": 0, "select_time": 0.0, "epoch_time": 0.0},  # skipped (kappa_matched)
              {"subset_size": 30, "select_time": 1.0, "epoch_time": 4.0},
              {"subset_size": 30, "select_time": 0.0, "epoch_time": 3.0}]
    add_epoch_costs(epochs, 0.3)
    assert [m["epoch_cost"] for m in epochs] == pytest.approx([1.0, 0.0, 0.4, 0.3])


def test_the_time_axis_ends_near_the_subset_runs_when_full_data_runs_far_longer():
    from glister_train.report import subset_window

    subset = [("adaptive-random", [1.0, 5.0, 13.5]), ("glister", [1.2, 6.0, 14.0])]
    assert subset_window(subset + [("full", [3.0, 20.0, 45.0])]) == pytest.approx(1.15 * 14.0)
    assert subset_window(subset + [("full", [3.0, 18.0])]) is None  # within 1.3x: everything is shown
    assert subset_window(subset) is None
    assert subset_window([("full", [1.0, 45.0])]) is None


def test_a_bad_folder_is_skipped_with_a_warning_and_the_rest_reported(npz_dir: Path, tmp_path: Path, capsys):
    import shutil

    from glister_train.report import report_main
    from glister_train.run import train_run

    from .conftest import tiny_config

    good = tmp_path / "runs" / "good"
    train_run(tiny_config(npz_dir, train={"epochs": 1}), good, log=lambda _: None)
    breakages = {"latin1": lambda d: (d / "summary.json").write_bytes(b"\xff\xfe{"),
                 "a_list": lambda d: (d / "summary.json").write_text("[1, 2]"),
                 "no_metrics": lambda d: (d / "metrics.jsonl").write_text(""),
                 "garbled_metrics": lambda d: (d / "metrics.jsonl").write_text("{not json\n"),
                 "text_accuracy": lambda d: (d / "summary.json").write_text(json.dumps(
                     {**json.loads((good / "summary.json").read_text()), "final_test_acc": "high"})),
                 "bad_config": lambda d: (d / "config.yaml").write_text("selection: [1\n")}
    for name, breakage in breakages.items():
        shutil.copytree(good, tmp_path / "runs" / name)
        breakage(tmp_path / "runs" / name)
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert all(f"skipped {tmp_path / 'runs' / name}:" in err for name in breakages), err
    assert len(err.strip().splitlines()) == len(breakages)
    reported = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [r["seeds"] for r in reported["rows"]] == [[0]]  # the good run alone


def test_full_data_on_a_budget_matched_schedule_is_a_baseline_in_the_same_condition():
    """Full data run for fewer epochs (what the subset runs cost) is named by its epochs in their condition and
    compared at the end of its own schedule, beside the long full-data run read at equal time."""
    from glister_train.report import label_runs, table

    long = [_hand_run("full", s, [10] * 6, [0.3, 0.5, 0.6, 0.7, 0.8, 0.9], **{"train.epochs": 6}) for s in (0, 1)]
    budget = [_hand_run("full", s, [10] * 2, [0.4, 0.62 + 0.01 * s], **{"train.epochs": 2}) for s in (0, 1)]
    subset = [_hand_run("filtered-random", s, [3] * 6, [0.3, 0.4, 0.5, 0.55, 0.6, 0.65 + 0.01 * s],
                        **{"train.epochs": 6}) for s in (0, 1)]
    runs = long + budget + subset
    label_runs(runs)
    assert {r.condition for r in runs} == {"-"} and {r.label for r in budget} == {"full epochs=2"}
    row = next(r for r in table(runs) if r["selector"] == "filtered-random")
    assert row["budget_full_label"] == "full epochs=2"
    assert row["vs_full_budget"] == pytest.approx(0.655 - 0.625)  # final against final
    assert row["vs_full"] == pytest.approx(0.655 - 0.9)  # the long run, at equal epochs, as before


def test_a_retired_class_mix_is_read_as_what_the_run_ran_not_as_the_mix_that_stands_in(tmp_path: Path):
    import yaml

    from glister_train.report import run_config

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"selection": {
        "selector": "adaptive-random", "fraction": 0.3, "class_budget": "deferred", "balance_from": 0.67}}))
    cfg = run_config(tmp_path / "config.yaml")
    assert "selection.class_budget" not in cfg
    assert cfg["selection.class_budget (retired)"] == "deferred" and cfg["selection.balance_from (retired)"] == 0.67

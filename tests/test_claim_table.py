"""experiments/claim_table.py: rewriting the claim table inside a README in place, naming each run's row."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "claim_table.py"
spec = importlib.util.spec_from_file_location("claim_table", SCRIPT)
claim_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claim_table)

def test_replace_between_swaps_only_its_block():
    readme = "# Title\n\n<!-- claim-table -->\n| old | table |\n<!-- /claim-table -->\n\ntext after\n"
    out = claim_table.replace_between(readme, "claim-table", "| new | table |")
    assert out == "# Title\n\n<!-- claim-table -->\n| new | table |\n<!-- /claim-table -->\n\ntext after\n"


def test_replace_between_refuses_a_file_without_the_markers():
    with pytest.raises(SystemExit, match="no '<!-- claim-table -->'"):
        claim_table.replace_between("# Title\n\n| other | table |\n", "claim-table", "| new |")


def _old_default(**selection):
    """A config.yaml's selection as the default wrote it before the selectors owned their options."""
    base = {"selector": "glister", "fraction": 0.3, "select_every": 3, "sampling": "soft", "temperature": float("inf"),
            "score_source": "auto", "drop_by": "confidence", "drop_share_auto": True, "agreement_sample": 1000,
            "class_budget": "val_share", "drop_share_scale": 1.0, "coverage": False, "hard_ratio": 1.0}
    return {"selection": {**base, **selection}}


def test_rows_name_what_a_run_ran_old_folders_and_new_alike():
    # before ignore_below it acted on every estimate: the default where none it acted on was below today's gate
    assert claim_table.method(_old_default(), [0.0, 0.38, 0.36]) == claim_table.DEFAULT
    assert claim_table.method(_old_default(), [0.0, 0.12]) == f"{claim_table.DEFAULT} + ignore_below: 0.0"
    assert claim_table.method({"selection": {"selector": "filtered-random", "class_budget": "val_share",
                                             "ignore_below": 0.2}}) == claim_table.DEFAULT
    assert claim_table.method(_old_default(class_budget="size"), [0.0]) == f"{claim_table.DEFAULT} + class_budget: size"
    assert claim_table.method(_old_default(class_budget="size")) == \
        f"{claim_table.EARLIER_DEFAULT} + class_budget: size"
    assert claim_table.method(_old_default(coverage=True), [0.3]) == \
        f"{claim_table.EARLIER_DEFAULT} + coverage: True (retired)"  # beside the default of its time
    assert claim_table.method(_old_default(drop_by="margin")) == \
        f"{claim_table.EARLIER_DEFAULT} + rank_by: margin (retired)"
    assert claim_table.method(_old_default(class_budget="val_loss")) == \
        f"{claim_table.EARLIER_DEFAULT} + class_budget: val_loss (retired)"
    greedy = {"selection": {"selector": "glister", "sampling": "greedy", "greedy": "batched", "class_budget": "size"}}
    assert claim_table.method(greedy) == claim_table.GLISTER
    assert claim_table.method({"selection": {"selector": "adaptive-random", "select_every": 1}}) == \
        "adaptive random, R = 1"
    deferred = {"selection": {"selector": "adaptive-random", "select_every": 1, "class_budget": "deferred",
                              "balance_from": 0.8}, "train": {"early_learning": 1.0}}
    row = claim_table.method(deferred)
    assert row == f"{claim_table.DEFERRED}, R = 1, from 80% of the epochs (retired) + early_learning: 1"
    assert claim_table.changed_from(row, earlier=False) == claim_table.BALANCED_EARLY[1]


def test_early_learning_rows_are_named_by_their_weight():
    default = {"selection": {"selector": "filtered-random", "class_budget": "val_share", "ignore_below": 0.2}}
    balanced = {"selection": {"selector": "adaptive-random", "select_every": 1, "class_budget": "val_share"}}
    budget_full = {"selection": {"selector": "full"}}
    for weight in claim_table.EARLY_WEIGHTS:
        train = {"early_learning": float(weight), "early_learning_momentum": 0.7}
        assert claim_table.method({**default, "train": train}) == claim_table.EARLY[weight]
        assert claim_table.method({**balanced, "train": train}) == claim_table.BALANCED_EARLY[weight]
        assert claim_table.method({**budget_full, "train": {**train, "budget_fraction": 0.3}}) == \
            claim_table.FULL_BUDGET_EARLY[weight]
        assert claim_table.SHOWN_AS[claim_table.EARLY[weight]].startswith("filtered-random")
    # cross-entropy, written with the key or without it, is the default selector's own row
    assert claim_table.method({**default, "train": {"early_learning": 0.0}}) == claim_table.DEFAULT
    assert claim_table.method(default) == claim_table.DEFAULT
    assert {*claim_table.EARLY.values(), *claim_table.BALANCED_EARLY.values()} <= set(claim_table.HEADLINE)


def test_the_row_marked_default_is_what_the_shipped_configuration_runs():
    from glister_train.config import load_preset, to_dict, validate

    shipped = claim_table.method(to_dict(validate(load_preset("cpu-long"))))  # as a run's config.yaml holds it
    assert shipped == claim_table.SHIPPED
    assert [row for row, shown in claim_table.SHOWN_AS.items() if "(default)" in shown] == [shipped]


def test_ablation_rows_are_measured_against_the_row_they_changed():
    assert claim_table.changed_from("GLISTER + sampling: soft", earlier=False) == claim_table.DEFAULT
    assert claim_table.changed_from(claim_table.EARLY[1], earlier=False) == claim_table.DEFAULT
    assert claim_table.changed_from(claim_table.BALANCED_EARLY[1], earlier=False) == f"{claim_table.BALANCED}, R = 1"
    assert claim_table.changed_from(claim_table.FULL_BUDGET_EARLY[3], earlier=False) == claim_table.FULL_BUDGET
    assert claim_table.changed_from(f"{claim_table.EARLIER_DEFAULT} + rank_by: margin (retired)", earlier=True) == \
        claim_table.EARLIER_DEFAULT
    # a lever tried with the shipped loss, on the default or as a selector of its own: against the shipped default
    assert claim_table.changed_from(f"{claim_table.DEFAULT} + draw_by: variance (retired) + early_learning: 1",
                                    earlier=False) == claim_table.SHIPPED
    assert claim_table.changed_from("reducible-loss + early_learning: 1", earlier=False) == claim_table.SHIPPED


def test_the_standing_finds_the_shipped_default_by_the_label_report_gives_it():
    from glister_train.config import flatten, load_preset, validate
    from glister_train.report import _record, label_runs

    shipped = flatten(validate(load_preset("cpu-long")))
    variants = {"shipped": shipped, "cross-entropy": {**shipped, "train.early_learning": 0.0},
                "weight 3": {**shipped, "train.early_learning": 3.0},
                "a lever": {**shipped, "selection.ignore_below": 0.0}}
    for with_random in (False, True):  # random's R = 1 beside it makes report name every run's schedule
        runs = [_record(name, "filtered-random", 0.3, 0, {}, [], 1.0, cfg) for name, cfg in variants.items()]
        if with_random:
            runs.append(_record("random", "adaptive-random", 0.3, 0, {}, [], 1.0,
                                {**shipped, "selection.selector": "adaptive-random", "selection.select_every": 1}))
        label_runs(runs)
        loss_named = any("early_learning=" in r.label for r in runs)
        assert [r.path for r in runs if claim_table.is_shipped(r.label, loss_named)] == ["shipped"], \
            [r.label for r in runs]


def test_the_standing_has_one_line_per_condition_naming_each_baseline_and_verdict():
    def row(condition, label, **values):
        base = {"condition": condition, "fraction": 0.3, "label": label, "final_test_acc": 0.7478,
                "final_test_acc_std": 0.003, "vs_adaptive_random": -0.0037, "verdict_equal_epochs": "tie",
                "random_label": "adaptive-random class_budget=val_share select_every=1 early_learning=3.0",
                "vs_full_budget": 0.0016, "verdict_full_budget": "tie", "budget_full_label": "full epochs=14",
                "vs_best_baseline": -0.004, "verdict_best_baseline": "tie",
                "best_baseline_label": "adaptive-random select_every=3", "noisy_share": 0.393, "pool_noisy_share": 0.4}
        return {**base, **values}

    instance = "imbalance=1.0 label_noise=0.4 noise_kind=instance val_noise=0.08"
    skew = "imbalance=10.0 label_noise=0.0 noise_kind=symmetric val_noise=0.0"
    shipped = "filtered-random select_every=3 early_learning=1.0"
    report = {"rows": [row(skew, shipped, vs_best_baseline=0.0237, verdict_best_baseline="win",
                           noisy_share=None, pool_noisy_share=None),
                       row(instance, shipped),
                       row(instance, "filtered-random select_every=3"),  # cross-entropy: not the default
                       row(instance, shipped, fraction=0.1)]}  # no headline column at 10%
    lines = claim_table.standing(report).splitlines()
    assert len(lines) == 4  # header, rule, the two conditions in the headline's order
    assert lines[2] == ("| instance 40% | 74.78±0.30 | -0.37 tie (balanced R1 EL3) | +0.16 tie (full 14 ep) | "
                        "-0.40 tie (random R3) | 39.3/40 |")
    assert lines[3].startswith("| 10x skew | ") and "+2.37 win (random R3)" in lines[3]
    assert lines[3].endswith("| - |")


def test_a_labels_file_names_its_condition_wherever_the_data_folder_lies():
    def column(train_labels):
        data = {"label_noise": 0.0, "noise_kind": "symmetric", "train_labels": train_labels}
        return claim_table.condition({"data": data, "selection": {"selector": "filtered-random", "fraction": 0.3}})

    assert column("") == "clean 30%"
    assert column("data/cifar-10n/worse.npy") == column("/mnt/cifar-10n/worse.npy") == "human labels"
    assert column("data/human_like/labels.npz") == "people-like (files)"
    assert column("data/cifar-10n/random1.npy") is None and column("data/my-cifar-10n/worse.npy") is None
    named = "train_labels=data/cifar-10n/worse.npy val_labels=data/cifar-10n/aggre.npy"  # as report names it
    assert claim_table.report_column(named, 0.3) == "human labels"

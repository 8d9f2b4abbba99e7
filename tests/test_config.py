from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from glister_train import config as C
from glister_train.cli import resolve_config, train_parser
from glister_train.errors import ConfigError


def resolve(*argv: str) -> C.Config:
    return resolve_config(train_parser().parse_args(list(argv)))


CONFIG_FILES = sorted(C.configs_dir().glob("*.yaml"))
SWEEP_FILES = sorted((C.configs_dir() / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_loads_and_validates(path: Path):
    C.validate(C.merge(C.load_preset("base"), C.read_yaml(path), path.name))


def resolve_sweep_point(point: dict, grid: dict) -> C.Config:
    """The config the sweep's command line for ``point`` trains with."""
    from glister_train import sweep

    argv = sweep.command(point, grid, Path("run"), 1, [])[3:]  # drop `python -m glister_train`
    return resolve(*argv[: argv.index("--out")])


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_every_sweep_point_resolves_to_a_valid_config(path: Path):
    from glister_train import sweep

    todo, grid = sweep.points(path)
    assert todo
    for point in todo:
        resolve_sweep_point(point, grid)


def test_sweep_files_still_train_the_loss_of_their_committed_runs():
    """A sweep file reproduces the runs committed from it: changing the shipped loss (configs/base.yaml) must not
    change what a sweep of cross-entropy runs trains."""
    import re

    from glister_train import sweep

    results = Path(__file__).resolve().parents[1] / "experiments" / "results"
    compared = 0
    for path in SWEEP_FILES:
        out = re.search(r"--out runs/(\S+)", path.read_text())
        folders = [f for f in results.glob(f"*/run_files/{out.group(1)}") if f.is_dir()] if out else []
        todo, grid = sweep.points(path)
        for folder in folders:
            for point in todo:
                saved = folder / sweep.run_name(point) / "config.yaml"
                if not saved.is_file():
                    continue
                cfg = resolve_sweep_point(point, grid)
                ran = yaml.safe_load(saved.read_text()).get("train", {})
                assert cfg.train.early_learning == ran.get("early_learning", 0.0), (path.name, saved.parent.name)
                compared += 1
    assert compared >= 20  # the committed runs of several sweep files, cross-entropy and early learning


def test_yaml_round_trip(tmp_path: Path):
    cfg = resolve("--preset", "smoke", "--fraction", "0.3", "--set", "train.weight_decay=1e-4")
    (tmp_path / "config.yaml").write_text(C.to_yaml(cfg))
    assert C.load_file(tmp_path / "config.yaml") == cfg


def test_resolution_order_later_wins(tmp_path: Path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("train:\n  epochs: 7\n  lr: 0.2\n")
    cfg = resolve("--preset", "smoke", "--config", str(extra), "--epochs", "9", "--set", "train.epochs=11")
    assert cfg.train.epochs == 11  # --set beats the flag, which beats the file
    assert cfg.train.lr == 0.2  # the file beats the preset
    assert cfg.model.width == C.load_preset("smoke").model.width


def test_flags_are_typed():
    cfg = resolve("--fraction", "0.3", "--select-every", "5", "--kappa", "0.5", "--width", "32", "--seed", "3")
    assert (cfg.selection.fraction, cfg.selection.select_every, cfg.selection.kappa) == (0.3, 5, 0.5)
    assert (cfg.model.width, cfg.run.seed) == (32, 3)


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'.*did you mean 'epochs'"):
        resolve("--set", "train.epoch=3")
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        C.merge(C.Config(), {"trian": {"epochs": 3}})


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown preset 'smok'; available: .*smoke"):
        resolve("--preset", "smok")


@pytest.mark.parametrize("argv, message", [
    (["--fraction", "0"], r"selection.fraction: 0.0 is invalid; it must be in \(0, 1\]"),
    (["--fraction", "1.5"], r"selection.fraction: 1.5 is invalid"),
    (["--fraction", "abc"], r"selection.fraction: expected a number, got 'abc'"),
    (["--select-every", "0"], r"selection.select_every: 0 is invalid; it must be an integer >= 1"),
    (["--kappa", "1"], r"selection.kappa: 1.0 is invalid; it must be in \[0, 1\)"),
    (["--kappa", "-0.1"], r"selection.kappa: -0.1 is invalid"),
    (["--set", "selection.kappa_matched=true"], r"selection.kappa_matched: True is invalid; it must be false when "
                                                r"selection.kappa is 0"),
    (["--epochs", "0"], r"train.epochs: 0 is invalid; it must be an integer >= 1"),
    (["--epochs", "2.5"], r"train.epochs: expected an integer, got '2.5'"),
    (["--selector", "best"], r"selection.selector: 'best' is not one of"),
    (["--set", "runtime.channels_last=maybe"], r"runtime.channels_last: expected true or false"),
    (["--set", "lr=0.1"], r"expected section.key=value"),
    (["--set", "run.progress=off"], r"run.progress: expected a string, got False \(YAML reads off/on/no/yes as False: "
                                    r"quote the word"),
    (["--set", "run.progress='off'"], r"run.progress: 'off' is not one of"),
    (["--set", "data.imbalance=0.5"], r"data.imbalance: 0.5 is invalid; it must be >= 1"),
    (["--set", "selection.drop_share_scale=0"], r"selection.drop_share_scale: 0.0 is invalid; it must be a positive"),
    (["--set", "selection.drop_share_scale=inf"], r"selection.drop_share_scale: inf is invalid"),
    (["--set", "selection.agreement_sample=2.5"], r"selection.agreement_sample: expected an integer, got 2.5"),
    (["--set", "selection.eta=0.1"], r"selection.eta: not an option of the filtered-random selector \(its options: "
                                     r"class_budget, agreement_sample, drop_share_scale, ignore_below\)"),
    (["--set", "selection.hard_ratio=2"], r"selection.hard_ratio: not an option of the filtered-random selector"),
    (["--selector", "random", "--set", "selection.ignore_below=0.2"],
     r"selection.ignore_below: not an option of the random selector \(its options: class_budget\)"),
    (["--selector", "full", "--set", "selection.ignore_below=0.2"],
     r"selection.ignore_below: not an option of the full selector \(its options: none\)"),
    (["--selector", "glister", "--set", "selection.temperature=0.5"], r"selection.temperature: 0.5 applies to "
                                                                         r"sampling: soft, not greedy"),
    (["--selector", "glister", "--set", "selection.greedy=fast"], r"selection.greedy: 'fast' is invalid; it must be "
                                                                     r"one of naive, stochastic, batched"),
    (["--set", "selection.fracton=0.3"], r"did you mean selection.fraction"),
    (["--selector", "full", "--budget-fraction", "0"], r"train.budget_fraction: 0.0 is invalid; it must be in \(0, 1\]"),
    (["--budget-fraction", "0.3"], r"train.budget_fraction: 0.3 is invalid; it must be 1 with selector filtered-random "
                                   r"\(it shortens a full-data run; a subset run's budget is selection.fraction\)"),
])
def test_bad_values_name_the_key_and_the_rule(argv, message):
    with pytest.raises(ConfigError, match=message):
        resolve(*argv)


def test_presets_are_found_in_an_installed_package(tmp_path, monkeypatch):
    """After a regular ``pip install .`` the presets are a namespace package: ``files()`` returns a
    MultiplexedPath, which once made every preset 'not exist'."""
    from importlib import resources
    from importlib.resources.readers import MultiplexedPath

    installed = tmp_path / "site-packages" / "glister_train" / "configs"
    installed.mkdir(parents=True)
    for name in ("base.yaml", "smoke.yaml"):
        (installed / name).write_text((C.Path(__file__).resolve().parent.parent / "configs" / name).read_text())
    monkeypatch.setattr(C, "__file__", str(tmp_path / "elsewhere" / "glister_train" / "config.py"))
    monkeypatch.setattr(resources, "files", lambda package: MultiplexedPath(installed))
    assert C.configs_dir() == installed
    assert C.load_preset("smoke").train.epochs == 2


def test_the_selectors_options_are_written_beside_the_schedule_and_read_back():
    cfg = resolve("--selector", "glister", "--set", "selection.greedy=stochastic")
    assert cfg.selection.options["greedy"] == "stochastic" and cfg.selection.options["eta"] == 0.0  # completed
    flat = C.flatten(cfg)
    assert flat["selection.greedy"] == "stochastic" and "selection.options" not in flat
    assert C.validate(C.merge(C.Config(), C.to_dict(cfg))) == cfg
    default = resolve().selection
    assert default.selector == "filtered-random" and default.options == {
        "class_budget": "val_share", "agreement_sample": 1000, "drop_share_scale": 1.0, "ignore_below": 0.2}


@pytest.mark.parametrize("shares, read_as", [(None, 0.0), ([], 0.0), ([0.0, 0.31, 0.0, 0.25], 0.2),
                                             ([0.0, 0.31, 0.12], 0.0)])
def test_a_run_from_before_ignore_below_is_read_as_it_ran(tmp_path: Path, shares, read_as):
    """It acted on every estimate: that is today's default only where no estimate it acted on was below the gate."""
    from glister_train.retired import translate

    ran = {"selection": {"selector": "filtered-random", "fraction": 0.3, "drop_share_scale": 1.0}}
    new, retired = translate(ran, shares)
    assert new["selection"]["ignore_below"] == read_as and retired == {}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(ran))
    assert C.load_file(tmp_path / "config.yaml").selection.options["ignore_below"] == 0.0  # resumed as it ran
    kept = {"selection": {**ran["selection"], "ignore_below": 0.05}}
    assert translate(kept, [0.0])[0]["selection"]["ignore_below"] == 0.05  # a recorded value is never replaced


def test_a_run_folder_from_before_the_split_is_refused_for_reuse_in_one_line(tmp_path: Path):
    old = {"selection": {"selector": "glister", "fraction": 0.3, "sampling": "soft", "temperature": float("inf"),
                         "score_source": "auto", "drop_by": "confidence", "class_budget": "val_share"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match="written before the selection options were split .* cannot be resumed"):
        C.load_file(tmp_path / "config.yaml")


@pytest.mark.parametrize("dropped, retired", [({"min_drop_share": 0.2}, {"min_drop_share": 0.2}),
                                             ({"rank_by": "trusted"}, {"rank_by": "trusted"}),
                                             ({"rank_by": "margin"}, {"rank_by": "margin"}),
                                             ({"rank_by": "confidence"}, {}),
                                             ({"correct_loss_from": 5}, {"correct_loss_from": 5}),
                                             ({"relabel_above": 0.5, "relabel_from": 22},
                                              {"relabel_above": 0.5, "relabel_from": 22}),
                                             ({"agreement_mix": "val_share"}, {"agreement_mix": "val_share"}),
                                             ({"drop_share_per": "class"}, {"drop_share_per": "class"}),
                                             ({"draw_by": "variance"}, {"draw_by": "variance"}),
                                             ({"draw_by": "uniform"}, {}),
                                             ({"hold_largest": True}, {"hold_largest": True}),
                                             ({"hold_largest": False}, {}),
                                             ({"without_replacement": True}, {"without_replacement": True}),
                                             ({"min_drop_share": 0.0}, {})])
def test_a_run_with_an_option_since_removed_is_read_as_it_ran_and_resumed_only_if_it_was_off(tmp_path: Path, dropped,
                                                                                             retired):
    from glister_train.retired import translate

    ran = {"selection": {"selector": "filtered-random", "fraction": 0.3, "drop_share_scale": 1.0, **dropped}}
    new, found = translate(ran)
    assert found == retired
    assert new["selection"] == {"selector": "filtered-random", "fraction": 0.3, "drop_share_scale": 1.0,
                                "ignore_below": 0.0}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(ran))
    if retired:
        with pytest.raises(ConfigError, match=r"ran (selection\.\w+=\S+, )+a lever since removed .* cannot be resumed"):
            C.load_file(tmp_path / "config.yaml")
    else:  # it ran exactly what filtered-random runs now
        assert C.load_file(tmp_path / "config.yaml").selection.options["drop_share_scale"] == 1.0


def test_a_class_mix_since_removed_is_named_and_read_with_a_mix_that_validates(tmp_path: Path):
    from glister_train.retired import translate

    ran = {"selection": {"selector": "adaptive-random", "fraction": 0.3, "class_budget": "deferred",
                         "balance_from": 0.67}}
    new, found = translate(ran)
    assert found == {"class_budget": "deferred", "balance_from": 0.67}
    assert new["selection"] == {"selector": "adaptive-random", "fraction": 0.3, "class_budget": "size"}
    C.validate(C.merge(C.Config(), new))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(ran))
    with pytest.raises(ConfigError, match=r"ran selection\.balance_from=0\.67, selection\.class_budget=deferred, a lever"):
        C.load_file(tmp_path / "config.yaml")
    kept = {"selection": {"selector": "adaptive-random", "fraction": 0.3, "class_budget": "val_share"}}
    assert translate(kept) == (kept, {})


def test_retired_settings_translate_to_what_the_run_ran():
    from glister_train.retired import translate

    base = {"selector": "glister", "fraction": 0.3, "select_every": 3, "sampling": "soft", "temperature": float("inf"),
            "score_source": "auto", "drop_by": "confidence", "drop_share_auto": True, "agreement_sample": 1000,
            "class_budget": "val_share", "drop_share_scale": 1.0, "coverage": False, "hard_ratio": 1.0}
    new, retired = translate({"selection": base})
    assert new["selection"] == {"selector": "filtered-random", "fraction": 0.3, "select_every": 3,
                                "class_budget": "val_share", "drop_share_scale": 1.0,
                                "agreement_sample": 1000, "ignore_below": 0.0} and retired == {}
    _, retired = translate({"selection": {**base, "drop_by": "margin"}})
    assert retired == {"rank_by": "margin"}  # the area under the margin, since removed
    _, retired = translate({"selection": {**base, "coverage": True, "agreement_sample": 0}})
    assert retired == {"coverage": True, "agreement_sample": 0}
    new, _ = translate({"selection": {**base, "sampling": "greedy", "greedy": "batched", "lookahead": "sum"}})
    assert new["selection"]["selector"] == "glister" and new["selection"]["greedy"] == "batched"
    new, retired = translate({"selection": {**base, "selector": "adaptive-random", "coverage": True}})
    assert new["selection"] == {"selector": "adaptive-random", "fraction": 0.3, "select_every": 3} and retired == {}


def test_every_package_folder_ships_in_the_wheel():
    """pyproject lists the packages by hand (the presets' folder is mapped from outside the package): none missing."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(root).parts) for p in (root / "glister_train").rglob("__init__.py")}
    assert folders <= listed, f"add to [tool.setuptools] packages: {sorted(folders - listed)}"


def test_the_configs_readme_lists_every_key():
    """configs/README.md names every section's keys: a key added to config.py and not documented fails here."""
    import dataclasses
    import re

    from glister_train.config import Config

    text = " ".join((Path(__file__).resolve().parents[1] / "configs" / "README.md").read_text().split())
    for section in dataclasses.fields(Config):
        listed = re.search(rf"`{section.name}` \(([^)]*)\)", text)
        assert listed, f"configs/README.md does not list the {section.name} section"
        names = set(re.findall(r"[a-z_]+", listed.group(1)))
        missing = [f.name for f in dataclasses.fields(getattr(Config(), section.name)) if f.name not in names]
        assert not missing, f"configs/README.md, {section.name}: {missing} not listed"

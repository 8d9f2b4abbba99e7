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


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_every_sweep_point_resolves_to_a_valid_config(path: Path):
    from glister_train import sweep

    todo, grid = sweep.points(path)
    assert todo
    for point in todo:
        argv = sweep.command(point, grid, Path("run"), 1, [])[3:]  # drop `python -m glister_train`
        resolve(*argv[: argv.index("--out")])


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
    (["--set", "selection.drop_share_scale=0"], r"selection.drop_share_scale: 0.0 is invalid; it must be > 0"),
    (["--set", "selection.hard_ratio=0.5"], r"selection.hard_ratio: 0.5 is invalid; it must be >= 1"),
    (["--set", "selection.hard_ratio=2", "--set", "selection.temperature=1"], r"selection.hard_ratio: 2.0 is invalid"),
    (["--set", "selection.coverage=true", "--set", "selection.temperature=1"], r"selection.coverage: True is invalid"),
    (["--set", "selection.curriculum=1.5"], r"selection.curriculum: 1.5 is invalid; it must be a share of the epochs"),
    (["--set", "selection.curriculum=0.3", "--set", "selection.drop_by=gain"], r"selection.curriculum: 0.3 is invalid"),
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


def test_a_run_written_before_a_key_existed_reads_back_as_it_ran(tmp_path: Path):
    """Keys added later default (in the dataclass) to the behaviour runs had before them; base.yaml may differ."""
    cfg = C.to_dict(resolve("--preset", "smoke"))
    for key in ("agreement_sample", "first_subset", "class_budget", "drop_share_scale"):
        del cfg["selection"][key]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    old = C.load_file(tmp_path / "config.yaml")
    assert old.selection.agreement_sample == 0 and old.selection.first_subset == "auto"
    assert old.selection.class_budget == "size" and old.selection.drop_share_scale == 1.0
    new = resolve("--preset", "smoke").selection  # new runs: base.yaml
    assert new.agreement_sample == 1000 and new.class_budget == "val_share"


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

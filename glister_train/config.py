"""The run configuration: frozen dataclasses, YAML presets and overrides.

Resolution order, later wins: ``configs/base.yaml`` -> ``--preset NAME`` ->
``--config FILE`` -> CLI flags -> ``--set section.key=value``. Every key is
checked: an unknown key or a bad value raises :class:`ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import choices as O
from .errors import ConfigError

SELECTORS = O.SELECTOR_NAMES
DATASETS = ("auto", "cifar10", "npz", "folder")
MODELS = ("resnet18", "tiny")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
NOISE_KINDS = ("symmetric", "pairs", "instance")
TRACKERS = ("auto", "local", "none", "mlflow", "sagemaker")



@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | npz | folder | auto (from what data_dir holds)
    data_dir: str = "data"
    val_dir: str = ""  # a separate validation set (same format; its training part is used) instead of a split
    download: bool = True  # cifar10 only: fetch the official archive when it is missing
    num_classes: int = 0  # 0 = from the dataset (cifar10: 10; folder: class folders; npz: classes.txt or max label + 1)
    val_fraction: float = 0.1  # held out of train for validation (and GLISTER); never the test set
    split_seed: int = 0  # fixed across run seeds so every run is judged on the same validation set
    train_limit: int = 0  # 0 = all; else a seeded class-balanced subsample of the training pool
    test_limit: int = 0  # 0 = all
    augment: bool = True  # pad-4 random crop + horizontal flip, batched on tensors
    label_noise: float = 0.0  # share of training labels made wrong (validation and test stay clean)
    # symmetric (a uniformly drawn other class) | pairs (CIFAR-10 class pairs) | instance (in each class, the images a
    # reference model finds most ambiguous, to the class it confuses them with: glister_train/instance_noise.py)
    noise_kind: str = "symmetric"
    # share of the validation (trusted) labels made wrong, of the same kind and seed: real trusted sets are
    # consolidated human labels, a few percent wrong
    val_noise: float = 0.0
    noise_seed: int = 0  # fixed across run seeds: every run of a comparison sees the same wrong labels
    # a labels file (.npy, or .npz with `labels`): one label per image of the dataset's training set, in its order,
    # replacing the training split's labels (e.g. CIFAR-10N's human labels); the ones that differ are measured as
    # wrong, never shown to a selector
    train_labels: str = ""
    val_labels: str = ""  # the same for the validation split: a trusted set whose own labels are a little noisy
    # > 1: a long-tailed training split, class c keeping imbalance^(-c/(C-1)) of its examples (the largest class
    # `imbalance` times the smallest); validation and test stay balanced. Seeded by noise_seed, like the noise.
    imbalance: float = 1.0


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet18"  # resnet18 | tiny
    width: int = 64  # channels of the first stage; 64 is the standard ResNet-18
    init_from: str = ""  # a model file or run folder: start from its architecture and weights (warm start)
    freeze: str = ""  # keep every stage up to and including this one fixed (e.g. layer3: train layer4 and fc)


def trained_fraction(selector: str, fraction: float) -> float:
    """The share of the pool a run trains on: ``full`` ignores ``selection.fraction`` (a preset's value)."""
    return 1.0 if selector == "full" else float(fraction)


@dataclass(frozen=True)
class SelectionConfig:
    selector: str = O.DEFAULT_SELECTOR  # full | random | adaptive-random | filtered-random | glister
    fraction: float = 0.1
    select_every: int = 20  # epochs between selections (R)
    kappa: float = 0.0  # fraction of the epochs trained on the full data before selection starts
    # count that warm start against the budget, as CORDS' -Warm variants do: ceil(kappa * epochs * fraction) full-data
    # epochs, then the epochs up to round(kappa * epochs) are skipped (the learning rate keeps its schedule)
    kappa_matched: bool = False
    # who picks the first subset of a run that starts selecting at epoch 0: auto = at random for a fresh model,
    # the selector for a warm-started one (model.init_from) | random | selector
    first_subset: str = "auto"
    # the chosen selector's own options, written beside the keys above (``selection.rank_by: margin``); their
    # defaults and rules are the selector's options dataclass (glister_train/selection/), which validate() binds
    options: dict = field(default_factory=dict)


SCHEDULE_KEYS = tuple(f.name for f in fields(SelectionConfig) if f.name != "options")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 300
    batch_size: int = 20
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    eval_every: int = 1  # evaluate on validation and test every N epochs (and always at the end)
    eval_batch_size: int = 0  # 0 = auto: 64 on a CPU (measured fastest there: experiments/README.md, "CPU speed"), 256 on a GPU
    capture_epochs: int = 0  # > 0: collect per-filter statistics (capture.pt) during the last N epochs, for pruning
    # full data on a subset run's budget: train ceil(budget_fraction * epochs) epochs, the whole cosine schedule over
    # them (selector full only; 1 = all of them). 0.3 gives the baseline a 30% run competes with at equal compute
    budget_fraction: float = 1.0
    # > 0: early-learning regularization (early_learning.py) with this weight; each example's target is the running
    # average of its predictions, early_learning_momentum of the old target kept at each visit
    early_learning: float = 0.0
    early_learning_momentum: float = 0.7

    @property
    def scheduled_epochs(self) -> int:
        """The epochs this run trains: ``epochs``, or the fewest full-data epochs that cost at least
        ``budget_fraction`` of them (``0.3 x 45 = 13.5 -> 14``), never fewer than 1."""
        return max(1, math.ceil(self.budget_fraction * self.epochs - 1e-9))


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); auto = bf16 where the hardware runs it fast
    channels_last: bool = True
    threads: int = 0  # 0 = one per available core
    compile: bool = False  # torch.compile the model (pays off on GPUs, not on this CPU: see README)


@dataclass(frozen=True)
class RunConfig:
    out: str = ""  # run folder; empty = runs/<time>-<selector>-f<fraction>-s<seed>
    seed: int = 0
    tracker: str = "auto"  # auto (sagemaker inside a job, else local) | local | none | mlflow | sagemaker
    tracking_uri: str = ""  # mlflow: empty = sqlite:///mlflow.db in the working directory
    experiment_name: str = ""  # mlflow experiment / SageMaker experiment; empty = glister-train
    run_name: str = ""  # empty = the run folder's name
    tracking_timeout: float = 10.0  # seconds a remote tracker gets at the end to deliver what is queued
    progress: str = "auto"  # auto (bar on a terminal) | bar | none


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ---------------------------------------------------------------- conversion


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """The config as YAML holds it: the selector's options beside the selection section's other keys."""
    out = dataclasses.asdict(cfg)
    out["selection"] = {**{k: v for k, v in out["selection"].items() if k != "options"}, **cfg.selection.options}
    return out


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _section_types() -> dict[str, type]:
    defaults = Config()
    return {f.name: type(getattr(defaults, f.name)) for f in fields(Config)}


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Convert a YAML or command-line value to the field's type, or say why it cannot be."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if kind is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        hint = (f" (YAML reads off/on/no/yes as {value}: quote the word, e.g. --set '{key}=\"off\"')"
                if isinstance(value, bool) else "")
        raise ConfigError(f"{key}: expected a string, got {value!r}{hint}")
    raise TypeError(kind)


def _unknown(key: str, choices: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], [c.split(".")[-1] for c in choices], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; valid keys: {', '.join(choices)}")


def merge(cfg: Config, overrides: Mapping[str, Any], source: str = "override") -> Config:
    """Apply a nested ``{section: {key: value}}`` mapping to ``cfg``; unknown keys are errors."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(overrides).__name__}")
    sections = _section_types()
    updated = {}
    for section, values in overrides.items():
        if section not in sections:
            raise _unknown(str(section), list(sections))
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping, got {values!r}")
        kinds = {f.name: f.type for f in fields(sections[section]) if f.name != "options"}
        current = getattr(cfg, section)
        changes, options = {}, {}
        for key, value in values.items():
            name = f"{section}.{key}"
            if section == "selection" and key not in kinds:
                options[str(key)] = value  # the selector's own: checked against its options by validate()
                continue
            if key not in kinds:
                raise _unknown(name, [f"{section}.{k}" for k in kinds])
            changes[key] = _coerce(name, value, _python_type(kinds[key]))
        if options:
            changes["options"] = {**current.options, **options}
        updated[section] = replace(current, **changes)
    return replace(cfg, **updated)


def with_selector(cfg: Config, selector: str) -> Config:
    """``cfg`` with another selector and that selector's default options (the old options are not its own)."""
    if selector == cfg.selection.selector:
        return cfg
    return replace(cfg, selection=replace(cfg.selection, selector=selector, options={}))


def _python_type(annotation: Any) -> type:
    # `from __future__ import annotations` turns field types into strings
    return {"bool": bool, "int": int, "float": float, "str": str}.get(annotation, annotation)


def parse_assignment(text: str) -> dict[str, dict[str, Any]]:
    """``train.lr=0.1`` -> ``{"train": {"lr": "0.1"}}`` (typed later by :func:`merge`)."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.lr=0.05")
    section, _, name = key.strip().partition(".")
    return {section: {name: yaml.safe_load(value) if value.strip() else ""}}


# ---------------------------------------------------------------- files


def configs_dir() -> Path:
    """The presets folder: ``configs/`` in a checkout, packaged as ``glister_train.configs`` when installed."""
    checkout = Path(__file__).resolve().parent.parent / "configs"
    if (checkout / "base.yaml").is_file():
        return checkout
    # an installed glister_train.configs is a namespace package (no __init__.py): files() gives a
    # MultiplexedPath, whose str() is not a path, but a file inside it is an ordinary one
    return Path(str(resources.files("glister_train.configs").joinpath("base.yaml"))).parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.yaml") if p.stem != "base")


def load_yaml(path: str | Path, what: str = "config file") -> Any:
    """A YAML file's content (``safe_load``: no tag runs code); a missing, non-UTF-8 or invalid file is a one-line
    ConfigError that calls it ``what``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML ({getattr(exc, 'problem', None) or 'parse error'}"
                          f"{at})") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    return data


def load_preset(name: str) -> Config:
    """base.yaml with the named preset on top (``base`` alone for name ``base`` or empty)."""
    cfg = merge(Config(), read_yaml(configs_dir() / "base.yaml"), "base.yaml")
    if name and name != "base":
        path = configs_dir() / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
        cfg = merge(cfg, read_yaml(path), path.name)
    return cfg


def load_file(path: str | Path) -> Config:
    """A config file written by a run (``config.yaml``) or by hand, on top of the defaults. A run folder's config
    that set a lever since retired names it (``report`` still reads it); options since retired that were off are
    dropped, as the run did what the selector does now; an option added since is set to what the run did."""
    from .retired import drop_retired_options, fill_added_options, retired_keys

    raw = read_yaml(path)
    old = retired_keys(raw)
    if old:
        raise ConfigError(f"{str(path)!r} was written before the selection options were split between the selectors "
                          f"(it sets {', '.join('selection.' + k for k in old[:4])}); `report` reads it, but it "
                          "cannot be resumed or reused: start a new run")
    raw, retired = drop_retired_options(raw)
    if retired:
        levers = ", ".join(f"selection.{k}={v}" for k, v in retired.items())
        raise ConfigError(f"{str(path)!r} ran {levers}, a lever since removed (its figures are in the selector's "
                          "ablation table); `report` reads it, but it cannot be resumed or reused: start a new run")
    return validate(merge(Config(), fill_added_options(raw), str(path)))


# ---------------------------------------------------------------- checks


def validate(cfg: Config) -> Config:
    """Reject values that cannot produce a meaningful run; return ``cfg`` unchanged otherwise."""
    s, t, d, m, r, rt = cfg.selection, cfg.train, cfg.data, cfg.model, cfg.run, cfg.runtime

    def choice(key: str, value: str, options: tuple[str, ...]) -> None:
        if value not in options:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(options)}")

    def check(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {value!r} is invalid; it must be {rule}")

    choice("selection.selector", s.selector, SELECTORS)
    check(0 < s.fraction <= 1 and math.isfinite(s.fraction), "selection.fraction", s.fraction, "in (0, 1], e.g. 0.3 for 30%")
    check(s.select_every >= 1, "selection.select_every", s.select_every, "an integer >= 1 (epochs between selections)")
    check(0 <= s.kappa < 1, "selection.kappa", s.kappa, "in [0, 1) (the share of epochs trained on full data first)")
    check(not s.kappa_matched or s.kappa > 0, "selection.kappa_matched", s.kappa_matched,
          "false when selection.kappa is 0 (it counts the warm start against the budget; set kappa, e.g. 0.5)")
    choice("selection.first_subset", s.first_subset, O.FIRST_SUBSET)
    check(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
    check(t.batch_size >= 1, "train.batch_size", t.batch_size, "an integer >= 1")
    check(t.eval_batch_size >= 0, "train.eval_batch_size", t.eval_batch_size, "an integer >= 1, or 0 for the device's default")
    check(t.lr > 0 and math.isfinite(t.lr), "train.lr", t.lr, "a positive number")
    check(0 <= t.momentum < 1, "train.momentum", t.momentum, "in [0, 1)")
    check(0 <= t.weight_decay < math.inf, "train.weight_decay", t.weight_decay, "a finite number >= 0")
    check(t.eval_every >= 1, "train.eval_every", t.eval_every, "an integer >= 1")
    check(0 < t.budget_fraction <= 1, "train.budget_fraction", t.budget_fraction,
          "in (0, 1], e.g. 0.3 for full data on a 30% run's budget")
    check(t.budget_fraction == 1 or s.selector == "full", "train.budget_fraction", t.budget_fraction,
          f"1 with selector {s.selector} (it shortens a full-data run; a subset run's budget is selection.fraction)")
    check(0 <= t.early_learning < math.inf, "train.early_learning", t.early_learning,
          "a finite number >= 0 (0 = off; 3 is the published weight for CIFAR-10)")
    check(0 <= t.early_learning_momentum < 1, "train.early_learning_momentum", t.early_learning_momentum, "in [0, 1)")
    check(0 <= t.capture_epochs <= t.scheduled_epochs, "train.capture_epochs", t.capture_epochs,
          f"between 0 and the epochs trained ({t.scheduled_epochs})")
    choice("data.dataset", d.dataset, DATASETS)
    check(0 < d.val_fraction < 1, "data.val_fraction", d.val_fraction, "in (0, 1), e.g. 0.1")
    check(d.train_limit >= 0, "data.train_limit", d.train_limit, ">= 0 (0 = the whole training pool)")
    check(d.num_classes >= 0, "data.num_classes", d.num_classes, ">= 0 (0 = from the dataset)")
    check(0 <= d.label_noise < 1, "data.label_noise", d.label_noise, "in [0, 1), e.g. 0.4 for 40% wrong labels")
    check(0 <= d.val_noise < 1, "data.val_noise", d.val_noise, "in [0, 1), e.g. 0.08 for 8% wrong validation labels")
    check(not (d.val_noise and d.val_labels), "data.val_noise", d.val_noise,
          "0 when data.val_labels gives the validation labels (drop one of them)")
    choice("data.noise_kind", d.noise_kind, NOISE_KINDS)
    check(d.imbalance >= 1 and math.isfinite(d.imbalance), "data.imbalance", d.imbalance,
          ">= 1: the largest training class over the smallest, e.g. 10 (1 = as the data are)")
    check(d.test_limit >= 0, "data.test_limit", d.test_limit, ">= 0 (0 = the whole test set)")
    choice("model.name", m.name, MODELS)
    check(m.width >= 1, "model.width", m.width, "an integer >= 1 (64 = standard ResNet-18)")
    choice("runtime.device", rt.device, DEVICES)
    choice("runtime.precision", rt.precision, PRECISIONS)
    check(rt.threads >= 0, "runtime.threads", rt.threads, ">= 0 (0 = one per core)")
    choice("run.tracker", r.tracker, TRACKERS)
    check(0 <= r.tracking_timeout < math.inf, "run.tracking_timeout", r.tracking_timeout, ">= 0 seconds")
    choice("run.progress", r.progress, ("auto", "bar", "none"))
    return replace(cfg, selection=replace(s, options=bound_options(s)))


def bound_options(s: SelectionConfig) -> dict[str, Any]:
    """The chosen selector's options from ``s.options``, converted, checked and completed with its defaults."""
    from .selection import selector_options  # the options live with the selectors (torch)

    try:
        return dataclasses.asdict(selector_options(s.selector, s.options))
    except ConfigError as exc:
        close = [k for k in s.options if difflib.get_close_matches(k, SCHEDULE_KEYS, n=1)]
        if close and close[0] not in SCHEDULE_KEYS:
            hint = difflib.get_close_matches(close[0], SCHEDULE_KEYS, n=1)[0]
            raise ConfigError(f"{exc} (did you mean selection.{hint}?)") from None
        raise


def flatten(cfg: Config) -> dict[str, Any]:
    """``{"selection.fraction": 0.3, ...}``: the form trackers log as parameters."""
    return {f"{section}.{k}": v for section, values in to_dict(cfg).items() for k, v in values.items()}


def diff(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    fa, fb = flatten(a), flatten(b)
    return {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}


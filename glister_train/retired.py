"""Run folders that set levers since retired, read for reports.

Before the selectors owned their options (commit 046875f and earlier) one ``glister`` selector read 26 keys;
``sampling: soft`` with ``temperature: .inf`` was in truth the validation-calibrated filter that is
``filtered-random`` now. Since then a few of a selector's own options were screened, lost and were removed
(:data:`DROPPED_OPTIONS`, and one value of a kept option, :data:`DROPPED_VALUES`; their rows stay in the
ablation tables).
:func:`translate` maps such a config onto the current selectors and names every retired lever that was switched
on, so that ``report`` and ``experiments/claim_table.py`` label those runs for what they ran. Such a folder is not
resumed (:func:`config.load_file` refuses it with a one-line message), unless its retired options were all off:
then it ran what the selector runs now, and they are dropped (:func:`drop_retired_options`). An option a
selector gained later (:data:`ADDED_OPTIONS`) is filled in with the value such a run ran (:func:`fill_added_options`).
"""

from __future__ import annotations

import math
from typing import Any

# every key of the old `selection` section beyond the schedule, with the value that meant "off" (or what the
# shipped default did) where a run setting anything else ran a lever that has been retired
OLD_KEYS: dict[str, Any] = {
    "greedy": None, "block_size": None, "epsilon": None, "per_class": None, "class_budget": None,
    "last_layer": None, "lookahead": None, "eta": None, "sampling": None, "temperature": None,
    "val_gradient": None, "backend": None, "agreement_sample": None, "drop_share_scale": None, "drop_by": None,
    "pool_fraction": 1.0, "uniform_share": 0.0, "drop_share": 0.0, "drop_negative": False, "redraw": True,
    "center_features": False, "score_source": "auto", "drop_share_auto": True, "hard_ratio": 1.0,
    "coverage": False, "curriculum": 0.0,
}
# a selector's own options removed after the split, each with the value that ran what the selector does now
DROPPED_OPTIONS: dict[str, dict[str, Any]] = {
    "adaptive-random": {"balance_from": None},  # where the deferred class mix turned (DROPPED_VALUES)
    "filtered-random": {
        "min_drop_share": 0.0,  # set aside at least a share: lost under instance noise
        "agreement_mix": "pool",  # the agreement in the validation set's class mix: tied under the 10x imbalance
        "drop_share_per": "pool",  # a share per class: lost under pair noise and the 10x imbalance
        # what is set aside first: the area under the margin (margin) lost under pair and symmetric noise and tied
        # under instance noise; a last layer fitted to the trusted set (trusted) lost under instance noise
        "rank_by": "confidence",
        # forward loss correction by the trusted set's estimate of how labels are changed (Gold Loss Correction),
        # estimated at a selection: lost under pair and instance noise
        "correct_loss_from": 0,
        # training an example on the class the model predicts for it where that is likely enough (label
        # correction), from a given epoch: lost under instance noise
        "relabel_above": 1.0,
        "relabel_from": 0,
        # within a class in proportion to how much the label's probability varied over the example's visits
        # (Active Bias): lost under instance noise
        "draw_by": "uniform",
        # setting aside the largest share estimated so far rather than the latest: lost on CIFAR-10N's human labels
        "hold_largest": False,
        # each draw taking the least drawn examples first (without replacement across epochs): lost on CIFAR-10N's
        # human labels
        "without_replacement": False,
    },
}
# a value of an option a selector keeps, removed since, with the value read in its place (the run is named by the
# retired one)
DROPPED_VALUES: dict[str, dict[str, tuple[Any, Any]]] = {
    # the pool's class mix, then the validation set's from a share balance_from of the run (deferred
    # re-balancing): lost to class-balanced random under the 10x imbalance
    "adaptive-random": {"class_budget": ("deferred", "size")},
}
# options a selector gained after runs were recorded without them, with the value such a run ran
ADDED_OPTIONS: dict[str, dict[str, Any]] = {
    "filtered-random": {"ignore_below": 0.0},  # it acted on every estimate
}
GLISTER_KEYS = ("greedy", "block_size", "epsilon", "eta", "last_layer", "lookahead", "per_class", "backend")


def retired_keys(raw: dict[str, Any]) -> list[str]:
    """The old selection keys a raw config mapping sets that its selector does not own now (empty for a config
    of the current selectors)."""
    import dataclasses

    from .selection import SELECTORS

    selection = raw.get("selection") if isinstance(raw, dict) else None
    if not isinstance(selection, dict):
        return []
    selector = SELECTORS.get(selection.get("selector", "glister"))
    owned = {f.name for f in dataclasses.fields(selector.Options)} if selector else set()
    return [k for k in selection if k in OLD_KEYS and k not in owned]


def drop_retired_options(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the config without the options its selector has dropped since, read as the selector now runs, those it set
    to anything but their off value: key -> value)."""
    selection = raw.get("selection") if isinstance(raw, dict) else None
    if not isinstance(selection, dict):
        return raw, {}
    name = selection.get("selector")
    dropped = DROPPED_OPTIONS.get(name, {})
    kept = {k: v for k, v in selection.items() if k not in dropped}
    retired = {k: v for k, v in selection.items() if k in dropped and v != dropped[k]}
    for key, (value, read_as) in DROPPED_VALUES.get(name, {}).items():
        if kept.get(key) == value:
            kept[key], retired[key] = read_as, value
    return {**raw, "selection": kept}, retired


def logged_drop_shares(metrics: list[dict[str, Any]] | None) -> list[float]:
    """The estimates a filtered-random run logged (``select_drop_share``), in order: what
    :func:`fill_added_options` reads a run from before ``ignore_below`` by."""
    return [m["select_drop_share"] for m in metrics or () if "select_drop_share" in m]


def fill_added_options(raw: dict[str, Any], drop_shares: list[float] | None = None) -> dict[str, Any]:
    """The config with each option its selector gained since (:data:`ADDED_OPTIONS`) set to what the run ran.

    A filtered-random run recorded before ``ignore_below`` acted on every estimate. Given the estimates it logged
    (``select_drop_share``), it is read with today's default where each was 0 or at least that default: the gate
    then changed no estimate it acted on, the random draws do not depend on the estimate, so it set aside and drew
    exactly what the default does now."""
    selection = raw.get("selection") if isinstance(raw, dict) else None
    if not isinstance(selection, dict):
        return raw
    name = selection.get("selector")
    added = {k: v for k, v in ADDED_OPTIONS.get(name, {}).items() if k not in selection}
    if "ignore_below" in added and drop_shares:
        from .selection import SELECTORS

        gate = SELECTORS[name].Options().ignore_below
        if all(share == 0 or share >= gate for share in drop_shares):
            added["ignore_below"] = gate
    return {**raw, "selection": {**selection, **added}}


def translate(raw: dict[str, Any], drop_shares: list[float] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the config with its selection section in the current form, the retired levers it had on: key -> value).

    ``drop_shares``: the estimates the run logged, where it has them (see :func:`fill_added_options`). A run that
    had a retired lever on is read with the options it ran, whatever it logged: its figures stand beside the
    default of its time."""
    if not retired_keys(raw):
        new, retired = drop_retired_options(raw)
        return fill_added_options(new, None if retired else drop_shares), retired
    old = dict(raw["selection"])
    schedule = {k: v for k, v in old.items() if k not in OLD_KEYS}
    retired = {k: old[k] for k, off in OLD_KEYS.items() if off is not None and k in old and old[k] != off}
    if old.get("class_budget") == "val_loss":
        retired["class_budget"] = "val_loss"
    quotas = old.get("class_budget", "size") if old.get("class_budget") in ("size", "val_share") else "size"
    selector = old.get("selector")
    if selector != "glister":  # its glister keys were never read
        options: dict[str, Any] = {}
        retired = {}
    elif old.get("sampling") == "greedy":
        options = {k: old[k] for k in GLISTER_KEYS if k in old}
        options.update(sampling="greedy", class_budget=quotas)
        retired = {k: v for k, v in retired.items() if k in ("pool_fraction", "center_features", "class_budget")}
    elif math.isinf(float(old.get("temperature", 1.0))):  # the filter with uniform draws: filtered-random
        selector = "filtered-random"
        options = {"class_budget": quotas, "drop_share_scale": old.get("drop_share_scale", 1.0)}
        drop_by = old.get("drop_by", "gain")
        if drop_by in ("confidence", "margin"):
            options["rank_by"] = drop_by
        else:
            retired["drop_by"] = drop_by
        if old.get("agreement_sample", 0):
            options["agreement_sample"] = old["agreement_sample"]
        else:
            retired["agreement_sample"] = 0  # the estimate from the (augmented, train-mode) training records
        retired.pop("redraw", None)
    else:  # soft sampling by gain: glister's soft variant, with whatever filter it ran
        options = {k: old[k] for k in GLISTER_KEYS if k in old and k not in ("greedy", "block_size", "epsilon",
                                                                             "lookahead")}
        options.update(sampling="soft", temperature=float(old["temperature"]), class_budget=quotas,
                       val_gradient=old.get("val_gradient", "all"))
        if old.get("drop_share_auto", False) or old.get("drop_share", 0.0):
            retired["drop_by"] = old.get("drop_by", "gain")
        if not old.get("agreement_sample", 0):
            retired["agreement_sample"] = 0
    new, dropped = drop_retired_options({**raw, "selection": {**schedule, "selector": selector, **options}})
    retired.update(dropped)
    return fill_added_options(new, None if retired else drop_shares), retired

"""experiments/claim_table.py: rewriting the claim table inside a README in place, naming each run's row."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "claim_table.py"
spec = importlib.util.spec_from_file_location("claim_table", SCRIPT)
claim_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claim_table)

HEADER = "| configuration | clean, 30%: seed 0 / 1 / 2 (mean ± std) |"


def test_replace_table_swaps_only_the_claim_table():
    readme = "\n".join(["# Title", "", HEADER, "|---|---|", "| full data | 1 |", "", "text after",
                        "", "| other | table |", "|---|---|"])
    new = "\n".join([HEADER, "|---|---|", "| full data | 2 |", "| random | 3 |"])
    out = claim_table.replace_table(readme, new).split("\n")
    assert out[:2] == ["# Title", ""]
    assert out[2:6] == new.split("\n")
    assert out[6:] == ["", "text after", "", "| other | table |", "|---|---|"]


def test_replace_table_refuses_a_file_without_the_table():
    with pytest.raises(SystemExit, match="no claim table"):
        claim_table.replace_table("# Title\n\n| other | table |\n", HEADER + "\n|---|---|")


def _glister(**selection):
    base = {"selector": "glister", "sampling": "soft", "temperature": float("inf"), "agreement_sample": 1000,
            "class_budget": "size"}
    return {"selection": {**base, **selection}}


def test_rows_name_the_quotas_a_run_used():
    """The default row is the val_share filter alone; a stricter filter on val_share quotas is not the default."""
    assert claim_table.configuration(_glister(class_budget="val_share")) == claim_table.ROWS[13]
    assert claim_table.configuration(_glister()) == claim_table.ROWS[7]
    strict = claim_table.configuration(_glister(class_budget="val_share", drop_share_scale=1.5))
    assert strict == f"{claim_table.ROWS[10]}: 1.5, `class_budget: val_share`"
    assert claim_table.configuration(_glister(drop_by="margin")) == claim_table.ROWS[9]

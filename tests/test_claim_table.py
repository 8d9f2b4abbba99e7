"""experiments/claim_table.py: rewriting the claim table inside a README in place."""

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

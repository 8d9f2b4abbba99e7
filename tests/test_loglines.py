"""Every SageMaker metric regex matches the lines the harness really prints and captures the right number."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from glister_train.loglines import metric_definitions


@pytest.mark.slow
def test_regexes_capture_the_printed_values(npz_dir: Path, tmp_path: Path):
    defs = metric_definitions()
    assert len(defs) <= 40 and all(re.compile(d["Regex"]).groups == 1 for d in defs)
    captured = set()
    for selector in ("glister", "filtered-random"):  # between them, every selection metric is printed
        run = tmp_path / selector
        done = subprocess.run([sys.executable, "-m", "glister_train", "--preset", "smoke", "--selector", selector,
                               "--dataset", "npz", "--data-dir", str(npz_dir), "--epochs", "3", "--out", str(run),
                               "--set", "runtime.threads=1"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for d in defs:
            found = [float(m.group(1)) for line in lines if (m := re.search(d["Regex"], line))]
            expected = [r[d["Name"]] for r in rows if d["Name"] in r]
            assert found == [round(v, 4) for v in expected], d["Name"]
            captured |= {d["Name"]} if found else set()
    assert captured == {d["Name"] for d in defs}, "a metric no run printed"

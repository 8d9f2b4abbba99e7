"""Every SageMaker metric regex matches the lines the harness really prints and captures the right number."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from glister_train.loglines import metric_definitions


def test_regexes_capture_the_printed_values(npz_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "glister_train", "--preset", "smoke", "--selector", "glister",
                           "--dataset", "npz", "--data-dir", str(npz_dir), "--epochs", "3", "--out", str(run),
                           "--set", "runtime.threads=1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    defs = metric_definitions()
    assert len(defs) <= 40 and all(re.compile(d["Regex"]).groups == 1 for d in defs)
    for d in defs:
        found = [float(m.group(1)) for line in lines if (m := re.search(d["Regex"], line))]
        expected = [r[d["Name"]] for r in rows if d["Name"] in r]
        assert found, f"{d['Name']}: no line matched {d['Regex']!r}"
        assert found == [round(v, 4) for v in expected], d["Name"]

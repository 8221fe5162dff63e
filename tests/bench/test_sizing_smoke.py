"""bench/sizing.py --quick compares the fixed recipe with the sized one end to end."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_both_recipes_and_the_values_used(tmp_path):
    out = tmp_path / "sizing.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sizing.py"), "--quick", f"--out={out}"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["fixed"]["used"] == {"epochs": 20, "batch_size": 128, "lr": 0.05}
    # 50 labeled digits: batch 8, lr scaled with it, 2000 steps of 7 per epoch.
    assert row["sized"]["used"] == {"epochs": 286, "batch_size": 8, "lr": 0.003125}
    assert 0 <= row["sized"]["test_accuracy"] <= 1

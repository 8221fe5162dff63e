"""bench/sizing.py --quick compares the fixed recipe with the sized one end to end."""

import json

from tests.bench.helpers import run_bench


def test_quick_run_reports_both_recipes_and_the_values_used(tmp_path):
    out = tmp_path / "sizing.json"
    run_bench("sizing.py", "--quick", f"--out={out}")
    (row,) = json.loads(out.read_text())["rows"]
    assert row["fixed"]["used"] == {"epochs": 20, "batch_size": 128, "lr": 0.05}
    # 50 labeled digits: batch 8, lr scaled with it, 2000 steps of 7 per epoch.
    assert row["sized"]["used"] == {"epochs": 286, "batch_size": 8, "lr": 0.003125}
    assert 0 <= row["sized"]["test_accuracy"] <= 1

"""bench/equal_tuning.py runs a tiny sweep per method on the embedded service (no accuracy
asserted)."""

import json

import pytest

from tests.bench.helpers import needs_dataset, run_bench


@pytest.mark.slow
def test_a_quick_run_reports_the_best_point_and_both_comparisons(tmp_path):
    needs_dataset("fashion_mnist")
    run_bench(
        "equal_tuning.py", "--quick", "--trials=1", "--methods", "fitnet", f"--out={tmp_path}"
    )
    report = json.loads((tmp_path / "equal_tuning.json").read_text())
    (row,) = report["rows"]
    assert row["method"] == "fitnet" and row["status"] == "succeeded" and row["points"] == 1
    assert len(row["best_test_accuracy_by_seed"]) == report["seeds"] == 3
    for kind in ("scratch", "kd"):
        assert len(row["baselines_test_accuracy"][kind]) == 3
        assert row["compare"][kind]["seeds"] == 3 and len(row["compare"][kind]["ci95"]) == 2
    table = (tmp_path / "equal_tuning.md").read_text()
    assert "| fitnet | weight=" in table

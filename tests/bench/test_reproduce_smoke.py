"""bench/reproduce.py --quick runs every setting end to end on real data (no accuracy asserted)."""

import json

import pytest

from tests.bench.helpers import needs_dataset, run_bench


@pytest.mark.slow
def test_quick_run_writes_a_table_for_each_setting(tmp_path):
    needs_dataset("fashion_mnist")
    run_bench("reproduce.py", "--quick", f"--out={tmp_path}")
    report = json.loads((tmp_path / "reproduce.json").read_text())
    names = [experiment["name"] for experiment in report["experiments"]]
    assert [name.split(",")[0] for name in names] == ["transfer", "distill", "transfer_distill"]
    for experiment in report["experiments"]:
        # Each setting runs on the service's defaults and on its hand-tuned recipe.
        assert list(experiment["columns"]) == ["defaults", "hand-tuned"]
        for recipe, column in experiment["columns"].items():
            rows = {row["method"]: row for row in column}
            assert any(row["baseline"] for row in rows.values())
            assert any(name.startswith("ot") for name in rows)
            for row in rows.values():
                assert row["recipe"] == recipe
                assert 0.0 <= row["mean"] <= 1.0 and len(row["test_accuracy"]) == 1
                assert row["vs_best_baseline"]["baseline"] in rows
    table = (tmp_path / "reproduce.md").read_text()
    assert "| method | defaults: test accuracy (mean ± std) |" in table
    assert "| hand-tuned: test accuracy (mean ± std) |" in table

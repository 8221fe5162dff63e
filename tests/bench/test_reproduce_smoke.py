"""bench/reproduce.py --quick runs every setting end to end on real data (no accuracy asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from otrt_core.data import DatasetUnavailable, load_arrays
from tests.utils.guards import missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_writes_a_table_for_each_setting(tmp_path):
    try:
        load_arrays("fashion_mnist")
    except DatasetUnavailable as error:  # .ci/run installs it; CI never skips this
        missing(str(error))
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "reproduce.py"), "--quick", f"--out={tmp_path}"],
        check=True,
        capture_output=True,
        timeout=600,
    )
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

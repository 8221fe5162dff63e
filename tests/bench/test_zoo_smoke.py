"""bench/zoo.py --quick trains a zoo model and LeNet-5 (as a graph) the same way."""

import json

import pytest

from tests.bench.helpers import needs_dataset, run_bench


@pytest.mark.slow
def test_quick_run_reports_every_model_on_one_recipe(tmp_path):
    needs_dataset("mnist")
    out = tmp_path / "zoo.json"
    run_bench("zoo.py", "--quick", f"--out={out}")
    rows = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"cnn_small", "lenet5"}
    # LeNet-5 at 28x28: 61,706 parameters, as in the literature's count with ReLU.
    assert rows["lenet5"]["params"] == 61706
    assert rows["cnn_small"]["training"] == rows["lenet5"]["training"]
    for row in rows.values():
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["latency_ms_b1"] > 0

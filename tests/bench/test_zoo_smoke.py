"""bench/zoo.py --quick trains a zoo model and LeNet-5 (as a graph) the same way."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from otrt_core.data import DatasetUnavailable, load_arrays
from tests.utils.guards import missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_reports_every_model_on_one_recipe(tmp_path):
    try:
        load_arrays("mnist")
    except DatasetUnavailable as error:  # .ci/run installs it; CI never skips this
        missing(str(error))
    out = tmp_path / "zoo.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "zoo.py"), "--quick", f"--out={out}"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    rows = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"cnn_small", "lenet5"}
    # LeNet-5 at 28x28: 61,706 parameters, as in the literature's count with ReLU.
    assert rows["lenet5"]["params"] == 61706
    assert rows["cnn_small"]["training"] == rows["lenet5"]["training"]
    for row in rows.values():
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["latency_ms_b1"] > 0

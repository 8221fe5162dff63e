"""bench/ot_overhead.py runs end to end and reports what it promises (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_reports_every_configuration(tmp_path):
    out = tmp_path / "ot_overhead.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "ot_overhead.py"),
        "--quick",
        "--device=cpu",
        "--batch-size=32",
        "--repeats=1",
        "--solve-repeats=1",
        "--widths",
        "64",
        "--epsilons",
        "0.05",
        "0.002",
        f"--out={out}",
    ]
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=300)
    report = json.loads(out.read_text())

    (steps,) = report["steps"]
    assert (steps["student"], steps["teacher"]) == ("resnet20", "resnet56")
    expected = {
        f"{solver}/{layers}"
        for solver in ["auto", "exact", "assignment", "sinkhorn", "naive_emd2"]
        for layers in ["penultimate", "all"]
    }
    assert set(steps["ot"]) == expected
    assert all(row["ot_term_ms"] > 0 for row in steps["ot"].values())
    assert steps["auto_resolves_to"]["penultimate"] == "assignment"
    assert steps["stage_widths_teacher_student"]["penultimate"] == [64, 64]

    assert [(row["p"], row["q"]) for row in report["solve"]] == [(64, 64), (64, 32)]
    for row in report["solve"]:
        # Assignment is exact on equal widths; POT's emd2 solves the same LP as exact.
        if row["p"] == row["q"]:
            assert abs(row["omega_relative_error"]["assignment"]) < 1e-6
        assert abs(row["omega_relative_error"]["naive_emd2"]) < 1e-6
        # Sinkhorn overestimates (an entropic plan is not optimal), within 2% at its defaults.
        assert 0 < row["omega_relative_error"]["sinkhorn"] < 0.02
        errors = row["sinkhorn_error_by_epsilon"]  # a larger epsilon: a larger error
        assert errors["0.05"] > errors["0.002"] > 0
    assert len(report["load_average_start"]) == 3

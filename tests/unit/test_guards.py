"""CUDA tests skip on a machine without CUDA, and fail there when OTRT_REQUIRE_CUDA=1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: nothing to skip")
@pytest.mark.parametrize(
    ("required", "returncode", "outcome"), [("0", 0, "1 skipped"), ("1", 1, "1 error")]
)
def test_cuda_tests_skip_or_fail_as_required(required, returncode, outcome):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "graph_plans",
            str(ROOT / "tests" / "unit" / "ot" / "test_solvers.py"),
        ],
        cwd=ROOT,
        env=os.environ | {"OTRT_REQUIRE_CUDA": required},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == returncode, result.stdout
    assert outcome in result.stdout

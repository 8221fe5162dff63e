"""CUDA tests skip on a machine without CUDA, and fail there when OTRT_REQUIRE_CUDA=1."""

import pytest
import torch

from tests.utils.processes import ROOT, run_pytest


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: nothing to skip")
@pytest.mark.parametrize(
    ("required", "returncode", "outcome"), [("0", 0, "1 skipped"), ("1", 1, "1 error")]
)
def test_cuda_tests_skip_or_fail_as_required(required, returncode, outcome):
    test_file = str(ROOT / "tests" / "unit" / "ot" / "test_solvers.py")
    result = run_pytest("-k", "graph_plans", test_file, env={"OTRT_REQUIRE_CUDA": required})
    assert result.returncode == returncode, result.stdout
    assert outcome in result.stdout

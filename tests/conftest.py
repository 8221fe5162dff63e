"""Fixtures shared by every test: the devices numeric tests run on, and the CUDA guard."""

import pytest
import torch

from tests.utils.guards import missing

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=pytest.mark.cuda,
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each device a numeric test runs on: the CPU, and CUDA when present."""
    return torch.device(request.param)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``cuda`` skips without a CUDA device, or fails with OTRT_REQUIRE_CUDA=1."""
    if item.get_closest_marker("cuda") and not torch.cuda.is_available():
        missing("no CUDA device here", flag="OTRT_REQUIRE_CUDA")

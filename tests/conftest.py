"""Fixtures shared by every test: the devices numeric tests run on, and the CUDA guard."""

import os

import pytest
import torch

from tests.utils.guards import missing

# pytest-xdist runs two test workers on the two cores: each test process, and each trainer
# or server it starts (they inherit the environment), takes one thread, so that two torch
# processes never fight over the same cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OTRT_TORCH_THREADS", "1")
    torch.set_num_threads(1)

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

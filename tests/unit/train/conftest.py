from pathlib import Path

import pytest

from otrt_core.train import RunOptions, train
from tests.utils.specs import digits_spec


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory) -> Path:
    """Weights of an MLP trained on digits (about 95% test accuracy in 3 epochs)."""
    out = tmp_path_factory.mktemp("teacher")
    train(digits_spec(), RunOptions(out_dir=out, device="cpu"), emit=lambda event: None)
    return out / "student.safetensors"

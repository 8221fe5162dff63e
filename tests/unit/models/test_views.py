"""A model's view of the dataset's batches: scale back, resize, convert channels, normalize."""

from __future__ import annotations

import pytest
import torch

from otrt_core.errors import UserError
from otrt_core.models.views import InputView
from otrt_core.spec import ModelInput


def test_grey_8x8_batches_become_normalized_rgb_16x16():
    raw = torch.rand(2, 1, 8, 8)
    dataset_mean, dataset_std = torch.tensor([0.3]), torch.tensor([0.4])
    view = InputView(
        dataset_mean, dataset_std, size=[16, 16], channels=3, mean=[0.5, 0.4, 0.3], std=[0.2] * 3
    )
    out = view((raw - 0.3) / 0.4)
    assert out.shape == (2, 3, 16, 16)
    resized = torch.nn.functional.interpolate(raw, size=(16, 16), mode="bilinear")
    for channel, mean in enumerate((0.5, 0.4, 0.3)):
        assert torch.allclose(out[:, channel], (resized[:, 0] - mean) / 0.2, atol=1e-5)


def test_rgb_becomes_its_luminance():
    raw = torch.tensor([1.0, 0.5, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
    view = InputView(torch.zeros(3), torch.ones(3), size=None, channels=1, mean=None, std=None)
    assert torch.allclose(view(raw), torch.full((1, 1, 2, 2), 0.299 + 0.587 * 0.5))


def test_a_view_holds_no_state():
    view = InputView(torch.zeros(1), torch.ones(1), size=[4], channels=None, mean=[0.0], std=[1.0])
    assert view.state_dict() == {}


@pytest.mark.parametrize(
    ("model_input", "message"),
    [
        ({"size": [32]}, "1 dimensions.*2 spatial"),
        ({"channels": 2}, "not 1 channels into 2"),
        ({"channels": 3, "mean": [0.5]}, "input.mean needs 3 values"),
    ],
)
def test_a_view_that_cannot_apply_says_why(model_input, message):
    with pytest.raises(UserError, match=message):
        ModelInput(**model_input).shape_for((1, 28, 28))


def test_the_view_shape():
    assert ModelInput(size=[16, 16], channels=3).shape_for((1, 28, 28)) == (3, 16, 16)
    assert ModelInput().shape_for((1, 28, 28)) == (1, 28, 28)

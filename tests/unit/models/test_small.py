"""Small models: named stages for MLPs and 1-D/2-D ConvNets, any input shape."""

import pytest
import torch

from otrt_core.models import build_model


@pytest.mark.parametrize(
    ("architecture", "input_shape", "penultimate"),
    [
        ("mlp", (1, 8, 8), 256),
        ("mlp_small", (1, 28, 28), 64),
        ("cnn", (1, 8, 8), 128),
        ("cnn_small", (1, 28, 28), 32),
        ("cnn1d", (1, 40), 128),
        ("cnn1d_small", (1, 40), 32),
    ],
)
def test_stages_and_logits(architecture, input_shape, penultimate):
    model = build_model(architecture, num_classes=5, input_shape=input_shape)
    features = model.forward_stages(torch.randn(3, *input_shape))
    assert list(features) == [*model.stage_names, "logits"]
    assert features["penultimate"].shape == (3, penultimate)
    assert features["logits"].shape == (3, 5)
    assert model.input_shape == input_shape


def test_conv_stages_halve_the_map_after_the_first():
    features = build_model("cnn1d").forward_stages(torch.randn(2, 1, 40))
    assert [features[f"stage{i}"].shape[-1] for i in (1, 2, 3)] == [40, 20, 10]


def test_quarter_width_students_are_much_smaller():
    count = lambda name: sum(p.numel() for p in build_model(name).parameters())  # noqa: E731
    assert count("cnn1d_small") * 8 < count("cnn1d")

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


@pytest.mark.parametrize(
    ("input_shape", "maps"),
    [
        ((1, 28, 28), [(14, 14), (7, 7), (4, 4)]),
        ((3, 32, 32), [(16, 16), (8, 8), (4, 4)]),
        ((1, 8, 8), [(4, 4), (2, 2), (1, 1)]),
        ((1, 5, 3), [(3, 2), (2, 1), (1, 1)]),
    ],
)
def test_image_nets_max_pool_each_stage_into_a_hidden_layer(input_shape, maps):
    """LeNet's design: each stage halves its map by max-pooling (odd sizes round up, so no
    map vanishes), and the penultimate layer is a hidden layer over the last map."""
    model = build_model("cnn_small", input_shape=input_shape)
    features = model.forward_stages(torch.randn(2, *input_shape))
    assert [tuple(features[f"stage{i}"].shape[-2:]) for i in (1, 2, 3)] == maps
    assert isinstance(model.stages[0][-1], torch.nn.MaxPool2d)
    assert features["penultimate"].shape == (2, 32)
    assert (features["penultimate"] >= 0).all()  # after a ReLU


def test_quarter_width_students_are_much_smaller():
    count = lambda name: sum(p.numel() for p in build_model(name).parameters())  # noqa: E731
    assert count("cnn1d_small") * 8 < count("cnn1d")
    assert count("cnn_small") * 8 < count("cnn")

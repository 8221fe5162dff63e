"""CIFAR ResNets: sizes as in the literature, named stages, configurable heads."""

import pytest
import torch

from otrt_core.errors import UserError
from otrt_core.models import ARCHITECTURES, build_model

# Parameter counts reported by Tian et al. (CRD, 2020) for 10 classes, in millions.
PUBLISHED_MILLIONS = {"resnet20": 0.27, "resnet56": 0.86, "resnet8x4": 1.2, "resnet32x4": 7.4}


@pytest.mark.parametrize(("architecture", "millions"), PUBLISHED_MILLIONS.items())
def test_parameter_counts_match_the_literature(architecture, millions):
    count = sum(p.numel() for p in build_model(architecture).parameters())
    assert count / 1e6 == pytest.approx(millions, rel=0.03)


def test_stages_are_named_and_shaped_like_a_cifar_resnet():
    model = build_model("resnet8x4")
    features = model.forward_stages(torch.randn(2, 3, 32, 32))
    assert list(features) == [*model.stage_names, "logits"]
    assert features["stage1"].shape == (2, 64, 32, 32)
    assert features["stage3"].shape == (2, 256, 8, 8)
    assert features["penultimate"].shape == (2, 256)
    torch.testing.assert_close(model(torch.zeros(1, 3, 32, 32)).shape, torch.Size([1, 10]))


def test_classes_and_input_channels_are_configurable():
    model = build_model("resnet8", num_classes=5, input_shape=(1, 32, 32))
    assert model.input_shape == (1, 32, 32)
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 5)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UserError, match="resnet20") as raised:
        build_model("resnet19")
    assert all(name in str(raised.value) for name in ARCHITECTURES)


def test_depths_other_than_6k_plus_2_are_refused():
    from otrt_core.models.cifar_resnet import CifarResNetConfig

    with pytest.raises(ValueError, match="6k \\+ 2"):
        CifarResNetConfig(depth=21)

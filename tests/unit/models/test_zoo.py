"""Every zoo model: named stages, a head, sizes as published, state-dict names as torchvision's."""

import pytest
import torch
from torchvision import models as tv

from otrt_core.models import ARCHITECTURES, REGISTRY, build_model, skeleton

# Millions of parameters: Tian et al. (CRD, 2020) for CIFAR-100 models,
# torchvision for ImageNet ones.
PUBLISHED = {
    "wrn_16_2": (100, 0.70),
    "wrn_40_2": (100, 2.26),
    "vgg8": (100, 3.96),
    "vgg13": (100, 9.46),
    "mobilenetv2": (100, 0.81),
    "shufflenetv1": (100, 0.95),
    "shufflenetv2": (100, 1.36),
    "resnet18": (1000, 11.69),
    "resnet50": (1000, 25.56),
    "mobilenetv3_small": (1000, 2.54),
    "mobilenetv3_large": (1000, 5.48),
}


@pytest.mark.parametrize(("architecture", "expected"), PUBLISHED.items())
def test_sizes_match_the_literature(architecture, expected):
    classes, millions = expected
    model = skeleton(architecture, num_classes=classes)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, rel=0.06)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_model_names_its_stages_and_ends_in_its_head(architecture):
    model = build_model(architecture, num_classes=7).eval()
    with torch.no_grad():
        features = model.forward_stages(torch.randn(2, *REGISTRY[architecture].input_shape))
    assert list(features) == [*model.stage_names, "logits"]
    assert "penultimate" in model.stage_names
    assert features["penultimate"].dim() == 2
    assert features["logits"].shape == (2, 7)
    head = [name for name, _ in model.named_parameters() if model.is_head(name)]
    assert head and all(name.startswith(model.head_prefix) for name in head)
    assert dict(model.named_parameters())[model.head_prefix + "weight"].shape[0] == 7


@pytest.mark.parametrize(
    ("architecture", "reference"),
    [("resnet18", tv.resnet18), ("mobilenetv3_small", tv.mobilenet_v3_small)],
)
def test_imagenet_models_keep_torchvisions_weight_names(architecture, reference):
    ours = skeleton(architecture, num_classes=1000).state_dict()
    theirs = reference(weights=None).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_grey_inputs_change_the_first_convolution():
    model = build_model("resnet18", input_shape=(1, 64, 64)).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 10)

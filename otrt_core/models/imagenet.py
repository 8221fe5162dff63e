"""torchvision's ImageNet-sized models, with named stages and torchvision's own weight names.

Weights come only from users' uploads (never downloaded), so the state-dict
keys are exactly torchvision's: an uploaded torchvision checkpoint loads as is.
The classifier is ``fc`` (ResNets) or ``classifier.3`` (MobileNetV3), which
``head_prefix`` records.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision import models as tv

from otrt_core.models.base import StagedModel

IMAGENET_INPUT = (3, 224, 224)


class TorchvisionResNet(StagedModel):
    """ResNet-18/50: ``stage1..4`` are ``layer1..4``; ``penultimate`` the pooled features."""

    head_prefix = "fc."
    stage_names = ("stage1", "stage2", "stage3", "stage4", "penultimate")

    def __init__(self, depth: int, num_classes: int, input_shape) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        net = (tv.resnet18 if depth == 18 else tv.resnet50)(weights=None, num_classes=num_classes)
        if input_shape[0] != 3:
            net.conv1 = nn.Conv2d(input_shape[0], 64, 7, 2, 3, bias=False)
        for name in (
            "conv1",
            "bn1",
            "relu",
            "maxpool",
            "layer1",
            "layer2",
            "layer3",
            "layer4",
            "fc",
        ):
            setattr(self, name, getattr(net, name))

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        features: dict[str, Tensor] = {}
        for index, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            out = layer(out)
            features[f"stage{index + 1}"] = out
        features["penultimate"] = out.mean(dim=(2, 3))  # (B, 512 or 2048)
        features["logits"] = self.fc(features["penultimate"])
        return features


class TorchvisionMobileNetV3(StagedModel):
    """MobileNetV3 small/large: stages end where the feature map halves; ``penultimate`` is
    the classifier's hidden layer (1024 or 1280 units)."""

    head_prefix = "classifier.3."

    def __init__(self, size: str, num_classes: int, input_shape) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        build = tv.mobilenet_v3_small if size == "small" else tv.mobilenet_v3_large
        net = build(weights=None, num_classes=num_classes)
        if input_shape[0] != 3:
            first = net.features[0][0]
            net.features[0][0] = nn.Conv2d(input_shape[0], first.out_channels, 3, 2, 1, bias=False)
        self.features, self.classifier = net.features, net.classifier
        # Block indices after which the stride-2 blocks start (a new resolution).
        strided = [i for i, block in enumerate(net.features) if _stride(block) == 2]
        self.stage_ends = [*(i - 1 for i in strided[2:]), len(net.features) - 1]
        self.stage_names = (*(f"stage{i + 1}" for i in range(len(self.stage_ends))), "penultimate")

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}
        out = x
        stage = 0
        for index, block in enumerate(self.features):
            out = block(out)
            if index == self.stage_ends[stage]:
                stage += 1
                features[f"stage{stage}"] = out
        hidden = self.classifier[:3](out.mean(dim=(2, 3)))  # Linear, Hardswish, Dropout
        features["penultimate"] = hidden
        features["logits"] = self.classifier[3](hidden)
        return features


def _stride(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return max(conv.stride[0] for conv in convs) if convs else 1


BUILDERS = {
    "resnet18": lambda classes, shape: TorchvisionResNet(18, classes, shape),
    "resnet50": lambda classes, shape: TorchvisionResNet(50, classes, shape),
    "mobilenetv3_small": lambda classes, shape: TorchvisionMobileNetV3("small", classes, shape),
    "mobilenetv3_large": lambda classes, shape: TorchvisionMobileNetV3("large", classes, shape),
}

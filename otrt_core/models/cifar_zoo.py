"""More CIFAR-style models of the distillation literature (Tian et al.'s CRD benchmark).

Wide ResNets (Zagoruyko & Komodakis, 2016), VGG with batch norm (Simonyan &
Zisserman, 2015), MobileNetV2 at width 0.5 (Sandler et al., 2018), ShuffleNet
V1 (Zhang et al., 2018) and V2 (Ma et al., 2018), sized for 32x32 inputs.
Each names its resolution stages ``stage1..k`` and its ``penultimate``
features (the pooled input of the linear ``head``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otrt_core.models.base import StagedModel


def conv_bn(
    c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    layers = [
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class StagedConvNet(StagedModel):
    """A stem, named stages, an optional last layer, global pooling and a linear head."""

    def __init__(
        self,
        input_shape,
        stem: nn.Module,
        stages: list[nn.Module],
        last: nn.Module,
        width: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.conv_names = tuple(f"stage{i + 1}" for i in range(len(stages)))
        self.stage_names = (*self.conv_names, "penultimate")
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.last = last
        self.head = nn.Linear(width, num_classes)

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}
        out = self.stem(x)  # (B, C, H, W)
        for name, stage in zip(self.conv_names, self.stages, strict=True):
            out = stage(out)
            features[name] = out
        features["penultimate"] = self.last(out).mean(dim=(2, 3))  # (B, width)
        features["logits"] = self.head(features["penultimate"])
        return features


# ---------------------------------------------------------------- Wide ResNet


class WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv, BN-ReLU-conv, plus a (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.bn1(x).relu()
        out = self.conv2(self.bn2(self.conv1(pre)).relu())
        return out + (x if self.shortcut is None else self.shortcut(pre))


def wide_resnet(depth: int, widen: int, num_classes: int, input_shape) -> StagedConvNet:
    blocks = (depth - 4) // 6
    widths = (16 * widen, 32 * widen, 64 * widen)
    stages, c_in = [], 16
    for index, width in enumerate(widths):
        stride = 1 if index == 0 else 2
        stages.append(
            nn.Sequential(
                *(
                    WideBlock(c_in if i == 0 else width, width, stride if i == 0 else 1)
                    for i in range(blocks)
                )
            )
        )
        c_in = width
    stem = nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)
    last = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True))
    return StagedConvNet(input_shape, stem, stages, last, widths[-1], num_classes)


# ---------------------------------------------------------------- VGG


def vgg(blocks: list[list[int]], num_classes: int, input_shape) -> StagedConvNet:
    """Conv-BN-ReLU blocks, max-pooling between them (not after the last)."""
    stages, c_in = [], input_shape[0]
    for index, widths in enumerate(blocks):
        layers: list[nn.Module] = [nn.MaxPool2d(2)] if index > 0 else []
        for width in widths:
            layers.append(conv_bn(c_in, width))
            c_in = width
        stages.append(nn.Sequential(*layers))
    return StagedConvNet(input_shape, nn.Identity(), stages, nn.Identity(), c_in, num_classes)


# ---------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.block = nn.Sequential(
            conv_bn(c_in, hidden, kernel=1),
            conv_bn(hidden, hidden, stride=stride, groups=hidden),
            conv_bn(hidden, c_out, kernel=1, relu=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.residual else self.block(x)


# (expansion, channels, repeats, stride), grouped into stages by resolution.
MOBILENET_V2_STAGES = [
    [(1, 16, 1, 1), (6, 24, 2, 1)],
    [(6, 32, 3, 2)],
    [(6, 64, 4, 2), (6, 96, 3, 1)],
    [(6, 160, 3, 2), (6, 320, 1, 1)],
]


def mobilenet_v2(width: float, num_classes: int, input_shape) -> StagedConvNet:
    def scaled(channels: int) -> int:
        return max(8, int(channels * width + 4) // 8 * 8)

    stem_width = scaled(32)
    stages, c_in = [], stem_width
    for settings in MOBILENET_V2_STAGES:
        layers = []
        for expand, channels, repeats, stride in settings:
            for i in range(repeats):
                layers.append(
                    InvertedResidual(c_in, scaled(channels), stride if i == 0 else 1, expand)
                )
                c_in = scaled(channels)
        stages.append(nn.Sequential(*layers))
    last = conv_bn(c_in, 1280, kernel=1)
    return StagedConvNet(
        input_shape, conv_bn(input_shape[0], stem_width), stages, last, 1280, num_classes
    )


# ---------------------------------------------------------------- ShuffleNet V1 and V2


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride, self.groups = stride, groups
        mid = c_out // 4
        branch_out = c_out - c_in if stride == 2 else c_out
        first_groups = 1 if c_in == 24 else groups  # the first block sees the 24-channel stem
        self.conv1 = conv_bn(c_in, mid, kernel=1, groups=first_groups)
        self.conv2 = conv_bn(mid, mid, stride=stride, groups=mid, relu=False)
        self.conv3 = conv_bn(mid, branch_out, kernel=1, groups=groups, relu=False)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.conv2(channel_shuffle(self.conv1(x), self.groups)))
        if self.stride == 2:
            return F.relu(torch.cat([out, self.shortcut(x)], dim=1))
        return F.relu(out + x)


class ShuffleV2Block(nn.Module):
    """Stride 1: split the channels, transform one half, concatenate, shuffle.

    Stride 2: both a shortcut and the branch downsample the whole input.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = c_out // 2
        branch_in = c_in if stride == 2 else c_in // 2
        self.branch = nn.Sequential(
            conv_bn(branch_in, half, kernel=1),
            conv_bn(half, half, stride=stride, groups=half, relu=False),
            conv_bn(half, half, kernel=1),
        )
        self.shortcut = None
        if stride == 2:
            self.shortcut = nn.Sequential(
                conv_bn(c_in, c_in, stride=2, groups=c_in, relu=False),
                conv_bn(c_in, half, kernel=1),
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.shortcut is None:
            kept, processed = x.chunk(2, dim=1)
            out = torch.cat([kept, self.branch(processed)], dim=1)
        else:
            out = torch.cat([self.shortcut(x), self.branch(x)], dim=1)
        return channel_shuffle(out, 2)


def shufflenet_v1(num_classes: int, input_shape, groups: int = 3) -> StagedConvNet:
    """ShuffleNet V1, g = 3: widths 240/480/960 with 4/8/4 blocks."""
    stages, c_in = [], 24
    for width, blocks in [(240, 4), (480, 8), (960, 4)]:
        layers = []
        for i in range(blocks):
            layers.append(ShuffleV1Block(c_in, width, stride=2 if i == 0 else 1, groups=groups))
            c_in = width
        stages.append(nn.Sequential(*layers))
    stem = conv_bn(input_shape[0], 24, kernel=1)
    return StagedConvNet(input_shape, stem, stages, nn.Identity(), c_in, num_classes)


def shufflenet_v2(num_classes: int, input_shape) -> StagedConvNet:
    """ShuffleNet V2 1x: widths 116/232/464 with 3/7/3 blocks, then a 1x1 conv to 1024."""
    stages, c_in = [], 24
    for width, blocks in [(116, 3), (232, 7), (464, 3)]:
        layers = []
        for i in range(blocks + 1):  # a downsampling block, then `blocks` regular ones
            layers.append(ShuffleV2Block(c_in, width, stride=2 if i == 0 else 1))
            c_in = width
        stages.append(nn.Sequential(*layers))
    stem = conv_bn(input_shape[0], 24)
    return StagedConvNet(
        input_shape, stem, stages, conv_bn(c_in, 1024, kernel=1), 1024, num_classes
    )


CIFAR_INPUT = (3, 32, 32)
BUILDERS = {
    "wrn_16_2": lambda classes, shape: wide_resnet(16, 2, classes, shape),
    "wrn_40_2": lambda classes, shape: wide_resnet(40, 2, classes, shape),
    "vgg8": lambda classes, shape: vgg([[64], [128], [256], [512], [512]], classes, shape),
    "vgg13": lambda classes, shape: vgg(
        [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], classes, shape
    ),
    "mobilenetv2": lambda classes, shape: mobilenet_v2(0.5, classes, shape),
    "shufflenetv1": shufflenet_v1,
    "shufflenetv2": shufflenet_v2,
}

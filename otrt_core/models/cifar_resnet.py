"""CIFAR-style ResNets (He et al., 2016), as used by the distillation literature.

Depth ``6k + 2``: a 3x3 stem, three stages of ``k`` basic blocks each (stride 1,
2, 2), global average pooling and a linear head. ``resnet8x4`` and
``resnet32x4`` are the 4x-wide variants of Tian et al.'s CRD benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from otrt_core.models.base import StagedModel


@dataclass(frozen=True)
class CifarResNetConfig:
    depth: int
    widths: tuple[int, int, int, int] = (16, 16, 32, 64)  # stem, stage1, stage2, stage3
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32

    def __post_init__(self) -> None:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6k + 2 with k >= 1; got {self.depth}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when shapes change)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class CifarResNet(StagedModel):
    conv_stages = ("stage1", "stage2", "stage3")
    stage_names = (*conv_stages, "penultimate")

    def __init__(self, config: CifarResNetConfig) -> None:
        super().__init__()
        self.config = config
        self.input_shape = (config.in_channels, config.image_size, config.image_size)
        blocks = (config.depth - 2) // 6
        stem, *stage_widths = config.widths
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(),
        )
        stages, in_channels = [], stem
        for index, width in enumerate(stage_widths):
            stride = 1 if index == 0 else 2
            layers = [
                BasicBlock(in_channels if i == 0 else width, width, stride if i == 0 else 1)
                for i in range(blocks)
            ]
            stages.append(nn.Sequential(*layers))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(in_channels, config.num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}
        out = self.stem(x)  # (B, stem, H, W)
        for name, stage in zip(self.conv_stages, self.stages, strict=True):
            out = stage(out)  # (B, C_stage, H_stage, W_stage)
            features[name] = out
        features["penultimate"] = out.mean(dim=(2, 3))  # (B, C_last)
        features["logits"] = self.head(features["penultimate"])  # (B, num_classes)
        return features


WIDE = (32, 64, 128, 256)
CONFIGS: dict[str, CifarResNetConfig] = {
    **{f"resnet{depth}": CifarResNetConfig(depth) for depth in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": CifarResNetConfig(8, WIDE),
    "resnet32x4": CifarResNetConfig(32, WIDE),
}

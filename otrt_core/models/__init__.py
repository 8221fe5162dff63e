"""The model zoo: every model declares its input shape and names its feature stages."""

from __future__ import annotations

from dataclasses import replace

from otrt_core.models.base import StagedModel
from otrt_core.models.cifar_resnet import CONFIGS as CIFAR_RESNETS
from otrt_core.models.cifar_resnet import CifarResNet

ARCHITECTURES = tuple(CIFAR_RESNETS)


def build_model(architecture: str, *, num_classes: int = 10, in_channels: int = 3) -> StagedModel:
    """A freshly initialized zoo model; unknown names list the valid ones."""
    if architecture not in CIFAR_RESNETS:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}"
        )
    config = replace(CIFAR_RESNETS[architecture], num_classes=num_classes, in_channels=in_channels)
    return CifarResNet(config)


__all__ = ["ARCHITECTURES", "StagedModel", "build_model"]

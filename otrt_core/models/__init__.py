"""The model zoo: every model declares its input shape and names its feature stages."""

from __future__ import annotations

from dataclasses import replace

from otrt_core.models import cifar_resnet, small
from otrt_core.models.base import StagedModel

ARCHITECTURES = (*cifar_resnet.CONFIGS, *small.CONFIGS)


def build_model(
    architecture: str, *, num_classes: int = 10, input_shape: tuple[int, ...] | None = None
) -> StagedModel:
    """A freshly initialized zoo model; unknown names list the valid ones.

    ``input_shape`` (channels first) defaults to the architecture's own.
    """
    if architecture in cifar_resnet.CONFIGS:
        config = replace(cifar_resnet.CONFIGS[architecture], num_classes=num_classes)
        if input_shape is not None:
            config = replace(config, in_channels=input_shape[0], image_size=input_shape[-1])
        return cifar_resnet.CifarResNet(config)
    if architecture in small.CONFIGS:
        config = replace(small.CONFIGS[architecture], num_classes=num_classes)
        if input_shape is not None:
            config = replace(config, input_shape=tuple(input_shape))
        model_class = small.MLP if isinstance(config, small.MLPConfig) else small.ConvNet
        return model_class(config)
    raise ValueError(
        f"unknown architecture {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}"
    )


__all__ = ["ARCHITECTURES", "StagedModel", "build_model"]

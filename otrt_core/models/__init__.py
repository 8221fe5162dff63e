"""The model zoo: every model declares its input shape, its named stages and its head."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from otrt_core.catalog import from_library
from otrt_core.errors import UserError
from otrt_core.models import cifar_resnet, cifar_zoo, imagenet, small
from otrt_core.models.base import StagedModel
from otrt_core.models.named import build_named


def _cifar_resnet(name: str) -> Callable[[int, tuple[int, ...]], StagedModel]:
    def build(num_classes: int, input_shape: tuple[int, ...]) -> StagedModel:
        config = replace(
            cifar_resnet.CONFIGS[name],
            num_classes=num_classes,
            in_channels=input_shape[0],
            image_size=input_shape[-1],
        )
        return cifar_resnet.CifarResNet(config)

    return build


def _small(name: str) -> Callable[[int, tuple[int, ...]], StagedModel]:
    def build(num_classes: int, input_shape: tuple[int, ...]) -> StagedModel:
        config = replace(small.CONFIGS[name], num_classes=num_classes, input_shape=input_shape)
        return small.MLP(config) if isinstance(config, small.MLPConfig) else small.ConvNet(config)

    return build


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    input_shape: tuple[int, ...]  # the default; any compatible shape may be asked for
    build: Callable[[int, tuple[int, ...]], StagedModel]


_ENTRIES = [
    *(Architecture(n, "cifar", (3, 32, 32), _cifar_resnet(n)) for n in cifar_resnet.CONFIGS),
    *(Architecture(n, "cifar", (3, 32, 32), b) for n, b in cifar_zoo.BUILDERS.items()),
    *(Architecture(n, "small", c.input_shape, _small(n)) for n, c in small.CONFIGS.items()),
    *(
        Architecture(n, "imagenet", imagenet.IMAGENET_INPUT, b)
        for n, b in imagenet.BUILDERS.items()
    ),
]
REGISTRY: dict[str, Architecture] = {entry.name: entry for entry in _ENTRIES}
ARCHITECTURES = tuple(REGISTRY)


def build_model(
    architecture: str, *, num_classes: int = 10, input_shape: tuple[int, ...] | None = None
) -> StagedModel:
    """A freshly initialized model: a zoo name, or ``timm/<name>`` / ``torchvision/<name>``
    (:mod:`otrt_core.models.named`); unknown zoo names list the valid ones.

    ``input_shape`` (channels first) defaults to the architecture's own (for timm and
    torchvision, ImageNet's 3x224x224).
    """
    if from_library(architecture):
        return build_named(architecture, num_classes, tuple(input_shape or (3, 224, 224)))
    if architecture not in REGISTRY:
        raise UserError(
            f"unknown architecture {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}",
            ("student", "architecture"),
        )
    entry = REGISTRY[architecture]
    return entry.build(num_classes, tuple(input_shape or entry.input_shape))


def skeleton(architecture: str, **kwargs) -> StagedModel:
    """The model on the meta device: its structure and names, no memory, no initialization."""
    with torch.device("meta"):
        return build_model(architecture, **kwargs)


__all__ = ["ARCHITECTURES", "REGISTRY", "Architecture", "StagedModel", "build_model", "skeleton"]

"""Small models for small inputs: 8x8 digits, 28x28 grey images, MNIST-1D sequences.

Each comes in a full width and a quarter width (``_small``), the teacher and
student of METHOD.md's pilot measurements.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from torch import Tensor, nn

from otrt_core.errors import UserError
from otrt_core.models.base import StagedModel


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...]
    input_shape: tuple[int, ...] = (1, 8, 8)
    num_classes: int = 10


class MLP(StagedModel):
    """Flattened input -> ReLU hidden layers ``hidden1..k`` -> linear head.

    The last hidden layer is also named ``penultimate``.
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.input_shape = config.input_shape
        self.hidden_names = tuple(f"hidden{i + 1}" for i in range(len(config.hidden)))
        self.stage_names = (*self.hidden_names, "penultimate")
        widths = (math.prod(config.input_shape), *config.hidden)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(w_in, w_out), nn.ReLU())
            for w_in, w_out in itertools.pairwise(widths)
        )
        self.head = nn.Linear(widths[-1], config.num_classes)

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        out = x.flatten(1)  # (B, prod(input_shape))
        features: dict[str, Tensor] = {}
        for name, layer in zip(self.hidden_names, self.layers, strict=True):
            out = layer(out)  # (B, width)
            features[name] = out
        features["penultimate"] = out
        features["logits"] = self.head(out)  # (B, num_classes)
        return features


@dataclass(frozen=True)
class ConvNetConfig:
    channels: tuple[int, ...]
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, L) for 1-D, (C, H, W) for 2-D
    num_classes: int = 10
    hidden: int | None = None  # a hidden linear layer after max-pooled stages (LeNet-style)


class ConvNet(StagedModel):
    """Conv-BN-ReLU stages, then a linear head; 1-D or 2-D by the rank of ``input_shape``.

    Two designs, by ``hidden``:
    - ``None``: each stage after the first halves the map by its stride, and the
      ``penultimate`` features are the last stage's global mean (all-convolutional);
    - a width: each stage ends in a 2x max-pool, and ``penultimate`` is a ReLU
      hidden layer of that width over the flattened last map (LeNet's design,
      which learns more from few labels: docs/models.md, ``bench/zoo.py``).
    Stages are named ``stage1..k``, then ``penultimate``.
    """

    def __init__(self, config: ConvNetConfig) -> None:
        super().__init__()
        self.config = config
        self.input_shape = config.input_shape
        spatial_dims = len(config.input_shape) - 1
        if spatial_dims not in (1, 2):
            message = f"ConvNet takes (C, L) or (C, H, W) inputs; got {config.input_shape}"
            raise UserError(message, ("student", "architecture"))
        conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if spatial_dims == 1 else nn.BatchNorm2d
        self.conv_names = tuple(f"stage{i + 1}" for i in range(len(config.channels)))
        self.stage_names = (*self.conv_names, "penultimate")
        pool = nn.MaxPool1d if spatial_dims == 1 else nn.MaxPool2d
        in_channels = (config.input_shape[0], *config.channels)
        self.stages = nn.ModuleList(
            nn.Sequential(
                conv(c_in, c_out, 3, stride=self._stride(index), padding=1, bias=False),
                norm(c_out),
                nn.ReLU(),
                *([pool(2, ceil_mode=True)] if config.hidden else []),
            )
            for index, (c_in, c_out) in enumerate(
                zip(in_channels[:-1], config.channels, strict=True)
            )
        )
        if config.hidden:
            flat = config.channels[-1] * math.prod(
                math.ceil(size / 2 ** len(config.channels)) for size in config.input_shape[1:]
            )
            self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(flat, config.hidden), nn.ReLU())
        self.head = nn.Linear(config.hidden or config.channels[-1], config.num_classes)

    def _stride(self, index: int) -> int:
        """Max-pooled stages convolve at stride 1; the others halve the map after the first."""
        return 1 if self.config.hidden or index == 0 else 2

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}
        out = x  # (B, C, L) or (B, C, H, W)
        for name, stage in zip(self.conv_names, self.stages, strict=True):
            out = stage(out)
            features[name] = out
        if self.config.hidden:
            features["penultimate"] = self.hidden(out)  # (B, hidden)
        else:
            features["penultimate"] = out.flatten(2).mean(dim=2)  # (B, C_last)
        features["logits"] = self.head(features["penultimate"])
        return features


CONFIGS = {
    "mlp": MLPConfig(hidden=(256, 256)),
    "mlp_small": MLPConfig(hidden=(64, 64)),
    "cnn": ConvNetConfig(channels=(32, 64, 128), hidden=128),
    "cnn_small": ConvNetConfig(channels=(8, 16, 32), hidden=32),
    "cnn1d": ConvNetConfig(channels=(32, 64, 128), input_shape=(1, 40)),
    "cnn1d_small": ConvNetConfig(channels=(8, 16, 32), input_shape=(1, 40)),
}

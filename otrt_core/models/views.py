"""A model's own view of the job's batches: its size, channels and normalization.

The trainer holds the dataset normalized with its own per-channel statistics
``(m_d, s_d)``. A model that was trained on other inputs (a 16x16 teacher for
28x28 data, an RGB teacher for grey data, ImageNet statistics) declares them as
``input`` (API.md, "Models from anywhere"), and sees each batch as

.. math::

    x' = \\frac{\\operatorname{channels}(\\operatorname{resize}(x \\cdot s_d + m_d)) - m}{s}

where ``x * s_d + m_d`` is the dataset's own scale ([0, 1] for images),
``resize`` is bilinear (linear for sequences) to ``size``, ``channels``
repeats a grey channel to three or takes the luminance of RGB
(0.299 R + 0.587 G + 0.114 B), and ``(m, s)`` are the model's ``mean`` and
``std``. It runs on the training device, batched, inside the model's forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LUMINANCE = (0.299, 0.587, 0.114)


class InputView(nn.Module):
    """Maps dataset batches ``(n, C_d, *S_d)`` to a model's inputs ``(n, C, *S)``.

    Every tensor it holds is a non-persistent buffer: it moves with the model
    and adds nothing to its state dict.
    """

    def __init__(
        self,
        dataset_mean: Tensor,
        dataset_std: Tensor,
        *,
        size: Sequence[int] | None,
        channels: int | None,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__()
        self.size = tuple(size) if size else None
        self.channels = channels
        self.register_buffer("dataset_mean", dataset_mean.float().clone(), persistent=False)
        self.register_buffer("dataset_std", dataset_std.float().clone(), persistent=False)
        out_channels = channels or len(dataset_mean)
        mean = mean if mean is not None else [0.0] * out_channels
        std = std if std is not None else [1.0] * out_channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x * _per_channel(self.dataset_std, x) + _per_channel(self.dataset_mean, x)
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            mode = "linear" if x.dim() == 3 else "bilinear"
            x = F.interpolate(x, size=self.size, mode=mode, align_corners=False)
        if self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        elif self.channels == 1 and x.shape[1] == 3:
            weights = torch.tensor(LUMINANCE, device=x.device, dtype=x.dtype)
            x = (x * _per_channel(weights, x)).sum(dim=1, keepdim=True)
        return (x - _per_channel(self.mean, x)) / _per_channel(self.std, x)


def _per_channel(values: Tensor, like: Tensor) -> Tensor:
    """``(C,)`` values shaped to broadcast over ``(n, C, ...)``."""
    return values.to(like.dtype).reshape(1, -1, *([1] * (like.dim() - 2)))

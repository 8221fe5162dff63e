"""Random views of a batch, on the training device, batched: no per-image Python loop.

An augmentation is drawn as *parameters* first (one row per image: crop
offsets, a flip bit, an angle, a noise index), then applied. Parameters come
from a generator seeded by ``(seed, epoch, batch)``, so a resumed run sees the
same views; the teacher cache stores them per view, so that a student input
and the teacher's cached outputs come from the same view.

Ops (``dataset.augment``): ``crop`` (zero-pad by ``padding`` pixels, then a
random crop of the original size), ``flip`` (horizontal, half of the images),
``rotate`` (uniform in ``[-degrees, degrees]``, bilinear), ``noise`` (Gaussian
of standard deviation ``std`` in the normalized input's units, drawn from a
fixed bank of ``NOISE_BANK`` maps). ``standard`` is crop(4) then flip for
images, and nothing for sequences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

NOISE_BANK = 256
Params = dict[str, Tensor]


@dataclass(frozen=True)
class Op:
    name: str  # crop, flip, rotate, noise
    amount: float = 0.0  # padding, degrees or std


def standard(input_shape: Sequence[int]) -> list[Op]:
    """Random crop with 4-pixel padding and horizontal flip for images; none for sequences."""
    return [Op("crop", 4), Op("flip")] if len(input_shape) == 3 else []


class Augmenter:
    """Draws and applies ``ops`` to batches of ``input_shape`` inputs (channels first)."""

    def __init__(self, ops: Sequence[Op], input_shape: Sequence[int], seed: int) -> None:
        self.ops, self.input_shape = list(ops), tuple(input_shape)
        bank = torch.Generator().manual_seed(seed)
        needs_noise = any(op.name == "noise" for op in self.ops)
        shape = (NOISE_BANK, *self.input_shape)
        self.noise = torch.randn(shape, generator=bank) if needs_noise else None

    def draw(self, n: int, generator: torch.Generator) -> Params:
        """Parameters of ``n`` random views, on the CPU (small: a few numbers per image)."""
        params: Params = {}
        for op in self.ops:
            if op.name == "crop":
                pad = int(op.amount)
                params["crop"] = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
            elif op.name == "flip":
                params["flip"] = torch.rand(n, generator=generator) < 0.5
            elif op.name == "rotate":
                params["rotate"] = (torch.rand(n, generator=generator) * 2 - 1) * op.amount
            elif op.name == "noise":
                params["noise"] = torch.randint(0, NOISE_BANK, (n,), generator=generator)
        return params

    def apply(self, x: Tensor, params: Params) -> Tensor:
        """The views of ``x`` ``(n, C, *spatial)`` that ``params`` describe, on x's device."""
        params = {key: value.to(x.device) for key, value in params.items()}
        for op in self.ops:
            if op.name == "crop":
                x = _crop(x, params["crop"], int(op.amount))
            elif op.name == "flip":
                x = torch.where(_per_image(params["flip"], x), x.flip(-1), x)
            elif op.name == "rotate":
                x = _rotate(x, params["rotate"])
            elif op.name == "noise":
                x = x + op.amount * self.noise.to(x.device, x.dtype)[params["noise"]]
        return x


def _per_image(values: Tensor, like: Tensor) -> Tensor:
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def _crop(x: Tensor, offsets: Tensor, pad: int) -> Tensor:
    """Zero-pad by ``pad``, then take the original size at each image's offsets."""
    if x.dim() == 3:  # sequences: offsets along the length only
        length = x.shape[-1]
        padded = F.pad(x, (pad, pad))
        index = offsets[:, :1] + torch.arange(length, device=x.device)  # (n, L)
        return padded.gather(2, index[:, None, :].expand(-1, x.shape[1], -1))
    height, width = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, 0:1] + torch.arange(height, device=x.device)  # (n, H)
    cols = offsets[:, 1:2] + torch.arange(width, device=x.device)  # (n, W)
    images = torch.arange(len(x), device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[images, rows[:, :, None], cols[:, None, :]].permute(
        0, 3, 1, 2
    )


def _rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Each image rotated about its center by its angle, bilinear, zeros outside."""
    radians = degrees.to(x.dtype) * (math.pi / 180)
    cos, sin = radians.cos(), radians.sin()
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

"""Neurons as functions: a layer's output on a mini-batch, one row per neuron.

On a mini-batch :math:`x_1, \\dots, x_n`, neuron :math:`j` of a layer is the
vector of its responses :math:`u_j = (f_j(x_1), \\dots, f_j(x_n))`. A layer of
``C`` neurons becomes a ``(C, m)`` matrix whose rows are compared by the OT
distance (METHOD.md, "Neurons as functions").

Reference: Li, Grandvalet, Flamary, Courty, Dou, "Representation Transfer by
Optimal Transport", arXiv 2007.06737.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from otrt_core.protocol import NORMALIZATIONS, SPATIAL_MODES

# Added under square roots so that constant neurons give zeros, not NaN, in
# values and gradients (the derivative of sqrt at 0 is infinite).
_EPS = 1e-12


def working_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision inputs (autocast outputs), float64 kept as is."""
    return torch.promote_types(x.dtype, torch.float32)


def neurons(
    x: Tensor,
    spatial: str = "pool",
    normalize: str = "none",
    size: int | Sequence[int] | None = None,
) -> Tensor:
    """One row per neuron of a layer output, in float32 (float64 kept).

    Parameters
    ----------
    x : Tensor
        A layer output, batch first: ``(n, C)`` for a dense layer, ``(n, C, L)``
        or ``(n, C, H, W)`` for a convolutional one.
    spatial : {"pool", "flatten"}
        ``pool``: the spatial mean per channel, :math:`u_j \\in R^n`.
        ``flatten``: the whole map over the batch, :math:`u_j \\in R^{n H W}`.
        Ignored for dense layers.
    normalize : {"none", "center", "standardize", "unit", "rms"}
        ``center`` subtracts each neuron's mean over its m responses,
        ``standardize`` also divides by their standard deviation, ``unit``
        scales each row to unit L2 norm (constant neurons become zero rows).
        ``rms`` divides the whole layer by its root mean square over the batch
        and its neurons, :math:`u / \\sqrt{\\mathrm{mean}(u^2)}`, detached: the
        neurons' relative scales are kept, and scaling the layer by any
        :math:`s > 0` changes nothing, neither the value nor the gradient.
    size : int or sequence of int, optional
        With ``flatten``: the spatial size (``L`` or ``(H, W)``) to adaptively
        average-pool the maps to, so that two layers with different map sizes
        give rows of the same length. Usually the teacher's map size.

    Returns
    -------
    Tensor ``(C, m)`` with ``m = n`` (dense or ``pool``) or ``m = n * H * W``.
    """
    if x.dim() not in (2, 3, 4):
        raise ValueError(
            f"a layer output must be (n, C), (n, C, L) or (n, C, H, W); got shape {tuple(x.shape)}"
        )
    n, channels = x.shape[0], x.shape[1]
    if n == 0:
        raise ValueError("the batch is empty: OT needs at least one input")
    if channels == 0:
        raise ValueError(f"the layer has no neurons (shape {tuple(x.shape)})")
    if spatial not in SPATIAL_MODES:
        raise ValueError(f"spatial must be one of {SPATIAL_MODES}; got {spatial!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got {normalize!r}")

    dtype = working_dtype(x)
    if x.dim() == 2:
        rows = x.to(dtype).t()  # (C, n)
    elif spatial == "pool":
        rows = spatial_mean(x, dtype).t()  # (C, n)
    else:
        x = x.to(dtype)
        if size is not None:
            x = _resize_maps(x, size)
        rows = x.transpose(0, 1).reshape(channels, -1)  # (C, n * spatial)
    return _normalize_rows(rows, normalize)


def spatial_mean(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Each map's mean, ``(n, C)``, accumulated in ``dtype`` without a copy of the maps.

    Written as a sum then a scale of the small result: the gradient of a sum is
    a broadcast view, where a mean's backward divides a tensor as large as the
    maps; and summing over the spatial dims needs no reshape, so channels-last
    maps are not copied either.
    """
    dims = tuple(range(2, x.dim()))
    positions = math.prod(x.shape[2:])
    return x.sum(dim=dims, dtype=dtype) * (1.0 / positions)


def _resize_maps(x: Tensor, size: int | Sequence[int]) -> Tensor:
    """Adaptive average pooling of (n, C, L) or (n, C, H, W) maps to ``size``."""
    target = (size,) if isinstance(size, int) else tuple(size)
    if len(target) != x.dim() - 2:
        raise ValueError(
            f"cannot resize maps of shape {tuple(x.shape)} to spatial size {target}: "
            "teacher and student layers must have the same number of spatial dimensions"
        )
    if tuple(x.shape[2:]) == target:
        return x
    if x.dim() == 3:
        return F.adaptive_avg_pool1d(x, target)
    return F.adaptive_avg_pool2d(x, target)


def _normalize_rows(rows: Tensor, normalize: str) -> Tensor:
    if normalize == "none":
        return rows
    if normalize == "rms":
        # Detached, so that the scale is a unit, not something to learn: the
        # student's gradient is the same at every scale of either side.
        return rows * torch.rsqrt(rows.detach().square().mean() + _EPS)
    if normalize == "unit":
        return rows * torch.rsqrt(rows.square().sum(dim=1, keepdim=True) + _EPS)
    centered = rows - rows.mean(dim=1, keepdim=True)
    if normalize == "center":
        return centered
    # Population variance: finite for a single input (n = 1).
    return centered * torch.rsqrt(centered.square().mean(dim=1, keepdim=True) + _EPS)

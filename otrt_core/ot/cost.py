"""The ground cost between teacher and student neurons."""

from __future__ import annotations

import torch
from torch import Tensor

from otrt_core.ot.features import working_dtype


def cost_matrix(u: Tensor, v: Tensor) -> Tensor:
    """Squared empirical L2 distances between two sets of neurons.

    .. math::

        C_{jk} = \\frac{1}{m} \\lVert u_j - v_k \\rVert_2^2

    where :math:`u_j` (teacher) and :math:`v_k` (student) are neurons as
    functions sampled on the same ``m`` points (``m = n`` inputs, or ``n H W``
    positions with ``spatial="flatten"``): the mean squared difference of the
    two functions under the data distribution.

    Parameters
    ----------
    u : Tensor ``(p, m)``
    v : Tensor ``(q, m)``

    Returns
    -------
    Tensor ``(p, q)``, float32 (float64 if an input is), never negative,
    differentiable with respect to both inputs.

    Notes
    -----
    One matmul: :math:`\\lVert u\\rVert^2 + \\lVert v\\rVert^2 - 2 u^\\top v`.
    Both sets are first shifted by their common mean, which leaves every
    distance unchanged and removes the large shared component (post-ReLU
    activations sit far from zero) that would otherwise cancel in float32.
    Rounding can still leave tiny negatives; they are clamped at 0. Autocast
    is disabled here: a cost in bfloat16 would be too coarse to transport.
    """
    if u.dim() != 2 or v.dim() != 2:
        raise ValueError(
            f"neurons must be (p, m) and (q, m) matrices; got {tuple(u.shape)} and {tuple(v.shape)}"
        )
    if u.shape[1] != v.shape[1]:
        raise ValueError(
            f"teacher and student neurons are sampled on different numbers of points "
            f"({u.shape[1]} vs {v.shape[1]}): use the same batch (and map size with 'flatten')"
        )
    if u.shape[0] == 0 or v.shape[0] == 0 or u.shape[1] == 0:
        raise ValueError(f"empty layer: neurons of shapes {tuple(u.shape)} and {tuple(v.shape)}")

    dtype = torch.promote_types(working_dtype(u), working_dtype(v))
    with torch.autocast(device_type=u.device.type, enabled=False):
        u, v = u.to(dtype), v.to(dtype)
        shift = torch.cat([u, v]).mean(dim=0)  # (m,)
        u, v = u - shift, v - shift
        squared_norms = u.square().sum(dim=1, keepdim=True) + v.square().sum(dim=1)  # (p, q)
        squared = torch.addmm(squared_norms, u, v.t(), alpha=-2.0)  # (p, q)
        return squared.clamp_min(0.0) / u.shape[1]

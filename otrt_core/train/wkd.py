"""Wasserstein knowledge distillation (Lv et al., NeurIPS 2024): the maths, torch only.

WKD-L compares the teacher's and the student's class distributions with an
entropic Wasserstein distance whose ground cost says how far apart two classes
are. As in the authors' code, the target class is split off:

.. math::

    L_t = -\\frac{1}{B} \\sum_b \\mathrm{sg}(p^t_{b,y_b}) \\log p^s_{b,y_b},
    \\qquad p = \\mathrm{softmax}(z),

    L_W = \\frac{1}{B} \\sum_b \\langle P_b, C^{(b)} \\rangle,
    \\qquad P_b = \\mathrm{Sinkhorn}_\\lambda(\\tilde p^s_b, \\tilde p^t_b, C^{(b)}),

where :math:`\\tilde p_b = \\mathrm{softmax}(z_{b,\\neg y_b} / T)` over the
:math:`c - 1` non-target classes, :math:`C^{(b)}` is the class cost with row and
column :math:`y_b` removed and :math:`P_b` the entropic plan after a fixed number
of Sinkhorn iterations, differentiated through those iterations. The entropy is
left out of the loss, as in the authors' code.

The class cost is :math:`C_{ij} = 1 - \\exp(-\\kappa\\, d_{ij})` with sharpening
:math:`\\kappa` and either :math:`d_{ij} = 1 - \\mathrm{CKA}_{ij}` between classes'
penultimate features or :math:`d_{ij} = 1 - \\cos(w_i, w_j)` between rows of a
classifier head.

WKD-F fits a 1-D Gaussian to each channel of a feature map over its spatial
positions and uses the closed-form squared 2-Wasserstein distance between
diagonal Gaussians, with the mean part weighted by :math:`\\gamma`:

.. math::

    L_F = \\frac{1}{B} \\sum_{b, c} \\gamma (\\mu^s_{bc} - \\mu^t_{bc})^2
          + (\\sigma^s_{bc} - \\sigma^t_{bc})^2.

Every loss here is computed in float32 at least, whatever autocast is active.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Elements of one (rows, samples) block of the Gram matrix in
# class_cost_from_features: 2**26 float32 is 256 MiB.
_GRAM_BLOCK_ELEMENTS = 2**26


def sinkhorn_plan(p: Tensor, q: Tensor, cost: Tensor, reg: float, iterations: int) -> Tensor:
    """Entropic transport plans between batches of histograms, differentiable throughout.

    Solves :math:`\\min_P \\langle P, C \\rangle - \\lambda H(P)` with :math:`P 1 = p`,
    :math:`P^\\top 1 = q` by ``iterations`` Sinkhorn steps :math:`v = q / K^\\top u`,
    :math:`u = p / K v` from :math:`u = 1`, with :math:`K = \\exp(-C / \\lambda)`, so the
    rows of the plan :math:`\\mathrm{diag}(u) K \\mathrm{diag}(v)` sum to ``p`` exactly
    and its columns to ``q`` once converged.

    The scalings are kept as logarithms and each product :math:`K e^{\\log v}` is taken
    with :math:`\\log v` shifted by its maximum, so ``u`` and ``v`` never overflow or
    underflow; only ``K`` itself must stay representable, which holds while
    :math:`(\\max C - \\min C) / \\lambda` is below about 80 in float32. Unlike a
    ``logsumexp`` step, this keeps a single ``(B, N, M)`` kernel for backward instead
    of one per iteration. No value is read on the host and the iteration count is
    fixed, so nothing waits for the device.

    Parameters
    ----------
    p : Tensor ``(B, N)``
        Non-negative histograms, each summing to the same mass as ``q``'s.
    q : Tensor ``(B, M)``
    cost : Tensor ``(N, M)`` or ``(B, N, M)``
        Shared by the batch or one per row.
    reg : float
        The entropic regularization :math:`\\lambda`, in the cost's units.
    iterations : int
        At least 1.

    Returns
    -------
    Tensor ``(B, N, M)`` in float32 (float64 for float64 inputs).
    """
    if p.dim() != 2 or q.dim() != 2 or p.shape[0] != q.shape[0]:
        raise ValueError(
            f"p and q must be (B, N) and (B, M); got {tuple(p.shape)}, {tuple(q.shape)}"
        )
    if cost.shape[-2:] != (p.shape[1], q.shape[1]) or cost.shape[:-2] not in ((), p.shape[:1]):
        raise ValueError(f"cost must be (N, M) or (B, N, M); got {tuple(cost.shape)}")
    if not reg > 0:
        raise ValueError(f"reg must be positive; got {reg}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1; got {iterations}")
    dtype = torch.promote_types(torch.promote_types(p.dtype, q.dtype), torch.float32)
    log_kernel = -cost.to(dtype) / reg
    kernel = log_kernel.exp()
    tiny = torch.finfo(dtype).tiny  # a zero mass gives a zero row, not log(0)
    log_p = p.to(dtype).clamp_min(tiny).log()
    log_q = q.to(dtype).clamp_min(tiny).log()
    log_u = torch.zeros_like(log_p)
    for _ in range(iterations):
        log_v = log_q - _log_kernel_product(kernel, log_u, over_rows=True)
        log_u = log_p - _log_kernel_product(kernel, log_v, over_rows=False)
    return torch.exp(log_u[:, :, None] + log_v[:, None, :] + log_kernel)


def _log_kernel_product(kernel: Tensor, log_scaling: Tensor, over_rows: bool) -> Tensor:
    """:math:`\\log (K^\\top e^{s})` (``over_rows``) or :math:`\\log (K e^{s})`, per batch row.

    ``kernel`` is ``(N, M)`` or ``(B, N, M)``; ``log_scaling`` is ``(B, N)`` when
    summing over rows, ``(B, M)`` otherwise. The shift by the maximum is detached:
    the result does not depend on it, so neither does its gradient.
    """
    shift = log_scaling.detach().amax(dim=1, keepdim=True)
    scaling = (log_scaling - shift).exp()
    if over_rows:
        total = (kernel * scaling[:, :, None]).sum(dim=1)
    else:
        total = (kernel * scaling[:, None, :]).sum(dim=2)
    return shift + total.clamp_min(torch.finfo(total.dtype).tiny).log()


def wkd_logit_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    cost: Tensor,
    temperature: float,
    reg: float = 0.05,
    iterations: int = 10,
) -> tuple[Tensor, Tensor]:
    """WKD-L's two parts, ``(target_part, wasserstein_part)``: :math:`L_t` and :math:`L_W`.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor ``(B, c)``
        The teacher's are detached inside: no gradient reaches them.
    targets : Tensor ``(B,)`` of class indices in ``[0, c)``
        Not range-checked (that would read them on the host).
    cost : Tensor ``(c, c)``
        The class cost, non-negative; restricted per row to the non-target classes.
    temperature : float
        Softens the non-target distributions only; :math:`L_t` is at temperature 1.
    reg, iterations :
        Sinkhorn's :math:`\\lambda` and step count (the authors' defaults). The plans
        take ``B (c - 1)^2`` elements, a few times over for backward.

    Returns
    -------
    Two float32 scalars, unweighted. The authors add :math:`L_t` with weight 1 and
    :math:`L_W` with the WKD-L weight.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"logits must both be (B, c); got {tuple(student_logits.shape)}, "
            f"{tuple(teacher_logits.shape)}"
        )
    classes = student_logits.shape[1]
    if cost.shape != (classes, classes):
        raise ValueError(f"cost must be ({classes}, {classes}); got {tuple(cost.shape)}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    student = student_logits.to(dtype)
    teacher = teacher_logits.detach().to(dtype)
    target_column = targets[:, None]
    student_target_log_prob = F.log_softmax(student, dim=1).gather(1, target_column)
    teacher_target_prob = F.softmax(teacher, dim=1).gather(1, target_column)
    target_part = -(teacher_target_prob * student_target_log_prob).mean()

    others = _non_target_classes(targets, classes)  # (B, c - 1)
    student_others = F.softmax(student.gather(1, others) / temperature, dim=1)
    teacher_others = F.softmax(teacher.gather(1, others) / temperature, dim=1)
    sub_costs = cost.to(dtype)[others[:, :, None], others[:, None, :]]  # (B, c - 1, c - 1)
    plans = sinkhorn_plan(student_others, teacher_others, sub_costs, reg, iterations)
    wasserstein_part = (plans * sub_costs).sum(dim=(1, 2)).mean()
    return target_part, wasserstein_part


def _non_target_classes(targets: Tensor, classes: int) -> Tensor:
    """``(B, c - 1)`` indices: every class but ``targets[b]``, in order, for each row ``b``.

    Index arithmetic rather than a boolean mask, whose result size the host would
    have to read.
    """
    positions = torch.arange(classes - 1, device=targets.device)[None, :]
    return positions + (positions >= targets[:, None]).long()


def class_cost_from_features(
    features: Tensor, labels: Tensor, num_classes: int, sharpen: float = 1.0
) -> Tensor:
    """The ``(k, k)`` class cost :math:`1 - \\exp(-\\kappa (1 - \\mathrm{CKA}_{ij}))`.

    With :math:`X_i` the ``(n_i, D)`` features of class ``i`` centred on their mean,
    :math:`\\mathrm{CKA}_{ij} = \\langle X_i^\\top X_i, X_j^\\top X_j \\rangle_F /
    (\\|X_i^\\top X_i\\|_F \\|X_j^\\top X_j\\|_F)`: the cosine between the classes'
    feature covariances (the :math:`1 / n_i` cancels). The authors' script instead
    takes :math:`\\|X_j^\\top X_i\\|_F^2` in the numerator, which pairs the s-th
    sample of class ``i`` with the s-th of class ``j``: that needs equally many
    samples per class and depends on their order, though no such pairing exists.
    Both forms give 1 on the diagonal.

    The numerator is computed as :math:`\\|X_i X_j^\\top\\|_F^2`, summing squared
    entries of the samples' Gram matrix by class, a block of rows at a time: memory
    stays near :math:`nD + k^2` plus a 256 MiB block whatever ``D`` (the
    :math:`D \\times D` covariances would take :math:`k D^2`, 16 GiB at ``k = 1000``,
    ``D = 2048``), and class sizes may differ. Work grows as :math:`n^2 (D + k)`:
    pass tens of samples per class, not a whole dataset.

    A class with fewer than two samples has no covariance: its CKA with every
    other class is 0 (cost maximal). The diagonal is 0. Computed in float32 at least,
    outside autocast; the result is detached and lies in :math:`[0, 1 - e^{-\\kappa}]`.

    Parameters
    ----------
    features : Tensor ``(n, D)``
    labels : Tensor ``(n,)`` of class indices in ``[0, num_classes)``
    num_classes : int
    sharpen : float
        :math:`\\kappa > 0`.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features must be (n, D) and labels (n,); got {tuple(features.shape)}, "
            f"{tuple(labels.shape)}"
        )
    with torch.autocast(features.device.type, enabled=False):
        dtype = torch.promote_types(features.dtype, torch.float32)
        features = features.detach().to(dtype)
        samples = features.shape[0]
        sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
        counts = torch.bincount(labels, minlength=num_classes).to(dtype)
        centred = features - (sums / counts.clamp_min(1.0)[:, None])[labels]
        # overlap[i, j] = ||X_i X_j^T||_F^2 = <X_i^T X_i, X_j^T X_j>_F
        overlap = features.new_zeros(num_classes, num_classes)
        block_rows = max(1, _GRAM_BLOCK_ELEMENTS // max(samples, 1))
        for start in range(0, samples, block_rows):
            rows = slice(start, start + block_rows)
            squared_gram = (centred[rows] @ centred.T).square_()  # (rows, n)
            by_column_class = features.new_zeros(squared_gram.shape[0], num_classes)
            by_column_class.index_add_(1, labels, squared_gram)
            overlap.index_add_(0, labels[rows], by_column_class)
        norms = overlap.diagonal().sqrt()
        norm_products = (norms[:, None] * norms[None, :]).clamp_min(torch.finfo(dtype).tiny)
        cka = (overlap / norm_products).clamp(0.0, 1.0)
        return _sharpened_cost(1.0 - cka, sharpen)


def class_cost_from_head(weight: Tensor, sharpen: float = 1.0) -> Tensor:
    """The ``(k, k)`` class cost :math:`1 - \\exp(-\\kappa (1 - \\cos(w_i, w_j)))`.

    ``weight`` is a classifier's ``(k, D)`` weight, one row per class (the
    authors' "fc" cost). Computed in float32 at least, outside autocast; the result
    is detached, has a zero diagonal and lies in :math:`[0, 1 - e^{-2\\kappa}]`.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be (k, D); got {tuple(weight.shape)}")
    with torch.autocast(weight.device.type, enabled=False):
        rows = F.normalize(weight.detach().to(torch.promote_types(weight.dtype, torch.float32)))
        return _sharpened_cost((1.0 - rows @ rows.T).clamp_min(0.0), sharpen)


def _sharpened_cost(distance: Tensor, sharpen: float) -> Tensor:
    """:math:`1 - \\exp(-\\kappa d)` with the diagonal set to exactly 0."""
    if not sharpen > 0:
        raise ValueError(f"sharpen must be positive; got {sharpen}")
    return (1.0 - torch.exp(-sharpen * distance)).fill_diagonal_(0.0)


def gaussian_w2(
    student_map: Tensor, teacher_map: Tensor, mean_weight: float = 4.0, eps: float = 1e-5
) -> Tensor:
    """WKD-F's :math:`L_F` between ``(B, C, H, W)`` or ``(B, C, L)`` maps of equal shape.

    Each channel of each sample is a 1-D Gaussian over spatial positions with the
    positions' mean and :math:`\\sigma = \\sqrt{\\mathrm{var} + \\epsilon}`, where var is
    the population variance (divided by the number of positions; the authors divide
    by one less, which is undefined for a single position). Squared differences are
    summed over channels and batch, then divided by the batch size. Returns a
    float32 scalar (float64 for float64 maps).
    """
    if student_map.shape != teacher_map.shape or student_map.dim() not in (3, 4):
        raise ValueError(
            "maps must both be (B, C, H, W) or (B, C, L) of one shape; got "
            f"{tuple(student_map.shape)}, {tuple(teacher_map.shape)}"
        )
    dtype = torch.promote_types(student_map.dtype, torch.float32)
    student = student_map.to(dtype).flatten(2)
    teacher = teacher_map.to(dtype).flatten(2)
    student_std = (student.var(dim=2, correction=0) + eps).sqrt()
    teacher_std = (teacher.var(dim=2, correction=0) + eps).sqrt()
    mean_part = (student.mean(dim=2) - teacher.mean(dim=2)).square().sum()
    std_part = (student_std - teacher_std).square().sum()
    return (mean_weight * mean_part + std_part) / student_map.shape[0]


class WKDFeatureProjector(nn.Module):
    """The student's map through 1x1 conv, batch norm and ReLU to the teacher's channels.

    ``dims`` is 2 for ``(B, C, H, W)`` maps and 1 for ``(B, C, L)``. The projected map
    is average-pooled to the teacher's spatial size when that differs.
    """

    def __init__(self, student_channels: int, teacher_channels: int, dims: int = 2) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2; got {dims}")
        conv, norm = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.dims = dims
        self.conv = conv(student_channels, teacher_channels, kernel_size=1)
        self.norm = norm(teacher_channels)

    def forward(self, student_map: Tensor, teacher_size: Sequence[int]) -> Tensor:
        """``(B, C_t, *teacher_size)`` from ``(B, C_s, *spatial)``."""
        projected = F.relu(self.norm(self.conv(student_map)))
        if tuple(projected.shape[2:]) == tuple(teacher_size):
            return projected
        pool = F.adaptive_avg_pool1d if self.dims == 1 else F.adaptive_avg_pool2d
        return pool(projected, tuple(teacher_size))

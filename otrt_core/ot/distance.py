"""The OT distance between a teacher layer and a student layer.

.. math::

    \\Omega(S, T) = \\min_{P \\ge 0,\\; P 1 = a,\\; P^\\top 1 = b}
                   \\sum_{jk} P_{jk} C_{jk}

with :math:`C` from :func:`otrt_core.ot.cost.cost_matrix` between the
teacher's ``p`` neurons and the student's ``q`` neurons, and uniform masses
:math:`a = 1/p`, :math:`b = 1/q`. Omega ignores the order of the neurons of
either layer and needs no ``p = q`` and no learned projector.

Gradient (envelope, or Danskin, theorem): with :math:`P^\\star` optimal,
:math:`\\nabla \\Omega = \\sum_{jk} P^\\star_{jk} \\nabla C_{jk}`. The plan is
solved on the detached cost and enters the loss as a constant,
``(plan * cost).sum()``; no gradient flows through the solver.

Reference: Li, Grandvalet, Flamary, Courty, Dou, "Representation Transfer by
Optimal Transport", arXiv 2007.06737.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from otrt_core.ot.cost import cost_matrix
from otrt_core.ot.features import neurons
from otrt_core.ot.solvers import DEFAULT_EPSILON, DEFAULT_MAX_ITER, choose_solver, transport_plan


@dataclass(frozen=True)
class Transport:
    """Omega between two layers, with what it was computed from.

    Attributes
    ----------
    distance : Tensor ``()``
        Omega, differentiable with respect to both layer outputs through the
        cost (the plan is a constant).
    plan : Tensor ``(p, q)``
        The transport plan used, teacher neurons by student neurons, detached.
    solver : str
        The solver that produced the plan (``auto`` resolved).
    """

    distance: Tensor
    plan: Tensor
    solver: str


def transport(
    teacher: Tensor,
    student: Tensor,
    *,
    solver: str = "auto",
    spatial: str = "pool",
    normalize: str = "none",
    epsilon: float = DEFAULT_EPSILON,
    max_iter: int = DEFAULT_MAX_ITER,
) -> Transport:
    """Omega between two layer outputs on the same batch, and its plan.

    Parameters
    ----------
    teacher : Tensor ``(n, p)``, ``(n, p, L)`` or ``(n, p, H, W)``
    student : Tensor ``(n, q)``, ``(n, q, L')`` or ``(n, q, H', W')``
        The same ``n`` inputs, batch first. With ``spatial="flatten"`` the
        student's maps are adaptively average-pooled to the teacher's size.
    solver, epsilon, max_iter
        See :func:`otrt_core.ot.solvers.transport_plan`.
    spatial, normalize
        See :func:`otrt_core.ot.features.neurons`.
    """
    if teacher.dim() < 1 or student.dim() < 1 or teacher.shape[0] != student.shape[0]:
        raise ValueError(
            f"teacher and student outputs must come from the same batch; got shapes "
            f"{tuple(teacher.shape)} and {tuple(student.shape)}"
        )
    teacher_size = tuple(teacher.shape[2:]) if spatial == "flatten" else None
    if teacher_size is not None and len(teacher_size) != student.dim() - 2:
        raise ValueError(
            f"with spatial='flatten' both layers need maps of the same rank; got shapes "
            f"{tuple(teacher.shape)} and {tuple(student.shape)}"
        )
    u = neurons(teacher, spatial=spatial, normalize=normalize)  # (p, m)
    v = neurons(student, spatial=spatial, normalize=normalize, size=teacher_size or None)  # (q, m)
    with torch.no_grad():
        cost = cost_matrix(u, v)  # (p, q)
    if solver == "auto":
        solver = choose_solver(cost.shape[0], cost.shape[1], cost.device)
    plan = transport_plan(cost, solver=solver, epsilon=epsilon, max_iter=max_iter)
    # Envelope theorem: the plan is a constant, only the cost carries gradient.
    return Transport(distance=_PlanWeightedCost.apply(u, v, plan, cost), plan=plan, solver=solver)


class _PlanWeightedCost(torch.autograd.Function):
    """Omega = sum_jk P_jk C_jk for a fixed plan P, with the gradient in closed form.

    With :math:`C_{jk} = \\lVert u_j - v_k \rVert^2 / m` and the plan's row and
    column sums :math:`r = P 1`, :math:`c = P^\top 1`:

    .. math::

        \\partial_u \\Omega = \tfrac{2}{m} (r \\odot u - P v), \\qquad
        \\partial_v \\Omega = \tfrac{2}{m} (c \\odot v - P^\top u),

    evaluated on both sets shifted by their common mean, as the cost is (the
    gradient is unchanged; the float32 cancellation is gone). One autograd
    node instead of the dozen the cost's formula makes: for small layers those
    nodes, not the arithmetic, were most of the OT term's time.
    """

    @staticmethod
    def forward(ctx, u: Tensor, v: Tensor, plan: Tensor, cost: Tensor) -> Tensor:
        ctx.save_for_backward(u, v, plan)
        return (plan * cost).sum()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        u, v, plan = ctx.saved_tensors
        with torch.autocast(device_type=plan.device.type, enabled=False):
            uf, vf = u.to(plan.dtype), v.to(plan.dtype)
            shift = torch.cat([uf, vf]).mean(dim=0)
            uf, vf = uf - shift, vf - shift
            scale = grad.to(plan.dtype) * (2.0 / u.shape[1])
            grad_u = grad_v = None
            if ctx.needs_input_grad[0]:
                grad_u = (scale * (plan.sum(dim=1, keepdim=True) * uf - plan @ vf)).to(u.dtype)
            if ctx.needs_input_grad[1]:
                grad_v = (scale * (plan.sum(dim=0)[:, None] * vf - plan.t() @ uf)).to(v.dtype)
        return grad_u, grad_v, None, None


def ot_distance(
    teacher: Tensor,
    student: Tensor,
    *,
    solver: str = "auto",
    spatial: str = "pool",
    normalize: str = "none",
    epsilon: float = DEFAULT_EPSILON,
    max_iter: int = DEFAULT_MAX_ITER,
) -> Tensor:
    """Omega between two layer outputs on the same batch, a differentiable scalar.

    See :func:`transport` for the parameters; this returns its ``distance``.
    """
    return transport(
        teacher,
        student,
        solver=solver,
        spatial=spatial,
        normalize=normalize,
        epsilon=epsilon,
        max_iter=max_iter,
    ).distance

"""Optimal transport plans between uniform masses on two sets of neurons.

Every solver returns a plan :math:`P^\\star` of

.. math::

    \\min_{P \\ge 0,\\; P 1_q = a,\\; P^\\top 1_p = b} \\sum_{jk} P_{jk} C_{jk},
    \\qquad a = 1_p / p, \\quad b = 1_q / q,

as a tensor on the cost's device with no gradient: the distance's gradient
comes from the envelope theorem (see :mod:`otrt_core.ot.distance`), never from
the solver's iterations.

- ``exact``: network simplex (POT ``ot.emd``) on the CPU, the reference.
- ``assignment``: for ``p == q`` an optimal plan is a permutation matrix over
  ``p`` (Birkhoff-von Neumann), found by a linear assignment solver.
- ``sinkhorn``: entropic OT in the log domain on the cost's own device, with
  ``epsilon`` relative to the cost's spread, a fixed number of iterations and
  no host synchronisation, then rounded onto the marginals.
- ``auto``: the fastest of those measured by ``bench/ot_overhead.py`` on the
  cost's device (see :func:`choose_solver`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from otrt_core.protocol import DEFAULT_EPSILON, DEFAULT_MAX_ITER, SOLVERS

# Network simplex iterations grow with p * q; POT's default (1e5) stops short
# of the optimum from widths of about 1000 on.
_EMD_MAX_ITER = 10_000_000

# Guards divisions by quantities that are zero for degenerate inputs
# (a constant cost, a plan row that underflowed).
_TINY = 1e-30


# Widths up to which the assignment solver beats network simplex when p == q
# (bench/ot_overhead.py on CPU: 1.6x faster at 64-128, 1.3x at 256, slower
# from 512 on and 2.5x slower at 2048).
ASSIGNMENT_MAX_WIDTH = 256


def choose_solver(p: int, q: int, device: torch.device) -> str:
    """The solver ``auto`` uses for a ``(p, q)`` cost on ``device``.

    On the CPU an exact solver wins at every width measured (64 to 2048,
    ``bench/ot_overhead.py``, docs/ot.md): the assignment solver when
    ``p == q <= ASSIGNMENT_MAX_WIDTH``, network simplex otherwise; log-domain
    Sinkhorn is no faster there at the epsilon that keeps it within 1%. On an
    accelerator, Sinkhorn runs where the features already are, while an exact
    solve would copy the cost to the host and wait for the device every step.
    """
    if device.type != "cpu":
        return "sinkhorn"
    return "assignment" if p == q <= ASSIGNMENT_MAX_WIDTH else "exact"


def transport_plan(
    cost: Tensor,
    solver: str = "auto",
    epsilon: float = DEFAULT_EPSILON,
    max_iter: int = DEFAULT_MAX_ITER,
) -> Tensor:
    """An optimal transport plan for ``cost`` between uniform marginals.

    Parameters
    ----------
    cost : Tensor ``(p, q)``
        Detached inside: the plan never carries a gradient.
    solver : {"auto", "exact", "assignment", "sinkhorn"}
    epsilon : float
        Sinkhorn's entropic regularization, relative to the cost's spread
        ``max(C) - min(C)``. Only read by ``sinkhorn``.
    max_iter : int
        Sinkhorn's fixed number of iterations. Only read by ``sinkhorn``.

    Returns
    -------
    Tensor ``(p, q)`` on ``cost``'s device and dtype, with row sums ``1/p``
    and column sums ``1/q``.
    """
    if cost.dim() != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(f"a cost must be a non-empty (p, q) matrix; got {tuple(cost.shape)}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}; got {solver!r}")
    cost = cost.detach()
    p, q = cost.shape
    if solver == "auto":
        solver = choose_solver(p, q, cost.device)
    if solver == "exact":
        return _exact_plan(cost)
    if solver == "assignment":
        return _assignment_plan(cost)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive; got {epsilon}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1; got {max_iter}")
    return _sinkhorn_plan(cost, epsilon, max_iter)


def _exact_plan(cost: Tensor) -> Tensor:
    p, q = cost.shape
    host_cost = cost.to("cpu", torch.float64).numpy()
    plan = ot.emd(np.full(p, 1.0 / p), np.full(q, 1.0 / q), host_cost, numItermax=_EMD_MAX_ITER)
    return torch.from_numpy(plan).to(device=cost.device, dtype=cost.dtype)


def _assignment_plan(cost: Tensor) -> Tensor:
    p, q = cost.shape
    if p != q:
        raise ValueError(
            f"the assignment solver needs as many student as teacher neurons; got {p} x {q} "
            "(use 'exact' or 'sinkhorn')"
        )
    rows, cols = linear_sum_assignment(cost.to("cpu", torch.float64).numpy())
    plan = torch.zeros_like(cost)
    plan[torch.from_numpy(rows).to(cost.device), torch.from_numpy(cols).to(cost.device)] = 1.0 / p
    return plan


def epsilon_schedule(epsilon: float, max_iter: int) -> list[float]:
    """Epsilon per Sinkhorn iteration, for a cost scaled to [0, 1].

    Epsilon scaling: start at 1 (the whole spread, where Sinkhorn converges in
    a few iterations), shrink geometrically to ``epsilon`` over the first half
    of the iterations, then stay there. Each stage warm-starts the next, which
    reaches a small epsilon in far fewer iterations than starting there.
    """
    start = max(epsilon, 1.0)
    decay_steps = max_iter // 2
    if decay_steps == 0:
        return [epsilon] * max_iter
    ratio = math.exp(math.log(epsilon / start) / decay_steps)
    return [max(epsilon, start * ratio ** (t + 1)) for t in range(max_iter)]


def _sinkhorn_plan(cost: Tensor, epsilon: float, max_iter: int) -> Tensor:
    if cost.is_cuda and not torch.cuda.is_current_stream_capturing():
        return _graphed_sinkhorn_plan(cost, epsilon, max_iter)
    return _sinkhorn_iterations(cost, epsilon, max_iter)


def _sinkhorn_iterations(
    cost: Tensor,
    epsilon: float,
    max_iter: int,
    fused: tuple[Callable[..., Tensor], Tensor] | None = None,
) -> Tensor:
    """The log-domain iterations; ``fused``: a compiled half step and the epsilon schedule
    as a device tensor (made before any graph capture, which allows no host copy)."""
    p, q = cost.shape
    # Shifting the cost leaves the plan unchanged; scaling it to [0, 1] makes
    # epsilon relative to the spread. Kept as tensors: no .item(), no sync.
    low = cost.amin()
    scaled = (cost - low) / (cost.amax() - low).clamp_min(_TINY)  # (p, q)
    scaled_t = scaled.t().contiguous()  # (q, p): the column update as a row update
    a = torch.full((p,), 1.0 / p, dtype=cost.dtype, device=cost.device)
    b = torch.full((q,), 1.0 / q, dtype=cost.dtype, device=cost.device)
    log_a, log_b = a.log(), b.log()

    # Dual potentials; each update makes one marginal exact given the other.
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    if fused is None:
        half_step, eps_values = _half_step, epsilon_schedule(epsilon, max_iter)
    else:  # a compiled step takes epsilon as a 0-d tensor: one kernel for every value
        half_step, eps_values = fused[0], fused[1].unbind()
    for eps in eps_values:
        # A fixed count, no convergence test: .item() here would sync the GPU.
        f = half_step(g, scaled, log_a, eps)
        g = half_step(f, scaled_t, log_b, eps)
    plan = torch.exp((f[:, None] + g - scaled) / epsilon)
    return _round_to_marginals(plan, a, b)


def _half_step(other: Tensor, scaled: Tensor, log_marginal: Tensor, eps: float | Tensor) -> Tensor:
    """One Sinkhorn update in the log domain: the potential that makes the row marginals exact.

    .. math:: f_j = \\varepsilon \\big(\\log a_j - \\log \\textstyle\\sum_k
              \\exp((g_k - C_{jk}) / \\varepsilon)\\big)
    """
    return eps * (log_marginal - torch.logsumexp((other - scaled) / eps, dim=1))


@functools.cache
def _compiled_half_step() -> Callable[..., Tensor] | None:
    """:func:`_half_step` fused by ``torch.compile`` (one reduction kernel), or ``None``.

    Fusing takes the replayed graph from about 20 kernels per iteration to a
    few. Compiling needs Triton and costs seconds once per process and shape;
    without it the eager kernels are captured instead.
    """
    try:
        return torch.compile(_half_step, dynamic=False, fullgraph=True)
    except Exception:  # no usable compiler backend here
        return None


# One captured graph per (shape, dtype, device, epsilon, max_iter): in training
# that is one per regularized layer pair.
# The schedule tensor is kept with the graph, which reads it in place.
_CUDA_GRAPHS: dict[tuple, tuple[Tensor, Tensor, torch.cuda.CUDAGraph, Tensor]] = {}


def _graphed_sinkhorn_plan(
    cost: Tensor, epsilon: float, max_iter: int, fuse: bool = True
) -> Tensor:
    """The Sinkhorn iterations replayed from a CUDA graph; ``fuse``: each half step
    compiled into one kernel first (bench/ot_overhead.py --sinkhorn-mode compares).

    Eagerly, the ~20 small kernels of each iteration cost Python dispatch time
    that dwarfs their GPU time (about 16 ms for 50 iterations at any width up
    to 2048 on an H100, docs/ot.md). Captured once per shape, a replay issues
    them all from the device in one call. The plan is copied out of the graph's
    static output, which the next replay overwrites.
    """
    key = (tuple(cost.shape), cost.dtype, cost.device, epsilon, max_iter, fuse)
    if key not in _CUDA_GRAPHS:
        static_cost = cost.clone()
        side = torch.cuda.Stream(cost.device)
        side.wait_stream(torch.cuda.current_stream(cost.device))
        half_step = _compiled_half_step() if fuse else None
        schedule = torch.tensor(
            epsilon_schedule(epsilon, max_iter), dtype=cost.dtype, device=cost.device
        )
        fused = None if half_step is None else (half_step, schedule)
        with torch.cuda.stream(side), torch.autocast("cuda", enabled=False):
            try:  # warm-up before capture; compiles the fused step if there is one
                _sinkhorn_iterations(static_cost, epsilon, max_iter, fused)
            except Exception:  # the compiler failed at run time: capture the eager kernels
                fused = None
                _sinkhorn_iterations(static_cost, epsilon, max_iter)
        torch.cuda.current_stream(cost.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.autocast("cuda", enabled=False):
            static_plan = _sinkhorn_iterations(static_cost, epsilon, max_iter, fused)
        _CUDA_GRAPHS[key] = (static_cost, static_plan, graph, schedule)
    static_cost, static_plan, graph, _ = _CUDA_GRAPHS[key]
    static_cost.copy_(cost)
    graph.replay()
    return static_plan.clone()


def _round_to_marginals(plan: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """The nearest feasible plan in the sense of Altschuler, Weed, Rigollet (2017, Alg. 2).

    Scales down rows and columns that carry too much mass, then spreads the
    missing mass as a rank-one correction, so that both marginals hold to
    rounding error after a finite number of Sinkhorn iterations.
    """
    plan = plan * (a / plan.sum(dim=1).clamp_min(_TINY)).clamp(max=1.0)[:, None]
    plan = plan * (b / plan.sum(dim=0).clamp_min(_TINY)).clamp(max=1.0)[None, :]
    # Non-negative up to rounding; clamped so that noise is never amplified.
    missing_a = (a - plan.sum(dim=1)).clamp_min(0.0)
    missing_b = (b - plan.sum(dim=0)).clamp_min(0.0)
    return plan + torch.outer(missing_a, missing_b) / missing_a.sum().clamp_min(_TINY)

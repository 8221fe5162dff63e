"""transport_plan(): every solver gives a feasible, optimal (or near-optimal) plan."""

import itertools

import numpy as np
import ot
import pytest
import torch
from torch.testing import assert_close

from otrt_core.ot import (
    DEFAULT_EPSILON,
    DEFAULT_MAX_ITER,
    choose_solver,
    cost_matrix,
    neurons,
    transport_plan,
)
from otrt_core.ot.solvers import epsilon_schedule
from tests.utils.features import relu_features


def realistic_cost(p: int, q: int, *, seed: int = 0, n: int = 64, device="cpu") -> torch.Tensor:
    u = neurons(relu_features(n, p, seed=seed, device=device))
    v = neurons(relu_features(n, q, seed=seed + 1, device=device))
    return cost_matrix(u, v)


def pot_omega(cost: torch.Tensor) -> float:
    p, q = cost.shape
    return ot.emd2(np.full(p, 1 / p), np.full(q, 1 / q), cost.cpu().double().numpy())


def assert_marginals(plan: torch.Tensor, atol: float = 1e-7) -> None:
    p, q = plan.shape
    assert (plan >= 0).all()
    assert_close(plan.sum(dim=1), torch.full_like(plan[:, 0], 1 / p), atol=atol, rtol=0)
    assert_close(plan.sum(dim=0), torch.full_like(plan[0], 1 / q), atol=atol, rtol=0)


@pytest.mark.parametrize(("p", "q"), [(1, 1), (1, 5), (5, 1), (9, 9), (12, 7), (7, 30)])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_matches_pot_on_random_costs(p, q, seed):
    cost = torch.rand(p, q, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    plan = transport_plan(cost, "exact")
    assert_marginals(plan, atol=1e-12)
    assert (plan * cost).sum().item() == pytest.approx(pot_omega(cost), abs=1e-6)


@pytest.mark.parametrize("width", [1, 8, 64])
def test_assignment_equals_exact_when_widths_match(device, width):
    cost = realistic_cost(width, width, seed=width, device=device)
    assignment = transport_plan(cost, "assignment")
    assert assignment.device.type == device.type
    assert_marginals(assignment)
    assert ((assignment > 0).sum(dim=1) == 1).all()  # a permutation matrix over p
    exact_omega = (transport_plan(cost, "exact") * cost).sum()
    assert_close((assignment * cost).sum(), exact_omega, atol=1e-6, rtol=0)


def test_assignment_refuses_different_widths():
    with pytest.raises(ValueError, match="as many student as teacher neurons"):
        transport_plan(torch.rand(3, 4), "assignment")


def test_sinkhorn_converges_to_exact_as_epsilon_shrinks(device):
    cost = realistic_cost(40, 25, seed=3, device=device).float()
    exact = pot_omega(cost)
    errors = []
    for epsilon in [0.1, 0.03, 0.01, 0.002]:
        plan = transport_plan(cost, "sinkhorn", epsilon=epsilon, max_iter=200)
        assert plan.device.type == device.type
        assert_marginals(plan, atol=1e-6)
        errors.append(((plan * cost).sum().item() - exact) / exact)
    assert all(error >= -1e-6 for error in errors), errors  # a feasible plan costs at least Omega
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 0.01, errors


def test_sinkhorn_defaults_come_within_one_percent_of_exact():
    cost = realistic_cost(128, 96, seed=4)
    plan = transport_plan(cost, "sinkhorn")
    assert (plan * cost).sum().item() == pytest.approx(pot_omega(cost), rel=0.01)


@pytest.mark.cuda
def test_replayed_cuda_graph_plans_match_the_eager_iterations_for_each_new_cost():
    from otrt_core.ot.solvers import _compiled_half_step, _sinkhorn_iterations

    assert _compiled_half_step() is not None  # torch.compile works on the CUDA machines
    for seed in range(3):  # the first call captures; later ones replay on new costs
        cost = realistic_cost(96, 64, seed=seed, device=torch.device("cuda")).float()
        graphed = transport_plan(cost, "sinkhorn")
        eager = _sinkhorn_iterations(cost, DEFAULT_EPSILON, DEFAULT_MAX_ITER)
        # Fused kernels round differently; exp(. / epsilon) magnifies it a little.
        torch.testing.assert_close(graphed, eager, rtol=1e-3, atol=1e-7)
        assert (graphed * cost).sum().item() == pytest.approx((eager * cost).sum().item(), rel=1e-5)
        assert_marginals(graphed, atol=1e-6)


@pytest.mark.parametrize("solver", ["exact", "assignment", "sinkhorn"])
def test_a_constant_cost_gives_a_finite_feasible_plan(solver):
    plan = transport_plan(torch.full((6, 6), 2.5), solver)
    assert torch.isfinite(plan).all()
    assert_marginals(plan, atol=1e-6)


def test_the_plan_never_carries_a_gradient():
    cost = torch.rand(4, 4, requires_grad=True)
    for solver in ["exact", "assignment", "sinkhorn"]:
        assert not transport_plan(cost, solver).requires_grad


def test_auto_uses_exact_solvers_on_cpu_and_sinkhorn_on_accelerators():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_solver(64, 64, cpu) == "assignment"
    assert choose_solver(256, 256, cpu) == "assignment"
    assert choose_solver(512, 512, cpu) == "exact"  # assignment is slower from 512 on
    assert choose_solver(2048, 1024, cpu) == "exact"
    assert choose_solver(2048, 1024, cuda) == "sinkhorn"


def test_auto_gives_the_exact_value_on_cpu():
    cost = realistic_cost(20, 12, seed=5)
    omega = (transport_plan(cost, "auto") * cost).sum().item()
    assert omega == pytest.approx(pot_omega(cost), abs=1e-6)


def test_epsilon_schedule_decays_geometrically_then_holds():
    schedule = epsilon_schedule(0.01, 10)
    assert schedule[0] < 1.0
    assert schedule[4:] == [0.01] * 6
    assert all(a > b for a, b in itertools.pairwise(schedule[:5]))
    assert epsilon_schedule(0.01, 1) == [0.01]


@pytest.mark.parametrize(
    ("cost", "kwargs", "message"),
    [
        (torch.rand(3), {}, "non-empty"),
        (torch.rand(0, 3), {}, "non-empty"),
        (torch.rand(3, 3), {"solver": "greedy"}, "solver must be one of"),
        (torch.rand(3, 3), {"solver": "sinkhorn", "epsilon": 0.0}, "epsilon must be positive"),
        (torch.rand(3, 3), {"solver": "sinkhorn", "max_iter": 0}, "max_iter"),
    ],
)
def test_bad_arguments_get_clear_errors(cost, kwargs, message):
    with pytest.raises(ValueError, match=message):
        transport_plan(cost, **kwargs)

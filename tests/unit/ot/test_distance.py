"""ot_distance() and transport(): Omega, its envelope gradient, its invariances."""

import ot
import pytest
import torch
from torch.testing import assert_close

from otrt_core.ot import ot_distance, transport
from otrt_core.protocol import NORMALIZATIONS
from tests.utils.features import relu_features


def pot_omega(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Omega as a researcher writes it: POT's emd2 on a brute-force cost, autograd through POT."""
    u, v = teacher.t(), student.t()  # (p, n), (q, n)
    cost = (u[:, None, :] - v[None, :, :]).square().mean(dim=2)
    p, q = cost.shape
    a = torch.full((p,), 1 / p, dtype=cost.dtype)
    b = torch.full((q,), 1 / q, dtype=cost.dtype)
    return ot.emd2(a, b, cost)


@pytest.mark.parametrize(("p", "q"), [(10, 10), (16, 6), (5, 24)])
@pytest.mark.parametrize("solver", ["auto", "exact"])
def test_omega_and_its_gradient_match_pot(p, q, solver):
    teacher = relu_features(32, p, seed=p)
    student = relu_features(32, q, seed=100 + q).requires_grad_()
    omega = ot_distance(teacher, student, solver=solver)
    (grad,) = torch.autograd.grad(omega, student)

    student_ref = student.detach().clone().requires_grad_()
    omega_ref = pot_omega(teacher, student_ref)
    omega_ref.backward()
    assert_close(omega, omega_ref, atol=1e-6, rtol=0)
    assert_close(grad, student_ref.grad, atol=1e-6, rtol=0)


def test_gradient_reaches_the_teacher_too_when_it_requires_one():
    teacher = relu_features(16, 6, seed=1).requires_grad_()
    student = relu_features(16, 4, seed=2)
    ot_distance(teacher, student).backward()
    assert teacher.grad is not None and teacher.grad.abs().sum() > 0


@pytest.mark.parametrize("solver", ["exact", "sinkhorn"])
def test_omega_ignores_the_order_of_either_layers_neurons(device, solver):
    teacher = relu_features(24, 12, seed=3, device=device)
    student = relu_features(24, 9, seed=4, device=device)
    generator = torch.Generator().manual_seed(0)
    teacher_perm = torch.randperm(12, generator=generator).to(device)
    student_perm = torch.randperm(9, generator=generator).to(device)
    omega = ot_distance(teacher, student, solver=solver)
    assert_close(ot_distance(teacher[:, teacher_perm], student, solver=solver), omega)
    assert_close(ot_distance(teacher, student[:, student_perm], solver=solver), omega)


@pytest.mark.parametrize("solver", ["auto", "exact", "assignment"])
def test_a_layer_and_its_permuted_copy_are_at_distance_zero(device, solver):
    teacher = relu_features(32, 16, seed=5, dtype=torch.float32, device=device)
    permuted = teacher[:, torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    scale = teacher.square().mean()
    assert ot_distance(teacher, permuted, solver=solver).abs() <= 1e-6 * scale


def test_flatten_compares_maps_of_different_sizes():
    teacher = torch.randn(4, 6, 8, 8, dtype=torch.float64)
    student = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    result = transport(teacher, student, spatial="flatten", solver="exact")
    assert result.plan.shape == (6, 3)
    pooled = torch.nn.functional.avg_pool2d(student, 2)
    expected = pot_omega(
        teacher.transpose(0, 1).reshape(6, -1).t(), pooled.transpose(0, 1).reshape(3, -1).t()
    )
    assert_close(result.distance, expected, atol=1e-6, rtol=0)


def test_pool_compares_a_conv_layer_with_a_dense_one():
    conv = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    dense = torch.randn(5, 7, dtype=torch.float64)
    assert_close(
        ot_distance(conv, dense), pot_omega(conv.mean(dim=(2, 3)), dense), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("solver", ["exact", "assignment", "sinkhorn"])
def test_single_input_and_constant_neurons_give_finite_values_and_gradients(normalize, solver):
    teacher = torch.ones(1, 5)
    student = torch.zeros(1, 5, requires_grad=True)
    omega = ot_distance(teacher, student, solver=solver, normalize=normalize)
    omega.backward()
    assert torch.isfinite(omega)
    assert torch.isfinite(student.grad).all()


def test_under_autocast_the_distance_is_float32():
    teacher, student = torch.randn(8, 6), torch.randn(8, 6)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        omega = ot_distance(teacher.bfloat16(), student.bfloat16())
    assert omega.dtype == torch.float32


def test_transport_reports_the_solver_auto_chose():
    result = transport(torch.randn(8, 5), torch.randn(8, 3))
    assert result.solver == "exact"
    assert not result.plan.requires_grad


@pytest.mark.parametrize(
    ("teacher", "student", "kwargs", "message"),
    [
        (torch.randn(8, 4), torch.randn(7, 4), {}, "same batch"),
        (torch.randn(8, 4, 2, 2), torch.randn(8, 4, 2), {"spatial": "flatten"}, "same rank"),
        (torch.randn(8, 0), torch.randn(8, 4), {}, "no neurons"),
        (torch.randn(0, 4), torch.randn(0, 4), {}, "batch is empty"),
    ],
)
def test_shape_mistakes_get_clear_errors(teacher, student, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ot_distance(teacher, student, **kwargs)


def test_the_closed_form_gradient_is_autograd_s_through_the_cost():
    """transport()'s gradient equals differentiating sum(P * C(u, v)) with P held fixed."""
    from otrt_core.ot import cost_matrix, neurons, transport

    generator = torch.Generator().manual_seed(3)
    teacher = (torch.randn(32, 12, 5, 5, generator=generator, dtype=torch.float64) + 2).relu()
    student = (torch.randn(32, 7, 3, 3, generator=generator, dtype=torch.float64) + 2).relu()
    for spatial in ("pool", "flatten"):
        ours_t, ours_s = teacher.clone().requires_grad_(), student.clone().requires_grad_()
        result = transport(ours_t, ours_s, solver="exact", spatial=spatial)
        result.distance.backward()
        ref_t, ref_s = teacher.clone().requires_grad_(), student.clone().requires_grad_()
        size = teacher.shape[2:] if spatial == "flatten" else None
        u = neurons(ref_t, spatial=spatial)
        v = neurons(ref_s, spatial=spatial, size=size)
        reference = (result.plan * cost_matrix(u, v)).sum()
        reference.backward()
        torch.testing.assert_close(result.distance, reference)
        torch.testing.assert_close(ours_t.grad, ref_t.grad)
        torch.testing.assert_close(ours_s.grad, ref_s.grad)

"""neurons(): layer outputs as one row per neuron (METHOD.md, "Neurons as functions")."""

import pytest
import torch
from torch.testing import assert_close

from otrt_core.ot import neurons
from otrt_core.protocol import NORMALIZATIONS


def test_dense_layer_gives_one_row_per_neuron():
    x = torch.arange(6.0).reshape(3, 2)  # (n=3, C=2)
    assert_close(neurons(x), torch.tensor([[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]))


def test_pool_takes_the_spatial_mean_per_channel():
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    assert_close(neurons(x, spatial="pool"), x.mean(dim=(2, 3)).t())


def test_pool_works_on_one_dimensional_maps():
    x = torch.randn(4, 3, 7, dtype=torch.float64)
    assert_close(neurons(x), x.mean(dim=2).t())


def test_flatten_keeps_every_position_of_every_input():
    x = torch.randn(4, 3, 2, 5, dtype=torch.float64)
    rows = neurons(x, spatial="flatten")
    assert rows.shape == (3, 4 * 2 * 5)
    assert_close(rows[1], x[:, 1].reshape(-1))


def test_flatten_pools_maps_to_the_requested_size():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    rows = neurons(x, spatial="flatten", size=(4, 4))
    expected = torch.nn.functional.avg_pool2d(x, 2)  # adaptive pooling by 2 is plain 2x2 pooling
    assert_close(rows, expected.transpose(0, 1).reshape(3, -1))


def test_flatten_rejects_a_size_of_another_rank():
    with pytest.raises(ValueError, match="same number of spatial dimensions"):
        neurons(torch.randn(2, 3, 8, 8), spatial="flatten", size=4)


@pytest.mark.parametrize("spatial", ["pool", "flatten"])
def test_center_removes_each_neurons_mean(spatial):
    rows = neurons(torch.randn(5, 4, 3, 3, dtype=torch.float64), spatial, normalize="center")
    assert_close(rows.mean(dim=1), torch.zeros(4, dtype=torch.float64))


def test_standardize_gives_zero_mean_and_unit_variance():
    rows = neurons(3 + 2 * torch.randn(50, 6, dtype=torch.float64), normalize="standardize")
    assert_close(rows.mean(dim=1), torch.zeros(6, dtype=torch.float64))
    assert_close(rows.var(dim=1, unbiased=False), torch.ones(6, dtype=torch.float64))


def test_unit_gives_rows_of_unit_norm():
    rows = neurons(torch.randn(10, 6, dtype=torch.float64), normalize="unit")
    assert_close(rows.norm(dim=1), torch.ones(6, dtype=torch.float64))


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("n", [1, 7])
def test_constant_neurons_and_a_single_input_stay_finite(normalize, n):
    x = torch.zeros(n, 3, requires_grad=True)  # every neuron constant
    rows = neurons(x, normalize=normalize)
    rows.square().sum().backward()
    assert torch.isfinite(rows).all()
    assert torch.isfinite(x.grad).all()


def test_half_precision_inputs_become_float32_and_float64_stays():
    assert neurons(torch.randn(4, 3, dtype=torch.bfloat16)).dtype == torch.float32
    assert neurons(torch.randn(4, 3, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (torch.randn(4), {}, "must be"),
        (torch.randn(2, 3, 4, 5, 6), {}, "must be"),
        (torch.randn(0, 3), {}, "batch is empty"),
        (torch.randn(4, 0, 2, 2), {}, "no neurons"),
        (torch.randn(4, 3), {"spatial": "max"}, "spatial must be one of"),
        (torch.randn(4, 3), {"normalize": "zscore"}, "normalize must be one of"),
    ],
)
def test_bad_inputs_get_clear_errors(x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        neurons(x, **kwargs)


def test_rms_divides_the_layer_by_its_root_mean_square():
    x = torch.randn(10, 6, dtype=torch.float64)
    rows = neurons(x, normalize="rms")
    assert_close(rows, x.T / x.square().mean().sqrt())  # neurons' relative scales kept


@pytest.mark.parametrize("scale", [1e-3, 100.0])
def test_rms_makes_the_distance_and_its_gradient_blind_to_either_sides_scale(scale):
    from otrt_core.ot import ot_distance

    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(16, 5, generator=generator, dtype=torch.float64)
    student = torch.randn(16, 7, generator=generator, dtype=torch.float64)

    def value_and_grad(t, s):
        s = s.clone().requires_grad_(True)
        omega = ot_distance(t, s, solver="exact", normalize="rms")
        omega.backward()
        return omega.detach(), s.grad

    # Within 1e-5: the 1e-12 that keeps rsqrt finite is 1e-6 of a mean square of 1e-6.
    close = {"rtol": 1e-5, "atol": 1e-8}
    omega, grad = value_and_grad(teacher, student)
    scaled_omega, scaled_grad = value_and_grad(scale * teacher, student)
    assert_close(scaled_omega, omega, **close)
    assert_close(scaled_grad, grad, **close)
    # The student at another scale: the same distance, a gradient scaled by 1/scale.
    student_omega, student_grad = value_and_grad(teacher, scale * student)
    assert_close(student_omega, omega, **close)
    assert_close(student_grad * scale, grad, **close)
    assert omega > 0

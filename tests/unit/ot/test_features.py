"""neurons(): layer outputs as one row per neuron (METHOD.md, "Neurons as functions")."""

import pytest
import torch
from torch.testing import assert_close

from otrt_core.ot import neurons


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


@pytest.mark.parametrize("normalize", ["none", "center", "standardize", "unit"])
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

"""cost_matrix(): C_jk = ||u_j - v_k||^2 / m."""

import pytest
import torch
from torch.testing import assert_close

from otrt_core.ot import cost_matrix
from tests.utils.features import relu_features


def brute_force_cost(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u[:, None, :] - v[None, :, :]).square().mean(dim=2)


def test_matches_the_definition_when_p_differs_from_q(device):
    u = relu_features(32, 7, seed=1, device=device).t()  # (p=7, m=32)
    v = relu_features(32, 5, seed=2, device=device).t()  # (q=5, m=32)
    cost = cost_matrix(u, v)
    assert cost.shape == (7, 5)
    assert cost.device.type == device.type
    assert_close(cost, brute_force_cost(u, v), rtol=1e-10, atol=1e-12)


def test_float32_stays_accurate_on_activations_far_from_zero(device):
    """The common shift avoids the cancellation of ||u||^2 + ||v||^2 - 2 u.v in float32."""
    u = 100 + relu_features(64, 20, seed=3, device=device).t()
    v = 100 + relu_features(64, 30, seed=4, device=device).t()
    cost32 = cost_matrix(u.float(), v.float())
    assert cost32.dtype == torch.float32
    assert_close(cost32.double(), brute_force_cost(u, v), rtol=1e-4, atol=1e-5)


def test_a_layer_against_itself_has_a_zero_diagonal_and_nothing_negative(device):
    u = relu_features(16, 10, seed=5, dtype=torch.float32, device=device).t()
    cost = cost_matrix(u, u)
    assert (cost >= 0).all()
    assert_close(cost.diagonal(), torch.zeros(10, device=device), atol=1e-6, rtol=0)


def test_gradient_matches_finite_differences():
    u = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cost_matrix, (u, v))


def test_autocast_does_not_lower_the_cost_to_bfloat16():
    u, v = torch.randn(8, 16), torch.randn(6, 16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        cost = cost_matrix(u, v)
    assert cost.dtype == torch.float32
    assert_close(cost, brute_force_cost(u, v))


@pytest.mark.parametrize(
    ("u", "v", "message"),
    [
        (torch.randn(3, 4), torch.randn(3, 5), "different numbers of points"),
        (torch.randn(3), torch.randn(3, 5), "matrices"),
        (torch.randn(0, 4), torch.randn(3, 4), "empty layer"),
    ],
)
def test_shape_mistakes_get_clear_errors(u, v, message):
    with pytest.raises(ValueError, match=message):
        cost_matrix(u, v)

"""Property-based checks of Omega over shapes, options and values (hypothesis)."""

import numpy as np
import ot
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from otrt_core.ot import cost_matrix, neurons, ot_distance, transport
from otrt_core.protocol import NORMALIZATIONS

layer = st.fixed_dictionaries(
    {
        "n": st.integers(1, 12),
        "p": st.integers(1, 10),
        "q": st.integers(1, 10),
        "maps": st.sampled_from([(), (3,), (2, 2)]),
        "spatial": st.sampled_from(["pool", "flatten"]),
        "normalize": st.sampled_from(NORMALIZATIONS),
        "seed": st.integers(0, 2**16),
    }
)


def draw_layers(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(case["seed"])
    shape = lambda width: (case["n"], width, *case["maps"])  # noqa: E731
    teacher = torch.randn(shape(case["p"]), generator=generator, dtype=torch.float64)
    student = torch.randn(shape(case["q"]), generator=generator, dtype=torch.float64)
    return teacher, student


@settings(max_examples=60, deadline=None)
@given(layer)
def test_omega_is_pots_exact_value_finite_and_non_negative(case):
    teacher, student = draw_layers(case)
    options = {"spatial": case["spatial"], "normalize": case["normalize"]}
    result = transport(teacher, student, solver="exact", **options)
    cost = cost_matrix(neurons(teacher, **options), neurons(student, **options))
    p, q = cost.shape
    reference = ot.emd2(np.full(p, 1 / p), np.full(q, 1 / q), cost.numpy())
    assert torch.isfinite(result.distance)
    assert result.distance >= 0
    assert abs(result.distance.item() - reference) <= 1e-6
    assert_close(result.plan.sum(dim=1), torch.full((p,), 1 / p, dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(layer, st.data())
def test_omega_is_blind_to_neuron_order(case, data):
    teacher, student = draw_layers(case)
    teacher_perm = data.draw(st.permutations(range(case["p"])))
    student_perm = data.draw(st.permutations(range(case["q"])))
    options = {"spatial": case["spatial"], "normalize": case["normalize"], "solver": "exact"}
    omega = ot_distance(teacher, student, **options)
    permuted = ot_distance(teacher[:, teacher_perm], student[:, student_perm], **options)
    assert_close(permuted, omega, atol=1e-9, rtol=1e-9)
    assert ot_distance(teacher, teacher[:, teacher_perm], **options).abs() <= 1e-9


@settings(max_examples=40, deadline=None)
@given(layer)
def test_assignment_agrees_with_exact_when_widths_match(case):
    case = {**case, "q": case["p"]}
    teacher, student = draw_layers(case)
    options = {"spatial": case["spatial"], "normalize": case["normalize"]}
    exact = ot_distance(teacher, student, solver="exact", **options)
    assignment = ot_distance(teacher, student, solver="assignment", **options)
    assert_close(assignment, exact, atol=1e-6, rtol=0)

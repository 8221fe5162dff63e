"""OTRegularizer: lambda * sum_l w_l Omega_l over named layer pairs."""

import pytest
import torch
from torch.testing import assert_close

from otrt_core.ot import LayerPair, OTRegularizer, ot_distance
from tests.utils.features import relu_features


def stages(seed: int, widths: dict[str, int], requires_grad: bool = False) -> dict:
    return {
        name: relu_features(16, width, seed=seed + i).requires_grad_(requires_grad)
        for i, (name, width) in enumerate(widths.items())
    }


def test_loss_is_the_weighted_sum_of_each_pairs_distance():
    teacher = stages(0, {"stage1": 8, "penultimate": 12})
    student = stages(10, {"stage1": 4, "penultimate": 6}, requires_grad=True)
    regularizer = OTRegularizer(
        [LayerPair("stage1", "stage1", weight=0.5), LayerPair("penultimate", "penultimate")],
        weight=3.0,
    )
    output = regularizer(teacher, student)
    omega1 = ot_distance(teacher["stage1"], student["stage1"])
    omega2 = ot_distance(teacher["penultimate"], student["penultimate"])
    assert_close(output.loss, 3.0 * (0.5 * omega1 + omega2))
    assert_close(output.distances["stage1->stage1"], omega1.detach())
    assert output.plans["penultimate->penultimate"].shape == (12, 6)


def test_gradient_reaches_the_student_and_logged_values_are_detached():
    teacher = stages(0, {"penultimate": 12})
    student = stages(10, {"penultimate": 6}, requires_grad=True)
    output = OTRegularizer([LayerPair("penultimate", "penultimate")])(teacher, student)
    output.loss.backward()
    assert student["penultimate"].grad.abs().sum() > 0
    assert not output.distances["penultimate->penultimate"].requires_grad


def test_a_missing_stage_names_the_stages_there_are():
    regularizer = OTRegularizer([LayerPair("stage9", "penultimate")])
    with pytest.raises(KeyError, match=r"teacher has no stage 'stage9'.*penultimate, stage1"):
        regularizer(stages(0, {"stage1": 3, "penultimate": 3}), stages(1, {"penultimate": 3}))


def test_it_is_a_parameter_free_module():
    regularizer = OTRegularizer([LayerPair("penultimate", "penultimate")])
    assert isinstance(regularizer, torch.nn.Module)
    assert list(regularizer.parameters()) == []
    assert "penultimate->penultimate:1" in repr(regularizer)


def test_every_bad_option_is_reported_at_once():
    with pytest.raises(ValueError) as raised:
        OTRegularizer([], solver="greedy", spatial="max", epsilon=0, weight=-1)
    message = str(raised.value)
    for expected in ["at least one layer pair", "non-negative", "solver", "spatial", "epsilon"]:
        assert expected in message

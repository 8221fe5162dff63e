"""Each baseline term against a value worked out by hand."""

import math

import pytest
import torch

from otrt_core.models import build_model
from otrt_core.train.terms import ATTerm, FitNetTerm, KDTerm, L2SPTerm
from tests.utils.specs import digits_spec

NO_LABELS = torch.zeros(0, dtype=torch.long)  # labels only WKD-L reads

# KL(p || q) for p = (3/4, 1/4), q = (1/2, 1/2).
KL = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_is_weight_t2_times_the_kl_of_the_softened_distributions(temperature):
    # Teacher logits whose softmax at this temperature is (3/4, 1/4); the student's is uniform.
    teacher = {"logits": torch.tensor([[temperature * math.log(3.0), 0.0]])}
    student = {"logits": torch.zeros(1, 2)}
    out = KDTerm(weight=3.0, temperature=temperature)(teacher, student, NO_LABELS)
    assert out.loss.item() == pytest.approx(3.0 * temperature**2 * KL, rel=1e-6)
    assert out.logs["kd"].item() == pytest.approx(temperature**2 * KL, rel=1e-6)


def test_fitnets_is_the_weighted_mse_of_the_regressed_student_to_the_teacher():
    spec = digits_spec(
        "distill",
        teacher_path="t.safetensors",
        regularizer={"kind": "fitnet", "weight": 2.0, "layers": [{"weight": 0.5}]},
    )
    teacher, student = (build_model(a, input_shape=(1, 8, 8)) for a in ("mlp", "mlp_small"))
    term = FitNetTerm(spec, teacher, student)
    regressor = term.regressors[0]
    with torch.no_grad():  # r(s) = 1 for every student feature
        regressor.weight.zero_()
        regressor.bias.fill_(1.0)
    t = torch.arange(2 * regressor.out_features, dtype=torch.float32).view(2, -1) / 10
    s = torch.randn(2, regressor.in_features)
    out = term({"penultimate": t}, {"penultimate": s}, NO_LABELS)
    assert out.loss.item() == pytest.approx(2.0 * 0.5 * (t - 1).pow(2).mean().item(), rel=1e-6)


def test_attention_transfer_compares_normalized_energy_maps():
    spec = digits_spec(
        "distill",
        teacher_path="t.safetensors",
        regularizer={"kind": "at", "weight": 10.0, "layers": [{"teacher": "hidden1"}]},
    )
    pair = spec.regularizer.layers[0]
    teacher = {pair.teacher: torch.tensor([[[[3.0, 0.0]], [[4.0, 0.0]]]])}  # energy on the left
    student = {pair.student: torch.tensor([[[[0.0, 0.0, 2.0, 2.0]]]])}  # pooled: on the right
    # a(t) = (1, 0), a(s) = (0, 1): mean squared difference 1.
    assert ATTerm(spec)(teacher, student, NO_LABELS).loss.item() == pytest.approx(10.0, rel=1e-6)
    scaled = {pair.student: teacher[pair.teacher] * 5}  # the same map, louder
    assert ATTerm(spec)(teacher, scaled, NO_LABELS).loss.item() == pytest.approx(0.0, abs=1e-7)


def test_l2sp_is_half_alpha_drift_plus_half_beta_head_norm():
    spec = digits_spec(
        "transfer", teacher_path="t.safetensors", regularizer={"kind": "l2sp", "weight": 0.1}
    )
    student = build_model("mlp", input_shape=(1, 8, 8))
    term = L2SPTerm(spec, student)
    body = [p for n, p in student.named_parameters() if not student.is_head(n)]
    head = [p for n, p in student.named_parameters() if student.is_head(n)]
    with torch.no_grad():
        for param in body:
            param.add_(0.5)  # each transferred weight drifts by 0.5
    drift = sum(p.numel() for p in body) * 0.25
    head_norm = sum(p.pow(2).sum().item() for p in head)
    expected = 0.5 * (0.1 * drift + spec.regularizer.l2sp_beta * head_norm)
    assert term({}, {}, NO_LABELS).loss.item() == pytest.approx(expected, rel=1e-5)

"""WKD's maths (otrt_core/train/wkd.py) against POT and values worked out by hand."""

import math

import numpy as np
import ot
import pytest
import torch

from otrt_core.train import wkd
from otrt_core.train.wkd import (
    WKDFeatureProjector,
    class_cost_from_features,
    class_cost_from_head,
    gaussian_w2,
    sinkhorn_plan,
    wkd_logit_loss,
)


def _histograms(generator: torch.Generator, batch: int, size: int) -> torch.Tensor:
    return torch.softmax(torch.randn(batch, size, generator=generator, dtype=torch.float64), 1)


def _pot_sinkhorn_cost(a, b, cost, reg: float, iterations: int) -> float:
    """<P, C> of POT's Sinkhorn plan, which starts and alternates as ours does."""
    return float(
        ot.sinkhorn2(
            np.asarray(a, dtype=np.float64),
            np.asarray(b, dtype=np.float64),
            np.asarray(cost, dtype=np.float64),
            reg,
            numItermax=iterations,
            stopThr=1e-12,
        )
    )


@pytest.mark.parametrize("shared_cost", [True, False])
def test_sinkhorn_plan_converges_to_pots_cost_and_marginals(shared_cost):
    generator = torch.Generator().manual_seed(0)
    p, q = _histograms(generator, 3, 6), _histograms(generator, 3, 5)
    shape = (6, 5) if shared_cost else (3, 6, 5)
    cost = torch.rand(shape, generator=generator, dtype=torch.float64)
    plans = sinkhorn_plan(p, q, cost, reg=0.1, iterations=2000)
    assert plans.shape == (3, 6, 5)
    assert torch.allclose(plans.sum(2), p, atol=1e-10)
    assert torch.allclose(plans.sum(1), q, atol=1e-8)
    costs = cost.expand(3, 6, 5)
    for b in range(3):
        expected = _pot_sinkhorn_cost(p[b], q[b], costs[b], 0.1, 10_000)
        assert (plans[b] * costs[b]).sum().item() == pytest.approx(expected, rel=1e-5)


def test_sinkhorn_plan_after_few_iterations_matches_pots_unconverged_plan():
    # The authors stop after 10 iterations; the plan then depends on the update order.
    generator = torch.Generator().manual_seed(1)
    p, q = _histograms(generator, 2, 7), _histograms(generator, 2, 7)
    cost = torch.rand(7, 7, generator=generator, dtype=torch.float64)
    plans = sinkhorn_plan(p, q, cost, reg=0.05, iterations=10)
    for b in range(2):
        expected = _pot_sinkhorn_cost(p[b], q[b], cost, 0.05, 10)
        assert (plans[b] * cost).sum().item() == pytest.approx(expected, rel=1e-9)


def test_sinkhorn_plan_gives_zero_mass_rows_zero_plan_rows_and_finite_gradients():
    p = torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    cost = torch.tensor([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    plans = sinkhorn_plan(p, q, cost, reg=0.1, iterations=500)
    assert plans[0, 1].abs().max().item() < 1e-250
    (plans * cost).sum().backward()
    assert torch.isfinite(p.grad).all()


def test_sinkhorn_plan_keeps_float32_under_bfloat16_inputs():
    p = torch.full((2, 4), 0.25, dtype=torch.bfloat16)
    plans = sinkhorn_plan(p, p, torch.rand(4, 4), reg=0.05, iterations=3)
    assert plans.dtype == torch.float32


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_wkd_logit_loss_matches_a_hand_computation():
    student = np.array([[1.0, -0.5, 2.0, 0.3], [0.2, 0.1, -1.0, 1.5]])
    teacher = np.array([[0.5, 0.5, 3.0, -0.2], [-0.3, 0.8, 0.0, 2.5]])
    targets = [2, 0]
    cost = np.array(
        [
            [0.0, 0.3, 0.8, 0.5],
            [0.3, 0.0, 0.6, 0.9],
            [0.8, 0.6, 0.0, 0.2],
            [0.5, 0.9, 0.2, 0.0],
        ]
    )
    temperature, reg = 2.0, 0.1
    target_terms, wasserstein_terms = [], []
    for b, target in enumerate(targets):
        log_p_student = np.log(_softmax(student[b]))
        target_terms.append(-_softmax(teacher[b])[target] * log_p_student[target])
        others = [c for c in range(4) if c != target]
        sub_cost = np.array([[cost[i, j] for j in others] for i in others])
        wasserstein_terms.append(
            _pot_sinkhorn_cost(
                _softmax(student[b, others] / temperature),
                _softmax(teacher[b, others] / temperature),
                sub_cost,
                reg,
                10_000,
            )
        )
    target_part, wasserstein_part = wkd_logit_loss(
        torch.tensor(student),
        torch.tensor(teacher),
        torch.tensor(targets),
        torch.tensor(cost),
        temperature,
        reg=reg,
        iterations=3000,
    )
    assert target_part.item() == pytest.approx(np.mean(target_terms), rel=1e-12)
    assert wasserstein_part.item() == pytest.approx(np.mean(wasserstein_terms), rel=1e-5)


def _random_cost(generator: torch.Generator, classes: int) -> torch.Tensor:
    points = torch.randn(classes, 3, generator=generator)
    return class_cost_from_head(points)


def test_wkd_logit_loss_sends_gradients_to_the_student_only():
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(5, 10, generator=generator, requires_grad=True)
    teacher = torch.randn(5, 10, generator=generator, requires_grad=True)
    targets = torch.randint(0, 10, (5,), generator=generator)
    target_part, wasserstein_part = wkd_logit_loss(
        student, teacher, targets, _random_cost(generator, 10), temperature=4.0
    )
    (target_part + 100 * wasserstein_part).backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().sum().item() > 0
    assert teacher.grad is None


def test_wasserstein_part_is_lowest_when_the_student_matches_the_teacher():
    generator = torch.Generator().manual_seed(3)
    teacher = torch.randn(4, 8, generator=generator) * 3
    targets = teacher.argmax(1)
    cost = _random_cost(generator, 8)

    def wasserstein(student):
        return wkd_logit_loss(student, teacher, targets, cost, 1.0, 0.05, 200)[1].item()

    matched = wasserstein(teacher.clone())
    assert matched < 0.05
    for _ in range(10):
        assert matched < wasserstein(teacher + torch.randn(4, 8, generator=generator))


def test_wkd_logit_loss_reads_nothing_on_the_host():
    # Meta tensors carry no values: .item(), a boolean mask or a data-dependent
    # branch would raise here, as each would make a GPU wait for the host.
    student = torch.empty(6, 12, device="meta", requires_grad=True)
    teacher = torch.empty(6, 12, device="meta")
    targets = torch.empty(6, dtype=torch.long, device="meta")
    target_part, wasserstein_part = wkd_logit_loss(
        student, teacher, targets, torch.empty(12, 12, device="meta"), temperature=4.0
    )
    (target_part + wasserstein_part).backward()
    assert student.grad.shape == (6, 12)


def _anisotropic(generator: torch.Generator, samples: int, scales: torch.Tensor) -> torch.Tensor:
    return torch.randn(samples, scales.numel(), generator=generator, dtype=torch.float64) * scales


def _reference_feature_cost(features, labels, num_classes, sharpen):
    """The formula class pair by class pair, with D x D covariances."""
    covariances = []
    for c in range(num_classes):
        x = features[labels == c]
        x = x - x.mean(0)
        covariances.append((x.T @ x / max(len(x), 1)).flatten())
    cost = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for i in range(num_classes):
        for j in range(num_classes):
            if i == j:
                continue
            norms = covariances[i].norm() * covariances[j].norm()
            cka = float(covariances[i] @ covariances[j] / norms) if norms > 0 else 0.0
            cost[i, j] = 1 - math.exp(-sharpen * (1 - cka))
    return cost


@pytest.fixture
def class_features():
    """Classes 0 and 1 share a covariance, 2 and 3 share another; class 4 is absent."""
    generator = torch.Generator().manual_seed(4)
    wide = torch.tensor([3.0, 1.0, 0.2, 0.2, 0.1, 0.1], dtype=torch.float64)
    other = wide.flip(0)
    sizes = [30, 20, 25, 30]
    features = torch.cat(
        [
            _anisotropic(generator, n, scales) + 5 * c  # each class has its own mean
            for c, (n, scales) in enumerate(zip(sizes, [wide, wide, other, other], strict=True))
        ]
    )
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    shuffle = torch.randperm(len(labels), generator=generator)
    return features[shuffle], labels[shuffle]


@pytest.mark.parametrize("block_elements", [2**26, 250])  # one block; many uneven ones
def test_class_cost_from_features_matches_the_formula(class_features, monkeypatch, block_elements):
    monkeypatch.setattr(wkd, "_GRAM_BLOCK_ELEMENTS", block_elements)
    features, labels = class_features
    cost = class_cost_from_features(features, labels, num_classes=5, sharpen=2.0)
    expected = _reference_feature_cost(features, labels, 5, 2.0)
    assert torch.allclose(cost, expected, atol=1e-12)


def test_class_cost_from_features_is_a_scale_free_dissimilarity(class_features):
    features, labels = class_features
    cost = class_cost_from_features(features, labels, num_classes=5)
    assert torch.equal(cost, cost.T)
    assert torch.equal(cost.diagonal(), torch.zeros(5, dtype=torch.float64))
    assert cost.min().item() >= 0 and cost.max().item() < 1
    assert cost[0, 1] < cost[0, 2] and cost[2, 3] < cost[1, 3]
    maximal = 1 - np.exp(-1.0)  # an absent class: CKA 0 with every other
    assert torch.allclose(cost[4, :4], torch.full((4,), maximal, dtype=torch.float64))
    rescaled = class_cost_from_features(features * 7.5, labels, num_classes=5)
    assert torch.allclose(rescaled, cost, atol=1e-12)


def test_class_cost_from_head_is_the_sharpened_cosine_distance():
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]], dtype=torch.float64)
    cost = class_cost_from_head(weight, sharpen=0.5)
    cosine = np.array([[1.0, 2**-0.5, -1.0], [2**-0.5, 1.0, -(2**-0.5)], [-1.0, -(2**-0.5), 1.0]])
    expected = 1 - np.exp(-0.5 * (1 - cosine))
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(cost.numpy(), expected, atol=1e-12)


def test_costs_reject_a_non_positive_sharpening():
    with pytest.raises(ValueError, match="sharpen"):
        class_cost_from_head(torch.eye(3), sharpen=0.0)


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (3, 4, 7)])
def test_gaussian_w2_is_the_weighted_closed_form(shape):
    generator = torch.Generator().manual_seed(5)
    student = torch.randn(shape, generator=generator, dtype=torch.float64)
    teacher = 2 * torch.randn(shape, generator=generator, dtype=torch.float64) + 1
    s, t = student.flatten(2).numpy(), teacher.flatten(2).numpy()
    std_s, std_t = np.sqrt(s.var(2) + 1e-3), np.sqrt(t.var(2) + 1e-3)  # numpy: ddof=0
    expected = (2.5 * ((s.mean(2) - t.mean(2)) ** 2).sum() + ((std_s - std_t) ** 2).sum()) / 3
    loss = gaussian_w2(student, teacher, mean_weight=2.5, eps=1e-3)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert gaussian_w2(teacher, teacher.clone()).item() == 0.0


def test_gaussian_w2_rejects_maps_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        gaussian_w2(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 2, 2))


@pytest.mark.parametrize(
    ("dims", "student_shape", "teacher_shape"),
    [
        (2, (4, 3, 8, 8), (4, 5, 8, 8)),
        (2, (4, 3, 8, 8), (4, 5, 4, 4)),
        (1, (4, 3, 10), (4, 5, 5)),
    ],
)
def test_projector_maps_the_student_to_the_teachers_shape_and_trains(
    dims, student_shape, teacher_shape
):
    projector = WKDFeatureProjector(student_shape[1], teacher_shape[1], dims=dims)
    student, teacher = torch.randn(student_shape), torch.randn(teacher_shape)
    projected = projector(student, teacher.shape[2:])
    assert projected.shape == teacher_shape
    gaussian_w2(projected, teacher).backward()
    assert torch.isfinite(projector.conv.weight.grad).all()
    assert projector.conv.weight.grad.abs().sum().item() > 0

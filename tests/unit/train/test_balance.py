"""Weights of "auto" (otrt_core.train.balance) against gradients worked out by hand."""

import pytest
import torch
import torch.nn.functional as F

from otrt_core.spec import LayerPairSpec, resolve_spec
from otrt_core.train.balance import Balanced, apply, balance, balanced_terms, resolved
from otrt_core.train.terms import ATTerm, KDTerm, WKDLogitTerm, attention_loss
from tests.utils.specs import digits_spec


def linear_student(seed: int = 0):
    """logits = x W^T: one parameter, so every gradient is easy to take by hand."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, 4, generator=generator, requires_grad=True)
    x = torch.randn(8, 4, generator=generator)
    return weight, x


def grad_norm(loss, weight) -> float:
    (grad,) = torch.autograd.grad(loss, [weight], retain_graph=True)
    return grad.norm().item()


def test_an_auto_lambda_makes_the_terms_gradient_its_ratio_of_the_tasks():
    weight, x = linear_student()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    teacher = {"logits": torch.randn(8, 3, generator=torch.Generator().manual_seed(1)) * 5}
    kd = KDTerm(weight=1.0, temperature=4.0)

    def features():
        return {"logits": x @ weight.T}, teacher, labels

    def task(student, y):
        return F.cross_entropy(student["logits"], y)

    chosen = balance([Balanced(kd, "kd", "auto", (), 0.3)], [features], task, [weight])
    student = features()[0]
    unit = KDTerm(weight=1.0, temperature=4.0)(teacher, student, labels).loss
    expected = 0.3 * grad_norm(task(student, labels), weight) / grad_norm(unit, weight)
    assert chosen == {"kd.weight": pytest.approx(expected, rel=1e-6)}
    assert kd.weight == pytest.approx(expected, rel=1e-6)
    # The balanced term's gradient is now 0.3 of the task's.
    balanced = grad_norm(kd(teacher, student, labels).loss, weight)
    assert balanced == pytest.approx(0.3 * grad_norm(task(student, labels), weight), rel=1e-6)


def test_the_mean_norm_over_batches_sets_the_weight():
    weight, _ = linear_student()
    batches, task_norms, kd_norms = [], [], []
    kd = KDTerm(weight=1.0, temperature=2.0)
    for seed in range(3):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(10 + seed))
        teacher = {"logits": torch.randn(8, 3, generator=torch.Generator().manual_seed(seed))}
        labels = torch.arange(8) % 3
        student = {"logits": x @ weight.T}
        task_norms.append(grad_norm(F.cross_entropy(student["logits"], labels), weight))
        kd_norms.append(grad_norm(kd(teacher, student, labels).loss, weight))
        batches.append(lambda x=x, t=teacher, y=labels: ({"logits": x @ weight.T}, t, y))
    chosen = balance(
        [Balanced(kd, "kd", "auto", (), 1.0)],
        batches,
        lambda s, y: F.cross_entropy(s["logits"], y),
        [weight],
    )
    expected = (sum(task_norms) / 3) / (sum(kd_norms) / 3)
    assert chosen["kd.weight"] == pytest.approx(expected, rel=1e-6)


def test_auto_pairs_share_the_tasks_gradient_equally_before_lambda():
    spec = digits_spec("distill", teacher_path="t.safetensors", regularizer={"kind": "at"})
    layers = [
        LayerPairSpec(teacher="a", student="a", weight="auto"),
        LayerPairSpec(teacher="b", student="b", weight=0.5),
    ]
    regularizer = spec.regularizer.model_copy(update={"weight": 2.0, "layers": layers})
    spec = spec.model_copy(update={"regularizer": regularizer})
    term = ATTerm(spec)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 3, generator=generator, requires_grad=True)
    maps = torch.randn(4, 3, 2, 2, generator=generator)
    teacher = {k: torch.randn(4, 2, 2, 2, generator=generator) for k in "ab"}
    labels = torch.tensor([0, 1, 0, 1])

    def student():
        mixed = torch.einsum("oc,bchw->bohw", weight, maps)
        return {"a": mixed, "b": mixed.square(), "logits": mixed.mean(dim=(2, 3))}

    def task(s, y):
        return F.cross_entropy(s["logits"], y)

    balanced = Balanced(term, "regularizer", 2.0, ("auto", 0.5), 1.0)
    chosen = balance([balanced], [lambda: (student(), teacher, labels)], task, [weight])
    s = student()
    pair_a = grad_norm(attention_loss(teacher["a"], s["a"]), weight)
    expected = grad_norm(task(s, labels), weight) / (2 * pair_a)
    assert chosen == {"regularizer.layers.0.weight": pytest.approx(expected, rel=1e-6)}
    assert term.weight == 2.0 and term.pair_weights == (pytest.approx(expected, rel=1e-6), 0.5)


def test_an_unweighted_part_is_left_out_of_what_lambda_scales():
    # WKD-L adds its target-class part at weight 1: lambda balances the Wasserstein part.
    weight, x = linear_student()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    teacher = {"logits": torch.randn(8, 3, generator=torch.Generator().manual_seed(3)) * 3}
    cost = 1 - torch.eye(3)
    term = WKDLogitTerm(1.0, 4.0, cost)

    def task(s, y):
        return F.cross_entropy(s["logits"], y)

    chosen = balance(
        [Balanced(term, "kd", "auto", (), 0.5)],
        [lambda: ({"logits": x @ weight.T}, teacher, labels)],
        task,
        [weight],
    )
    s = {"logits": x @ weight.T}
    term.set_weights(1.0)
    with_w = term(teacher, s, labels).loss
    term.set_weights(0.0)
    without = term(teacher, s, labels).loss
    expected = 0.5 * grad_norm(task(s, labels), weight) / grad_norm(with_w - without, weight)
    assert chosen["kd.weight"] == pytest.approx(expected, rel=1e-6)


def test_a_term_with_no_gradient_at_the_start_keeps_weight_one():
    weight, x = linear_student()
    labels = torch.arange(8) % 3
    kd = KDTerm(weight=1.0, temperature=4.0)

    def features():  # the teacher is the student: KD and its gradient are 0
        logits = x @ weight.T
        return {"logits": logits}, {"logits": logits.detach()}, labels

    chosen = balance(
        [Balanced(kd, "kd", "auto", (), 0.5)],
        [features],
        lambda s, y: F.cross_entropy(s["logits"], y),
        [weight],
    )
    assert chosen == {"kd.weight": 1.0}


def test_the_spec_names_the_auto_weights_and_gets_the_numbers_back():
    spec = resolve_spec(
        {
            "mode": "distill",
            "teacher": {"architecture": "cnn1d", "checkpoint": "t.safetensors"},
            "student": {"architecture": "cnn1d_small"},
            "dataset": {"name": "mnist1d"},
            "regularizer": {
                "kind": "at",
                "layers": [{"weight": "auto"}, {"teacher": "stage2"}],
            },
            "kd": {"weight": "auto"},
        }
    )
    terms = balanced_terms(spec, ATTerm(spec), KDTerm(1.0, 4.0))  # AT: a term over pairs
    assert [t.paths() for t in terms] == [
        {"regularizer.layers.0.weight": 0, "regularizer.weight": None},
        {"kd.weight": None},
    ]
    chosen = {"regularizer.layers.0.weight": 0.25, "regularizer.weight": 3.0, "kd.weight": 0.7}
    apply(terms, chosen)
    assert (terms[0].term.weight, terms[0].term.pair_weights) == (3.0, (0.25, 1.0))
    assert terms[1].term.weight == 0.7
    numbers = resolved(spec, chosen)
    assert numbers.regularizer.weight == 3.0 and numbers.kd.weight == 0.7
    assert [p.weight for p in numbers.regularizer.layers] == [0.25, 1.0]
    assert resolved(spec, {}) == spec  # nothing auto: the spec as it was

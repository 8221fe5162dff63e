"""The job spec: mode defaults, and every problem reported at once with its location."""

import pytest

from otrt_core.spec import SpecError, resolve_spec


def distill(**overrides) -> dict:
    body = {
        "mode": "distill",
        "teacher": {"architecture": "cnn1d", "checkpoint": "teacher.safetensors"},
        "student": {"architecture": "cnn1d_small"},
        "dataset": {"name": "mnist1d"},
    }
    return body | overrides


def problems(body: dict) -> dict[tuple, str]:
    """Each location with its messages joined by ' | '."""
    with pytest.raises(SpecError) as raised:
        resolve_spec(body)
    found: dict[tuple, str] = {}
    for problem in raised.value.problems:
        found[problem.loc] = " | ".join(filter(None, [found.get(problem.loc), problem.msg]))
    return found


@pytest.mark.parametrize(
    ("mode", "kind", "weight", "normalize"),
    [
        ("transfer", "ot", 1.0, "standardize"),
        ("distill", "ot", 1.0, "none"),
        ("transfer_distill", "ot", 10.0, "center"),
    ],
)
def test_defaults_follow_the_mode(mode, kind, weight, normalize):
    student = "cnn1d" if mode == "transfer" else "cnn1d_small"
    spec = resolve_spec(distill(mode=mode, student={"architecture": student}))
    assert (spec.regularizer.kind, spec.regularizer.weight) == (kind, weight)
    assert spec.regularizer.normalize == normalize
    assert spec.regularizer.layers[0].teacher == "penultimate"
    assert spec.dataset.val_fraction == 0.1
    # Left out, the training length is sized by the trainer from the data (otrt_core.sizing).
    assert (spec.training.epochs, spec.training.batch_size, spec.training.lr) == (None,) * 3


def test_supervised_needs_no_teacher_and_no_regularizer():
    spec = resolve_spec(
        {"mode": "supervised", "student": {"architecture": "mlp"}, "dataset": {"name": "digits"}}
    )
    assert spec.teacher is None
    assert (spec.regularizer.kind, spec.regularizer.weight) == ("none", 0.0)


def test_explicit_values_are_kept_and_unlabeled_batch_defaults_to_the_batch():
    spec = resolve_spec(
        distill(
            regularizer={"weight": 0.3, "normalize": "unit", "unlabeled": True},
            dataset={"name": "mnist1d", "train_subset": 10},
            training={"batch_size": 64},
        )
    )
    assert (spec.regularizer.weight, spec.regularizer.normalize) == (0.3, "unit")
    assert spec.regularizer.unlabeled_batch_size == 64


def test_a_resolved_spec_resolves_to_itself():
    spec = resolve_spec(distill())
    assert resolve_spec(spec.model_dump()) == spec


def test_every_cross_field_problem_is_reported_at_once():
    found = problems(
        {
            "mode": "transfer",
            "teacher": {"architecture": "resnet20", "checkpoint": "t.pt"},
            "student": {"architecture": "resnet8"},
            "dataset": {"name": "digits", "classes": [3, 3, 12]},
            "regularizer": {"kind": "kd", "unlabeled": True, "layers": [{"teacher": "stage9"}]},
            "kd": {"weight": 1.0},
        }
    )
    assert "architecture must be the teacher's" in found[("student", "architecture")]
    assert "admits regularizers" in found[("regularizer", "kind")]
    assert "only mode 'distill'" in found[("kd", "weight")]
    assert "distinct" in found[("dataset", "classes")]
    assert "0..9" in found[("dataset", "classes")]
    assert "train_subset" in found[("regularizer", "unlabeled")]
    assert "only ot, fitnet and at" in found[("regularizer", "unlabeled")]


def test_unknown_names_list_the_valid_ones():
    found = problems(distill(student={"architecture": "resnet19"}, dataset={"name": "imagenet"}))
    assert "resnet20" in found[("student", "architecture")]
    assert "mnist1d" in found[("dataset", "name")]


def test_unknown_stages_list_the_architectures_stages():
    found = problems(distill(regularizer={"layers": [{"teacher": "stage9", "student": "hidden1"}]}))
    assert "stage1, stage2, stage3, penultimate" in found[("regularizer", "layers", 0, "teacher")]
    assert "hidden1" in found[("regularizer", "layers", 0, "student")]


def test_missing_teacher_and_a_teacher_in_supervised_mode():
    assert "needs a teacher" in problems(distill(teacher=None))[("teacher",)]
    assert "without a teacher" in problems(distill(mode="supervised"))[("teacher",)]


def test_field_errors_come_with_their_location():
    found = problems(distill(training={"epochs": 0, "optimizer": "lbfgs"}, colour="red"))
    assert ("training", "epochs") in found
    assert ("training", "optimizer") in found
    assert ("colour",) in found


def test_unlabeled_inputs_may_come_from_a_dataset_file():
    spec = resolve_spec(distill(dataset={"name": "data.npz"}, regularizer={"unlabeled": True}))
    assert spec.regularizer.unlabeled and spec.dataset.train_subset is None


@pytest.mark.parametrize(("kind", "weight"), [("kd", 1.0), ("fitnet", 100.0), ("at", 1000.0)])
def test_baselines_default_to_their_usual_weight(kind, weight):
    layers = [{"teacher": "stage2", "student": "stage2"}]
    spec = resolve_spec(distill(regularizer={"kind": kind, "layers": layers}))
    assert spec.regularizer.weight == weight


def test_augmentation_is_named_or_listed_with_each_ops_own_parameter():
    base = {"mode": "supervised", "student": {"architecture": "cnn"}}
    standard = resolve_spec(base | {"dataset": {"name": "digits", "augment": "standard"}})
    assert standard.dataset.augment == "standard"
    ops = [{"op": "crop"}, {"op": "rotate", "degrees": 30}, {"op": "noise", "std": 0.2}]
    listed = resolve_spec(base | {"dataset": {"name": "digits", "augment": ops}})
    assert [op.amount() for op in listed.dataset.augment] == [4.0, 30.0, 0.2]  # crop's default
    with pytest.raises(SpecError, match="flip takes no degrees"):
        resolve_spec(
            base | {"dataset": {"name": "digits", "augment": [{"op": "flip", "degrees": 9}]}}
        )
    with pytest.raises(SpecError, match="augment"):
        resolve_spec(base | {"dataset": {"name": "digits", "augment": [{"op": "shear"}]}})

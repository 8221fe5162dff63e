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
        ("distill", "kd", "auto", "rms"),
        ("transfer_distill", "ot", "auto", "rms"),
    ],
)
def test_defaults_follow_the_mode(mode, kind, weight, normalize):
    student = "cnn1d" if mode == "transfer" else "cnn1d_small"
    spec = resolve_spec(distill(mode=mode, student={"architecture": student}))
    assert (spec.regularizer.kind, spec.regularizer.weight) == (kind, weight)
    assert spec.kd.kind == ("wkd" if mode == "distill" else "kl")  # distill's: WKD-L
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
            "regularizer": {"kind": "l2sp", "unlabeled": True, "layers": [{"teacher": "stage9"}]},
            "kd": {"weight": 1.0},
        }
    )
    assert "architecture must be the teacher's" in found[("student", "architecture")]
    assert "only mode 'distill'" in found[("kd", "weight")]
    assert "distinct" in found[("dataset", "classes")]
    assert "0..9" in found[("dataset", "classes")]
    assert "train_subset" in found[("regularizer", "unlabeled")]
    assert "only ot, fitnet, at, kd, wkd_f" in found[("regularizer", "unlabeled")]


def test_unknown_names_list_the_valid_ones():
    found = problems(distill(student={"architecture": "resnet19"}, dataset={"name": "imagenet"}))
    assert "resnet20" in found[("student", "architecture")]
    assert "mnist1d" in found[("dataset", "name")]


def test_unknown_stages_list_the_architectures_stages():
    layers = [{"teacher": "stage9", "student": "hidden1"}]
    found = problems(distill(regularizer={"kind": "ot", "layers": layers}))
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


@pytest.mark.parametrize(("kind", "weight"), [("kd", "auto"), ("fitnet", "auto"), ("at", "auto")])
def test_baselines_default_to_a_weight_balanced_against_the_task(kind, weight):
    layers = [{"teacher": "stage2", "student": "stage2"}]
    spec = resolve_spec(distill(regularizer={"kind": kind, "layers": layers}))
    assert spec.regularizer.weight == weight
    given = resolve_spec(distill(regularizer={"kind": kind, "layers": layers, "weight": 3.0}))
    assert given.regularizer.weight == 3.0


def test_l2sp_keeps_its_number_and_kd_stays_off_unless_asked():
    spec = resolve_spec(distill(mode="transfer", student={"architecture": "cnn1d"}))
    assert spec.kd.weight == 0 and not spec.kd.on
    l2sp = resolve_spec(
        distill(mode="transfer", student={"architecture": "cnn1d"}, regularizer={"kind": "l2sp"})
    )
    assert l2sp.regularizer.weight == 0.1


SUBSET = {"name": "mnist1d", "train_subset": 10}  # the rest of the training set is the pool


def test_kd_reads_the_pool_when_the_representation_term_does_unless_told():
    pool = {"kind": "ot", "unlabeled": True}
    both = resolve_spec(distill(dataset=SUBSET, regularizer=pool, kd={"weight": "auto"}))
    assert both.kd.unlabeled and both.kd.weight == "auto"
    alone = resolve_spec(
        distill(dataset=SUBSET, regularizer=pool, kd={"weight": 1.0, "unlabeled": False})
    )
    assert alone.kd.unlabeled is False
    kd_only = resolve_spec(distill(dataset=SUBSET, kd={"weight": 1.0, "unlabeled": True}))
    assert kd_only.kd.unlabeled and not kd_only.regularizer.unlabeled
    # KD off: nothing of its reads the pool, and a resolved spec resolves to itself.
    off = resolve_spec(distill(dataset=SUBSET, regularizer=pool))
    assert off.kd.unlabeled is False and resolve_spec(off.model_dump()) == off


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (
            {"kd": {"unlabeled": True}, "dataset": SUBSET, "regularizer": {"kind": "ot"}},
            ("kd", "unlabeled"),
            "KD is off",
        ),
        ({"kd": {"weight": 1.0, "unlabeled": True}}, ("kd", "unlabeled"), "train_subset"),
        ({"kd": {"weight": 1.0}, "regularizer": {"kind": "kd"}}, ("kd", "weight"), "KD already"),
        ({"kd": {"weight": "heavy"}}, ("kd", "weight"), "auto"),
        ({"regularizer": {"weight": -1}}, ("regularizer", "weight"), "greater than or equal"),
        ({"kd": {"kind": "emd"}}, ("kd", "kind"), "wkd"),
    ],
)
def test_bad_kd_and_weight_fields_are_named(body, loc, message):
    found = problems(distill(**body))
    assert any(key[: len(loc)] == loc and message in msg for key, msg in found.items()), found


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


def test_wkd_f_takes_each_zoo_models_last_map_for_penultimate():
    spec = resolve_spec(
        distill(
            teacher={"architecture": "cnn", "checkpoint": "t.safetensors"},
            student={"architecture": "cnn_small"},
            dataset={"name": "digits"},
            regularizer={"kind": "wkd_f", "layers": [{}, {"teacher": "stage1"}]},
        )
    )
    pairs = [(p.teacher, p.student) for p in spec.regularizer.layers]
    assert pairs == [("stage3", "stage3"), ("stage1", "stage3")]  # cnn: stage1..3, penultimate
    assert spec.regularizer.weight == "auto"
    assert resolve_spec(spec.model_dump()) == spec


@pytest.mark.parametrize(
    ("dataset", "regularizer", "message"),
    [
        ({"unlabeled": "file_1"}, {"unlabeled": True}, "name a registered dataset"),
        ({"unlabeled": "ds_1"}, {}, "nothing reads the pool"),
        (
            {"name": "ds_0123456789abcdef01234567", "train_subset": 5},
            {"unlabeled": True},
            "name it in dataset.unlabeled",
        ),
    ],
)
def test_a_registered_pool_is_named_where_it_is_read(dataset, regularizer, message):
    body = distill(dataset={"name": "mnist1d"} | dataset, regularizer=regularizer)
    found = problems(body)
    assert any(message in msg for msg in found.values()), found


def test_a_registered_pool_is_a_pool_for_every_dataset():
    spec = resolve_spec(
        distill(dataset={"name": "mnist1d", "unlabeled": "ds_1"}, regularizer={"unlabeled": True})
    )
    assert spec.dataset.unlabeled == "ds_1" and spec.regularizer.unlabeled

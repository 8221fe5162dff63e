"""A registered dataset named as a job's data: labels needed, and each class asked for."""

from otrt_core.jobs.service import registered_class_problems
from otrt_core.spec import resolve_spec

PHOTOS = {"classes": ["cat", "dog"], "counts": {"train": {"cat": 30, "dog": 30}}}
POOL = {"classes": [], "counts": {"unlabeled": 60}}


def job(classes=None):
    return resolve_spec(
        {
            "mode": "supervised",
            "student": {"architecture": "resnet8"},
            "dataset": {"name": "ds_0123456789abcdef01234567", "classes": classes},
        }
    )


def test_classes_the_dataset_has_pass_and_one_it_lacks_is_named():
    assert registered_class_problems(job([0, 1]), "ds_x", PHOTOS) == []
    (problem,) = registered_class_problems(job([0, 2]), "ds_x", PHOTOS)
    assert problem["loc"] == ["body", "dataset", "classes"]
    assert problem["msg"] == "ds_x has classes 0..1 (0: cat, 1: dog); it lacks [2]"


def test_a_pool_is_not_a_labeled_dataset():
    (problem,) = registered_class_problems(job(), "ds_pool", POOL)
    assert problem["loc"] == ["body", "dataset", "name"]
    assert "pool of unlabeled images" in problem["msg"]

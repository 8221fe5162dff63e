"""A registered dataset: as a job's data (labels needed, each class asked for) and as
its details show it (the smallest and largest images)."""

from otrt_core.jobs.admission import registered_class_problems
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
    assert problem.loc == ("body", "dataset", "classes")
    assert problem.msg == "ds_x has classes 0..1 (0: cat, 1: dog); it lacks [2]"


def test_a_pool_is_not_a_labeled_dataset():
    (problem,) = registered_class_problems(job(), "ds_pool", POOL)
    assert problem.loc == ("body", "dataset", "name")
    assert "pool of unlabeled images" in problem.msg


def test_a_datasets_smallest_and_largest_images_are_real_images():
    from otrt_core.data.convert import Tally

    tally = Tally()
    for height, width in ((1200, 1600), (4000, 3000), (2000, 2000)):
        tally.image("train", "cat", height, width, "RGB")
    tally.image("train", "cat", 1000, 4200, "RGB")  # per axis: 1000x1600 to 4000x4200
    assert tally.min_size == [1200, 1600] and tally.max_size == [4000, 3000]

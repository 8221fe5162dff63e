"""The training loop, for real on digits: outputs, modes, regularizers, resume, stops."""

import json
import math
import pickle

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from otrt_core.errors import UserError
from otrt_core.models import build_model
from otrt_core.protocol import event_line
from otrt_core.spec import resolve_spec
from otrt_core.train import (
    CHECKPOINT,
    Diverged,
    Limits,
    RunOptions,
    TrainingStopped,
    train,
)
from otrt_core.train.checkpoint import load_checkpoint
from otrt_core.train.setup import build_models, load_data
from otrt_core.train.trainer import evaluate
from tests.utils.specs import digits_spec


def run(spec, out_dir, **options):
    events = []
    options = RunOptions(out_dir=out_dir, device="cpu", **options)
    metrics = train(spec, options, emit=lambda event: events.append(event_line(event)))
    return metrics, events


def test_a_supervised_run_writes_a_student_whose_accuracy_is_what_the_metrics_say(tmp_path):
    spec = digits_spec()
    metrics, events = run(spec, tmp_path)

    assert {p.name for p in tmp_path.iterdir()} >= {
        "student.safetensors",
        "metrics.json",
        "spec.json",
        CHECKPOINT,
    }
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert json.loads((tmp_path / "spec.json").read_text()) == spec.model_dump(mode="json")

    student = build_model("mlp", num_classes=10, input_shape=(1, 8, 8))
    student.load_state_dict(load_file(tmp_path / "student.safetensors"))
    data = load_data(spec, None)
    _, accuracy = evaluate(student, data.x_test, data.y_test, torch.device("cpu"), 256)
    assert accuracy == metrics["test_accuracy"]
    assert accuracy > 0.85

    assert metrics["onnx"]["ok"]
    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"))
    (onnx_logits,) = session.run(None, {"input": data.x_test[:50].numpy()})  # another batch size
    torch.testing.assert_close(
        torch.from_numpy(onnx_logits), student(data.x_test[:50]).detach(), atol=1e-4, rtol=1e-4
    )

    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 3 and "step" in kinds
    epochs = [event for event in events if event["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["step"] == epochs[-1]["steps"]
    assert epochs[0]["train_loss"] > epochs[-1]["train_loss"]


@pytest.mark.parametrize("kind", ["none", "ot", "kd", "fitnet", "at"])
def test_distill_runs_every_regularizer(tmp_path, digits_teacher, kind):
    layers = [{"teacher": "hidden1", "student": "hidden1"}]
    spec = digits_spec(
        "distill",
        teacher_path=str(digits_teacher),
        regularizer={"kind": kind, "layers": layers, "weight": 1.0},
    )
    if kind == "at":  # attention transfer compares maps: dense stages are refused clearly
        with pytest.raises(UserError, match="compares feature maps"):
            run(spec, tmp_path, teacher_path=digits_teacher)
        return
    metrics, events = run(spec, tmp_path, teacher_path=digits_teacher)
    assert 0.3 < metrics["test_accuracy"] <= 1.0
    distances = [record["ot_distance"] for record in metrics["history"]]
    kinds = [event["event"] for event in events]
    if kind == "ot":
        assert all(d > 0 for d in distances)
        plan = np.load(tmp_path / "plan.npy")  # teacher x student neurons, uniform marginals
        assert plan.shape == (256, 64) and plan.min() >= 0
        np.testing.assert_allclose(plan.sum(axis=1), 1 / 256, rtol=1e-4)
        np.testing.assert_allclose(plan.sum(axis=0), 1 / 64, rtol=1e-4)
        # A fresh plan after every epoch, announced just before the epoch's line.
        assert [e["epoch"] for e in events if e["event"] == "plan"] == [1, 2, 3]
        assert all(kinds[i + 1] == "epoch" for i, k in enumerate(kinds) if k == "plan")
    else:
        assert distances == [None] * 3
        assert "plan" not in kinds


def test_kd_can_be_added_to_ot_when_distilling(tmp_path, digits_teacher):
    spec = digits_spec("distill", teacher_path=str(digits_teacher), kd={"weight": 1.0})
    metrics, _ = run(spec, tmp_path, teacher_path=digits_teacher)
    assert metrics["test_accuracy"] > 0.5


def test_transfer_starts_from_the_teachers_body_with_a_new_head(digits_teacher):
    spec = digits_spec(
        "transfer", teacher_path=str(digits_teacher), dataset={"classes": [5, 6, 7, 8, 9]}
    )
    models = build_models(spec, load_data(spec, None), digits_teacher)
    teacher_weights = load_file(digits_teacher)
    student_weights = models.student.state_dict()
    for name, value in teacher_weights.items():
        if name.startswith("head."):
            assert student_weights[name].shape[0] == 5
        else:
            torch.testing.assert_close(student_weights[name], value)


def test_transfer_distill_uses_unlabeled_inputs(tmp_path, digits_teacher):
    spec = digits_spec(
        "transfer_distill",
        teacher_path=str(digits_teacher),
        dataset={"classes": [5, 6, 7, 8, 9], "train_subset": 5},
        regularizer={"unlabeled": True},
    )
    metrics, events = run(spec, tmp_path, teacher_path=digits_teacher)
    assert metrics["num_classes"] == 5
    assert events[0]["teacher_cache"] == "memory"
    assert metrics["history"][-1]["ot_distance"] > 0


AUGMENTS = ["none", [{"op": "crop", "padding": 2}, {"op": "flip"}, {"op": "noise"}]]


@pytest.mark.parametrize("augment", AUGMENTS, ids=["plain", "augmented"])
def test_a_stopped_run_resumes_to_the_same_weights_as_an_uninterrupted_one(
    tmp_path, digits_teacher, augment
):
    """With augmentation too: views come from (seed, epoch, batch) and the cached ones
    from (seed, view), so a resumed run sees the same views."""
    spec = digits_spec(
        "distill",
        teacher_path=str(digits_teacher),
        training={"epochs": 3},
        dataset={"augment": augment},
    )
    whole_metrics, _ = run(spec, tmp_path / "whole", teacher_path=digits_teacher)

    calls = iter(range(10**6))
    stop_in_epoch_two = lambda: next(calls) == 30  # noqa: E731 - epoch 1 has 22 batches
    with pytest.raises(TrainingStopped) as stopped:
        run(spec, tmp_path / "split", teacher_path=digits_teacher, should_stop=stop_in_epoch_two)
    assert stopped.value.reason == "signal"
    assert not (tmp_path / "split" / "student.safetensors").exists()
    metrics, events = run(spec, tmp_path / "split", teacher_path=digits_teacher, resume=True)

    assert events[0]["resumed"] is True and events[0]["epoch"] == 1
    whole = load_file(tmp_path / "whole" / "student.safetensors")
    split = load_file(tmp_path / "split" / "student.safetensors")
    assert whole.keys() == split.keys()
    for name in whole:
        assert torch.equal(whole[name], split[name]), name
    # The interrupted epoch reports what an uninterrupted one does (its sums were saved).
    assert len(metrics["history"]) == 3
    for resumed, uninterrupted in zip(metrics["history"], whole_metrics["history"], strict=True):
        same = {k: v for k, v in resumed.items() if k != "seconds"}
        assert same == {k: v for k, v in uninterrupted.items() if k != "seconds"}


def test_a_loss_that_turns_non_finite_stops_the_run_as_diverged(tmp_path):
    # The largest values the spec admits, together, blow the weights up within an epoch.
    training = {"lr": 10.0, "momentum": 0.99, "weight_decay": 1.0, "schedule": "constant"}
    spec = digits_spec(training=training)
    with pytest.raises(Diverged, match="non-finite"):
        run(spec, tmp_path)
    assert not (tmp_path / "student.safetensors").exists()  # no NaN student is ever written


def test_max_runtime_stops_with_a_checkpoint(tmp_path):
    spec = digits_spec(training={"epochs": 10_000, "max_runtime_s": 1})
    with pytest.raises(TrainingStopped) as stopped:
        run(spec, tmp_path)
    assert stopped.value.reason == "max_runtime"
    assert (tmp_path / CHECKPOINT).exists()


def test_a_teacher_of_another_architecture_is_refused_naming_the_mismatches(
    tmp_path, digits_teacher
):
    spec = digits_spec("distill", teacher_path="t", teacher={"architecture": "cnn"})
    with pytest.raises(UserError) as raised:
        run(spec, tmp_path, teacher_path=digits_teacher)
    message = str(raised.value)
    assert "missing stages.0.0.weight" in message
    assert "unexpected layers.0.0.bias, layers.0.0.weight" in message


def test_a_teacher_for_other_classes_cannot_be_distilled(tmp_path, digits_teacher):
    spec = digits_spec("distill", teacher_path="t", dataset={"classes": [0, 1, 2]})
    with pytest.raises(UserError, match="teacher has 10 classes and the dataset 3"):
        run(spec, tmp_path, teacher_path=digits_teacher)


class RunsCode:
    """Unpickling this would create a file: the trainer must never unpickle it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_object_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(pickle.dumps({"head.weight": RunsCode(str(marker))}))
    spec = digits_spec("distill", teacher_path="t")
    with pytest.raises(UserError, match="never unpickled") as refused:
        run(spec, tmp_path / "out", teacher_path=checkpoint)
    assert refused.value.loc == ("teacher", "checkpoint")
    assert not marker.exists()


def test_a_missing_teacher_file_is_a_setup_error(tmp_path):
    with pytest.raises(UserError, match="was not found"):
        run(digits_spec("distill", teacher_path="t"), tmp_path, teacher_path=tmp_path / "absent.pt")


def test_runs_sharing_a_cache_directory_build_the_teacher_cache_once_for_the_same_student(
    tmp_path, digits_teacher
):
    """A sweep's trials: the first run writes its cache, the next reads it (``shared``);
    a run reading other stages builds its own. Each student is the one a lone run trains."""
    shared = tmp_path / "shared"
    ot = {"kind": "ot"}  # a term that reads a stage (which stages are cached is the point)
    spec = digits_spec(
        "distill", teacher_path=str(digits_teacher), training={"epochs": 1}, regularizer=ot
    )
    _, first = run(spec, tmp_path / "first", teacher_path=digits_teacher, shared_cache_dir=shared)
    _, second = run(spec, tmp_path / "second", teacher_path=digits_teacher, shared_cache_dir=shared)
    assert [first[0]["teacher_cache"], second[0]["teacher_cache"]] == ["memory", "shared"]
    assert len(list(shared.glob("*.pt"))) == 1
    run(spec, tmp_path / "alone", teacher_path=digits_teacher)
    ours = load_file(tmp_path / "second" / "student.safetensors")
    reference = load_file(tmp_path / "alone" / "student.safetensors")
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], atol=1e-5, rtol=1e-5)
    pairs = [{"teacher": "hidden1", "student": "hidden1"}]
    other = digits_spec(
        "distill",
        teacher_path=str(digits_teacher),
        training={"epochs": 1},
        regularizer=ot | {"layers": pairs},
    )
    _, third = run(other, tmp_path / "third", teacher_path=digits_teacher, shared_cache_dir=shared)
    assert third[0]["teacher_cache"] == "memory" and len(list(shared.glob("*.pt"))) == 2


@pytest.mark.parametrize(
    ("memory_bytes", "disk_bytes", "expected"),
    [(1 << 30, 0, "memory"), (0, 1 << 30, "disk"), (0, 0, "off")],
)
def test_the_teacher_cache_gives_the_same_student_wherever_it_lives(
    tmp_path, digits_teacher, memory_bytes, disk_bytes, expected
):
    spec = digits_spec("distill", teacher_path=str(digits_teacher), training={"epochs": 1})
    _, events = run(
        spec,
        tmp_path / expected,
        teacher_path=digits_teacher,
        limits=Limits(teacher_cache_memory=memory_bytes, teacher_cache_disk=disk_bytes),
    )
    assert events[0]["teacher_cache"] == expected
    reference_dir = tmp_path / "uncached"
    uncached = spec.model_copy(
        update={"training": spec.training.model_copy(update={"teacher_cache": "off"})}
    )
    _, reference_events = run(uncached, reference_dir, teacher_path=digits_teacher)
    assert reference_events[0]["teacher_cache"] == "off"
    ours = load_file(tmp_path / expected / "student.safetensors")
    reference = load_file(reference_dir / "student.safetensors")
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
def test_host_data_staged_through_pinned_buffers_trains_like_device_data(tmp_path):
    spec = digits_spec(training={"amp": "off"})
    students = []
    for name, limits in [("device", Limits()), ("host", Limits(device_data=0))]:
        out = tmp_path / name
        train(spec, RunOptions(out_dir=out, device="cuda", limits=limits), emit=lambda e: None)
        students.append(load_file(out / "student.safetensors"))
    for key, tensor in students[0].items():
        torch.testing.assert_close(students[1][key], tensor, rtol=1e-5, atol=1e-6)


def test_a_pooled_teacher_cache_trains_the_student_the_uncached_teacher_does(tmp_path):
    """With OT on pooled conv stages the cache keeps channel means, not maps: same student."""
    teacher_spec = digits_spec(student={"architecture": "cnn"}, training={"epochs": 1})
    run(teacher_spec, tmp_path / "teacher")
    teacher = tmp_path / "teacher" / "student.safetensors"
    body = {
        "mode": "distill",
        "teacher": {"architecture": "cnn", "checkpoint": str(teacher)},
        "student": {"architecture": "cnn_small"},
        "dataset": {"name": "digits"},
        "regularizer": {
            "kind": "ot",
            "layers": [{"teacher": s, "student": s} for s in ("stage1", "stage2")],
        },
        "training": {"epochs": 1, "batch_size": 64},
    }
    students = {}
    for cache in ("auto", "off"):
        spec = resolve_spec(body | {"training": body["training"] | {"teacher_cache": cache}})
        _, events = run(spec, tmp_path / cache, teacher_path=teacher)
        assert events[0]["teacher_cache"] == ("memory" if cache == "auto" else "off")
        students[cache] = load_file(tmp_path / cache / "student.safetensors")
    for name, weights in students["off"].items():
        torch.testing.assert_close(students["auto"][name], weights, atol=1e-4, rtol=1e-4)


def test_patience_stops_once_validation_stops_improving(tmp_path):
    # A learning rate too small to move the weights: epoch 1 stays the best.
    spec = digits_spec(training={"epochs": 30, "lr": 1e-9, "patience": 2})
    metrics, events = run(spec, tmp_path)
    assert metrics["epochs_run"] == 3 and len(metrics["history"]) == 3
    assert metrics["selected_epoch"] == 1
    early, collapsed = [e["message"] for e in events if e["event"] == "warning"]
    assert early.startswith("stopped early after epoch 3")
    # Weights that never moved leave the student at chance: the guard says so.
    assert collapsed.startswith("the student collapsed") and metrics["collapsed"]


def test_warmup_rises_linearly_then_the_schedule_takes_over():
    from otrt_core.train.setup import make_schedule

    training = digits_spec(training={"epochs": 10, "lr": 1.0, "warmup_epochs": 2}).training
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=training.lr)
    schedule = make_schedule(optimizer, training, total_steps=100)  # warm-up: 20 steps
    lrs = []
    for _ in range(100):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()

    def cosine(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * step / 100))

    assert lrs[0] == pytest.approx(1 / 20 * cosine(0))
    assert lrs[9] == pytest.approx(10 / 20 * cosine(9))
    assert lrs[19] == pytest.approx(cosine(19)) and lrs[50] == pytest.approx(0.5)


def test_label_smoothing_raises_the_task_loss_it_trains_on(tmp_path):
    losses = {}
    for smoothing in (0.0, 0.3):
        spec = digits_spec(training={"epochs": 2, "label_smoothing": smoothing})
        metrics, _ = run(spec, tmp_path / str(smoothing))
        losses[smoothing] = metrics["history"][-1]["train_loss"]
    assert losses[0.3] > losses[0.0] + 0.1  # smoothed targets keep the loss away from 0


def test_a_run_killed_mid_epoch_resumes_from_the_checkpoint_inside_the_epoch(tmp_path):
    """Checkpoints inside an epoch (every batch here): the file as a SIGKILL would leave
    it mid-epoch resumes to the uninterrupted run's weights."""
    import shutil

    spec = digits_spec(training={"epochs": 2, "batch_size": 64})
    whole, _ = run(spec, tmp_path / "whole")
    steps = math.ceil(len(load_data(spec, None).y_train) / 64)
    seen, calls = [], iter(range(10**6))
    left = tmp_path / "left" / "checkpoint.pt"

    def copy_mid_epoch_two() -> bool:  # the trainer asks before each batch
        if next(calls) == steps + 5:
            left.parent.mkdir()
            shutil.copy(tmp_path / "split" / CHECKPOINT, left)
            seen.append(load_checkpoint(left)["progress"]["batch"])
        return False

    _, split_events = run(
        spec, tmp_path / "split", should_stop=copy_mid_epoch_two, checkpoint_seconds=1e-9
    )
    assert seen == [4]  # written before batch 5 of epoch 2, not only at the epoch's end
    # Each said so (the worker copies it to the shared store then): batches 1.. of both.
    said = [(e["epoch"], e["batch"]) for e in split_events if e["event"] == "checkpointed"]
    assert said == [(epoch, b) for epoch in (1, 2) for b in range(1, steps)]
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(left, resumed_dir / CHECKPOINT)
    _, events = run(spec, resumed_dir, resume=True)
    assert events[0]["resumed"] and events[0]["step"] == steps + 4
    expected = load_file(tmp_path / "whole" / "student.safetensors")
    got = load_file(resumed_dir / "student.safetensors")
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert whole["epochs_run"] == 2

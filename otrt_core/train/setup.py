"""Everything a run needs before its first step: device, data, models, optimizer, schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from otrt_core.data import PreparedData, is_dataset_file, load_arrays, load_dataset_file, prepare
from otrt_core.models import StagedModel, build_model, skeleton
from otrt_core.spec import JobSpec, TrainingSpec
from otrt_core.train.checkpoint import WeightsError, check_fits, read_weights


class SetupError(ValueError):
    """A run that cannot start: the message says why, for the user."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SetupError("device 'cuda' was asked for, but no CUDA device is available")
    return device


def load_data(
    spec: JobSpec, datasets_root: Path | None, dataset_path: Path | None = None
) -> PreparedData:
    """The job's splits: a built-in dataset, or a user's file when ``dataset_path`` is given."""
    if dataset_path is not None:
        arrays = load_dataset_file(dataset_path)
    elif is_dataset_file(spec.dataset.name):
        raise SetupError(f"the dataset file {spec.dataset.name!r} was not found")
    else:
        arrays = load_arrays(spec.dataset.name, datasets_root)
    if spec.dataset.classes and max(spec.dataset.classes) > int(arrays.y_train.max()):
        raise SetupError(
            f"dataset.classes {spec.dataset.classes} name classes the dataset does not have "
            f"(its labels go up to {int(arrays.y_train.max())})"
        )
    return prepare(
        arrays,
        classes=spec.dataset.classes,
        train_subset=spec.dataset.train_subset,
        val_fraction=spec.dataset.val_fraction,
        seed=spec.training.seed,
    )


@dataclass(frozen=True)
class Models:
    student: StagedModel
    teacher: StagedModel | None


def build_models(spec: JobSpec, data: PreparedData, teacher_path: Path | None) -> Models:
    """The student, and the frozen teacher loaded from ``teacher_path``.

    ``transfer`` starts the student from the teacher's weights with a new head;
    ``distill`` checks that the teacher was trained on the dataset's classes.
    """
    input_shape = tuple(data.x_train.shape[1:])
    student = build_model(
        spec.student.architecture, num_classes=data.num_classes, input_shape=input_shape
    )
    if spec.teacher is None:
        return Models(student=student, teacher=None)
    if teacher_path is None or not teacher_path.exists():
        raise SetupError(f"the teacher checkpoint {spec.teacher.checkpoint!r} was not found")
    head_prefix = skeleton(spec.teacher.architecture).head_prefix
    try:
        weights = read_weights(teacher_path)
        teacher_classes = _head_classes(weights, head_prefix)
        teacher = build_model(
            spec.teacher.architecture, num_classes=teacher_classes, input_shape=input_shape
        )
        check_fits(teacher, weights)
    except WeightsError as error:
        raise SetupError(f"teacher: {error}") from None
    teacher.load_state_dict(weights)
    teacher.eval().requires_grad_(False)
    if spec.mode == "distill" and teacher_classes != data.num_classes:
        raise SetupError(
            f"distill keeps the teacher's task, but the teacher has {teacher_classes} classes "
            f"and the dataset {data.num_classes}"
        )
    if spec.mode == "transfer":
        body = {k: v for k, v in weights.items() if not student.is_head(k)}
        student.load_state_dict(body, strict=False)
    return Models(student=student, teacher=teacher)


def _head_classes(weights: dict[str, torch.Tensor], head_prefix: str) -> int:
    head = weights.get(f"{head_prefix}weight")
    if head is None or head.dim() != 2:
        raise WeightsError(f"no classifier head ('{head_prefix}weight') in the teacher's weights")
    return head.shape[0]


def make_optimizer(training: TrainingSpec, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    if training.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=training.lr, weight_decay=training.weight_decay)
    return torch.optim.SGD(
        parameters,
        lr=training.lr,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
        nesterov=training.momentum > 0,
    )


def make_schedule(
    optimizer: torch.optim.Optimizer, training: TrainingSpec, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: cosine to 0, step (x0.1 at 50% and 75%), or constant."""

    def factor(step: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        if training.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if training.schedule == "step":
            return 0.1 ** sum(progress >= milestone for milestone in (0.5, 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

"""The size a registered dataset's images are decoded to for a job (API.md v1.2)."""

from __future__ import annotations

from otrt_core.spec import JobSpec

MAX_DEFAULT_SIDE = 224


def image_size(spec: JobSpec, median: list[int]) -> tuple[int, int]:
    """``dataset.image_size``; else the largest ``input.size`` of teacher and student (by
    area); else the dataset's median image size (h, w), each side capped at 224."""
    chosen = spec.dataset.image_hw()
    if chosen is not None:
        return chosen
    sizes = [
        tuple(model.input.size)
        for model in (spec.teacher, spec.student)
        if model is not None and model.input is not None and len(model.input.size or []) == 2
    ]
    if sizes:
        return max(sizes, key=lambda hw: hw[0] * hw[1])
    return (min(median[0], MAX_DEFAULT_SIDE), min(median[1], MAX_DEFAULT_SIDE))

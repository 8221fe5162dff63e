"""Submission checks of a job against an uploaded ONNX graph's ``details`` (no torch).

A graph file is inspected once, on upload (``otrt_core.jobs.inspection``): its
layers with their shapes, its inputs and its class count are in the file's
``details``. A job naming it is checked against them before it is queued, so
that a wrong layer name or input shape is a 422 listing what would work, never
a job that fails once it runs.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from otrt_core.errors import UserError
from otrt_core.spec import JobSpec

LAYER_KINDS = ("ot", "fitnet", "at")
MAX_LISTED = 25  # layer names a problem lists


def graph_problems(
    spec: JobSpec, details: dict[str, Any], dataset_shape: tuple[int, ...] | None
) -> list[tuple[tuple[str | int, ...], str]]:
    """What in ``spec`` does not fit the teacher's graph: ``(location, message)`` pairs."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if spec.teacher.architecture is not None:
        problems.append(
            (("teacher", "architecture"), "an ONNX graph is a whole model: leave it out")
        )
    layers = [layer["name"] for layer in details["layers"]]
    if spec.regularizer.kind in LAYER_KINDS:
        sides = ["teacher"] + (["student"] if spec.student.architecture is None else [])
        for index, pair in enumerate(spec.regularizer.layers):
            for side in sides:
                name = getattr(pair, side)
                if name not in layers:
                    message = f"the graph has no layer {name!r}; nearest first: "
                    problems.append(
                        (
                            ("regularizer", "layers", index, side),
                            message + ", ".join(nearest_first(name, layers)[:MAX_LISTED]),
                        )
                    )
    if dataset_shape is not None:
        sides = [("teacher", spec.teacher.input)]
        if spec.student.architecture is None:
            sides.append(("student", spec.student.input))
        for side, model_input in sides:
            problem = _input_problem(details, dataset_shape, model_input)
            if problem:
                problems.append(((side, "input"), f"the {side} {problem}"))
    return problems


def _input_problem(details: dict[str, Any], dataset_shape: tuple[int, ...], model_input) -> str:
    """Why the graph cannot take the dataset's inputs through ``model_input``, or ``""``."""
    expected = tuple(details["inputs"][0]["shape"][1:])
    try:
        seen = model_input.shape_for(dataset_shape) if model_input else tuple(dataset_shape)
    except UserError as error:
        return error.message
    flat = len(expected) == 1 and expected[0] == math.prod(seen)
    if expected == seen or flat:
        return ""
    hint = "fix its input" if model_input else "set its input (size, channels)"
    return f"takes inputs of shape {list(expected)}, but gets {list(seen)} from the dataset: {hint}"


def nearest_first(name: str, valid: list[str]) -> list[str]:
    """``valid`` ordered by similarity to ``name``, the closest first."""
    return sorted(valid, key=lambda v: -difflib.SequenceMatcher(None, name, v).ratio())

"""Submission checks of a job against the models it names (no torch here).

A graph file is inspected once, on upload (``otrt_core.jobs.inspection``): its
layers with their shapes, its inputs and its class count are in the file's
``details``. A timm or torchvision architecture's layers (module paths) are
listed by the inspector child on demand. A job is checked against them before
it is queued, so that a wrong layer name or input shape is a 422 listing what
would work, never a job that fails once it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otrt_core.catalog import from_library
from otrt_core.errors import Problem, UserError, nearest_first
from otrt_core.spec import LAYER_KINDS, JobSpec, takes_flattened

MAX_LISTED = 25  # layer names a problem lists


def graph_problems(
    spec: JobSpec,
    details: dict[str, Any],
    dataset_shape: tuple[int, ...] | None,
    sides: tuple[str, ...],
) -> list[Problem]:
    """What in ``spec`` does not fit a graph that ``sides`` (``teacher``, ``student``)
    are: ``(location, message)`` pairs."""
    problems: list[Problem] = []
    layers = [layer["name"] for layer in details["layers"]]
    for side in sides:
        model = getattr(spec, side)
        if model.architecture is not None:
            message = "an ONNX graph is a whole model: leave it out"
            problems.append(Problem((side, "architecture"), message))
        if spec.regularizer.kind in LAYER_KINDS:
            for index, pair in enumerate(spec.regularizer.layers):
                name = getattr(pair, side)
                if name not in layers:
                    listed = ", ".join(nearest_first(name, layers)[:MAX_LISTED])
                    message = f"the graph has no layer {name!r}; nearest first: {listed}"
                    problems.append(Problem(("regularizer", "layers", index, side), message))
        if dataset_shape is not None:
            problem = _input_problem(details, dataset_shape, model.input)
            if problem:
                problems.append(Problem((side, "input"), f"the {side} {problem}"))
    return problems


def library_layer_problems(
    spec: JobSpec,
    dataset_shape: tuple[int, ...] | None,
    layers_of: Callable[[str, tuple[int, ...]], list[str]],
) -> list[Problem]:
    """Layer names of timm or torchvision models that are not module paths of theirs.

    ``layers_of(architecture, input_shape)`` lists a model's layer names (or raises
    ``UserError``); it is only asked for models whose names need it.
    """
    if spec.regularizer.kind not in LAYER_KINDS or dataset_shape is None:
        return []
    problems: list[Problem] = []
    for side, model in (("teacher", spec.teacher), ("student", spec.student)):
        if model is None or not from_library(model.architecture):
            continue
        names = [getattr(pair, side) for pair in spec.regularizer.layers]
        if all(name in ("penultimate", "logits") for name in names):
            continue
        try:
            shape = model.input.shape_for(dataset_shape) if model.input else dataset_shape
            valid = layers_of(model.architecture, tuple(shape))
        except UserError as error:
            problems.append(Problem((side, "architecture"), error.message))
            continue
        for index, name in enumerate(names):
            if name not in valid:
                listed = ", ".join(nearest_first(name, valid)[:MAX_LISTED])
                message = f"{model.architecture} has no layer {name!r}; nearest first: {listed}"
                problems.append(Problem(("regularizer", "layers", index, side), message))
    return problems


def _input_problem(details: dict[str, Any], dataset_shape: tuple[int, ...], model_input) -> str:
    """Why the graph cannot take the dataset's inputs through ``model_input``, or ``""``."""
    expected = tuple(details["inputs"][0]["shape"][1:])
    try:
        seen = model_input.shape_for(dataset_shape) if model_input else tuple(dataset_shape)
    except UserError as error:
        return error.message
    if expected == seen or takes_flattened(expected, seen):
        return ""
    hint = "fix its input" if model_input else "set its input (size, channels)"
    return f"takes inputs of shape {list(expected)}, but gets {list(seen)} from the dataset: {hint}"

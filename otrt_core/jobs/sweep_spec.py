"""A sweep's request (API.md, "Sweeps"): a base job, a space over its fields, a search.

``SweepSpec`` holds the shape; :func:`sweep_problems` runs the checks that need
several fields (every value of the space applied to the base must be a valid
job, a grid needs lists, ``compare`` needs seeds), reporting every problem at
once. :func:`trial_spec` makes the job of one point of the space, and
:func:`baseline_spec` the student trained alone or with KD that ``compare``
asks for. Torch-free, and Optuna-free: the search lives in
:mod:`otrt_core.jobs.search`.
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from otrt_core.errors import Problem, nearest_first
from otrt_core.spec import JobSpec, SpecError, resolve_spec

MAX_SPACE_FIELDS = 16
MAX_CHOICES = 64
MAX_TRIALS = 1000
MAX_SEEDS = 10
# Fields a space may not vary: what the job is (its mode, models and data), and the seed,
# which ``seeds`` sets.
FIXED_FIELDS = ("mode", "teacher", "student", "dataset", "metadata", "priority", "training.seed")
COMPARE_MIN_SEEDS = 3  # a paired 95% interval needs a few differences


class Range(BaseModel):
    """A continuous or integer range: exactly one of its fields, ``[low, high]``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    uniform: list[float] | None = Field(default=None, min_length=2, max_length=2)
    log_uniform: list[float] | None = Field(default=None, min_length=2, max_length=2)
    int_uniform: list[int] | None = Field(default=None, min_length=2, max_length=2)

    @model_validator(mode="after")
    def _one_kind(self) -> Range:
        bounds = (self.uniform, self.log_uniform, self.int_uniform)
        if sum(bound is not None for bound in bounds) != 1:
            raise ValueError("a range is one of uniform, log_uniform or int_uniform: [low, high]")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "log_uniform", "int_uniform") if getattr(self, k))

    @property
    def bounds(self) -> list[float]:
        return getattr(self, self.kind)


Choices = Annotated[list[Any], Field(max_length=MAX_CHOICES)]


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    base: JobSpec = Field(description="The job every trial starts from.")
    space: dict[str, Choices | Range] = Field(
        min_length=1,
        max_length=MAX_SPACE_FIELDS,
        description="Dotted job fields (`regularizer.weight`) to a list of values or a range.",
    )
    search: Literal["grid", "random", "tpe"] = "tpe"
    trials: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TRIALS,
        description="Points of the space to try. Default: the grid's size for `grid`, else 16.",
    )
    parallel: int = Field(default=2, ge=1, le=64, description="Jobs of the sweep live at once.")
    metric: Literal["val_accuracy"] = Field(
        default="val_accuracy", description="What the search maximizes (the trial's best epoch)."
    )
    early_stop: Literal["asha", "none"] = "none"
    seeds: int = Field(
        default=1, ge=1, le=MAX_SEEDS, description="Seeds per point (training.seed + 0, 1, …)."
    )
    compare: list[Literal["scratch", "kd"]] = Field(
        default_factory=list,
        max_length=2,
        description="Baselines trained on the same data and seeds (needs seeds >= 3).",
    )


DEFAULT_TRIALS = 16


def grid_size(space: dict[str, list[Any] | Range]) -> int | None:
    """How many points the grid of ``space`` has; ``None`` if a field is a range."""
    if any(isinstance(values, Range) for values in space.values()):
        return None
    return math.prod(len(values) for values in space.values())


def trial_count(sweep: SweepSpec) -> int:
    """The points the sweep tries: ``trials``, at most the grid's size for ``grid``."""
    size = grid_size(sweep.space) if sweep.search == "grid" else None
    if size is not None:
        return min(sweep.trials or size, size)
    return sweep.trials or DEFAULT_TRIALS


def job_count(sweep: SweepSpec) -> int:
    """Every job the sweep may run: each point and each baseline, once per seed."""
    return (trial_count(sweep) + len(sweep.compare)) * sweep.seeds


def base_body(sweep: SweepSpec) -> dict[str, Any]:
    """The base job as its submitter wrote it (defaults left for each trial to resolve)."""
    return sweep.base.model_dump(mode="json", exclude_unset=True)


def with_value(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the job ``body`` with the dotted field ``path`` set to ``value``."""
    body = copy.deepcopy(body)
    *parents, leaf = path.split(".")
    node = body
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value
    return body


def trial_spec(sweep: SweepSpec, params: dict[str, Any], seed_index: int) -> JobSpec:
    """The resolved job of one point of the space, for the seed ``seed_index``."""
    body = base_body(sweep)
    for path, value in params.items():
        body = with_value(body, path, value)
    body = with_value(body, "training.seed", sweep.base.training.seed + seed_index)
    return resolve_spec(body)


def baseline_spec(sweep: SweepSpec, kind: str, seed_index: int) -> JobSpec:
    """The base job's student trained alone (``scratch``) or with KD only (``kd``)."""
    body = base_body(sweep)
    resolved = resolve_spec(body)
    if kind == "scratch":
        body.pop("teacher", None)
        body.pop("kd", None)
        body["mode"] = "supervised"
        body["student"] = resolved.student.model_dump(mode="json", exclude_none=True)
        body["regularizer"] = {}
    else:
        body["regularizer"] = {"kind": "kd"}
        body.pop("kd", None)
    body = with_value(body, "training.seed", sweep.base.training.seed + seed_index)
    return resolve_spec(body)


def sweep_problems(sweep: SweepSpec, max_jobs: int) -> list[Problem]:
    """Everything wrong with the sweep (located in the request body).

    Each value of a list, and each end of a range, is applied to the base and
    must give a valid job.
    """
    problems: list[dict[str, Any]] = []

    def problem(loc: list[str | int], msg: str) -> None:
        problems.append(Problem(("body", *loc), msg))

    body = base_body(sweep)
    for path, values in sweep.space.items():
        where = ["space", path]
        reason = _field_problem(path)
        if reason is not None:
            problem(where, reason)
            continue
        if isinstance(values, Range):
            low, high = values.bounds
            if not low < high:
                msg = f"an empty range: low {low} is not below high {high}"
                problem([*where, values.kind], msg)
                continue
            if values.kind == "log_uniform" and low <= 0:
                problem([*where, values.kind], "a log_uniform range needs low > 0")
                continue
            if sweep.search == "grid":
                problem(where, "a grid needs a list of values, not a range")
            samples = [(values.kind, low), (values.kind, high)]
        else:
            if not values:
                problem(where, "an empty list of values")
                continue
            samples = list(enumerate(values))
        for index, value in samples:
            try:
                resolve_spec(with_value(body, path, value))
            except SpecError as error:
                for p in error.problems:
                    problem([*where, index], f"{'.'.join(map(str, p.loc))}: {p.msg}")
    if sweep.compare and sweep.seeds < COMPARE_MIN_SEEDS:
        problem(["seeds"], f"compare needs seeds >= {COMPARE_MIN_SEEDS} for its 95% interval")
    for kind in sweep.compare:
        try:
            baseline_spec(sweep, kind, 0)
        except SpecError as error:
            msg = f"the {kind} baseline is not a valid job: {error}"
            if kind == "kd" and sweep.base.mode != "distill":
                msg = "KD needs the teacher's task: compare 'kd' needs mode 'distill'"
            problem(["compare"], msg)
    if sweep.trials is not None and sweep.search == "grid":
        size = grid_size(sweep.space)
        if size is not None and sweep.trials > size:
            problem(["trials"], f"the grid has {size} points; trials is at most that")
    jobs = job_count(sweep)
    if jobs > max_jobs:
        problem(
            ["space"] if sweep.search == "grid" else ["trials"],
            f"the sweep would run {jobs} jobs ((points + baselines) x seeds); "
            f"a sweep may run at most {max_jobs} (OTRT_MAX_SWEEP_JOBS)",
        )
    return problems


def _field_problem(path: str) -> str | None:
    """Why the dotted ``path`` is not a job field a space may vary, or ``None``."""
    if any(path == fixed or path.startswith(f"{fixed}.") for fixed in FIXED_FIELDS):
        return f"{path} is fixed in a sweep (seeds sets training.seed)"
    model: type[BaseModel] | None = JobSpec
    for name in path.split("."):
        fields = model.model_fields if model is not None else {}
        if name not in fields:
            valid = sorted(_field_paths(JobSpec))
            return f"no job field {path}; nearest: {', '.join(nearest_first(path, valid)[:5])}"
        model = _submodel(fields[name].annotation)
    if model is not None:
        return f"{path} is a group of fields: name one of them"
    return None


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf field of ``model`` as a dotted path, without the fixed ones."""
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if any(path == fixed or path.startswith(f"{fixed}.") for fixed in FIXED_FIELDS):
            continue
        submodel = _submodel(info.annotation)
        if submodel is not None:
            paths += _field_paths(submodel, f"{path}.")
        else:
            paths.append(path)
    return paths


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, if it holds one (``regularizer``), else ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None

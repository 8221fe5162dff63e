"""Admission: whether a job may be queued, and what it reads.

One entry point, :meth:`Admission.check`: the spec resolved (its own rules, in
``otrt_core.spec``), then every input it names checked against what the caller
owns (uploaded files, finished teacher jobs, registered datasets and pools),
the models against those files and the data's input shape (``models``), and the
devices against what the executors offer. Every problem is collected, so that a
user fixes a job in one round; the service turns them into one 422.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from otrt_core.catalog import catalog
from otrt_core.data.image_size import image_size
from otrt_core.errors import Problem, UserError
from otrt_core.jobs import states
from otrt_core.jobs.admission.models import graph_problems, library_layer_problems
from otrt_core.jobs.dataset_service import DatasetService
from otrt_core.jobs.files import FileNotFound, FileRecords
from otrt_core.jobs.inspection import InspectionLimits, architecture_layers, teacher_misfit
from otrt_core.jobs.refusals import Invalid
from otrt_core.jobs.storage import Storage, StoredObject
from otrt_core.jobs.store import JobNotFound, JobStore
from otrt_core.jobs.tables import StoredFile
from otrt_core.jobs.workers import WorkerRegistry
from otrt_core.protocol import STUDENT_WEIGHTS
from otrt_core.spec import JobSpec, SpecError, resolve_spec


@dataclass(frozen=True)
class ModelFile:
    """A stored model a job names: its weights, and its ``details`` when it is a graph."""

    stored: StoredObject
    graph: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: StoredFile) -> ModelFile:
        stored = StoredObject(record.path, record.bytes, record.sha256)
        return cls(stored, record.details if record.format == "onnx" else None)


@dataclass(frozen=True)
class Admitted:
    """A job body checked: its resolved spec, the inputs it reads (the ids a job row
    records: ``dataset_file_id``, ``teacher_job_id``, …) and every problem found."""

    spec: JobSpec
    inputs: dict[str, str | None]
    problems: list[Problem]


@dataclass
class Admission:
    store: JobStore
    files: FileRecords
    storage: Storage
    datasets: DatasetService
    inspection: InspectionLimits
    workers: WorkerRegistry | None  # the executors' offers of devices
    # (weights sha256, architecture, input shape) -> why they do not fit, or None.
    _fits: dict[tuple, str | None] = field(default_factory=dict, init=False, repr=False)
    # (architecture, input shape) -> its layer names (timm and torchvision models).
    _layer_names: dict[tuple, list[str]] = field(default_factory=dict, init=False, repr=False)

    def check(self, owner: str, body: JobSpec, where: list[str]) -> Admitted:
        """Every problem of the job ``body`` (located under ``where``: ``["body"]`` for a
        job, ``["body", "base"]`` for a sweep's); :class:`Invalid` at once when the spec
        itself is invalid, since its inputs cannot be read then."""
        try:
            spec = resolve_spec(body)
        except SpecError as error:
            raise Invalid.of([p.under(*where) for p in error.problems], "the job") from None
        problems: list[Problem] = []
        inputs = self._inputs(owner, spec, problems)
        problems += self._device_problems(spec.training.gpus)
        # _inputs locates problems in a job body: ("body", …) becomes (*where, …).
        return Admitted(spec, inputs, [Problem((*where, *p.loc[1:]), p.msg) for p in problems])

    def _inputs(self, owner: str, spec: JobSpec, problems: list[Problem]) -> dict:
        """The uploaded files and teacher job the spec names, checked; problems appended."""
        inputs: dict[str, str | None] = {}
        input_shape = None
        if spec.dataset.name.startswith("file_"):
            record = self._owned_file(owner, spec.dataset.name, "dataset")
            if isinstance(record, str):
                problems.append(Problem(["body", "dataset", "name"], record))
            elif record.details.get("input_shape") is None:
                message = f"{record.id}: {record.details['registration']}"
                problems.append(Problem(["body", "dataset", "name"], message))
            else:
                inputs["dataset_file_id"] = record.id
                input_shape = tuple(record.details["input_shape"])
        elif spec.dataset.name.startswith("ds_"):
            dataset = self.datasets.usable(owner, spec.dataset.name)
            if isinstance(dataset, str):
                problems.append(Problem(["body", "dataset", "name"], dataset))
            else:
                inputs["dataset_id"] = dataset.id
                size = image_size(spec, dataset.details["images"]["median"])
                input_shape = (dataset.details["channels"], *size)
                problems += registered_class_problems(spec, dataset.id, dataset.details)
        elif spec.dataset.name.endswith((".npz", ".zip")):
            msg = "file paths are for `otrt train`; upload the file and name its file_… id"
            problems.append(Problem(["body", "dataset", "name"], msg))
        else:
            input_shape = catalog().datasets[spec.dataset.name].input_shape
        if spec.dataset.unlabeled is not None:
            problems += self._pool_problems(owner, spec.dataset.unlabeled)
        problems += [
            p.under("body") for p in library_layer_problems(spec, input_shape, self._layers)
        ]
        if spec.student.init is not None:
            self._student_init(owner, spec, input_shape, inputs, problems)
        if spec.teacher is None:
            return inputs
        loc = ["body", "teacher", "checkpoint"]
        model = self._teacher_file(owner, spec.teacher.checkpoint, inputs, problems, loc)
        if model is not None:
            # In transfer, a graph teacher's student is a copy of its graph.
            copied = spec.mode == "transfer" and spec.student.architecture is None
            sides = ("teacher", "student") if copied else ("teacher",)
            problems += self._model_problems(spec, sides, model, input_shape, loc)
        return inputs

    def _pool_problems(self, owner: str, pool_id: str) -> list[Problem]:
        """A registered dataset named as the unlabeled pool: the caller's, ready, and not
        empty (a labeled one serves too: its labels are ignored)."""
        loc = ["body", "dataset", "unlabeled"]
        pool = self.datasets.usable(owner, pool_id)
        if isinstance(pool, str):
            return [Problem(loc, pool)]
        counts = (pool.details or {}).get("counts") or {}
        if not any(_images(split) for split in counts.values()):
            return [Problem(loc, f"{pool_id} holds no images")]
        return []

    def _student_init(
        self, owner: str, spec: JobSpec, input_shape, inputs: dict, problems: list
    ) -> None:
        """The uploaded model ``student.init`` names, checked and noted in ``inputs``."""
        loc = ["body", "student", "init"]
        if not spec.student.init.startswith("file_"):
            msg = "name an uploaded model (file_…); paths are for `otrt train`"
            problems.append(Problem(loc, msg))
            return
        record = self._owned_file(owner, spec.student.init, "teacher")
        if isinstance(record, str):
            problems.append(Problem(loc, record))
            return
        inputs["init_file_id"] = record.id
        problems += self._model_problems(spec, ("student",), ModelFile.of(record), input_shape, loc)

    def _model_problems(
        self,
        spec: JobSpec,
        sides: tuple[str, ...],
        model: ModelFile,
        input_shape: tuple[int, ...] | None,
        loc: list,
    ) -> list[Problem]:
        """What in ``spec`` does not fit the model file that ``sides[0]`` names (and, for a
        graph, the other sides that are copies of it): a graph's layers and inputs, or a
        state dict's architecture and the weights' fit through its input view."""
        name = sides[0]
        side = getattr(spec, name)
        if model.graph is not None:
            return [p.under("body") for p in graph_problems(spec, model.graph, input_shape, sides)]
        if side.architecture is None:
            msg = f"a state dict needs {name}.architecture (only an ONNX graph is a whole model)"
            return [Problem(["body", name, "architecture"], msg)]
        if input_shape is None:
            return []
        try:
            shape = side.input.shape_for(input_shape) if side.input else input_shape
        except UserError as error:
            return [Problem(["body", name, "input"], error.message)]
        problem = self._misfit(model.stored, side.architecture, shape)
        return [Problem(loc, problem)] if problem else []

    def _device_problems(self, gpus: int) -> list[Problem]:
        """A job needing more devices than any live executor offers could never start;
        with no executor seen yet, it is accepted and waits."""
        largest = self.workers.largest() if self.workers is not None and gpus > 1 else None
        if largest is None or gpus <= largest:
            return []
        message = f"no worker offers {gpus} devices; the largest offers {largest}"
        return [Problem(["body", "training", "gpus"], message)]

    def _misfit(
        self, weights: StoredObject, architecture: str, input_shape: tuple[int, ...]
    ) -> str | None:
        """Why the weights do not fit ``architecture`` at ``input_shape``, or ``None``.

        Found by the inspector child (the API never loads torch), once per
        (weights, architecture, input shape) for the life of this process.
        """
        key = (weights.sha256, architecture, tuple(input_shape))
        if key not in self._fits:
            path = self.storage.fetch(weights.key, weights.sha256)
            try:
                self._fits[key] = teacher_misfit(path, architecture, input_shape, self.inspection)
            except UserError as error:
                return str(error)
        return self._fits[key]

    def _layers(self, architecture: str, input_shape: tuple[int, ...]) -> list[str]:
        """A timm or torchvision model's layer names, from the inspector child, once per
        (architecture, input shape) for the life of this process."""
        key = (architecture, tuple(input_shape))
        if key not in self._layer_names:
            self._layer_names[key] = architecture_layers(architecture, input_shape, self.inspection)
        return self._layer_names[key]

    def _teacher_file(
        self, owner: str, ref: str, inputs: dict, problems: list, loc: list
    ) -> ModelFile | None:
        """The stored model ``ref`` names, checked and noted in ``inputs``; or ``None``
        with a problem appended."""
        if ref.startswith("file_"):
            record = self._owned_file(owner, ref, "teacher")
            if isinstance(record, str):
                problems.append(Problem(loc, record))
                return None
            inputs["teacher_file_id"] = record.id
            return ModelFile.of(record)
        if ref.startswith("job_"):
            try:
                teacher_job = self.store.get(ref, owner)
            except JobNotFound:
                problems.append(Problem(loc, f"no job {ref}"))
                return None
            if teacher_job.status != states.SUCCEEDED:
                msg = f"job {ref} is {teacher_job.status}; a teacher job must have succeeded"
                problems.append(Problem(loc, msg))
                return None
            weights = self.store.artifact(ref, STUDENT_WEIGHTS)
            if weights is None:
                problems.append(Problem(loc, f"job {ref} has no {STUDENT_WEIGHTS}"))
                return None
            inputs["teacher_job_id"] = ref
            return ModelFile(StoredObject(weights.path, weights.bytes, weights.sha256))
        problems.append(Problem(loc, "name an uploaded file (file_…) or a finished job (job_…)"))
        return None

    def _owned_file(self, owner: str, file_id: str, purpose: str) -> StoredFile | str:
        """The owner's file of that purpose, or why not."""
        try:
            record = self.files.get(file_id, owner)
        except FileNotFound:
            return f"no file {file_id}"
        if record.purpose != purpose:
            return f"file {file_id} was uploaded as a {record.purpose}, not a {purpose}"
        return record


def registered_class_problems(
    spec: JobSpec, dataset_id: str, details: dict[str, Any]
) -> list[Problem]:
    """A registered dataset as a job's labeled data: it has training images with labels,
    and every class ``dataset.classes`` names."""
    names = details.get("classes") or []
    if "train" not in (details.get("counts") or {}):
        msg = (
            f"{dataset_id} is a pool of unlabeled images (no class folders): a job's dataset "
            "needs labels"
        )
        return [Problem(["body", "dataset", "name"], msg)]
    missing = [c for c in spec.dataset.classes or [] if not 0 <= c < len(names)]
    if not missing:
        return []
    listed = ", ".join(f"{i}: {name}" for i, name in enumerate(names))
    msg = f"{dataset_id} has classes 0..{len(names) - 1} ({listed}); it lacks {missing}"
    return [Problem(["body", "dataset", "classes"], msg)]


def _images(split: int | dict[str, int]) -> int:
    """The images of one split of a dataset's counts (per class, or a pool's total)."""
    return split if isinstance(split, int) else sum(split.values())

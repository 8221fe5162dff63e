"""The service layer: what each API route does, with no HTTP in it.

Routes parse and serialize; everything that needs the store, the file
storage or a rule of API.md happens here and fails with a :class:`ServiceError`
whose status and problem list the API turns into an RFC 9457 document.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import PurePath
from typing import Any

from otrt_core.atomic import PARTIAL_SUFFIX, writer, written_by_dead_process
from otrt_core.catalog import catalog
from otrt_core.data.image_size import image_size
from otrt_core.errors import Problem, TooLarge, UserError
from otrt_core.jobs import states
from otrt_core.jobs.dataset_service import DatasetService
from otrt_core.jobs.dataset_store import DatasetStore
from otrt_core.jobs.dispatch import Dispatcher
from otrt_core.jobs.files import FileNotFound, FileRecords
from otrt_core.jobs.inspection import (
    InspectionLimits,
    architecture_layers,
    inspect_upload,
    storage_suffix,
    teacher_misfit,
)
from otrt_core.jobs.model_checks import graph_problems, library_layer_problems
from otrt_core.jobs.refusals import (
    Conflict,
    Invalid,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
)
from otrt_core.jobs.storage import Storage, StoredObject
from otrt_core.jobs.store import IdempotencyConflict, JobNotFound, JobStore, Page, new_id
from otrt_core.jobs.sweep_spec import SweepSpec, sweep_problems, trial_count
from otrt_core.jobs.sweep_store import TERMINAL, Note, SweepNotFound, SweepStore
from otrt_core.jobs.sweeps import SweepRunner, initial_state
from otrt_core.jobs.tables import Artifact, Job, JobEvent, StoredFile, Sweep, SweepEvent
from otrt_core.jobs.uploads import UploadService
from otrt_core.jobs.workers import WorkerRegistry
from otrt_core.protocol import REPORT, STUDENT_WEIGHTS
from otrt_core.spec import JobSpec, SpecError, resolve_spec

PURPOSES = ("teacher", "model", "dataset")  # "model" is the same as "teacher"
QUEUE_FULL_RETRY_SECONDS = 30.0  # Retry-After when a key's queue is full
log = logging.getLogger("otrt.service")


@dataclass(frozen=True)
class ModelFile:
    """A stored model a job names: its weights, and its ``details`` when it is a graph."""

    stored: StoredObject
    graph: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: StoredFile) -> ModelFile:
        stored = StoredObject(record.path, record.bytes, record.sha256)
        return cls(stored, record.details if record.format == "onnx" else None)


@dataclass
class Service:
    store: JobStore
    files: FileRecords
    storage: Storage
    dispatcher: Dispatcher
    max_upload_bytes: int
    inspection: InspectionLimits = field(default_factory=InspectionLimits)
    workers: WorkerRegistry | None = None  # the executors' offers of devices
    max_sweep_jobs: int = 256  # jobs one sweep may run in all
    allowed_sources: list[str] = field(default_factory=list)  # OTRT_DATA_SOURCES
    max_push_bytes: int = 1024**4  # one upload in parts
    upload_expiry: timedelta = timedelta(hours=24)
    # (weights sha256, architecture, input shape) -> why they do not fit, or None.
    _fits: dict[tuple, str | None] = field(default_factory=dict, init=False, repr=False)
    # (architecture, input shape) -> its layer names (timm and torchvision models).
    _layer_names: dict[tuple, list[str]] = field(default_factory=dict, init=False, repr=False)
    sweeps: SweepRunner = field(init=False, repr=False)
    datasets: DatasetService = field(init=False, repr=False)
    uploads: UploadService = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sweeps = SweepRunner(self.store, SweepStore(self.store.sessions), self._dispatch)
        self.datasets = DatasetService(
            DatasetStore(self.store.sessions, self.store),
            self.store,
            self.files,
            self.storage,
            self.sweeps.sweeps,
            self._dispatch,
            self.allowed_sources,
        )
        self.uploads = UploadService(
            self.store.sessions,
            self.storage,
            self._accept,
            max_push_bytes=self.max_push_bytes,
            expiry=self.upload_expiry,
        )

    # --- files ---------------------------------------------------------------------------

    async def upload(
        self, owner: str, purpose: str, filename: str, chunks: AsyncIterator[bytes]
    ) -> StoredFile:
        """Streams an upload to storage, checks it for its purpose, records it.

        The file and database work runs in threads: the event loop only awaits.
        """
        if purpose not in PURPOSES:
            raise Invalid.at(["query", "purpose"], f"purpose must be one of {PURPOSES}")
        purpose = "teacher" if purpose == "model" else purpose
        filename = PurePath(filename.replace("\\", "/")).name[:255] or "upload"
        if purpose == "dataset" and not filename.lower().endswith((".npz", ".zip")):
            raise Invalid.at(["header", "x-filename"], "datasets are .npz or ImageFolder .zip")
        file_id = new_id("file")
        partial = f"uploads/{file_id}{writer()}.upload"
        try:
            stored = await self.storage.receive(partial, chunks, self.max_upload_bytes)
        except TooLarge as error:
            raise PayloadTooLarge(str(error)) from None
        return await asyncio.to_thread(self._accept, owner, purpose, filename, file_id, stored)

    def _accept(
        self, owner: str, purpose: str, filename: str, file_id: str, stored: StoredObject
    ) -> StoredFile:
        """Inspects a received upload (in a limited child process) and records it, or
        deletes it and says why."""
        key = stored.key
        try:
            with open(self.storage.fetch(key, stored.sha256), "rb") as handle:
                suffix = storage_suffix(purpose, filename, handle.read(16))
            key = f"uploads/{file_id}{suffix}"
            self.storage.rename(stored.key, key)
            local = self.storage.fetch(key, stored.sha256)
            file_format, details = inspect_upload(purpose, local, self.inspection)
            record = StoredFile(
                id=file_id,
                owner=owner,
                purpose=purpose,
                filename=filename,
                bytes=stored.bytes,
                sha256=stored.sha256,
                format=file_format,
                details=details,
                path=key,
            )
            return self.files.add(record)
        except TooLarge as error:
            self.storage.delete(key)
            raise PayloadTooLarge(str(error), [Problem(("body",), str(error)).as_dict()]) from None
        except UserError as error:
            self.storage.delete(key)
            raise Invalid.at(["body"], str(error)) from None
        except BaseException:
            self.storage.delete(key)  # nothing unrecorded stays behind
            raise

    def remove_orphans(self, grace_seconds: float) -> list[str]:
        """Deletes what failed uploads left behind; returns the keys removed.

        Partial files (``.part``, ``.upload``) and uploads with no record, last
        written over ``grace_seconds`` ago: younger ones may be an upload in
        flight on another replica.
        """
        self.uploads.expire()
        before = time.time() - grace_seconds

        def stale(prefix: str) -> set[str]:
            old = set(self.storage.modified_before(prefix, before))
            return old | {k for k in self.storage.keys(prefix) if written_by_dead_process(k)}

        recorded = self.files.paths()
        orphans = [k for k in stale("uploads") if k not in recorded]
        orphans += [k for k in stale("artifacts") if k.endswith(PARTIAL_SUFFIX)]
        for key in orphans:
            self.storage.delete(key)
        if orphans:
            log.info("removed %d orphaned upload file(s)", len(orphans))
        return orphans

    def file(self, owner: str, file_id: str) -> StoredFile:
        try:
            return self.files.get(file_id, owner)
        except FileNotFound:
            raise NotFound(f"no file {file_id}") from None

    def list_files(self, owner: str, limit: int, after: str | None) -> Page:
        try:
            return self.files.list(owner, limit=limit, after=after)
        except FileNotFound:
            raise Invalid.at(["query", "after"], f"no file {after}") from None

    def delete_file(self, owner: str, file_id: str) -> None:
        record = self.file(owner, file_id)
        if self.store.live_jobs_using_file(file_id):
            raise Conflict(f"file {file_id} is used by a job that has not finished")
        if self.sweeps.sweeps.unfinished_using(file_id):
            raise Conflict(f"file {file_id} is used by a sweep that has not finished")
        self.files.delete(file_id, owner)
        self.storage.delete(record.path)

    # --- jobs ----------------------------------------------------------------------------

    def submit(
        self,
        owner: str,
        body: JobSpec,
        idempotency_key: str | None = None,
        *,
        key_id: str | None = None,
        max_queued: int | None = None,
    ) -> tuple[Job, bool]:
        """Checks a job (every problem at once), stores it queued, then dispatches it.

        ``(job, created)``: ``created`` is false when the idempotency key
        returned an earlier job. :class:`TooManyRequests` when ``key_id`` (or
        ``owner``, without a key) already has ``max_queued`` jobs waiting.
        """
        spec, inputs, problems = self._checked(owner, body, ["body"])
        if problems:
            raise Invalid.of(problems, "the job")
        sent = json.dumps(body.model_dump(mode="json"), sort_keys=True)
        request_hash = hashlib.sha256(sent.encode()).hexdigest()
        if max_queued is not None and not self._replay(owner, idempotency_key, request_hash):
            waiting = self.store.queued_count(key_id=key_id, owner=owner)
            if waiting >= max_queued:
                raise TooManyRequests(
                    f"this key has {waiting} jobs queued, its limit (max_queued); "
                    "submit more once some have started",
                    QUEUE_FULL_RETRY_SECONDS,
                )
        progress = {
            "epoch": 0,
            "epochs": spec.training.epochs,
            "step": 0,
            "steps": None,
            "fraction": 0.0,
        }
        try:
            job, created = self.store.create(
                owner,
                spec,
                spec.metadata,
                progress,
                inputs=inputs,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                key_id=key_id,
                priority=spec.priority,
            )
        except IdempotencyConflict:
            raise Conflict("this Idempotency-Key was used with another request body") from None
        if created:
            self._dispatch(job.id)
        return job, created

    def _checked(self, owner: str, body: JobSpec, where: list[str]) -> tuple[JobSpec, dict, list]:
        """The resolved spec, its inputs and every problem of the job ``body`` (locations
        under ``where``); :class:`Invalid` at once when the spec itself is invalid."""
        try:
            spec = resolve_spec(body)
        except SpecError as error:
            raise Invalid.of([p.under(*where) for p in error.problems], "the job") from None
        problems: list[Problem] = []
        inputs = self._inputs(owner, spec, problems)
        problems += self._device_problems(spec.training.gpus)
        # _inputs locates problems in a job body: ("body", …) becomes (*where, …).
        return spec, inputs, [Problem((*where, *p.loc[1:]), p.msg) for p in problems]

    def _replay(self, owner: str, idempotency_key: str | None, request_hash: str) -> bool:
        """Whether this request repeats an earlier one (then it adds no job)."""
        if idempotency_key is None:
            return False
        try:
            return self.store.by_idempotency_key(owner, idempotency_key, request_hash) is not None
        except IdempotencyConflict:
            return False  # answered 409 by create

    def _dispatch(self, job_id: str) -> None:
        """Hands a committed job to the dispatcher; a failure here loses nothing.

        The job stays queued in the DB, and a reaper dispatches it again after
        ``requeue_after_seconds`` (a broker down for a moment, say).
        """
        try:
            self.dispatcher.dispatch(job_id)
        except Exception:
            log.warning(
                "job %s: dispatch failed; the reaper will send it again", job_id, exc_info=True
            )

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

    def job(self, owner: str, job_id: str) -> Job:
        try:
            return self.store.get(job_id, owner)
        except JobNotFound:
            raise NotFound(f"no job {job_id}") from None

    def list_jobs(
        self, owner: str, status: str | None, limit: int, after: str | None, sweep: str | None
    ) -> Page:
        try:
            return self.store.list(owner, status=status, sweep=sweep, limit=limit, after=after)
        except JobNotFound:
            raise Invalid.at(["query", "after"], f"no job {after}") from None

    def cancel(self, owner: str, job_id: str) -> Job:
        self.job(owner, job_id)
        try:
            return self.store.request_cancel(job_id, owner)
        except states.IllegalTransition as error:
            msg = f"job {job_id} is {error.current}; only a live job can be cancelled"
            raise Conflict(msg) from None

    def metrics(self, owner: str, job_id: str) -> list[Problem]:
        self.job(owner, job_id)
        return self.store.metrics(job_id)

    def events(self, owner: str, job_id: str, after: int = 0) -> list[JobEvent]:
        self.job(owner, job_id)
        return self.store.events(job_id, after)

    def artifacts(self, owner: str, job_id: str) -> list[Artifact]:
        self.job(owner, job_id)
        return self.store.artifacts(job_id)

    def report(self, owner: str, job_id: str) -> bytes:
        """The job's ``report.json`` as stored; :class:`NotFound` until the job has
        succeeded."""
        job = self.job(owner, job_id)
        artifact = self.store.artifact(job_id, REPORT)
        if artifact is None:
            raise NotFound(f"job {job_id} has no report: it is {job.status}")
        return self.storage.read_bytes(artifact.path)

    def artifact(self, owner: str, job_id: str, name: str) -> StoredObject:
        """Where the job's artifact ``name`` is stored, its size and sha256."""
        self.job(owner, job_id)
        artifact = self.store.artifact(job_id, name)
        if artifact is None:
            raise NotFound(f"job {job_id} has no artifact {name!r}")
        return StoredObject(artifact.path, artifact.bytes, artifact.sha256)

    # --- sweeps --------------------------------------------------------------------------

    def submit_sweep(
        self, owner: str, body: SweepSpec, *, key_id: str | None, max_queued: int | None
    ) -> dict[str, Any]:
        """Checks a sweep (every problem at once), stores it and queues its first jobs."""
        _, inputs, problems = self._checked(owner, body.base, ["body", "base"])
        problems += sweep_problems(body, self.max_sweep_jobs)
        if max_queued is not None and body.parallel > max_queued:
            msg = f"parallel is more than this key may queue ({max_queued}, its max_queued)"
            problems.append(Problem(["body", "parallel"], msg))
        if problems:
            raise Invalid.of(problems, "the sweep")
        sweep_id = new_id("sweep")
        points = trial_count(body)
        message = (
            f"sweep created: {points} point(s) by {body.search} search, "
            f"{body.seeds} seed(s) each, up to {body.parallel} job(s) at once"
        )
        self.sweeps.sweeps.create(
            sweep_id,
            owner,
            key_id,
            body.model_dump(mode="json", exclude_unset=True),  # as sent: defaults stay defaults
            inputs,
            initial_state(sweep_id, body),
            Note("created", message, {"points": points, "seeds": body.seeds}),
        )
        try:
            self.sweeps.advance(sweep_id)
        except Exception:  # stored: the next reaper round queues its first jobs
            log.warning("sweep %s: could not queue its first jobs now", sweep_id, exc_info=True)
        return self.sweeps.view(self.sweeps.sweeps.get(sweep_id))

    def _sweep(self, owner: str, sweep_id: str) -> Sweep:
        try:
            return self.sweeps.sweeps.get(sweep_id, owner)
        except SweepNotFound:
            raise NotFound(f"no sweep {sweep_id}") from None

    def sweep(self, owner: str, sweep_id: str) -> dict[str, Any]:
        return self.sweeps.view(self._sweep(owner, sweep_id))

    def sweep_status(self, owner: str, sweep_id: str) -> str:
        return self._sweep(owner, sweep_id).status

    def list_sweeps(self, owner: str, limit: int, after: str | None) -> tuple[list[dict], Page]:
        try:
            page = self.sweeps.sweeps.list(owner, limit=limit, after=after)
        except SweepNotFound:
            raise Invalid.at(["query", "after"], f"no sweep {after}") from None
        return [self.sweeps.view(sweep) for sweep in page.items], page

    def cancel_sweep(self, owner: str, sweep_id: str) -> dict[str, Any]:
        sweep = self._sweep(owner, sweep_id)
        if sweep.status in TERMINAL:
            msg = f"sweep {sweep_id} is {sweep.status}; only a running sweep can be cancelled"
            raise Conflict(msg)
        return self.sweeps.view(self.sweeps.cancel(sweep))

    def sweep_events(self, owner: str, sweep_id: str, after: int = 0) -> list[SweepEvent]:
        self._sweep(owner, sweep_id)
        return self.sweeps.sweeps.events(sweep_id, after)

    def sweep_document(self, owner: str, sweep_id: str) -> bytes:
        """``sweep.json``: the finished sweep as submitted and as it ended."""
        return self._document(self._finished_sweep(owner, sweep_id))

    def sweep_artifacts(self, owner: str, sweep_id: str) -> tuple[list[Artifact], bytes]:
        """The best trial's artifacts and ``sweep.json``'s bytes, from one read of the sweep."""
        sweep = self._finished_sweep(owner, sweep_id)
        best = sweep.summary.get("best")
        return (self.store.artifacts(best["job_id"]) if best else []), self._document(sweep)

    def _document(self, sweep: Sweep) -> bytes:
        document = {"request": sweep.request} | self.sweeps.view(sweep)
        return json.dumps(document, indent=2, sort_keys=True, default=str).encode()

    def sweep_artifact(self, owner: str, sweep_id: str, name: str) -> StoredObject:
        """Where the best trial's artifact ``name`` is stored."""
        best = self._finished_sweep(owner, sweep_id).summary.get("best")
        if best is None:
            raise NotFound(f"sweep {sweep_id} has no best trial")
        return self.artifact(owner, best["job_id"], name)

    def _finished_sweep(self, owner: str, sweep_id: str) -> Sweep:
        sweep = self._sweep(owner, sweep_id)
        if sweep.status not in TERMINAL:
            raise NotFound(f"sweep {sweep_id} is {sweep.status}: its artifacts come when it ends")
        return sweep


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

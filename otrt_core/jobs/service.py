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
from otrt_core.errors import Problem, TooLarge, UserError
from otrt_core.jobs import states
from otrt_core.jobs.admission import Admission
from otrt_core.jobs.dataset_service import DatasetService
from otrt_core.jobs.dataset_store import DatasetStore
from otrt_core.jobs.dispatch import Dispatcher
from otrt_core.jobs.files import FileNotFound, FileRecords
from otrt_core.jobs.inspection import (
    InspectionLimits,
    inspect_upload,
    storage_suffix,
)
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
from otrt_core.protocol import REPORT
from otrt_core.spec import JobSpec

PURPOSES = ("teacher", "model", "dataset")  # "model" is the same as "teacher"
QUEUE_FULL_RETRY_SECONDS = 30.0  # Retry-After when a key's queue is full
log = logging.getLogger("otrt.service")


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
    sweeps: SweepRunner = field(init=False, repr=False)
    datasets: DatasetService = field(init=False, repr=False)
    uploads: UploadService = field(init=False, repr=False)
    admission: Admission = field(init=False, repr=False)

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
        self.admission = Admission(
            self.store, self.files, self.storage, self.datasets, self.inspection, self.workers
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
        admitted = self.admission.check(owner, body, ["body"])
        if admitted.problems:
            raise Invalid.of(admitted.problems, "the job")
        spec = admitted.spec
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
                inputs=admitted.inputs,
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
        admitted = self.admission.check(owner, body.base, ["body", "base"])
        problems = admitted.problems + sweep_problems(body, self.max_sweep_jobs)
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
            admitted.inputs,
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

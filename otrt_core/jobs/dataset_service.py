"""What the /v1/datasets routes do for registered datasets (API.md v1.2), with no HTTP.

Registering checks the source without reading it (an uploaded zip the caller
owns, or a URI under one of the admin's prefixes, ``OTRT_DATA_SOURCES``), then
writes the dataset and its conversion job in one transaction and dispatches
the job; a worker does the rest. The API never lists a bucket or decodes an image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otrt_core.data.sources import SourceRefused, check_allowed, real_local_path
from otrt_core.jobs import states
from otrt_core.jobs.dataset_store import (
    CONVERTING,
    FAILED,
    INSPECTING,
    READY,
    DatasetNotFound,
    DatasetStore,
    snapshot_prefix,
)
from otrt_core.jobs.files import FileNotFound, FileRecords
from otrt_core.jobs.refusals import Conflict, Invalid, NotFound
from otrt_core.jobs.storage import Storage
from otrt_core.jobs.store import JobStore, Page
from otrt_core.jobs.sweep_store import SweepStore
from otrt_core.jobs.tables import Dataset, JobEvent

FORMATS = ("auto", "imagefolder", "webdataset", "parquet", "zip")


@dataclass
class DatasetService:
    datasets: DatasetStore
    jobs: JobStore
    files: FileRecords
    storage: Storage
    sweeps: SweepStore
    dispatch: Callable[[str], None]
    allowed_sources: list[str]

    def register(
        self, owner: str, *, source: str, format: str, name: str | None, key_id: str | None
    ) -> Dataset:
        """A new dataset, ``inspecting`` until a worker takes its conversion job."""
        if source.startswith("file_"):
            self._owned_zip(owner, source)
        else:
            try:
                check_allowed(source, self.allowed_sources)
                if source.startswith("file:"):  # a symbolic link out is refused here too
                    real_local_path(source, self.allowed_sources)
            except SourceRefused as error:
                raise Invalid.at(["body", "source"], str(error)) from None
        dataset, job = self.datasets.register(
            owner,
            name=name or source.rstrip("/").rsplit("/", 1)[-1] or source,
            source=source,
            format=format,
            key_id=key_id,
        )
        self.dispatch(job.id)
        return dataset

    def _owned_zip(self, owner: str, file_id: str) -> None:
        try:
            record = self.files.get(file_id, owner)
        except FileNotFound:
            raise Invalid.at(["body", "source"], f"no file {file_id}") from None
        if record.purpose != "dataset" or record.format != "imagefolder_zip":
            message = (
                f"{file_id} is not an uploaded .zip dataset: an .npz is used as it is "
                "(name its id in a job's dataset.name)"
            )
            raise Invalid.at(["body", "source"], message)

    def get(self, owner: str, dataset_id: str) -> Dataset:
        """The dataset, its status reconciled with its conversion job: a job that ended
        without its executor saying so (it failed on every attempt) fails the dataset."""
        try:
            dataset = self.datasets.get(dataset_id, owner)
        except DatasetNotFound:
            raise NotFound(f"no dataset {dataset_id}") from None
        if dataset.status not in (INSPECTING, CONVERTING):
            return dataset
        job = self.jobs.get(dataset.job_id)
        if job.status in states.TERMINAL:
            error = job.error or {"code": job.status, "message": f"the conversion {job.status}"}
            self.datasets.settle(dataset_id, error)
            return self.datasets.get(dataset_id, owner)
        return dataset

    def list(self, owner: str, limit: int, after: str | None) -> Page:
        try:
            return self.datasets.list(owner, limit=limit, after=after)
        except DatasetNotFound:
            raise NotFound(f"no dataset {after} to page after") from None

    def events(self, owner: str, dataset_id: str, after: int = 0) -> list[JobEvent]:
        return self.jobs.events(self.get(owner, dataset_id).job_id, after)

    def ended(self, owner: str, dataset_id: str) -> bool:
        return self.get(owner, dataset_id).status in (READY, FAILED)

    def delete(self, owner: str, dataset_id: str) -> None:
        """Forgets the dataset; 409 while a live job trains on it or it is being made."""
        dataset = self.get(owner, dataset_id)
        if self.jobs.live_jobs_using_dataset(dataset_id):
            raise Conflict(f"{dataset_id} is used by a job that has not ended")
        if self.sweeps.unfinished_on_dataset(dataset_id):
            raise Conflict(f"{dataset_id} is used by a sweep that has not ended")
        if dataset.status in (INSPECTING, CONVERTING):
            raise Conflict(f"{dataset_id} is still being converted")
        self.datasets.delete(dataset_id)
        # The snapshot goes with the row (a failed removal leaves objects no row names,
        # never a row whose shards are gone).
        for key in self.storage.modified_before(snapshot_prefix(dataset_id), math.inf):
            self.storage.delete(key)

    def usable(self, owner: str, dataset_id: str) -> Dataset | str:
        """The dataset a job names, or why it cannot train on it."""
        try:
            dataset = self.get(owner, dataset_id)
        except NotFound:
            return f"no dataset {dataset_id}"
        if dataset.status != READY:
            return f"{dataset_id} is {dataset.status}, not ready"
        return dataset


def resource(dataset: Dataset) -> dict[str, Any]:
    """The dataset as API.md shows it."""
    details = dataset.details or {}
    return {
        "id": dataset.id,
        "name": dataset.name,
        "source": dataset.source,
        "format": details.get("format", dataset.format),
        "status": dataset.status,
        "progress": dataset.progress,
        "error": dataset.error,
        "classes": details.get("classes"),
        "counts": details.get("counts"),
        "images": details.get("images"),
        "bytes": details.get("bytes"),
        "unreadable": details.get("unreadable"),
        "fingerprint": details.get("fingerprint"),
        "channels": details.get("channels"),
        "created_at": dataset.created_at,
        "ready_at": dataset.ready_at,
    }

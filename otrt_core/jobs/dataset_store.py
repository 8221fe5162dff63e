"""Registered datasets (API.md v1.2) and the conversion job that makes each one.

A dataset row and its conversion job are written in one transaction: the job
rides the jobs' own machinery (claim, lease, reaper, fair order, events), and
the dataset's status follows it. The executor holding the job's lease is the
only writer of a dataset's progress and outcome, and each write checks that it
still holds the lease, so a fenced-off worker writes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.jobs.store import JobStore, Lease, Page, holds, new_id, newest_page
from otrt_core.jobs.tables import Dataset, Job, utcnow


def snapshot_prefix(dataset_id: str) -> str:
    """Where a dataset's shards live in the object store."""
    return f"datasets/{dataset_id}"


INSPECTING, CONVERTING, READY, FAILED = "inspecting", "converting", "ready", "failed"
DATASET_STATUSES = (INSPECTING, CONVERTING, READY, FAILED)
CONVERSION = "dataset"  # the kind of a conversion job


class DatasetNotFound(LookupError):
    pass


class DatasetStore:
    def __init__(self, sessions: sessionmaker[Session], jobs: JobStore) -> None:
        self.sessions, self.jobs = sessions, jobs

    def register(
        self,
        owner: str,
        *,
        name: str,
        source: str,
        format: str,
        key_id: str | None = None,
        priority: int = 0,
    ) -> tuple[Dataset, Job]:
        """A new dataset (``inspecting``) and its queued conversion job."""
        dataset_id = new_id("ds")
        job_id = new_id("job")
        dataset = Dataset(
            id=dataset_id,
            owner=owner,
            name=name,
            source=source,
            format=format,
            status=INSPECTING,
            job_id=job_id,
            progress={"phase": "queued", "done": 0, "total": None, "fraction": 0.0},
            details={},
        )
        request = {"dataset_id": dataset_id, "source": source, "format": format}
        job, _ = self.jobs.create(
            owner,
            request,
            {},
            {},
            inputs={"dataset_id": dataset_id},
            job_id=job_id,
            key_id=key_id,
            priority=priority,
            kind=CONVERSION,
            companions=(dataset,),
        )
        return self.get(dataset_id), job

    def get(self, dataset_id: str, owner: str | None = None) -> Dataset:
        with self.sessions() as session:
            dataset = session.get(Dataset, dataset_id)
        if dataset is None or (owner is not None and dataset.owner != owner):
            raise DatasetNotFound(dataset_id)
        return dataset

    def list(self, owner: str, *, limit: int = 20, after: str | None = None) -> Page:
        """The owner's datasets, newest first; ``after`` is the last id of the previous page."""
        cursor = self.get(after, owner) if after is not None else None
        query = select(Dataset).where(Dataset.owner == owner)
        return newest_page(self.sessions, query, Dataset, cursor, limit)

    def delete(self, dataset_id: str) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(Dataset).where(Dataset.id == dataset_id))

    def update(self, lease: Lease, **values: Any) -> bool:
        """Writes the dataset of the lease's conversion job (``status``, ``progress``,
        ``details``, ``error``, ``shards``); false, writing nothing, if the lease is lost."""
        if values.get("status") == READY:
            values["ready_at"] = utcnow()
        with self.sessions.begin() as session:
            dataset_id = session.scalar(select(Job.dataset_id).where(*holds(lease)))
            if dataset_id is None:
                return False
            session.execute(update(Dataset).where(Dataset.id == dataset_id).values(**values))
            return True

    def settle(self, dataset_id: str, error: dict[str, Any]) -> None:
        """Fails a dataset whose conversion job ended without its executor saying so
        (it failed on every attempt, or was cancelled before it started)."""
        with self.sessions.begin() as session:
            session.execute(
                update(Dataset)
                .where(Dataset.id == dataset_id, Dataset.status.in_((INSPECTING, CONVERTING)))
                .values(status=FAILED, error=error)
            )

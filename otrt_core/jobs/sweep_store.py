"""The sweep store: every read and write of sweeps and their events.

A sweep's ``state``, ``status`` and ``summary`` change only in
:meth:`SweepStore.update`, one compare-and-set ``UPDATE … WHERE version = v``
that writes the change's events in the same transaction. Whoever advances a
sweep (an executor that ended a trial, the reaper, the API) reads it, decides,
and tries to write; the one that loses the race reads again. So a plan or an
event is never written twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.jobs.states import TERMINAL, SweepStatus
from otrt_core.jobs.store import Page, newest_page
from otrt_core.jobs.tables import Job, Sweep, SweepEvent, utcnow

RUNNING, CANCELLING = SweepStatus.RUNNING, SweepStatus.CANCELLING
SUCCEEDED, FAILED, CANCELLED = SweepStatus.SUCCEEDED, SweepStatus.FAILED, SweepStatus.CANCELLED
STATUSES = tuple(SweepStatus)

# Where a sweep stands, as far as advancing it goes: its version and how many of its
# jobs are in each status. Every change a sweep reacts to moves one of them.
Mark = tuple[int, tuple[tuple[str, int], ...]]


class SweepNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Note:
    """An event to write with a change: its type, message and data."""

    type: str
    message: str
    data: dict[str, Any]


class SweepStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(
        self,
        sweep_id: str,
        owner: str,
        key_id: str | None,
        request: dict[str, Any],
        inputs: dict[str, Any],
        state: dict[str, Any],
        note: Note,
    ) -> Sweep:
        sweep = Sweep(
            id=sweep_id,
            owner=owner,
            key_id=key_id,
            status=RUNNING,
            request=request,
            inputs=inputs,
            state=state,
            summary={},
            version=0,
            cancel_requested=False,
            created_at=utcnow(),
        )
        with self.sessions.begin() as session:
            session.add(sweep)
            session.flush()
            session.add(_event(sweep.id, note))
        return sweep

    def get(self, sweep_id: str, owner: str | None = None) -> Sweep:
        """The sweep; with ``owner``, only if it is theirs (else :class:`SweepNotFound`)."""
        with self.sessions() as session:
            sweep = session.get(Sweep, sweep_id)
        if sweep is None or (owner is not None and sweep.owner != owner):
            raise SweepNotFound(sweep_id)
        return sweep

    def list(self, owner: str, *, limit: int = 20, after: str | None = None) -> Page:
        """The owner's sweeps, newest first; ``after`` is the last id of the previous page."""
        query = select(Sweep).where(Sweep.owner == owner)
        cursor = self.get(after, owner) if after is not None else None
        return newest_page(self.sessions, query, Sweep, cursor, limit)

    def unfinished(self) -> dict[str, Mark]:
        """The sweeps that have not ended, oldest first, each with its :data:`Mark`."""
        with self.sessions() as session:
            versions = session.execute(
                select(Sweep.id, Sweep.version)
                .where(Sweep.status.not_in(TERMINAL))
                .order_by(Sweep.created_at, Sweep.id)
            ).all()
            counts = session.execute(
                select(Job.sweep_id, Job.status, func.count())
                .where(Job.sweep_id.in_([sweep_id for sweep_id, _ in versions]))
                .group_by(Job.sweep_id, Job.status)
            ).all()
        statuses: dict[str, list[tuple[str, int]]] = {sweep_id: [] for sweep_id, _ in versions}
        for sweep_id, status, count in counts:
            statuses[sweep_id].append((status, count))
        return {
            sweep_id: (version, tuple(sorted(statuses[sweep_id]))) for sweep_id, version in versions
        }

    def unfinished_using(self, file_id: str) -> int:
        """How many sweeps that have not ended name the file among their trials' inputs."""
        with self.sessions() as session:
            inputs = session.scalars(select(Sweep.inputs).where(Sweep.status.not_in(TERMINAL)))
            return sum(file_id in values.values() for values in inputs)

    def unfinished_on_dataset(self, dataset_id: str) -> int:
        """How many sweeps that have not ended train on the registered dataset: their base
        job's data or its unlabeled pool."""
        with self.sessions() as session:
            requests = session.scalars(select(Sweep.request).where(Sweep.status.not_in(TERMINAL)))
            datasets = [request.get("base", {}).get("dataset", {}) for request in requests]
        return sum(dataset_id in (d.get("name"), d.get("unlabeled")) for d in datasets)

    def update(self, sweep: Sweep, notes: list[Note] = (), **values: Any) -> bool:
        """Writes ``values`` (state, status, summary, …) and ``notes`` if the sweep is still
        at the version ``sweep`` was read at; false (nothing written) if another won."""
        if values.get("status") in TERMINAL:
            values["finished_at"] = utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Sweep)
                .where(Sweep.id == sweep.id, Sweep.version == sweep.version)
                .values(version=sweep.version + 1, **values)
            )
            if result.rowcount != 1:
                return False
            session.add_all(_event(sweep.id, note) for note in notes)
        return True

    def events(self, sweep_id: str, after: int = 0, limit: int = 1000) -> list[SweepEvent]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(SweepEvent)
                    .where(SweepEvent.sweep_id == sweep_id, SweepEvent.id > after)
                    .order_by(SweepEvent.id)
                    .limit(limit)
                )
            )


def _event(sweep_id: str, note: Note) -> SweepEvent:
    return SweepEvent(
        sweep_id=sweep_id, at=utcnow(), type=note.type, message=note.message[:2000], data=note.data
    )

"""The job store: every read and write of jobs, their events, metrics and artifacts.

The database is the source of truth. Two rules hold everywhere:

- A status changes only in :meth:`JobStore.transition` (or :meth:`JobStore.claim`,
  a transition to ``running``), by one compare-and-set ``UPDATE`` whose
  ``WHERE`` names the statuses the state machine allows, and the event that
  says so is written in the same transaction.
- An executor writes to a job only through its :class:`Lease` (job, owner,
  attempt): once the lease is lost (expired and requeued, or claimed by
  another executor) every write it tries matches no row, so a stale executor
  can never overwrite the job's new attempt.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.jobs import states
from otrt_core.jobs.tables import ApiKey, Artifact, Job, JobEvent, JobMetric, utcnow
from otrt_core.spec import JobSpec

CLAIM_RETRIES = 8  # fair-order picks lost to another executor before giving up for now


class JobNotFound(LookupError):
    pass


class IdempotencyConflict(Exception):
    """The idempotency key was used before with another request body."""


@dataclass(frozen=True)
class Lease:
    """The right of one executor to write one attempt of one job."""

    job_id: str
    owner: str
    attempt: int


@dataclass(frozen=True)
class Page:
    items: list[Any]
    has_more: bool

    @property
    def next_after(self) -> str | None:
        return self.items[-1].id if self.has_more and self.items else None


def _newest_first(table: type[Any]) -> tuple:
    """The order of every list: newest first, ids breaking ties (a stable keyset)."""
    return table.created_at.desc(), table.id.desc()


def _after_in_newest_first(table: type[Any], cursor: Any):
    """The rows that come after ``cursor`` in :func:`_newest_first` order (keyset pagination)."""
    return or_(
        table.created_at < cursor.created_at,
        and_(table.created_at == cursor.created_at, table.id < cursor.id),
    )


def newest_page(
    sessions: sessionmaker[Session], query: Any, table: type[Any], cursor: Any, limit: int
) -> Page:
    """One page of ``query``'s rows in :func:`_newest_first` order: those after the row
    ``cursor`` (the last of the previous page; ``None`` for the first page)."""
    if cursor is not None:
        query = query.where(_after_in_newest_first(table, cursor))
    with sessions() as session:
        rows = session.scalars(query.order_by(*_newest_first(table)).limit(limit + 1)).all()
    return Page(list(rows[:limit]), has_more=len(rows) > limit)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class JobStore:
    """Jobs and what hangs off them, over one SQLAlchemy sessionmaker."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # --- creation and reads --------------------------------------------------------------

    def create(
        self,
        owner: str,
        spec: JobSpec | dict[str, Any],  # a training job's; a conversion's request
        metadata: dict[str, str],
        progress: dict[str, Any],
        *,
        inputs: dict[str, str | None] | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        key_id: str | None = None,
        priority: int = 0,
        sweep_id: str | None = None,
        kind: str = "train",
        companions: tuple[Any, ...] = (),
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        """A new queued job and its first event; ``(job, created)``.

        ``companions`` are rows written in the same transaction (a conversion job's
        dataset), so that neither exists without the other.

        With an idempotency key already used by ``owner``, the earlier job comes
        back (``created`` false) if the request hash matches, else
        :class:`IdempotencyConflict`.
        """
        if kind == "train" and not isinstance(spec, JobSpec):
            raise TypeError("a training job's spec is a JobSpec")
        if idempotency_key is not None:
            earlier = self.by_idempotency_key(owner, idempotency_key, request_hash)
            if earlier is not None:
                return earlier, False
        job = Job(
            id=job_id or new_id("job"),
            owner=owner,
            status=states.QUEUED,
            spec=spec.model_dump(mode="json") if isinstance(spec, JobSpec) else spec,
            job_metadata=metadata,
            progress=progress,
            metrics={},
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            key_id=key_id,
            priority=priority,
            gpus=spec.training.gpus if isinstance(spec, JobSpec) else 0,
            sweep_id=sweep_id,
            kind=kind,
            **(inputs or {}),
        )
        try:
            with self.sessions.begin() as session:
                session.add_all(companions)
                session.add(job)
                session.flush()
                session.add(_event(job.id, states.QUEUED, "job queued", {"attempt": 0}))
        except IntegrityError:
            # Two requests raced on the same key: the loser answers with the winner's job.
            earlier = self.by_idempotency_key(owner, idempotency_key, request_hash)
            if earlier is None:
                raise
            return earlier, False
        return job, True

    def by_idempotency_key(self, owner: str, key: str | None, request_hash: str | None):
        """The owner's job made with ``key``, if any; :class:`IdempotencyConflict` if it was
        made from another request body."""
        with self.sessions() as session:
            job = session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))
        if job is not None and job.request_hash != request_hash:
            raise IdempotencyConflict(key)
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job; with ``owner``, only if it is theirs (else :class:`JobNotFound`)."""
        with self.sessions() as session:
            job = session.get(Job, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(job_id)
        return job

    def list(
        self,
        owner: str,
        *,
        status: str | None = None,
        sweep: str | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> Page:
        """The owner's jobs (of one sweep, with ``sweep``), newest first; ``after`` is the
        last id of the previous page."""
        query = select(Job).where(Job.owner == owner, Job.kind == "train")
        if status is not None:
            query = query.where(Job.status == status)
        if sweep is not None:
            query = query.where(Job.sweep_id == sweep)
        cursor = self.get(after, owner) if after is not None else None
        return newest_page(self.sessions, query, Job, cursor, limit)

    def sweep_jobs(self, sweep_id: str) -> list[Job]:
        """Every job of the sweep, oldest first."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Job).where(Job.sweep_id == sweep_id).order_by(Job.created_at, Job.id)
                )
            )

    def live_jobs_using_file(self, file_id: str) -> int:
        with self.sessions() as session:
            return session.scalar(
                select(func.count())
                .select_from(Job)
                .where(
                    or_(
                        Job.teacher_file_id == file_id,
                        Job.dataset_file_id == file_id,
                        Job.init_file_id == file_id,
                    ),
                    Job.status.in_(states.LIVE),
                )
            )

    def live_jobs_using_dataset(self, dataset_id: str) -> int:
        """Training jobs not yet ended that read the registered dataset, as their data or
        as their unlabeled pool (``dataset.unlabeled``, in the spec alone)."""
        with self.sessions() as session:
            live = session.execute(
                select(Job.dataset_id, Job.spec).where(
                    Job.kind == "train", Job.status.in_(states.LIVE)
                )
            ).all()
        return sum(
            dataset_id in (data, JobSpec.model_validate(spec).dataset.unlabeled)
            for data, spec in live
        )

    def queued_count(self, *, key_id: str | None, owner: str) -> int:
        """Jobs waiting to run that count against ``key_id`` (or ``owner``, without a key)."""
        mine = Job.key_id == key_id if key_id is not None else Job.owner == owner
        with self.sessions() as session:
            return session.scalar(
                select(func.count()).select_from(Job).where(mine, Job.status == states.QUEUED)
            )

    def counts_by_status(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return {status: 0 for status in states.STATUSES} | dict(rows)

    # --- the state machine ---------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        target: str,
        message: str,
        *,
        lease: Lease | None = None,
        lease_expired_by: datetime | None = None,
        only_from: str | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Job:
        """Moves the job to ``target`` if the state machine allows it from its status now.

        One ``UPDATE … WHERE status IN (allowed sources)`` (and, with a lease,
        ``AND lease_owner = … AND attempt = …``) plus the event, in one
        transaction; ``lease_expired_by`` also requires the lease to have expired
        by then (so a reaper never takes a job whose lease was just renewed);
        ``only_from`` narrows the allowed sources to that one status.
        Raises :class:`~otrt_core.jobs.states.IllegalTransition` when no row
        matched, with the status the job actually has.
        """
        sources = [
            s
            for s in states.STATUSES
            if states.allowed(s, target) and (only_from is None or s == only_from)
        ]
        now = utcnow()
        values: dict[str, Any] = dict(fields)
        if target in states.TERMINAL:
            values |= {"finished_at": now, "lease_owner": None, "lease_expires_at": None}
        if target == states.QUEUED:
            values |= {"queued_at": now, "lease_owner": None, "lease_expires_at": None}
        conditions = [Job.id == job_id, Job.status.in_(sources)]
        if lease is not None:
            conditions += [Job.lease_owner == lease.owner, Job.attempt == lease.attempt]
        if lease_expired_by is not None:
            conditions.append(Job.lease_expires_at < lease_expired_by)
        with self.sessions.begin() as session:
            result = session.execute(update(Job).where(*conditions).values(status=target, **values))
            if result.rowcount != 1:
                current = session.get(Job, job_id)
                if current is None:
                    raise JobNotFound(job_id)
                raise states.IllegalTransition(job_id, current.status, target)
            session.add(_event(job_id, target, message, data or {}))
        return self.get(job_id)

    def claim(self, job_id: str, owner: str, lease_seconds: float) -> Lease | None:
        """Takes a queued job for ``owner``: one compare-and-set, so one winner per attempt.

        ``None`` when the job is not queued any more (another executor won, it
        was cancelled or it is gone): the caller drops its message.
        """
        now = utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == states.QUEUED)
                .values(
                    status=states.RUNNING,
                    attempt=Job.attempt + 1,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    started_at=func.coalesce(Job.started_at, now),
                    claimed_at=now,
                )
            )
            if result.rowcount != 1:
                return None
            attempt = session.scalar(select(Job.attempt).where(Job.id == job_id))
            session.add(
                _event(
                    job_id,
                    states.RUNNING,
                    f"attempt {attempt} started on {owner}",
                    {"attempt": attempt, "worker": owner},
                )
            )
        return Lease(job_id, owner, attempt)

    def claim_next(
        self,
        owner: str,
        lease_seconds: float,
        default_max_running: int | None = None,
        devices: int | None = None,
    ) -> Lease | None:
        """Claims the job that fair order says starts next; ``None`` if none may start.

        Fair order: owners take turns (the owner whose latest claim is oldest, or
        who never ran, goes first; then the owner waiting longest), then the
        owner's highest ``priority``, then the oldest job. Jobs of a key already
        running its ``max_running`` (its own, else ``default_max_running``)
        wait. Two executors racing for one job: the claim's compare-and-set
        picks one, and the other takes the next in order. An executor with
        ``devices`` takes only jobs that need at most that many (``training.gpus``).
        """
        for _ in range(CLAIM_RETRIES):
            job_id = self._next_in_fair_order(default_max_running, devices)
            if job_id is None:
                return None
            lease = self.claim(job_id, owner, lease_seconds)
            if lease is not None:
                return lease
        return None

    def _next_in_fair_order(
        self, default_max_running: int | None, devices: int | None
    ) -> str | None:
        running = Job.status.in_((states.RUNNING, states.CANCELLING))
        saturated = (
            select(Job.key_id)
            .join(ApiKey, ApiKey.id == Job.key_id)
            .where(running)
            .group_by(Job.key_id, ApiKey.max_running)
            .having(func.count() >= func.coalesce(ApiKey.max_running, default_max_running))
        )
        eligible = and_(
            Job.status == states.QUEUED,
            or_(Job.key_id.is_(None), Job.key_id.not_in(saturated)),
            Job.gpus <= devices if devices is not None else true(),
        )
        with self.sessions() as session:
            waiting = dict(
                session.execute(
                    select(Job.owner, func.min(Job.created_at)).where(eligible).group_by(Job.owner)
                ).all()
            )
            if not waiting:
                return None
            last_claim = dict(
                session.execute(
                    select(Job.owner, func.max(Job.claimed_at))
                    .where(Job.owner.in_(waiting))
                    .group_by(Job.owner)
                ).all()
            )
            turn = min(
                waiting,
                key=lambda o: (last_claim.get(o) is not None, last_claim.get(o), waiting[o]),
            )
            return session.scalar(
                select(Job.id)
                .where(eligible, Job.owner == turn)
                .order_by(Job.priority.desc(), Job.created_at, Job.id)
                .limit(1)
            )

    def renew(self, lease: Lease, lease_seconds: float) -> bool | None:
        """Extends the lease; returns whether a cancel was asked, or ``None`` if it was lost."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job)
                .where(*holds(lease), Job.status.in_((states.RUNNING, states.CANCELLING)))
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
            )
            if result.rowcount != 1:
                return None
            return session.scalar(select(Job.cancel_requested).where(Job.id == lease.job_id))

    def request_cancel(self, job_id: str, owner: str) -> Job:
        """Cancels a queued job at once; asks a running one to stop (``cancelling``).

        Raises :class:`~otrt_core.jobs.states.IllegalTransition` for a finished job.
        """
        job = self.get(job_id, owner)
        if job.status == states.QUEUED:
            try:
                return self.transition(
                    job_id,
                    states.CANCELLED,
                    "cancelled before it started",
                    only_from=states.QUEUED,  # not a job claimed since it was read
                    cancel_requested=True,
                )
            except states.IllegalTransition:
                job = self.get(job_id)  # claimed meanwhile: cancel it as a running job
        if job.status == states.CANCELLING:
            return job
        return self.transition(job_id, states.CANCELLING, "cancel requested", cancel_requested=True)

    # --- what an executor reports --------------------------------------------------------

    def report(
        self,
        lease: Lease,
        *,
        progress: dict[str, Any],
        metrics: dict[str, Any],
        eta_seconds: float | None,
    ) -> bool:
        """Writes the progress, metrics and ETA of the lease's attempt; false if the lease
        is lost."""
        values = {"progress": progress, "metrics": metrics, "eta_seconds": eta_seconds}
        with self.sessions.begin() as session:
            result = session.execute(update(Job).where(*holds(lease)).values(**values))
            return result.rowcount == 1

    def add_event(
        self, lease: Lease, type_: str, message: str, data: dict[str, Any] | None = None
    ) -> bool:
        """Adds an event of the lease's attempt; false (nothing written) if the lease is lost."""
        with self.sessions.begin() as session:
            if session.scalar(select(Job.id).where(*holds(lease))) is None:
                return False
            session.add(_event(lease.job_id, type_, message, data or {}))
            return True

    def add_metric(self, lease: Lease, epoch: int, values: dict[str, Any]) -> None:
        """One epoch's record; a resumed attempt that redoes an epoch replaces it."""
        with self.sessions.begin() as session:
            if session.scalar(select(Job.id).where(*holds(lease))) is None:
                return
            session.execute(
                delete(JobMetric).where(JobMetric.job_id == lease.job_id, JobMetric.epoch == epoch)
            )
            session.add(JobMetric(job_id=lease.job_id, epoch=epoch, values=values))

    def add_artifacts(
        self, lease: Lease, artifacts: list[Artifact], *, replace: bool = True
    ) -> None:
        """Records artifacts: all of them (``replace``) or these, over same-named ones."""
        with self.sessions.begin() as session:
            if session.scalar(select(Job.id).where(*holds(lease))) is None:
                return
            stale = delete(Artifact).where(Artifact.job_id == lease.job_id)
            if not replace:
                stale = stale.where(Artifact.name.in_([a.name for a in artifacts]))
            session.execute(stale)
            session.add_all(artifacts)

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(JobEvent)
                    .where(JobEvent.job_id == job_id, JobEvent.id > after)
                    .order_by(JobEvent.id)
                    .limit(limit)
                )
            )

    def metrics_of(self, job_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Each job's epoch records, in epoch order (one query for them all)."""
        history: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
        with self.sessions() as session:
            rows = session.scalars(
                select(JobMetric)
                .where(JobMetric.job_id.in_(job_ids))
                .order_by(JobMetric.job_id, JobMetric.epoch)
            )
            for row in rows:
                history[row.job_id].append(row.values)
        return history

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(
                select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)
            )
            return [row.values for row in rows]

    def artifacts(self, job_id: str) -> list[Artifact]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)
                )
            )

    def artifact(self, job_id: str, name: str) -> Artifact | None:
        """The job's artifact called ``name``, if it has one."""
        with self.sessions() as session:
            return session.get(Artifact, (job_id, name))

    # --- recovery ------------------------------------------------------------------------

    def expired_leases(self, now: datetime | None = None) -> list[Job]:
        """Running or cancelling jobs whose executor stopped renewing."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Job).where(
                        Job.status.in_((states.RUNNING, states.CANCELLING)),
                        Job.lease_expires_at < (now or utcnow()),
                    )
                )
            )

    def leased_by(self, owner: str) -> list[Job]:
        """Running or cancelling jobs whose lease names ``owner``."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Job).where(
                        Job.status.in_((states.RUNNING, states.CANCELLING)),
                        Job.lease_owner == owner,
                    )
                )
            )

    def queued_since(self, before: datetime) -> list[str]:
        """Ids of jobs queued before ``before`` (their message may be lost), oldest first."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Job.id)
                    .where(Job.status == states.QUEUED, Job.queued_at < before)
                    .order_by(Job.queued_at)
                )
            )

    def touch_queued(self, job_id: str, before: datetime) -> bool:
        """Marks a job queued before ``before`` as dispatched again now; false if another did."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == states.QUEUED, Job.queued_at < before)
                .values(queued_at=utcnow())
            )
            return result.rowcount == 1


def holds(lease: Lease) -> tuple:
    return (Job.id == lease.job_id, Job.lease_owner == lease.owner, Job.attempt == lease.attempt)


def _event(job_id: str, type_: str, message: str, data: dict[str, Any]) -> JobEvent:
    return JobEvent(job_id=job_id, at=utcnow(), type=type_, message=message[:2000], data=data)

"""The reaper: what happens to jobs whose executor died or whose message was lost.

Safe to run in many places at once: every change is a compare-and-set that
also requires the lease to still be the expired one, so two reapers never both
act on one job.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from otrt_core.jobs import states
from otrt_core.jobs.store import JobStore, Lease
from otrt_core.jobs.tables import utcnow
from otrt_core.protocol import WORKER_LOST

log = logging.getLogger("otrt.reaper")


@dataclass
class Reaped:
    requeued: list[str] = field(default_factory=list)  # dispatch these again
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    # Queued too long (the message may be lost); marked as re-sent by this reaper only.
    redispatch: list[str] = field(default_factory=list)


def release_leases_of(store: JobStore, owner: str) -> list[str]:
    """Requeues (or cancels) the jobs ``owner`` held when its previous process died.

    For an executor that restarts under the same name (the embedded server of
    one data directory): its old leases need not wait to expire. Returns the
    ids to dispatch again.
    """
    requeued = []
    for job in store.leased_by(owner):
        lease = Lease(job.id, owner, job.attempt)
        cancelling = job.status == states.CANCELLING
        target = states.CANCELLED if cancelling else states.QUEUED
        message = "cancelled (executor restarted)" if cancelling else "executor restarted; requeued"
        try:
            store.transition(job.id, target, message, lease=lease, data={"attempt": job.attempt})
        except states.IllegalTransition:
            continue
        if not cancelling:
            requeued.append(job.id)
    return requeued


def reap(
    store: JobStore,
    max_attempts: int,
    requeue_after_seconds: float,
    now: datetime | None = None,
) -> Reaped:
    """Requeues jobs with an expired lease (or fails them after ``max_attempts``).

    A job being cancelled when its executor died is ``cancelled``; a job queued
    for longer than ``requeue_after_seconds`` is listed for dispatching again,
    by one reaper only (its ``queued_at`` is moved by compare-and-set). ``now``
    (default: the clock) is when the round happens.
    """
    now = now or utcnow()
    reaped = Reaped()
    for job in store.expired_leases(now):
        lease = Lease(job.id, job.lease_owner or "", job.attempt)
        if job.status == states.CANCELLING:
            target, message, bucket, extra = (
                states.CANCELLED,
                "cancelled (executor lost)",
                reaped.cancelled,
                {},
            )
        elif job.attempt >= max_attempts:
            target, bucket = states.FAILED, reaped.failed
            message = f"executor lost on attempt {job.attempt} of {max_attempts}"
            extra = {"error": {"code": WORKER_LOST, "message": message}}
        else:
            target, bucket = states.QUEUED, reaped.requeued
            message = f"executor {job.lease_owner} lost; requeued to resume from its checkpoint"
            extra = {}
        try:
            store.transition(
                job.id,
                target,
                message,
                lease=lease,
                lease_expired_by=now,
                data={"attempt": job.attempt},
                **extra,
            )
        except states.IllegalTransition:
            continue  # renewed, finished or reaped elsewhere meanwhile
        bucket.append(job.id)
    before = now - timedelta(seconds=requeue_after_seconds)
    reaped.redispatch = [
        job_id
        for job_id in store.queued_since(before)
        if job_id not in reaped.requeued and store.touch_queued(job_id, before)
    ]
    return reaped


def reap_until(
    stopping: threading.Event,
    store: JobStore,
    dispatch: Callable[[str], None],
    *,
    interval_seconds: float,
    max_attempts: int,
    requeue_after_seconds: float,
    announce: Callable[[], None] = lambda: None,
    advance_sweeps: Callable[[], None] = lambda: None,
) -> None:
    """The reaper loop of every executor (embedded or Celery): reaps every
    ``interval_seconds`` and dispatches what it requeued, until ``stopping`` is set;
    each round first ``announce``s the executor (otrt_core.jobs.workers), the first
    one at once, and ends by advancing the unfinished sweeps (a trial whose executor
    died before it could). A failed round is logged and tried again at the next
    interval."""
    with contextlib.suppress(Exception):  # the first round's announce, retried below
        announce()
    while not stopping.wait(interval_seconds):
        try:
            announce()
            reaped = reap(store, max_attempts, requeue_after_seconds)
            for job_id in reaped.requeued + reaped.redispatch:
                dispatch(job_id)
            advance_sweeps()
        except Exception:
            log.warning("the reaper failed; trying again", exc_info=True)

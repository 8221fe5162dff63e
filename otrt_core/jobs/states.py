"""API.md's job state machine, in one place.

``queued -> running -> succeeded | failed | cancelled``, ``cancelling`` between
``running`` and ``cancelled``. A running job whose executor died goes back to
``queued`` and resumes (a cancelling one is simply ``cancelled``); a queued
job can be cancelled before it starts, and can fail without running (too many
attempts).
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SweepStatus(StrEnum):
    """A sweep's: ``running -> succeeded | failed | cancelled``, ``cancelling`` between."""

    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


QUEUED, RUNNING, CANCELLING = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING
SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED
STATUSES = tuple(JobStatus)
# A job's or a sweep's end (a StrEnum equals its value: one set serves both).
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
LIVE = frozenset({QUEUED, RUNNING, CANCELLING})

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLING, CANCELLED, QUEUED}),
    CANCELLING: frozenset({CANCELLED, SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    """A status change the state machine does not allow."""

    def __init__(self, job_id: str, current: str, target: str) -> None:
        super().__init__(f"job {job_id} cannot go from {current} to {target}")
        self.job_id, self.current, self.target = job_id, current, target


def allowed(current: str, target: str) -> bool:
    return target in TRANSITIONS[current]

"""The one thing the API knows of execution: hand a committed job's id to a dispatcher."""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    """Gets a job id after the job's row is committed; runs it somewhere, some time.

    Implementations (``worker/``): the embedded executor's in-process queue and
    Celery. Delivery may be lost: the DB stays the truth, and the reaper sends
    a job again if it stays queued too long.
    """

    def dispatch(self, job_id: str) -> None: ...

"""The Celery dispatcher: what the API uses to queue a job id (no torch, no worker code)."""

from __future__ import annotations

from celery import Celery

from otrt_core.jobs.store import JobStore

TASK = "otrt.run_job"
QUEUE = "otrt"
# A failed publish must not hold the HTTP request long: the reaper re-sends.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


class CeleryDispatcher:
    """Sends ``otrt.run_job(job_id)``; the message carries the id and nothing else."""

    def __init__(self, app: Celery, store: JobStore, grace_seconds: float = 600.0) -> None:
        self.app, self.store, self.grace_seconds = app, store, grace_seconds

    def dispatch(self, job_id: str) -> None:
        max_runtime = self.store.get(job_id).spec["training"]["max_runtime_s"]
        self.app.send_task(
            TASK,
            args=[job_id],
            queue=QUEUE,
            # Carried for Celery's own bookkeeping; with the solo pool the executor
            # enforces the same bound itself (worker/execution.py).
            soft_time_limit=max_runtime + self.grace_seconds,
            time_limit=max_runtime + 2 * self.grace_seconds,
            retry=True,
            retry_policy=PUBLISH_RETRY,
        )

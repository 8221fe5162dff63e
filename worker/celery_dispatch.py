"""The Celery dispatcher: what the API uses to queue a job id (no torch, no worker code)."""

from __future__ import annotations

from celery import Celery

TASK = "otrt.run_job"
QUEUE = "otrt"
# A failed publish must not hold the HTTP request long: the reaper re-sends.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


class CeleryDispatcher:
    """Sends ``otrt.run_job(job_id)``; the message carries the id and nothing else.

    No time limits ride along: the solo pool ignores them, and the executor
    enforces ``max_runtime_s`` itself (worker/execution.py).
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def dispatch(self, job_id: str) -> None:
        self.app.send_task(TASK, args=[job_id], queue=QUEUE, retry=True, retry_policy=PUBLISH_RETRY)

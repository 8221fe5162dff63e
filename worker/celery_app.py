"""The Celery app of `otrt worker`: one worker process per GPU, one job at a time.

Choices (DESIGN.md, docs/distributed.md):

- JSON only; the message is the job id; the DB holds everything else.
- ``acks_late`` + ``reject_on_worker_lost`` + prefetch 1: a message is
  acknowledged only after its job ended, so a dead worker's message comes back.
  Redis' ``visibility_timeout`` is longer than any job may run
  (``OTRT_VISIBILITY_TIMEOUT_SECONDS``), so a live job's message is never
  handed to a second worker; if one ever is, the claim's compare-and-set drops it.
- The ``solo`` pool: the task runs in the worker's main process and the
  trainer in a child process group that exits with each job, so GPU memory is
  always returned (what ``max_tasks_per_child=1`` buys a prefork pool) and a
  warm shutdown reaches the running job: it checkpoints and is requeued.
- Broker connection losses are retried for ever and do not cancel running jobs.
- A reaper thread in every worker requeues jobs whose lease expired and re-sends
  jobs whose message may be lost; it is safe to run in many workers at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from celery import Celery, signals

from otrt_core.jobs.recovery import reap_until
from otrt_core.jobs.sweep_store import SweepStore
from otrt_core.jobs.sweeps import SweepRunner
from otrt_core.settings import Settings
from worker.celery_dispatch import QUEUE, TASK, CeleryDispatcher
from worker.execution import Executor, run_in_fair_order

log = logging.getLogger("otrt.worker")


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for otrt; the API publishes with it, workers also run tasks."""
    app = Celery("otrt", broker=settings.broker_url or "redis://127.0.0.1:6379/0")
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="solo",
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
    )
    return app


@dataclass
class WorkerRuntime:
    """What one worker process runs jobs with (the solo pool: no fork after it is built)."""

    settings: Settings
    executor: Executor
    stopping: threading.Event


def make_worker_app(runtime: WorkerRuntime) -> Celery:
    """The worker's Celery app: the task, a reaper thread once ready, and a warm shutdown
    that checkpoints the running job and requeues it."""
    app = make_celery(runtime.settings)
    dispatcher = CeleryDispatcher(app)
    settings = runtime.settings
    executor = runtime.executor
    executor.sweeps = SweepRunner(
        executor.store, SweepStore(executor.store.sessions), dispatcher.dispatch
    )

    @app.task(name=TASK)
    def run_job(job_id: str) -> int:
        """Runs jobs in fair order while any may start; the message is only a wake-up.

        Each queued job has a message, but the job a message names may not be the
        one fair order starts next: whichever worker takes a message runs the next
        job of the owner whose turn it is. A message that finds nothing to run is
        dropped; the reaper re-sends one for any job left queued too long.
        """
        ran = run_in_fair_order(runtime.executor, runtime.stopping.is_set)
        log.info("woken for job %s: ran %d job(s)", job_id, ran)
        return ran

    def start_reaper(**_: object) -> None:
        threading.Thread(
            target=reap_until,
            args=(runtime.stopping, runtime.executor.store, dispatcher.dispatch),
            kwargs={
                "interval_seconds": settings.heartbeat_seconds,
                "max_attempts": settings.max_attempts,
                "requeue_after_seconds": settings.requeue_after_seconds,
                "announce": runtime.executor.announce,
                "advance_sweeps": runtime.executor.advance_sweeps,
            },
            daemon=True,
            name="otrt-reaper",
        ).start()

    def stop_running_job(**_: object) -> None:
        runtime.stopping.set()  # the trainer checkpoints; the job goes back to the queue

    signals.worker_ready.connect(start_reaper, weak=False)
    signals.worker_shutting_down.connect(stop_running_job, weak=False)
    return app

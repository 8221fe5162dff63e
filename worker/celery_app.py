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
import os
import socket
import threading
from dataclasses import dataclass
from functools import cache

from celery import Celery, signals

from otrt_core.jobs.recovery import reap
from otrt_core.settings import Settings
from worker.celery_dispatch import QUEUE, TASK, CeleryDispatcher
from worker.execution import Executor, run_in_fair_order

log = logging.getLogger("otrt.worker")


def make_celery(settings: Settings) -> Celery:
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


app = make_celery(Settings())


@dataclass
class Runtime:
    """What one worker process needs, built on first use (after any fork)."""

    settings: Settings
    executor: Executor
    dispatcher: CeleryDispatcher
    stopping: threading.Event


@cache
def runtime() -> Runtime:
    from otrt.server import build_components, build_executor

    settings = Settings()
    parts = build_components(settings)
    name = f"celery-{socket.gethostname()}-{os.getpid()}"
    return Runtime(
        settings=settings,
        executor=build_executor(settings, parts, name),
        dispatcher=CeleryDispatcher(app, parts.store),
        stopping=threading.Event(),
    )


@app.task(name=TASK)
def run_job(job_id: str) -> int:
    """Runs jobs in fair order while any may start; the message is only a wake-up.

    Each queued job has a message, but the job a message names may not be the
    one fair order starts next: whichever worker takes a message runs the next
    job of the owner whose turn it is. A message that finds nothing to run is
    dropped; the reaper re-sends one for any job left queued too long.
    """
    current = runtime()
    ran = run_in_fair_order(current.executor, current.stopping.is_set)
    log.info("woken for job %s: ran %d job(s)", job_id, ran)
    return ran


def reaper_loop(current: Runtime) -> None:
    settings = current.settings
    while not current.stopping.wait(settings.heartbeat_seconds):
        try:
            reaped = reap(
                current.executor.store, settings.max_attempts, settings.requeue_after_seconds
            )
            for job_id in reaped.requeued + reaped.redispatch:
                current.dispatcher.dispatch(job_id)
        except Exception:
            log.warning("the reaper failed; trying again", exc_info=True)


@signals.worker_ready.connect
def _start_reaper(**_: object) -> None:
    threading.Thread(target=reaper_loop, args=(runtime(),), daemon=True, name="otrt-reaper").start()


@signals.worker_shutting_down.connect
def _stop_running_job(**_: object) -> None:
    """Warm shutdown: the running trainer checkpoints and its job goes back to the queue."""
    runtime().stopping.set()

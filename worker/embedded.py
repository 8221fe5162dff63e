"""The embedded executor: threads in the API's process that run queued jobs.

It is the ``Dispatcher`` of ``otrt serve``: ``dispatch`` puts a job id on an
in-process queue, and each id wakes one of ``concurrency`` threads, which runs
jobs through :class:`~worker.execution.Executor` in fair order between owners
(claim, trainer child process, report) while any may start.
A reaper thread requeues jobs whose lease expired and re-dispatches jobs
queued for too long, so nothing depends on the queue alone: the DB is the
truth. On start, jobs this executor held before a crash are requeued at once
and every queued job is dispatched.
"""

from __future__ import annotations

import logging
import queue
import threading

from otrt_core.jobs.recovery import reap_until, release_leases_of
from otrt_core.jobs.store import JobStore
from otrt_core.jobs.tables import utcnow
from worker.execution import Executor, run_in_fair_order

log = logging.getLogger("otrt.worker")


class EmbeddedExecutor:
    def __init__(
        self,
        executor: Executor,
        *,
        concurrency: int = 1,
        max_attempts: int = 3,
        requeue_after_seconds: float = 60.0,
    ) -> None:
        self.executor = executor
        self.store: JobStore = executor.store
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.requeue_after_seconds = requeue_after_seconds
        self.queue: queue.Queue[str] = queue.Queue()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def dispatch(self, job_id: str) -> None:
        self.queue.put(job_id)

    def start(self) -> None:
        for job_id in release_leases_of(self.store, self.executor.name):
            log.info("job %s was running when the server stopped: requeued", job_id)
        for job_id in self.store.queued_since(utcnow()):
            self.dispatch(job_id)
        for index in range(self.concurrency):
            self._spawn(self._work, f"otrt-executor-{index}")
        self._spawn(self._reap, "otrt-reaper")

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _work(self) -> None:
        """Each dispatched id wakes a thread, which then runs jobs in fair order while any
        may start (the id it woke for may well be run by another thread, or later)."""
        while not self.stopping.is_set():
            try:
                self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            run_in_fair_order(self.executor, self.stopping.is_set)

    def _reap(self) -> None:
        reap_until(
            self.stopping,
            self.store,
            self.dispatch,
            interval_seconds=self.executor.heartbeat_seconds,
            max_attempts=self.max_attempts,
            requeue_after_seconds=self.requeue_after_seconds,
            announce=self.executor.announce,
            advance_sweeps=self.executor.advance_sweeps,
        )

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stops taking jobs; running trainers checkpoint and their jobs go back to queued."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout)

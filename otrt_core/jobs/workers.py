"""The registry of executors and the devices each offers a job (``training.gpus``).

Every executor, embedded or Celery, announces itself when it starts and again on
each round of its reaper loop; those seen within :data:`LIVE_SECONDS` are live.
The API reads the largest live offer to refuse, at submission, a job that no
executor could ever run; with no executor seen yet (the API up before its
workers), a job is accepted and waits.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.jobs.tables import Worker, utcnow

LIVE_SECONDS = 300.0


class WorkerRegistry:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def announce(self, name: str, devices: int) -> None:
        """Records that executor ``name`` is up now and offers ``devices``."""
        with self.sessions.begin() as session:
            worker = session.get(Worker, name)
            if worker is None:
                session.add(Worker(name=name, devices=devices, seen_at=utcnow()))
            else:
                worker.devices, worker.seen_at = devices, utcnow()

    def largest(self, live_seconds: float = LIVE_SECONDS) -> int | None:
        """The most devices a live executor offers; ``None`` when none is live."""
        since = utcnow() - timedelta(seconds=live_seconds)
        with self.sessions() as session:
            return session.scalar(select(func.max(Worker.devices)).where(Worker.seen_at >= since))

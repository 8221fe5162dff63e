"""Records of uploaded files (the bytes live in the file store, ``otrt_core.jobs.storage``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.jobs.store import Page, newest_page
from otrt_core.jobs.tables import StoredFile


class FileNotFound(LookupError):
    pass


class FileRecords:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, record: StoredFile) -> StoredFile:
        with self.sessions.begin() as session:
            session.add(record)
        return record

    def get(self, file_id: str, owner: str) -> StoredFile:
        with self.sessions() as session:
            record = session.get(StoredFile, file_id)
        if record is None or record.owner != owner:
            raise FileNotFound(file_id)
        return record

    def list(self, owner: str, *, limit: int = 20, after: str | None = None) -> Page:
        """The owner's files, newest first; ``after`` is the last id of the previous page."""
        query = select(StoredFile).where(StoredFile.owner == owner)
        cursor = self.get(after, owner) if after is not None else None
        return newest_page(self.sessions, query, StoredFile, cursor, limit)

    def paths(self) -> set[str]:
        """The storage keys of every recorded file."""
        with self.sessions() as session:
            return set(session.scalars(select(StoredFile.path)))

    def delete(self, file_id: str, owner: str) -> StoredFile:
        record = self.get(file_id, owner)
        with self.sessions.begin() as session:
            session.delete(session.get(StoredFile, file_id))
        return record

"""API keys: shown once at creation, stored only as a SHA-256 digest.

Keys are 256 random bits, so a fast hash is enough (no password stretching):
guessing one is as hard as guessing the key itself.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.jobs.store import new_id
from otrt_core.jobs.tables import ApiKey

KEY_PREFIX = "otrt_"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, name: str, owner: str | None = None) -> tuple[ApiKey, str]:
        """A new key for ``owner`` (default: ``name``); the plain key is returned only here."""
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(id=new_id("key"), owner=owner or name, name=name, key_hash=digest(plain))
        with self.sessions.begin() as session:
            session.add(record)
        return record, plain

    def owner_of(self, plain: str) -> str | None:
        """The owner a presented key acts for, or ``None`` for an unknown or revoked key."""
        with self.sessions() as session:
            record = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest(plain)))
        if record is None or record.revoked_at is not None:
            return None
        return record.owner

"""API keys: shown once at creation, stored only as a SHA-256 digest.

Keys are 256 random bits, so a fast hash is enough (no password stretching):
guessing one is as hard as guessing the key itself.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.jobs.store import new_id
from otrt_core.jobs.tables import ApiKey, utcnow
from otrt_core.settings import Settings

KEY_PREFIX = "otrt_"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Quota:
    """What one key may use; ``None`` for ``max_running``: no limit."""

    max_running: int | None
    max_queued: int
    rate_limit: float  # requests per second
    rate_burst: int  # requests at once before the rate applies

    @classmethod
    def from_settings(cls, settings: Settings) -> Quota:
        """The quota of a key that sets none of its own."""
        return cls(
            max_running=settings.max_running,
            max_queued=settings.max_queued,
            rate_limit=settings.rate_limit,
            rate_burst=settings.rate_burst,
        )

    def of(self, key: ApiKey | None) -> Quota:
        """``key``'s own quota where it sets one, these defaults elsewhere."""
        if key is None:
            return self
        return replace(
            self,
            max_running=key.max_running if key.max_running is not None else self.max_running,
            max_queued=key.max_queued if key.max_queued is not None else self.max_queued,
            rate_limit=key.rate_limit if key.rate_limit is not None else self.rate_limit,
        )


class KeyStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(
        self, name: str, owner: str | None = None, *, admin: bool = False
    ) -> tuple[ApiKey, str]:
        """A new key for ``owner`` (default: ``name``); the plain key is returned only here."""
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id=new_id("key"), owner=owner or name, name=name, key_hash=digest(plain), admin=admin
        )
        with self.sessions.begin() as session:
            session.add(record)
        return record, plain

    def find(self, plain: str) -> ApiKey | None:
        """The live key record of a presented key; ``None`` if unknown or revoked.

        Read on every request, so a revoked key stops working at once.
        """
        with self.sessions() as session:
            record = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest(plain)))
        if record is None or record.revoked_at is not None:
            return None
        return record

    def list(self) -> list[ApiKey]:
        with self.sessions() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))

    def revoke(self, key_id: str) -> ApiKey:
        return self._update(key_id, revoked_at=utcnow())

    def set_quota(self, key_id: str, **quota: int | float | None) -> ApiKey:
        """Sets ``max_running``, ``max_queued`` or ``rate_limit`` (``None``: the default)."""
        unknown = set(quota) - {"max_running", "max_queued", "rate_limit"}
        if unknown:
            raise ValueError(f"unknown quota {', '.join(sorted(unknown))}")
        return self._update(key_id, **quota)

    def _update(self, key_id: str, **values: object) -> ApiKey:
        with self.sessions.begin() as session:
            record = session.get(ApiKey, key_id)
            if record is None:
                raise KeyNotFound(key_id)
            for name, value in values.items():
                setattr(record, name, value)
        return record

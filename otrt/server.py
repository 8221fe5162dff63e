"""Wiring of the service: the embedded server of `otrt serve`, built from settings.

This is the composition root's heavy half (imported only by the commands that
serve): the store on its database, file storage, the executor that is the
API's dispatcher, and the FastAPI app over them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from fastapi import FastAPI

from api.app import AppParts, create_app
from otrt_core.jobs.db import make_engine, make_sessions, migrate
from otrt_core.jobs.files import FileRecords
from otrt_core.jobs.keys import KeyStore
from otrt_core.jobs.service import Service
from otrt_core.jobs.storage import LocalStorage
from otrt_core.jobs.store import JobStore
from otrt_core.settings import Settings
from worker.embedded import EmbeddedExecutor
from worker.execution import Executor


class AuthRefused(ValueError):
    """Auth off on an address other than loopback."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_enabled(settings: Settings, host: str, *, embedded: bool) -> bool:
    """API.md: auth may be off only on loopback; `otrt serve` there defaults to off."""
    if settings.auth is None:
        return not (embedded and is_loopback(host))
    if settings.auth == "off" and not is_loopback(host):
        raise AuthRefused(f"auth cannot be off on {host}: bind 127.0.0.1 or set OTRT_AUTH=on")
    return settings.auth == "on"


@dataclass
class Embedded:
    app: FastAPI
    executor: EmbeddedExecutor
    keys: KeyStore
    store: JobStore


def build_embedded(settings: Settings, *, concurrency: int = 1, auth: bool = False) -> Embedded:
    """The whole service in one process: migrated DB, storage, executor threads, app."""
    data_dir = settings.data_dir.resolve()
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    sessions = make_sessions(engine)
    store, files, keys = JobStore(sessions), FileRecords(sessions), KeyStore(sessions)
    storage = LocalStorage(data_dir / "store")
    # One name per data directory: after a crash, the restarted server knows its old leases.
    name = "embedded-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    executor = EmbeddedExecutor(
        Executor(
            store=store,
            files=files,
            storage=storage,
            work_root=data_dir / "work",
            name=name,
            lease_seconds=settings.lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            device=settings.trainer_device,
        ),
        concurrency=concurrency,
        max_attempts=settings.max_attempts,
        requeue_after_seconds=settings.requeue_after_seconds,
    )
    service = Service(store, files, storage, executor, settings.max_upload_bytes)
    app = create_app(AppParts(engine=engine, service=service, keys=keys, auth=auth))
    return Embedded(app=app, executor=executor, keys=keys, store=store)

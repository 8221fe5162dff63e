"""Wiring: every component of the service, built from one ``Settings``.

The composition root's heavy half, imported only by the commands that serve:
`otrt serve` (:func:`build_embedded`), `otrt api` (:func:`build_api`) and
`otrt worker` (:func:`build_worker`). Nothing here runs at import time.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from fastapi import FastAPI
from sqlalchemy import Engine

from api.app import AppParts, create_app
from otrt_core.jobs.dataset_store import DatasetStore
from otrt_core.jobs.db import make_engine, make_sessions, migrate
from otrt_core.jobs.dispatch import Dispatcher
from otrt_core.jobs.files import FileRecords
from otrt_core.jobs.inspection import InspectionLimits, warm_up
from otrt_core.jobs.keys import KeyStore, Quota
from otrt_core.jobs.s3 import S3Storage
from otrt_core.jobs.service import Service
from otrt_core.jobs.storage import LocalStorage, Storage, StorageUnavailable
from otrt_core.jobs.store import JobStore
from otrt_core.jobs.sweep_store import SweepStore
from otrt_core.jobs.sweeps import SweepRunner
from otrt_core.jobs.workers import WorkerRegistry
from otrt_core.settings import Settings
from worker.conversion import ConversionLimits
from worker.embedded import EmbeddedExecutor
from worker.execution import Executor
from worker.tracking import MlflowTracker, NoTracking, Tracker

if TYPE_CHECKING:
    from celery import Celery


# The HTTP contract as the API serves it, kept in the repository (`make openapi`).
OPENAPI_FILE = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


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
class Components:
    """The store, file records, keys and storage over one database and data directory."""

    engine: Engine
    store: JobStore
    files: FileRecords
    keys: KeyStore
    storage: Storage
    data_dir: Path
    workers: WorkerRegistry
    datasets: DatasetStore


def build_components(settings: Settings) -> Components:
    data_dir = settings.data_dir.resolve()
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessions(engine)
    store = JobStore(sessions)
    return Components(
        engine=engine,
        store=store,
        files=FileRecords(sessions),
        keys=KeyStore(sessions),
        storage=build_storage(settings, data_dir),
        data_dir=data_dir,
        workers=WorkerRegistry(sessions),
        datasets=DatasetStore(sessions, store),
    )


def build_storage(settings: Settings, data_dir: Path) -> Storage:
    """The store ``OTRT_STORAGE_URL`` names (checked now, so a wrong bucket or key fails
    the start with its reason), or the data directory's."""
    url = settings.storage_url
    if url and url.startswith("s3://"):
        storage = S3Storage.from_url(
            url,
            data_dir / "cache",
            endpoint_url=settings.s3_endpoint_url,
            presign=settings.s3_presign == "on",
        )
        storage.check()
        return storage
    if url and not url.startswith("file://"):
        raise StorageUnavailable(f"OTRT_STORAGE_URL is file:///… or s3://…, not {url!r}")
    return LocalStorage(Path(urlparse(url).path) if url else data_dir / "store")


def build_executor(settings: Settings, parts: Components, name: str) -> Executor:
    """What runs jobs in this process, under the lease owner ``name``."""
    return Executor(
        store=parts.store,
        files=parts.files,
        storage=parts.storage,
        work_root=parts.data_dir / "work",
        name=name,
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        device=settings.trainer_device,
        trainer_nice=settings.trainer_nice,
        default_max_running=settings.max_running,
        tracker=build_tracker(settings),
        devices=settings.worker_devices or cuda_devices(),
        registry=parts.workers,
        datasets=parts.datasets,
        conversion_limits=ConversionLimits(
            allowed=tuple(settings.allowed_data_sources),
            s3_endpoint_url=settings.s3_endpoint_url,
            max_image_pixels=settings.max_image_pixels,
            max_unreadable_fraction=settings.max_unreadable_fraction,
            shard_bytes=settings.dataset_shard_bytes,
        ),
    )


def cuda_devices() -> int:
    """The CUDA devices this process sees (``CUDA_VISIBLE_DEVICES``), at least 1, read
    without loading torch (the API process never does): from ``nvidia-smi -L``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip()]))
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return 1
    return max(1, sum(line.startswith("GPU ") for line in listing.stdout.splitlines()))


def build_tracker(settings: Settings) -> Tracker:
    """MLflow tracking when ``OTRT_MLFLOW_TRACKING_URI`` is set, else none."""
    if not settings.mlflow_tracking_uri:
        return NoTracking()
    return MlflowTracker(
        settings.mlflow_tracking_uri,
        settings.mlflow_experiment,
        settings.mlflow_artifact_location,
    )


@dataclass
class Embedded:
    app: FastAPI
    executor: EmbeddedExecutor
    components: Components


def build_embedded(settings: Settings, *, concurrency: int = 1, auth: bool = False) -> Embedded:
    """The whole service in one process: migrated DB, storage, executor threads, app."""
    parts = build_components(settings)
    migrate(parts.engine)
    # One name per data directory: after a crash, the restarted server knows its old leases.
    name = "embedded-" + hashlib.sha256(str(parts.data_dir).encode()).hexdigest()[:12]
    executor = EmbeddedExecutor(
        build_executor(settings, parts, name),
        concurrency=concurrency,
        max_attempts=settings.max_attempts,
        requeue_after_seconds=settings.requeue_after_seconds,
    )
    executor.executor.sweeps = SweepRunner(
        parts.store, SweepStore(parts.store.sessions), executor.dispatch
    )
    return Embedded(app=_app(settings, parts, executor, auth), executor=executor, components=parts)


def build_api(settings: Settings, *, auth: bool) -> FastAPI:
    """The API alone (`otrt api`): jobs go to Celery workers through the broker."""
    from worker.celery_app import make_celery
    from worker.celery_dispatch import CeleryDispatcher

    parts = build_components(settings)
    celery = make_celery(settings)

    def broker_check() -> str:
        try:
            with celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as error:
            return f"unreachable: {type(error).__name__}"
        return "ok"

    return _app(settings, parts, CeleryDispatcher(celery), auth, broker_check)


def build_worker(settings: Settings) -> Celery:
    """A Celery worker's app (`otrt worker`), its executor named after host and process."""
    from worker.celery_app import WorkerRuntime, make_worker_app

    parts = build_components(settings)
    name = f"celery-{socket.gethostname()}-{os.getpid()}"
    runtime = WorkerRuntime(settings, build_executor(settings, parts, name), threading.Event())
    return make_worker_app(runtime)


def _app(
    settings: Settings,
    parts: Components,
    dispatcher: Dispatcher,
    auth: bool,
    broker_check: Callable[[], str] | None = None,
) -> FastAPI:
    service = Service(
        parts.store,
        parts.files,
        parts.storage,
        dispatcher,
        settings.max_upload_bytes,
        InspectionLimits(max_decoded_bytes=settings.max_decoded_bytes),
        workers=parts.workers,
        max_sweep_jobs=settings.max_sweep_jobs,
        allowed_sources=settings.allowed_data_sources,
        max_push_bytes=settings.max_push_bytes,
        upload_expiry=timedelta(seconds=settings.upload_expiry_seconds),
    )
    service.remove_orphans(settings.orphan_grace_seconds)
    # The first submission that checks a model should not wait for torch's import.
    threading.Thread(target=warm_up, args=(service.inspection,), daemon=True).start()
    return create_app(
        AppParts(
            engine=parts.engine,
            service=service,
            keys=parts.keys,
            auth=auth,
            broker_check=broker_check,
            quota=Quota.from_settings(settings),
            max_json_bytes=settings.max_json_bytes,
        )
    )

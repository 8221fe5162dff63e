"""The job store's tables (SQLAlchemy 2). ``migrations/`` creates them; this file is the map.

Ids are prefixed strings (``job_…``, ``file_…``); times are UTC and come back
timezone-aware on every database (SQLite stores them naive).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from otrt_core.spec import JobSpec


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and read back as an aware ``datetime``."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class ApiKey(Base):
    """An API key, kept only as its SHA-256; ``owner`` scopes every file and job."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    admin: Mapped[bool] = mapped_column(default=False)  # may read /metrics (every owner's counts)
    # Quotas; None: the server's default (OTRT_MAX_RUNNING, OTRT_MAX_QUEUED, OTRT_RATE_LIMIT).
    max_running: Mapped[int | None] = mapped_column(Integer, default=None)
    max_queued: Mapped[int | None] = mapped_column(Integer, default=None)
    rate_limit: Mapped[float | None] = mapped_column(default=None)  # requests per second


class StoredFile(Base):
    """An uploaded teacher checkpoint or dataset; ``path`` is relative to the file store."""

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(40))
    details: Mapped[dict[str, Any]]  # shapes and counts found on upload
    path: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Upload(Base):
    """A file arriving in parts (API.md v1.3, "Uploads in parts"); it becomes a ``file_…``
    when completed, and is aborted past ``expires_at``."""

    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)  # the declared size of the whole
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)  # declared, checked
    part_size: Mapped[int] = mapped_column(BigInteger)
    # The store's own id for the upload: S3's multipart UploadId (None on a local store).
    multipart_id: Mapped[str | None] = mapped_column(String(1024), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class UploadPart(Base):
    """One stored part of an upload on a local store (its bytes under
    ``upload-parts/{upload}/{number}``); S3 lists its multipart upload's parts itself."""

    __tablename__ = "upload_parts"
    upload_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(64))  # the part's sha256


class Job(Base):
    """One training job. ``status`` changes only through ``JobStore.transition``."""

    @property
    def training_spec(self) -> JobSpec:
        """A training job's spec, typed: its defaults are spec.py's, not restated by each
        reader of the stored JSON."""
        return JobSpec.model_validate(self.spec)

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    spec: Mapped[dict[str, Any]]
    job_metadata: Mapped[dict[str, Any]] = mapped_column("metadata")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    progress: Mapped[dict[str, Any]]
    eta_seconds: Mapped[float | None] = mapped_column(default=None)
    metrics: Mapped[dict[str, Any]]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    # Inputs a live job reads: a file cannot be deleted while one names it.
    teacher_file_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    dataset_file_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    teacher_job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    init_file_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    # Fair order: the key whose quota the job counts against, its priority among
    # the owner's queued jobs, and when its latest attempt was claimed.
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    gpus: Mapped[int] = mapped_column(Integer, default=1)  # training.gpus: devices it needs
    sweep_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    # What the job does: "train" (a training job of the API) or "dataset" (the conversion
    # of a registered dataset, which ``dataset_id`` names; never listed as a job).
    kind: Mapped[str] = mapped_column(String(20), default="train")
    # The registered dataset a training job reads, or the one a conversion job makes.
    dataset_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)

    __table_args__ = (
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_key_status", "key_id", "status"),
        Index("ix_jobs_owner_claimed", "owner", "claimed_at"),
        Index("ux_jobs_owner_idempotency", "owner", "idempotency_key", unique=True),
    )


class Dataset(Base):
    """A registered dataset (API.md v1.2): a source converted once into shards.

    ``status`` follows its conversion job (``job_id``): ``inspecting`` while the job
    waits or reads headers, ``converting`` while it writes shards, then ``ready`` or
    ``failed``. ``details`` holds what the conversion found (classes, counts, images,
    unreadable files, fingerprint, channels, statistics) and ``shards`` where the
    snapshot lives in the object store (a key prefix).
    """

    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(1000))
    format: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    job_id: Mapped[str] = mapped_column(String(40))
    progress: Mapped[dict[str, Any]]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    details: Mapped[dict[str, Any]]
    shards: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_datasets_owner_created", "owner", "created_at", "id"),)


class Sweep(Base):
    """A search over job specs (API.md, "Sweeps"); its trials are jobs with its ``sweep_id``.

    ``request`` is the sweep as submitted, ``inputs`` the uploaded files and teacher
    job its trials read (checked once, at submission), ``state`` what the search has
    planned so far (otrt_core.jobs.sweeps), ``summary`` the best trial and the
    comparisons once it has ended. ``state`` changes only by compare-and-set on
    ``version``, so whoever advances the sweep, only one plan lands.
    """

    __tablename__ = "sweeps"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    status: Mapped[str] = mapped_column(String(20))
    request: Mapped[dict[str, Any]]
    inputs: Mapped[dict[str, Any]]
    state: Mapped[dict[str, Any]]
    summary: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        Index("ix_sweeps_owner_created", "owner", "created_at", "id"),
        Index("ix_sweeps_status", "status"),
    )


class SweepEvent(Base):
    """What happened to a sweep, in order; ``id`` is the SSE event id."""

    __tablename__ = "sweep_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(String(2000))
    data: Mapped[dict[str, Any]]


class Worker(Base):
    """An executor, embedded or Celery, and the devices it offers a job; ``seen_at`` is
    renewed by its reaper loop, so the live ones are those seen lately."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    devices: Mapped[int] = mapped_column(Integer)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEvent(Base):
    """What happened to a job, in order; ``id`` is the SSE event id."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(String(2000))
    data: Mapped[dict[str, Any]]


class JobMetric(Base):
    """One epoch of a job's history, as the trainer reported it."""

    __tablename__ = "job_metrics"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, Any]]

    __table_args__ = (Index("ux_job_metrics_job_epoch", "job_id", "epoch", unique=True),)


class Artifact(Base):
    """A file a finished job produced; ``path`` is relative to the artifact store."""

    __tablename__ = "artifacts"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
